"""Elasticsearch rejecting documents under load, through the real worker: rejections become dead letters, the rest
of each bulk request lands once, nothing is lost and the worker keeps running.

Before the worker starts, this test re-creates its events index with two fields mapped differently from the
bootstrap template (which still supplies every other field): ``user.id`` as ``long``, so a record whose user is not
a number is a mapping conflict, and ``gen_ai.prompt`` as ``keyword`` without ``ignore_above``, so a prompt longer
than Lucene's 32,766-byte term limit makes a document Elasticsearch refuses for its size ("immense term"). Both are
real per-document rejections (HTTP 400) inside bulk requests whose other documents are stored.

The figures go to ``out/reliability/es_rejections.json`` for docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from app.settings import PACKAGE_ROOT
from detectors.normalise import normalise_payload

from .conftest import Services
from .test_stream import Stream, consume_all, count, free_port, openai_record, wait_until

pytestmark = pytest.mark.integration

RECORDS = 3000
CONFLICT_EVERY, CONFLICT_AT = 10, 3  # record n with n % 10 == 3: user "mallory-n", not a number
OVERSIZED_EVERY, OVERSIZED_AT = 100, 50  # record n with n % 100 == 50: a 40,000-character prompt
OVERSIZED_PROMPT = "Please proofread the attached release notes. " * 900  # 40,500 bytes > 32,766
FIGURES = PACKAGE_ROOT.parent / "out" / "reliability" / "es_rejections.json"
WAIT_S = 240


def write_load(path: Path) -> dict[str, set[str]]:
    """``RECORDS`` OpenAI exchanges; returns the event ids each record becomes, by expected outcome."""
    rng = random.Random(61)
    expected: dict[str, set[str]] = {"stored": set(), "mapping_conflict": set(), "oversized": set()}
    with path.open("wb") as handle:
        for number in range(RECORDS):
            record = openai_record(number, rng, prefix="rej-")
            outcome = "stored"
            record["user"] = str(1000 + number % 12)
            if number % CONFLICT_EVERY == CONFLICT_AT:
                record["user"], outcome = f"mallory-{number}", "mapping_conflict"
            elif number % OVERSIZED_EVERY == OVERSIZED_AT:
                record["request"]["messages"][0]["content"], outcome = OVERSIZED_PROMPT, "oversized"
            line = json.dumps(record).encode()
            handle.write(line + b"\n")
            events, letters = normalise_payload(line, f"{path.name}:{number}", max_bytes=4 * 1024 * 1024)
            assert len(events) == 1 and not letters, letters
            expected[outcome].add(events[0].id)
    return expected


@pytest.fixture
def stream(services: Services, tmp_path: Path) -> Iterator[Stream]:
    """An isolated deployment on the shared Kafka and Elasticsearch (own topics, group and indices)."""
    suffix = uuid.uuid4().hex[:10]
    port = free_port()
    env = {name: value for name, value in os.environ.items() if name != "ABW_CONFIG"} | {
        "ABW_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "ABW_ES_URL": services.es_url,
        "ABW_KAFKA__RAW_TOPIC": f"rej-{suffix}-raw",
        "ABW_KAFKA__INTERNAL_TOPIC": f"rej-{suffix}-by-identity",
        "ABW_KAFKA__EVENTS_TOPIC": f"rej-{suffix}-events",
        "ABW_KAFKA__ALERTS_TOPIC": f"rej-{suffix}-alerts",
        "ABW_KAFKA__DEAD_LETTER_TOPIC": f"rej-{suffix}-dead-letter",
        "ABW_KAFKA__STATE_TOPIC": f"rej-{suffix}-state",
        "ABW_KAFKA__CONSUMER_GROUP": f"rej-{suffix}",
        "ABW_KAFKA__PARTITIONS": "3",
        "ABW_ELASTICSEARCH__EVENTS_INDEX": f"logs-abwrej.events-{suffix}",
        "ABW_ELASTICSEARCH__ALERTS_INDEX": f"logs-abwrej.alerts-{suffix}",
        "ABW_ELASTICSEARCH__SHADOW_ALERTS_INDEX": f"logs-abwrej.shadow_alerts-{suffix}",
        "ABW_ELASTICSEARCH__DEAD_LETTER_INDEX": f"logs-abwrej.dead_letter-{suffix}",
        "ABW_ELASTICSEARCH__REQUEST_TIMEOUT_S": "30",
        "ABW_DETECTION__BATCH_TIMEOUT_S": "0.2",
        "ABW_WORKER__WEB_PORT": str(port),
        "ABW_WORKER__HEALTH_CHECK_INTERVAL_S": "1",
        "ABW_WORKER__DATA_DIR": str(tmp_path / "faust"),
    }
    deployment = Stream(env=env, tmp_path=tmp_path, web_port=port)
    yield deployment
    indices = [value for name, value in env.items() if name.startswith("ABW_ELASTICSEARCH__") and "_INDEX" in name]
    with Elasticsearch(services.es_url, request_timeout=30) as es:
        for name in indices:
            with contextlib.suppress(Exception):
                es.indices.delete(index=name, ignore_unavailable=True)
            with contextlib.suppress(Exception):
                es.indices.delete_index_template(name=f"abusewatch-{name}")


def remap_events_index(es: Elasticsearch, index: str) -> None:
    """Re-create the (empty) events index with ``user.id: long`` and ``gen_ai.prompt: keyword``, and without
    ``ignore_malformed``; the bootstrap template still applies to everything else (the settings and mappings of the
    create request win over the template's)."""
    es.indices.delete(index=index)
    es.indices.create(
        index=index,
        settings={"index.mapping.ignore_malformed": False},  # the shipped template drops malformed values instead
        mappings={
            "properties": {
                "user": {"properties": {"id": {"type": "long"}}},
                "gen_ai": {"properties": {"prompt": {"type": "keyword"}}},
            }
        },
    )
    properties = es.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    assert properties["user"]["properties"]["id"]["type"] == "long"
    assert properties["gen_ai"]["properties"]["prompt"] == {"type": "keyword"}
    assert len(properties) > 2, "the bootstrap template no longer applies to the re-created index"
    assert es.indices.get_settings(index=index, name="index.mapping.ignore_malformed")[index]["settings"] == {
        "index": {"mapping": {"ignore_malformed": "false"}}
    }


def event_ids_in(es: Elasticsearch, index: str) -> list[str]:
    """The ``event.id`` of every document in ``index`` (with repeats, so a duplicate would show)."""
    es.indices.refresh(index=index)
    response = es.search(index=index, size=10_000, source=["event.id"], query={"match_all": {}})
    return [hit["_source"]["event"]["id"] for hit in response["hits"]["hits"]]


def rejected_letters(es: Elasticsearch, index: str) -> list[dict[str, Any]]:
    try:
        es.indices.refresh(index=index)
        response = es.search(index=index, size=10_000, query={"term": {"reason": "elasticsearch_rejected"}})
    except Exception:  # not created yet
        return []
    return [hit["_source"] for hit in response["hits"]["hits"]]


def rejected_id(letter: dict[str, Any]) -> str:
    """The event id in a rejection's origin ``elasticsearch:<index>/<id>``."""
    return letter["origin"].rsplit("/", 1)[1]


def metric(text: str, name: str) -> float:
    return sum(float(value) for value in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def test_rejected_documents_become_dead_letters_and_the_rest_lands_once(
    stream: Stream, es_client: Elasticsearch
) -> None:
    expected = write_load(stream.tmp_path / "load.jsonl")
    rejected = expected["mapping_conflict"] | expected["oversized"]
    assert len(expected["mapping_conflict"]) == RECORDS // CONFLICT_EVERY
    assert len(expected["oversized"]) == RECORDS // OVERSIZED_EVERY
    stream.cli("bootstrap")
    remap_events_index(es_client, stream.events_index)
    with stream.worker() as worker:
        started = time.monotonic()
        stream.cli("produce", str(stream.tmp_path / "load.jsonl"), "--batch-records", "50")
        wait_until(
            lambda: (
                count(es_client, stream.events_index) >= len(expected["stored"])
                and len(rejected_letters(es_client, stream.dead_letter_index)) >= len(rejected)
            ),
            f"{len(expected['stored'])} events and {len(rejected)} rejections in Elasticsearch",
            timeout=WAIT_S,
        )
        seconds = time.monotonic() - started
        time.sleep(3)  # anything still in flight would now show up as an extra document
        landed = event_ids_in(es_client, stream.events_index)
        letters = rejected_letters(es_client, stream.dead_letter_index)
        status, health = stream.health()
        metrics = stream.metrics()
        assert worker.poll() is None, "the worker stopped"
    in_topic = consume_all(stream, stream.dead_letter_topic)

    # Every other document landed exactly once.
    duplicates = len(landed) - len(set(landed))
    assert duplicates == 0
    assert set(landed) == expected["stored"]
    # Every rejected document is one dead letter in the index, with the reason and Elasticsearch's error.
    by_id = {rejected_id(letter): letter for letter in letters}
    assert len(by_id) == len(letters) and set(by_id) == rejected
    for event_id in expected["mapping_conflict"]:
        detail = by_id[event_id]["detail"]
        assert detail.startswith("HTTP 400: document_parsing_exception"), detail
        assert "failed to parse field [user.id] of type [long]" in detail, detail
    for event_id in expected["oversized"]:
        detail = by_id[event_id]["detail"]
        assert detail.startswith("HTTP 400: document_parsing_exception"), detail
        assert "failed to parse field [gen_ai.prompt] of type [keyword]" in detail, detail
    assert all(letter["origin"].startswith(f"elasticsearch:{stream.events_index}/") for letter in letters)
    # ... and on the dead-letter topic (at least once there; the index keeps one per id).
    topic_rejections = [letter for letter in in_topic if letter["reason"] == "elasticsearch_rejected"]
    assert {rejected_id(letter) for letter in topic_rejections} == rejected
    assert Counter(letter["reason"] for letter in in_topic) == Counter(
        {"elasticsearch_rejected": len(topic_rejections)}
    )
    # Nothing lost: events in = landed + dead letters.
    assert len(landed) + len(by_id) == RECORDS
    # The worker kept running and healthy, and counted the rejections.
    assert status == 200 and health["consuming"], health
    assert metric(metrics, "abusewatch_es_rejections_total") >= len(rejected)

    figures = {
        "events_in": RECORDS,
        "landed": len(landed),
        "dead_letters": len(by_id),
        "dead_letters_mapping_conflict": len(expected["mapping_conflict"]),
        "dead_letters_oversized": len(expected["oversized"]),
        "dead_letter_topic_records": len(topic_rejections),
        "duplicates_in_index": duplicates,
        "lost": RECORDS - len(landed) - len(by_id),
        "es_rejections_metric": metric(metrics, "abusewatch_es_rejections_total"),
        "seconds_to_settle": round(seconds, 1),
    }
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    FIGURES.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))
