"""Bulk op types against a real Elasticsearch: alerts are upserted in place, every other document is written once.

A record ingested twice after a partition move is detected again with state that has moved on; its second rendering
must not replace the event document written the first time (``app.sinks.es_setup.op_types``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from elasticsearch import Elasticsearch, helpers

from app.settings import Settings
from app.sinks import es_setup

from .conftest import product_indices


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
