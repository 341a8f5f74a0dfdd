"""The Kibana saved objects, checked structurally (no Kibana here), and ``abusewatch kibana import`` against a small
HTTP server standing in for Kibana's ``_import`` API.

Every field the objects use (search columns and sorts, KQL queries, Lens columns and filters, time fields) must be
mapped by the index templates in deploy/elasticsearch for the indices the data view matches. The saved searches on the
shadow alerts index are also run, in effect, against shadow alerts the pipeline really writes.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from app.cli import cli
from app.commands.kibana import ASSETS, ImportRequest, multipart_file, summarise
from app.settings import ElasticsearchSettings
from app.sinks.dead_letters import dead_letter_document, failure
from app.sinks.es_setup import targets
from detectors.alerting import AlertGrouper
from detectors.base import Detection, Detector, Findings, RuleInfo
from detectors.event import Event, Identity
from detectors.exceptions import load_exceptions
from detectors.normalise import normalise_payload
from detectors.pipeline import Pipeline
from detectors.redact import Redactor
from tests.fixtures.http import JsonHandler, serving

TEMPLATES = ElasticsearchSettings().templates_dir
TYPES = {"index-pattern", "search", "lens", "dashboard"}
KQL_FIELD = re.compile(r"([@A-Za-z_][\w.@]*)\s*(?::|<=|>=|<|>)")
KQL_EXISTS = re.compile(r"(not )?([@A-Za-z_][\w.@]*) : \*")
GRID_COLUMNS = 48


def load_objects() -> list[dict[str, Any]]:
    return [json.loads(line) for line in ASSETS.read_text().splitlines() if line.strip()]


OBJECTS = load_objects()
BY_KEY = {(obj["type"], obj["id"]): obj for obj in OBJECTS}


# -- index templates -> mapped fields ---------------------------------------------------------------------------------


def mapped_fields(properties: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of every mapped field, multi-fields (``.keyword``) included."""
    fields = set()
    for name, spec in properties.items():
        path = prefix + name
        if "properties" in spec:
            fields |= mapped_fields(spec["properties"], path + ".")
        else:
            fields.add(path)
        fields |= {f"{path}.{sub}" for sub in spec.get("fields", {})}
    return fields


def template_fields(kind: str) -> set[str]:
    """Fields mapped by index template ``kind`` (events, alerts, ...) through its component templates."""
    index = json.loads((TEMPLATES / "index" / f"{kind}.json").read_text())
    fields: set[str] = set()
    for component in index.get("composed_of", []):
        body = json.loads((TEMPLATES / "component" / f"{component}.json").read_text())
        fields |= mapped_fields(body["template"].get("mappings", {}).get("properties", {}))
    return fields | mapped_fields(index.get("template", {}).get("mappings", {}).get("properties", {}))


def data_view_fields(title: str) -> set[str]:
    """Fields of the indices a data view's patterns match (the configured default index names)."""
    patterns = title.split(",")
    kinds = [
        kind
        for kind, index in targets(ElasticsearchSettings()).items()
        if any(fnmatch.fnmatch(index, pattern) for pattern in patterns)
    ]
    assert kinds, f"data view {title} matches none of the abusewatch indices"
    return set().union(*(template_fields(kind) for kind in kinds))


def kql_fields(query: str) -> set[str]:
    return set(KQL_FIELD.findall(query))


# -- what each object uses ------------------------------------------------------------------------------------------


def reference(obj: dict[str, Any], name: str) -> dict[str, Any]:
    found = [ref for ref in obj["references"] if ref["name"] == name]
    assert len(found) == 1, f"{obj['type']} {obj['id']}: reference {name} missing or repeated"
    return found[0]


@dataclass
class Usage:
    data_view: str
    fields: set[str] = field(default_factory=set)


def search_usage(obj: dict[str, Any]) -> Usage:
    attributes = obj["attributes"]
    source = json.loads(attributes["kibanaSavedObjectMeta"]["searchSourceJSON"])
    data_view = reference(obj, source["indexRefName"])["id"]
    fields = (
        set(attributes["columns"]) | {sort[0] for sort in attributes["sort"]} | kql_fields(source["query"]["query"])
    )
    return Usage(data_view, fields)


