"""Every rule of the pack converts to a Lucene query that real Elasticsearch accepts, and finds what the stream found.

The bundled sample traffic is replayed through the full pipeline; its enriched events (with the rule ids each
matched) are indexed with the product's templates; then each rule's converted query runs against them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch, helpers

from app.traffic.samples import sample_files
from detectors.signatures.convert import LUCENE_UNSUPPORTED, convert
from detectors.signatures.ruleset import BUILTIN_RULES_DIR, RuleSet

from .conftest import product_indices

SAMPLES = [str(path) for path in sample_files().values()]
# Matches the hunting query cannot reproduce by design (see detectors/signatures/convert.py): values that the
# engine found only after folding or decoding, and secrets or exfiltrated data, which are redacted when indexed.
NOT_HUNTABLE_CATEGORIES = {"secret_exposure"}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, es_url: str) -> Iterator[dict[str, Any]]:
    es_client = Elasticsearch(es_url, request_timeout=60)
    out = tmp_path_factory.mktemp("conversion")
    subprocess.run(
        [str(Path(sys.executable).parent / "abusewatch"), "replay", *SAMPLES, "--alerts-out", str(out / "alerts.jsonl"),
         "--shadow-alerts-out", str(out / "shadow.jsonl"), "--events-out", str(out / "events.jsonl")],
        check=True, capture_output=True,
    )  # fmt: skip
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines() if line]
    alerts = [
        json.loads(line) for name in ("alerts", "shadow") for line in (out / f"{name}.jsonl").read_text().splitlines()
    ]
    with product_indices(es_client, es_url, "abwconvert") as settings:
        index = settings.elasticsearch.events_index
        helpers.bulk(
            es_client,
            ({"_op_type": "index", "_index": index, "_id": doc["event"]["id"], "_source": doc} for doc in events),
            refresh="wait_for",
        )
        yield {"index": index, "events": events, "alerts": alerts}
    es_client.close()


def conversions() -> list:
    return convert(RuleSet.load([BUILTIN_RULES_DIR]).rules, target="lucene")


def hits(es: Elasticsearch, index: str, query: str) -> set[str]:
    response = es.search(index=index, query={"query_string": {"query": query}}, size=10_000, source=False)
    return {hit["_id"] for hit in response["hits"]["hits"]}


def test_every_converted_query_is_accepted_by_elasticsearch(indexed: dict[str, Any], es_client: Elasticsearch):
    results = conversions()
    assert all(c.query or c.error for c in results), "a rule neither converted nor said why"
    converted = [c for c in results if c.query is not None]
    assert len(converted) >= len(results) // 2
    refused = {}
    for conversion in converted:
        try:
            hits(es_client, indexed["index"], conversion.query)
        except Exception as error:  # an ApiError names the rule below
            refused[conversion.rule.title] = str(error)[:200]
    assert refused == {}


def test_converted_queries_find_the_events_the_stream_found(indexed: dict[str, Any], es_client: Elasticsearch):
    stream: dict[str, set[str]] = defaultdict(set)
    for doc in indexed["events"]:
        for rule_id in doc["abusewatch"]["rule_ids"]:
            stream[rule_id].add(doc["event"]["id"])
    folded = {  # (rule, event) pairs the engine matched only after folding or decoding
        (alert["rule"]["id"], event_id)
        for alert in indexed["alerts"]
        if any(e.get("transforms") for e in alert["abusewatch"]["evidence"])
        for event_id in alert["abusewatch"]["event_ids"]
    }
    redacted = {doc["event"]["id"] for doc in indexed["events"] if "[REDACTED:" in json.dumps(doc.get("gen_ai", {}))}
    compared = 0
    for conversion in conversions():
        rule = conversion.rule
        if conversion.query is None or rule.category in NOT_HUNTABLE_CATEGORIES or not stream.get(rule.id):
            continue
        if any(construct in conversion.query for construct in LUCENE_UNSUPPORTED):
            continue  # converts, but Lucene has no equivalent construct: documented as approximate
        expected = {e for e in stream[rule.id] if (rule.id, e) not in folded and e not in redacted}
        if not expected:
            continue
        found = hits(es_client, indexed["index"], conversion.query)
        assert expected <= found, f"{rule.title}: the query missed {sorted(expected - found)}"
        assert found <= stream[rule.id], (
            f"{rule.title}: the query found events the stream did not: {found - stream[rule.id]}"
        )
        compared += 1
    assert compared >= 3, "too few rules matched the sample traffic to compare"
