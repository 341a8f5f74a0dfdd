"""Every rule of the pack converts to a Lucene query that real Elasticsearch accepts, and finds what the stream found.

The bundled sample traffic is replayed through the full pipeline; its enriched events (with the rule ids each
matched) are indexed with the product's templates; then each rule's converted query runs against them. Each regex
of the pack is also run, translated for Lucene, on every rule's example texts and compared with RE2.
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
from detectors.signatures.convert import convert
from detectors.signatures.lucene_regex import to_lucene
from detectors.signatures.ruleset import BUILTIN_RULES_DIR, RuleSet
from tests.fixtures.rules.regexes import example_texts, rule_regexes

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


def refusal(es: Elasticsearch, index: str, query: str) -> str | None:
    """Why Elasticsearch cannot run ``query``, or None. A regex it cannot build (bad syntax, an automaton too big to
    determinize) does not fail the search: ``query_string`` quietly turns that clause into "match nothing", which
    only the validate API's explanation shows."""
    response = es.indices.validate_query(index=index, query={"query_string": {"query": query}}, explain=True)
    if not response["valid"]:
        return str(response.get("error", response))[:300]
    failed = [e["explanation"] for e in response["explanations"] if 'MatchNoDocsQuery("failed' in e["explanation"]]
    return failed[0][:300] if failed else None


def test_every_converted_query_is_accepted_by_elasticsearch(indexed: dict[str, Any], es_client: Elasticsearch):
    results = conversions()
    assert all(c.query or c.error for c in results), "a rule neither converted nor said why"
    converted = [c for c in results if c.query is not None]
    assert len(converted) >= len(results) // 2
    refused = {c.rule.title: why for c in converted if (why := refusal(es_client, indexed["index"], c.query))}
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
        expected = {e for e in stream[rule.id] if (rule.id, e) not in folded and e not in redacted}
        if not expected:
            continue
        found = hits(es_client, indexed["index"], conversion.query)
        if not conversion.finds_fewer:  # a superset inside a negated exclusion may miss (the query says so)
            assert expected <= found, f"{rule.title}: the query missed {sorted(expected - found)}"
        if not conversion.finds_more:  # an approximate query may find more (it says where)
            assert found <= stream[rule.id], (
                f"{rule.title}: the query found events the stream did not: {found - stream[rule.id]}"
            )
        compared += 1
    assert compared >= 8, "too few rules matched the sample traffic to compare"


@pytest.fixture(scope="module")
def examples_index(es_url: str) -> Iterator[tuple[str, list[str]]]:
    """Every rule's example texts, in edge variants, as ``gen_ai.prompt`` of events in the product's index."""
    es_client = Elasticsearch(es_url, request_timeout=60)
    texts = example_texts()
    with product_indices(es_client, es_url, "abwregex") as settings:
        index = settings.elasticsearch.events_index
        helpers.bulk(
            es_client,
            (
                {"_op_type": "create", "_index": index, "_id": str(n), "_source": {"@timestamp": "2026-01-15T00:00:00Z",
                 "gen_ai": {"prompt": text}}}
                for n, text in enumerate(texts)
            ),
            refresh="wait_for",
        )  # fmt: skip
        yield index, texts
    es_client.close()


def test_each_regex_finds_in_elasticsearch_what_re2_finds(examples_index: tuple[str, list[str]], es_client):
    """The Lucene translation of every regex of the pack, run by Elasticsearch on the lower-cased sub-field, finds
    exactly the texts that RE2 finds (at least those, where the translation says it approximates)."""
    index, texts = examples_index
    compared = with_matches = 0
    for regex in rule_regexes():
        lucene = to_lucene(regex.pattern, dotall=regex.dotall, multiline=regex.multiline)
        searcher = regex.searcher()
        expected = {str(n) for n, text in enumerate(texts) if searcher.search(text)}
        query = " OR ".join("gen_ai.prompt.lc:/" + text.replace("/", "\\/") + "/" for text in lucene.alternatives)
        assert refusal(es_client, index, query) is None
        response = es_client.search(index=index, query={"query_string": {"query": query}}, size=10_000, source=False)
        found = {hit["_id"] for hit in response["hits"]["hits"]}
        missed = sorted(texts[int(n)][:80] for n in expected - found)
        assert not missed, f"{regex.title}: {regex.pattern[:60]!r} missed {missed[:3]}"
        if not lucene.approximations:
            extra = sorted(texts[int(n)][:80] for n in found - expected)
            assert not extra, f"{regex.title}: {regex.pattern[:60]!r} also found {extra[:3]}"
        compared += 1
        with_matches += bool(expected)
    assert compared >= 150 and with_matches >= 0.9 * compared, (compared, with_matches)