def lens_usages(obj: dict[str, Any]) -> list[Usage]:
    state = obj["attributes"]["state"]
    usages = []
    for layer_id, layer in state["datasourceStates"]["formBased"]["layers"].items():
        data_view = reference(obj, f"indexpattern-datasource-layer-{layer_id}")["id"]
        fields = kql_fields(state["query"]["query"])
        for column in layer["columns"].values():
            if column.get("sourceField") != "___records___":
                fields.add(column["sourceField"])
            if "filter" in column:
                fields |= kql_fields(column["filter"]["query"])
        usages.append(Usage(data_view, fields))
    return usages


def usages() -> list[tuple[str, Usage]]:
    found = []
    for obj in OBJECTS:
        if obj["type"] == "search":
            found.append((obj["id"], search_usage(obj)))
        elif obj["type"] == "lens":
            found += [(obj["id"], usage) for usage in lens_usages(obj)]
    return found


# -- structure ------------------------------------------------------------------------------------------------------


def test_every_line_is_a_saved_object_of_a_known_type() -> None:
    lines = [line for line in ASSETS.read_text().splitlines() if line.strip()]
    assert len(lines) == len(OBJECTS) >= 10
    for obj in OBJECTS:
        assert obj["type"] in TYPES
        assert obj["id"].startswith("abusewatch-")
        assert isinstance(obj["attributes"], dict)
        assert isinstance(obj["references"], list)
        assert obj["attributes"].get("title")
    assert len(BY_KEY) == len(OBJECTS), "ids must be unique"


def test_the_required_objects_are_there() -> None:
    titles = {(obj["type"], obj["attributes"]["title"]) for obj in OBJECTS}
    assert ("index-pattern", "logs-abusewatch.alerts-*") in titles
    assert ("index-pattern", "logs-abusewatch.events-*") in titles
    assert ("search", "AbuseWatch: open high-severity alerts") in titles
    assert ("search", "AbuseWatch: identity timeline") in titles
    assert ("index-pattern", "abusewatch.shadow_alerts-*") in titles
    assert ("search", "AbuseWatch: alerts suppressed by exceptions") in titles
    assert ("search", "AbuseWatch: shadow alerts of rules in test") in titles
    assert sum(1 for kind, _ in titles if kind == "dashboard") >= 1
    high = search_usage(BY_KEY[("search", "abusewatch-search-open-high-alerts")])
    assert {"abusewatch.status", "event.severity"} <= high.fields


def test_references_resolve_to_objects_in_the_file() -> None:
    for obj in OBJECTS:
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in BY_KEY, f"{obj['id']} -> {ref['type']} {ref['id']} is not in the file"


def test_data_views_have_a_mapped_time_field() -> None:
    for obj in OBJECTS:
        if obj["type"] == "index-pattern":
            attributes = obj["attributes"]
            assert attributes["timeFieldName"] in data_view_fields(attributes["title"])
            for text in ("fields", "fieldAttrs", "fieldFormatMap", "runtimeFieldMap", "sourceFilters"):
                json.loads(attributes[text])


def test_lens_layers_are_consistent() -> None:
    for obj in OBJECTS:
        if obj["type"] != "lens":
            continue
        state = obj["attributes"]["state"]
        layers = state["datasourceStates"]["formBased"]["layers"]
        for layer in layers.values():
            assert layer["columnOrder"] == list(layer["columns"])
        columns = {column for layer in layers.values() for column in layer["columns"]}
        visualization = state["visualization"]
        used = set()
        for layer in visualization.get("layers", [visualization]):
            assert layer["layerId"] in layers
            used |= {layer.get(key) for key in ("xAccessor", "splitAccessor", "metricAccessor") if layer.get(key)}
            used |= set(layer.get("accessors", []))
            used |= {column["columnId"] for column in layer.get("columns", [])}
        assert used == columns, f"{obj['id']}: visualization and layer columns differ"
        for layer in layers.values():
            for column in layer["columns"].values():
                order = column.get("params", {}).get("orderBy", {})
                if order.get("type") == "column":
                    assert order["columnId"] in layer["columns"]


