"""Bulk op types against a real Elasticsearch: alerts are upserted in place, every other document is written once.

A record ingested twice after a partition move is detected again with state that has moved on; its second rendering
must not replace the event document written the first time (``app.sinks.es_setup.op_types``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest
from elasticsearch import Elasticsearch, helpers

from app.settings import Settings, load_settings
from app.sinks import es_setup


@pytest.fixture
def installed(es_url: str, es_client: Elasticsearch) -> Iterator[Settings]:
    suffix = uuid.uuid4().hex[:10]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ABW_ELASTICSEARCH__URL", es_url)
        for kind in ("events", "alerts", "shadow_alerts", "dead_letter"):
            patch.setenv(f"ABW_ELASTICSEARCH__{kind.upper()}_INDEX", f"logs-abwops.{kind}-{suffix}")
        settings = load_settings()
    es_setup.install(es_client, settings)
    yield settings
    for target in es_setup.targets(settings.elasticsearch).values():
        with contextlib.suppress(Exception):
            es_client.indices.delete(index=target, ignore_unavailable=True)
        with contextlib.suppress(Exception):
            es_client.indices.delete_index_template(name=es_setup.index_template_name(target))


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
