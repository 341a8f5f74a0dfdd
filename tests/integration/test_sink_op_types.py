"""Bulk op types against a real Elasticsearch: alerts are upserted in place (never shrinking), every other document
is written once.

A record ingested twice after a partition move is detected again with state that has moved on; its second rendering
must not replace the event document written the first time (``app.sinks.es_setup.op_types``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch, Elasticsearch, helpers

from app.settings import ElasticsearchSettings, Settings
from app.sinks import es_setup
from app.sinks.elasticsearch import Document, ElasticsearchSink, client_options
from detectors.documents import supersedes

from .conftest import product_indices


async def written(es: ElasticsearchSettings, alert: dict[str, Any]) -> int:
    """Write one alert through the stream's sink; how many renderings it stored or kept out (1), never rejected."""
    client = AsyncElasticsearch(**client_options(es))
    try:
        sink = ElasticsearchSink(client, op_type_for=lambda index: "update")
        report = await sink.write([Document(es.alerts_index, alert["event"]["id"], alert)])
        assert report.rejections == []
        return report.stored + report.kept_larger
    finally:
        await client.close()


@pytest.fixture
def installed(es_url: str, es_client: Elasticsearch) -> Iterator[Settings]:
    with product_indices(es_client, es_url, "abwops") as settings:
        yield settings


def test_alerts_are_updated_and_a_second_rendering_of_an_event_is_not_stored(
    installed: Settings, es_client: Elasticsearch
) -> None:
    es = installed.elasticsearch
    op_types = es_setup.op_types(es_client, es)
    assert op_types[es.alerts_index] == op_types[es.shadow_alerts_index] == "update"
    assert op_types[es.events_index] == op_types[es.dead_letter_index] == "create"
    first = {"@timestamp": "2026-01-15T10:00:00Z", "event": {"id": "e1"}, "abusewatch": {"identity": {"late": False}}}
    again = {"@timestamp": "2026-01-15T10:00:00Z", "event": {"id": "e1"}, "abusewatch": {"identity": {"late": True}}}
    for document in (first, again):
        action = {"_op_type": op_types[es.events_index], "_index": es.events_index, "_id": "e1", "_source": document}
        helpers.bulk(es_client, [action], raise_on_error=False, refresh="wait_for")
    hits = es_client.search(index=es.events_index, query={"ids": {"values": ["e1"]}})["hits"]["hits"]
    assert [hit["_source"]["abusewatch"]["identity"]["late"] for hit in hits] == [False]


def test_an_alert_is_never_replaced_by_a_smaller_rendering_and_keeps_its_verdict(
    installed: Settings, es_client: Elasticsearch
) -> None:
    """The sink's update script and replay's :func:`supersedes` keep the same version of an alert.

    A late detection re-opens a forgotten group under the same id with a count of one; the grown alert must stay,
    and the analyst's verdict must survive every re-write that does replace it.
    """
    es = installed.elasticsearch

    def rendering(count: int, message: str) -> dict[str, Any]:
        return {
            "@timestamp": "2026-01-15T10:00:00Z",
            "message": message,
            "event": {"id": "a1", "kind": "alert"},
            "abusewatch": {"status": "open", "count": count, "first_seen": "2026-01-15T10:00:00Z"},
        }

    def write(alert: dict[str, Any]) -> None:
        assert asyncio.run(written(es, alert)) == 1

    def stored() -> dict[str, Any]:
        es_client.indices.refresh(index=es.alerts_index)
        return es_client.get(index=es.alerts_index, id="a1")["_source"]

    sequence = [rendering(3, "grown to 3"), rendering(5, "grown to 5"), rendering(1, "late"), rendering(5, "again")]
    expected = ["grown to 3", "grown to 5", "grown to 5", "again"]  # an equal count re-renders the same group
    kept: dict[str, Any] | None = None
    for number, alert in enumerate(sequence):
        write(alert)
        if number == 0:
            es_client.update(
                index=es.alerts_index,
                id="a1",
                doc={"abusewatch": {"status": "closed", "triage": {"reason": "true_positive"}}},
                refresh="wait_for",
            )
        kept = alert if kept is None or supersedes(alert, kept) else kept  # what replay keeps
        now = stored()
        assert now["message"] == kept["message"] == expected[number]
        assert now["abusewatch"]["count"] == kept["abusewatch"]["count"]
        if number > 0:
            assert now["abusewatch"]["status"] == "closed"
            assert now["abusewatch"]["triage"]["reason"] == "true_positive"


def test_a_closed_alert_whose_severity_rises_is_open_again_with_its_verdict(
    installed: Settings, es_client: Elasticsearch
) -> None:
    es = installed.elasticsearch

    def rendering(count: int, severity: int) -> dict[str, Any]:
        return {
            "@timestamp": "2026-01-15T10:00:00Z",
            "event": {"id": "a2", "kind": "alert", "severity": severity},
            "abusewatch": {"status": "open", "count": count, "last_seen": f"2026-01-15T10:0{count}:00Z"},
        }

    def stored() -> dict[str, Any]:
        return es_client.get(index=es.alerts_index, id="a2")["_source"]["abusewatch"]

    assert asyncio.run(written(es, rendering(1, 47))) == 1
    es_client.update(
        index=es.alerts_index,
        id="a2",
        doc={"abusewatch": {"status": "closed", "triage": {"reason": "false_positive"}}},
        refresh="wait_for",
    )
    asyncio.run(written(es, rendering(2, 47)))
    assert stored()["status"] == "closed"  # grew at the same severity: the verdict stands
    asyncio.run(written(es, rendering(3, 73)))
    now = stored()
    assert now["status"] == "open" and now["count"] == 3
    assert now["triage"]["reason"] == "false_positive"
    assert now["triage"]["reopened_because"] == "severity rose from 47 to 73 after the alert was closed"
    es_client.indices.refresh(index=es.alerts_index)
    hits = es_client.search(
        index=es.alerts_index, query={"term": {"abusewatch.triage.reopened_at": "2026-01-15T10:03:00Z"}}
    )["hits"]["hits"]
    assert [hit["_id"] for hit in hits] == ["a2"]  # mapped as a date, searchable