def test_dashboard_panels_resolve_and_fit_the_grid() -> None:
    for obj in OBJECTS:
        if obj["type"] != "dashboard":
            continue
        panels = json.loads(obj["attributes"]["panelsJSON"])
        json.loads(obj["attributes"]["optionsJSON"])
        json.loads(obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
        assert len({panel["panelIndex"] for panel in panels}) == len(panels)
        cells: set[tuple[int, int]] = set()
        for panel in panels:
            ref = reference(obj, f"{panel['panelIndex']}:{panel['panelRefName']}")
            assert ref["type"] == panel["type"]
            grid = panel["gridData"]
            assert grid["i"] == panel["panelIndex"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= GRID_COLUMNS
            area = {
                (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not area & cells, f"panel {panel['panelIndex']} overlaps another"
            cells |= area


def test_every_field_used_is_mapped_by_the_templates() -> None:
    found = usages()
    assert len(found) >= 8
    for object_id, usage in found:
        title = BY_KEY[("index-pattern", usage.data_view)]["attributes"]["title"]
        missing = usage.fields - data_view_fields(title)
        assert not missing, f"{object_id} uses fields not in the templates for {title}: {sorted(missing)}"


def test_the_field_check_catches_an_unmapped_field() -> None:
    assert kql_fields('abusewatch.status : "open" and event.severity >= 73') == {"abusewatch.status", "event.severity"}
    assert "gen_ai.prompt" not in data_view_fields("logs-abusewatch.alerts-*")
    assert "rule.name" not in data_view_fields("logs-abusewatch.events-*")
    assert {"rule.name", "gen_ai.prompt"} <= data_view_fields("logs-abusewatch.events-*,logs-abusewatch.alerts-*")


# -- the shadow alerts searches against real shadow alerts ------------------------------------------------------------


class StableAndTestRule(Detector):
    """Raises a detection of a stable rule and one of a rule in ``status: test`` per event."""

    name = "stable-and-test"

    def detect(self, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        return [
            Detection(
                rule=RuleInfo(
                    id=f"r-{status}", name=f"Rule in {status}", category="scraping", level="high", status=status
                ),
                event_ids=[event.id],
                timestamp=event.timestamp,
                identity=event.identity,
                message=f"r-{status} fired",
            )
            for event in events
            for status in ("stable", "test")
        ]


def shadow_alerts(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Shadow alerts by rule id: ``r-stable`` suppressed by an exception, ``r-test`` from a rule in test."""
    exception = {
        "id": "qa-load-test",
        "rules": ["r-stable"],
        "trust_forwarded_ip": True,  # user.id and source.ip are both client-chosen without it
        "match": {"user.id": ["qa-bot"], "source.ip|cidr": ["10.20.0.0/16"]},
        "reason": "QA load test, ticket QA-12",
        "expires": "2099-01-01",
    }
    path = tmp_path / "exceptions.yml"
    path.write_text(yaml.safe_dump([exception]))
    redactor = Redactor(b"k")
    pipeline = Pipeline([StableAndTestRule()], redactor, AlertGrouper(redactor), load_exceptions(path))
    event = Event(id="e1", timestamp=1.8e9, dataset="test", identity=Identity(user_id="qa-bot", source_ip="10.20.0.5"))
    result = pipeline.process([event])
    assert result.alerts == []
    return {document["rule"]["id"]: document for document in result.shadow_alerts}


def dotted(document: dict[str, Any], path: str) -> Any:
    value: Any = document
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def selects(query: str, document: dict[str, Any]) -> bool:
    """Evaluates the one KQL form the shadow searches use: ``[not] FIELD : *`` (the field exists)."""
    parsed = KQL_EXISTS.fullmatch(query)
    assert parsed, f"not an existence query: {query}"
    negated, path = parsed.groups()
    return (dotted(document, path) is not None) != bool(negated)


@pytest.mark.parametrize(
    ("search_id", "listed_rule"),
    [("abusewatch-search-suppressed-alerts", "r-stable"), ("abusewatch-search-test-rule-alerts", "r-test")],
)
def test_shadow_searches_split_the_shadow_alerts_and_show_their_fields(
    tmp_path: Path, search_id: str, listed_rule: str
) -> None:
    documents = shadow_alerts(tmp_path)
    assert set(documents) == {"r-stable", "r-test"}
    search = BY_KEY[("search", search_id)]
    usage = search_usage(search)
    assert usage.data_view == "abusewatch-shadow-alerts"
    query = json.loads(search["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])["query"]["query"]
    assert [rule for rule, document in documents.items() if selects(query, document)] == [listed_rule]
    listed = documents[listed_rule]
    missing = [column for column in search["attributes"]["columns"] if dotted(listed, column) is None]
    assert not missing, f"{search_id}: columns absent from the alert documents it lists: {missing}"


def test_the_identity_timeline_lists_identities_without_a_user() -> None:
    """Scrapers and API-key clients often send no user: their identity is an API key or an IP, and the timeline
    must list their events and alerts (it once queried ``user.id : *`` and hid them)."""
    redactor = Redactor(b"k")
    pipeline = Pipeline([StableAndTestRule()], redactor, AlertGrouper(redactor))
    identities = [Identity(user_id="u1"), Identity(api_key_hash="5f3a9c"), Identity(source_ip="203.0.113.9")]
    events = [
        Event(id=f"e{n}", timestamp=1.8e9 + n, dataset="test", identity=identity)
        for n, identity in enumerate(identities)
    ]
    result = pipeline.process(events)
    search = BY_KEY[("search", "abusewatch-search-identity-timeline")]
    query = json.loads(search["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])["query"]["query"]
    for kind, documents in (("events", result.events), ("alerts", result.alerts)):
        assert len(documents) == 3, kind
        assert all(selects(query, document) for document in documents), f"the timeline hides {kind}: {query}"
        for sort_field, _direction in search["attributes"]["sort"]:
            assert all(dotted(document, sort_field) is not None for document in documents), f"{kind} lack {sort_field}"


def test_the_exceptions_chart_counts_suppressed_detections() -> None:
    (usage,) = lens_usages(BY_KEY[("lens", "abusewatch-lens-suppressed-by-exception")])
    assert usage.data_view == "abusewatch-shadow-alerts"
    assert {"abusewatch.exception.id", "abusewatch.count"} <= usage.fields


# -- the import command against a stand-in for Kibana -----------------------------------------------------------------


@dataclass
class Recorded:
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class FakeKibana:
    url: str
    recorded: Recorded
    answer: dict[str, Any]
    status: int = 200


@pytest.fixture
def kibana() -> Iterator[FakeKibana]:
    """An HTTP server that records one import request and answers like Kibana (success and errors settable)."""
    state = FakeKibana(url="", recorded=Recorded(), answer={})

    class Handler(JsonHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            state.recorded = Recorded(
                self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length)
            )
            self.reply_json(state.status, state.answer)

    with serving(Handler) as url:
        state.url = url
        yield state


def success_answer() -> dict[str, Any]:
    results = [{"type": o["type"], "id": o["id"], "meta": {"title": o["attributes"]["title"]}} for o in OBJECTS]
    return {"success": True, "successCount": len(results), "successResults": results}


def test_import_posts_the_file_with_xsrf_and_api_key(kibana: FakeKibana) -> None:
    kibana.answer = success_answer()
    result = CliRunner().invoke(cli, ["kibana", "import", "--url", kibana.url + "/", "--api-key", "c2VjcmV0"])
    assert result.exit_code == 0, result.output
    recorded = kibana.recorded
    assert recorded.path == "/api/saved_objects/_import?overwrite=true"
    assert recorded.headers["kbn-xsrf"]
    assert recorded.headers["authorization"] == "ApiKey c2VjcmV0"
    boundary = recorded.headers["content-type"].split("boundary=")[1]
    assert recorded.body.startswith(f"--{boundary}\r\n".encode())
    assert b'name="file"; filename="abusewatch.ndjson"' in recorded.body
    assert ASSETS.read_bytes() in recorded.body
    assert recorded.body.endswith(f"--{boundary}--\r\n".encode())
    assert f"{len(OBJECTS)} objects imported, 0 failed" in result.output
    assert "ok     dashboard abusewatch-overview AbuseWatch overview" in result.output


def test_import_into_a_space_with_basic_auth(kibana: FakeKibana, tmp_path: Path) -> None:
    kibana.answer = {"success": True, "successCount": 1, "successResults": [{"type": "lens", "id": "x"}]}
    one = tmp_path / "one.ndjson"
    one.write_text(ASSETS.read_text().splitlines()[0] + "\n")
    args = ["kibana", "import", "--url", kibana.url, "--space", "soc team", "--user", "elastic", "--password", "pw"]
    result = CliRunner().invoke(cli, [*args, "--file", str(one), "--no-overwrite"])
    assert result.exit_code == 0, result.output
    assert kibana.recorded.path == "/s/soc%20team/api/saved_objects/_import?overwrite=false"
    assert kibana.recorded.headers["authorization"] == "Basic " + base64.b64encode(b"elastic:pw").decode()
    assert b'filename="one.ndjson"' in kibana.recorded.body


def test_import_fails_when_an_object_fails(kibana: FakeKibana) -> None:
    kibana.answer = {
        "success": False,
        "successCount": 2,
        "successResults": [{"type": "index-pattern", "id": "abusewatch-alerts", "meta": {"title": "t"}}],
        "errors": [
            {
                "id": "abusewatch-overview",
                "type": "dashboard",
                "error": {"type": "missing_references", "references": [{"type": "lens", "id": "gone"}]},
            },
            {"id": "x", "type": "lens", "error": {"type": "unknown", "message": "bad state"}},
        ],
    }
    result = CliRunner().invoke(cli, ["kibana", "import", "--url", kibana.url])
    assert result.exit_code == 1
    assert "FAILED dashboard abusewatch-overview: missing_references: missing lens/gone" in result.output
    assert "FAILED lens x: unknown (bad state)" in result.output
    assert "2 objects imported, 2 failed" in result.output


def test_import_fails_on_a_refused_request(kibana: FakeKibana) -> None:
    kibana.status = 401
    kibana.answer = {"statusCode": 401, "error": "Unauthorized", "message": "missing authentication credentials"}
    result = CliRunner().invoke(cli, ["kibana", "import", "--url", kibana.url])
    assert result.exit_code == 1
    assert "HTTP 401 missing authentication credentials" in result.output


def test_import_fails_when_kibana_is_unreachable(kibana: FakeKibana) -> None:
    result = CliRunner().invoke(cli, ["kibana", "import", "--url", "http://127.0.0.1:1"])
    assert result.exit_code == 1
    assert "kibana at http://127.0.0.1:1" in result.output


def test_summarise_and_multipart_are_pure() -> None:
    lines, ok = summarise({"success": True, "successCount": 0})
    assert ok
    assert lines == ["0 objects imported, 0 failed"]
    body = multipart_file("file", "a.ndjson", b"{}\n", "B")
    assert body == (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.ndjson"\r\n'
        b"Content-Type: application/ndjson\r\n\r\n{}\n\r\n--B--\r\n"
    )
    assert ImportRequest(url="http://k", ndjson=b"", filename="f", space="default").endpoint() == (
        "http://k/api/saved_objects/_import?overwrite=true"
    )


def test_kibana_import_reads_the_file_named_by_abw_kibana_assets(kibana: FakeKibana, tmp_path: Path) -> None:
    """The image points ``ABW_KIBANA_ASSETS`` at its copy of the objects (tests/test_deploy_image.py)."""
    kibana.answer = success_answer()
    assets = tmp_path / "installed" / "abusewatch.ndjson"
    assets.parent.mkdir()
    assets.write_text('{"type": "index-pattern", "id": "only-in-this-copy", "attributes": {}}\n')
    result = CliRunner().invoke(cli, ["kibana", "import", "--url", kibana.url], env={"ABW_KIBANA_ASSETS": str(assets)})
    assert result.exit_code == 0, result.output
    assert assets.read_bytes() in kibana.recorded.body


def test_shadow_alerts_stay_out_of_what_elastic_security_lists() -> None:
    """Security lists ``event.kind: alert`` documents of ``logs-*`` as external alerts: the alerts kept out of the
    queue (rules in test, detections an exception suppressed) must not be there, the queue's must."""
    es = ElasticsearchSettings()
    assert not fnmatch.fnmatch(es.shadow_alerts_index, "logs-*")
    assert fnmatch.fnmatch(es.alerts_index, "logs-*")
    shadow_view = BY_KEY[("index-pattern", "abusewatch-shadow-alerts")]["attributes"]["title"]
    assert fnmatch.fnmatch(es.shadow_alerts_index, shadow_view) and not shadow_view.startswith("logs-")


def test_the_dead_letter_search_shows_what_every_dead_letter_has_and_hides_the_raw_record() -> None:
    """Operators see dead letters in Kibana (there was no view): every column is a field of the dead letters the
    stream and the normaliser write, and ``raw``, which may hold the record, is filtered out of Discover."""
    search = BY_KEY[("search", "abusewatch-search-dead-letters")]
    usage = search_usage(search)
    assert usage.data_view == "abusewatch-dead-letters"
    view = BY_KEY[("index-pattern", "abusewatch-dead-letters")]["attributes"]
    assert fnmatch.fnmatch(ElasticsearchSettings().dead_letter_index, view["title"])
    assert {"value": "raw"} in json.loads(view["sourceFilters"])
    (from_the_normaliser,) = normalise_payload(b"{broken", "kafka:raw/0@7", max_bytes=1 << 20)[1]
    letters = [
        dead_letter_document(from_the_normaliser, stage="ingest"),
        dead_letter_document(failure("pipeline_error", "RuntimeError: boom", "event:e1", size=3), stage="detect"),
    ]
    for letter in letters:
        missing = [column for column in search["attributes"]["columns"] if dotted(letter, column) is None]
        assert not missing, f"columns absent from {letter['reason']} dead letters: {missing}"
