"""Dead-letter documents and the Elasticsearch templates bootstrap installs (no cluster needed)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import ApiError

from app.settings import ElasticsearchSettings, Settings
from app.sinks import es_setup
from app.sinks.dead_letters import dead_letter_document, failure
from detectors.event import TEXT_FIELDS
from detectors.normalise.fields import REQUEST_PARAMS

TEMPLATES = ElasticsearchSettings().templates_dir


def test_dead_letter_document_is_ecs_and_keeps_the_reason() -> None:
    letter = failure("malformed:json", "unexpected character", "kafka:raw/0@17", size=12, raw=b"{oops")
    document = dead_letter_document(letter, stage="ingest")
    assert document["reason"] == "malformed:json"
    assert document["origin"] == "kafka:raw/0@17"
    assert document["raw"] == "{oops"
    assert document["event"]["kind"] == "pipeline_error"
    assert document["abusewatch"]["stage"] == "ingest"
    assert document["@timestamp"].endswith("Z")
    assert "timestamp" not in document


def test_stream_failures_keep_bytes_that_are_not_utf8_as_base64() -> None:
    raw = b"\x1f\x8b\x08 truncated gzip \xff"
    letter = failure("normaliser_error", "boom", "kafka:raw/0@18", size=len(raw), raw=raw)
    assert (letter["raw_encoding"], base64.b64decode(letter["raw"])) == ("base64", raw)
    cut = failure("normaliser_error", "boom", "kafka:raw/0@19", size=len(raw), raw=raw, raw_limit=4)
    assert base64.b64decode(cut["raw"]) == raw[:4]  # still decodable: ``size`` says what was cut
    text = failure("elasticsearch_rejected", "too big", "es:x/1", raw="é".encode() * 3, raw_limit=5)
    assert (text["raw"], text["raw_encoding"]) == ("éé... [cut: 4 of 6 bytes kept]", None)


def test_dead_letter_id_is_deterministic_per_failure() -> None:
    first = dead_letter_document(failure("r", "d", "kafka:raw/0@1"), stage="ingest")
    again = dead_letter_document(failure("r", "d", "kafka:raw/0@1"), stage="ingest")
    other = dead_letter_document(failure("r", "d", "kafka:raw/0@2"), stage="ingest")
    assert first["event"]["id"] == again["event"]["id"] != other["event"]["id"]


def test_dead_letter_detail_is_bounded_and_bad_timestamps_replaced() -> None:
    letter = {"reason": "r", "detail": "x" * 10_000, "origin": "o", "timestamp": "yesterday"}
    document = dead_letter_document(letter, stage="detect")
    assert len(document["detail"]) == 2000
    assert document["@timestamp"][:2] == "20"


@pytest.mark.parametrize("path", sorted(TEMPLATES.rglob("*.json")), ids=lambda p: p.name)
def test_template_files_are_valid_json(path: Path) -> None:
    assert isinstance(json.loads(path.read_text()), dict)


def test_index_templates_compose_existing_components_and_match_exactly_their_target() -> None:
    components = {path.stem for path in (TEMPLATES / "component").glob("*.json")}
    settings = ElasticsearchSettings(events_index="logs-x.events-t1")
    for kind, target in es_setup.targets(settings).items():
        body = es_setup.desired_index_template(kind, target, TEMPLATES, data_stream=False, ilm_policy=None)
        # each deployment's own copies: bootstrapping one never changes another's mappings on a shared cluster
        owners, names = zip(*(name.split("@") for name in body["composed_of"]), strict=True)
        assert set(owners) == {es_setup.index_template_name(target)} and set(names) <= components
        assert body["index_patterns"] == [target]
        assert "data_stream" not in body
        assert body["priority"] > 100  # above the built-in logs-*-* template of the full distribution


def test_data_stream_and_ilm_variants() -> None:
    body = es_setup.desired_index_template("alerts", "logs-a", TEMPLATES, data_stream=True, ilm_policy="p")
    assert body["data_stream"] == {}
    assert body["template"]["settings"]["index.lifecycle.name"] == "p"


def test_content_hash_changes_with_content_only() -> None:
    one = es_setup.with_hash({"_meta": {}, "a": 1})
    assert one == es_setup.with_hash({"_meta": {}, "a": 1})
    assert one["_meta"][es_setup.HASH_KEY] != es_setup.with_hash({"_meta": {}, "a": 2})["_meta"][es_setup.HASH_KEY]


@pytest.mark.parametrize("field", TEXT_FIELDS)
def test_detection_text_fields_have_the_lowercased_subfield_sigma_queries_use(field: str) -> None:
    gen_ai = json.loads((TEMPLATES / "component" / "abusewatch-gen-ai.json").read_text())
    node = gen_ai["template"]["mappings"]
    for part in field.split("."):
        node = node["properties"][part]
    assert node["type"] == "text"
    assert node["fields"]["lc"]["normalizer"] == "lowercase"  # case-insensitive contains, like the engine
    assert node["fields"]["lc"]["ignore_above"] * 4 <= 32766  # below Lucene's term limit in UTF-8


@pytest.mark.parametrize(
    ("mode", "available", "expected"),
    [("auto", True, True), ("auto", False, False), ("never", True, False), ("always", True, True)],
)
def test_use_data_streams(mode: str, available: bool, expected: bool) -> None:
    settings = ElasticsearchSettings(data_streams=mode)
    capabilities = es_setup.Capabilities(data_streams=available, ilm=available)
    assert es_setup.use_data_streams(settings, capabilities) is expected


def test_data_streams_always_on_a_cluster_without_them_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no data stream API"):
        es_setup.use_data_streams(ElasticsearchSettings(data_streams="always"), es_setup.Capabilities(False, False))


def test_dead_letter_policy_uses_the_retention_setting() -> None:
    days = Settings().detection.dead_letter_retention_days
    policy = es_setup.dead_letter_policy(days)
    assert policy["policy"]["phases"]["delete"]["min_age"] == f"{days}d"


class Answering:
    """A client whose ``GET`` answers with ``status`` (200: found), and 403 to the paths under ``forbidden``."""

    def __init__(self, status: int, forbidden: str = "") -> None:
        self.status = status
        self.forbidden = forbidden

    def perform_request(self, method: str, path: str, **_: object) -> dict:
        status = 403 if self.forbidden and path.startswith(self.forbidden) else self.status
        if status == 200:
            return {}
        meta = ApiResponseMeta(status, "1.1", HttpHeaders(), 0.0, NodeConfig("http", "localhost", 9200))
        raise ApiError(f"HTTP {status}", meta, {"error": {"type": "test", "reason": "refused"}})


def test_a_refusal_is_no_answer_about_what_a_target_is() -> None:
    """A key without view_index_metadata must not take a data stream for a plain index (alert updates would then be
    refused for ever): 401/403 are raised, so start-up reports the missing privilege."""
    settings = ElasticsearchSettings()
    assert set(es_setup.op_types(Answering(200), settings).values()) == {"create"}  # type: ignore[arg-type]
    assert "update" in es_setup.op_types(Answering(404), settings).values()  # type: ignore[arg-type]
    for status in (401, 403):
        with pytest.raises(ApiError):
            es_setup.op_types(Answering(status), settings)  # type: ignore[arg-type]


def test_the_worker_asks_only_about_data_streams_not_ilm() -> None:
    """The worker's least-privilege key (``deploy/elasticsearch/README.md``) cannot read ILM policies: asking would
    keep the worker waiting for ever (a 403 is raised)."""
    settings = ElasticsearchSettings()
    assert set(es_setup.op_types(Answering(200, forbidden="/_ilm"), settings).values()) == {"create"}  # type: ignore[arg-type]


def test_every_request_parameter_kept_is_mapped() -> None:
    """Mapped explicitly, its type never depends on the first document of an index (``logprobs`` is a boolean in
    Chat Completions and a count in the legacy Completions API: a keyword holds both, so daily indices agree)."""
    gen_ai = json.loads((TEMPLATES / "component" / "abusewatch-gen-ai.json").read_text())
    request = gen_ai["template"]["mappings"]["properties"]["gen_ai"]["properties"]["request"]["properties"]
    assert set(REQUEST_PARAMS) <= set(request)
    assert request["logprobs"]["type"] == "keyword"
