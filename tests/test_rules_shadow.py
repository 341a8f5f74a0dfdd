"""``abusewatch rules shadow``: the aggregation request, the rows made from its response (without Elasticsearch) and
the command around them (Elasticsearch replaced by a client returning a canned response)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import typer
from elastic_transport import ConnectionError as TransportConnectionError
from typer.testing import CliRunner

from app import triage
from app.cli import cli
from app.commands.alerts import OlderAlerts, older_alerts_note
from app.commands.rules_shadow import register as register_shadow
from app.settings import ElasticsearchSettings

SHADOW, ALERTS = "abusewatch.shadow_alerts-default", "logs-abusewatch.alerts-default"
DAY_MS = 86_400_000
NOV_20 = 1_763_596_800_000  # 2025-11-20T00:00:00Z in epoch milliseconds


def shadow_bucket(
    rule: str,
    alerts: int,
    *,
    queue: int = 0,
    exceptions: dict[str, int] | None = None,
    other_exceptions: int = 0,
    days: dict[str, int] | None = None,
    top: dict[str, int] | None = None,
    distinct: dict[str, int] | None = None,
    first_ms: float | None = None,
    last_ms: float | None = None,
    last_seen_ms: float | None = None,
    detections: float = 0.0,
) -> dict[str, Any]:
    """A ``rules`` bucket as Elasticsearch answers :func:`triage.shadow_request`."""
    exceptions = exceptions or {}
    days = days or {}
    return {
        "key": rule,
        "doc_count": alerts + queue,
        "queue": {"doc_count": queue},
        "shadow": {
            "doc_count": alerts,
            "name": {"buckets": [{"key": f"{rule} name", "doc_count": alerts}] if alerts else []},
            "detections": {"value": detections},
            "suppressed": {
                "doc_count": sum(exceptions.values()) + other_exceptions,
                "exceptions": {
                    "sum_other_doc_count": other_exceptions,
                    "buckets": [{"key": key, "doc_count": count} for key, count in exceptions.items()],
                },
            },
            **{name: {"value": (distinct or {}).get(name, 0)} for name in triage.DISTINCT_FIELDS},
            "first_seen": {"value": first_ms},
            "last_timestamp": {"value": last_ms},
            "last_seen": {"value": last_seen_ms},
            "per_day": {
                "buckets": [
                    {"key_as_string": day, "key": NOV_20 + n * DAY_MS, "doc_count": count}
                    for n, (day, count) in enumerate(days.items())
                ]
            },
            "top_identities": {"buckets": [{"key": key, "doc_count": count} for key, count in (top or {}).items()]},
        },
    }


def response(*buckets: dict[str, Any]) -> dict[str, Any]:
    return {"hits": {"total": {"value": 0}, "hits": []}, "aggregations": {"rules": {"buckets": list(buckets)}}}


TEST_RULE = shadow_bucket(
    "abusewatch-anomaly-scraping-campaign-enumeration",
    12,
    days={"2025-11-20": 2, "2025-11-22": 10},
    top={"user:u1": 3, "key:k9": 2},
    distinct={"identities": 9, "users": 7, "api_keys": 4, "source_ips": 5, "related_users": 60},
    first_ms=NOV_20 + 3_600_000,
    last_ms=NOV_20 + 2 * DAY_MS,
    last_seen_ms=NOV_20 + 2 * DAY_MS + 90_000,
    detections=15.0,
)
SUPPRESSED_ONLY = shadow_bucket(
    "prompt_injection-ignore-previous", 5, exceptions={"qa-load-test": 4, "red-team": 1}, days={"2025-11-21": 5}
)
PROMOTED = shadow_bucket("jailbreak-dan", 3, queue=8, days={"2025-11-20": 3})
QUEUE_ONLY = shadow_bucket("secrets-aws-key", 0, queue=40)


def test_request_splits_each_rule_between_the_shadow_and_the_alerts_index() -> None:
    body = triage.shadow_request(7 * 86400, SHADOW, ALERTS)
    assert body["size"] == 0
    assert body["query"]["bool"]["filter"] == [
        {"term": {"event.kind": "alert"}},
        {"range": {"@timestamp": {"gte": "now-604800s"}}},
    ]
    rules = body["aggs"]["rules"]
    assert rules["terms"]["field"] == "rule.id"
    assert rules["terms"]["order"][0] == {"shadow": "desc"}  # rules with shadow alerts are never cut by the size
    assert rules["aggs"]["shadow"]["filter"] == {"term": {"_index": SHADOW}}
    assert rules["aggs"]["queue"] == {"filter": {"term": {"_index": ALERTS}}}
    shadow = rules["aggs"]["shadow"]["aggs"]
    assert shadow["suppressed"]["filter"] == {"exists": {"field": "abusewatch.exception.id"}}
    assert shadow["suppressed"]["aggs"]["exceptions"]["terms"]["field"] == "abusewatch.exception.id"
    fields = {name: shadow[name]["cardinality"]["field"] for name in triage.DISTINCT_FIELDS}
    assert fields == {
        "identities": "abusewatch.identity_key",
        "users": "user.id",
        "api_keys": "abusewatch.api_key_hash",
        "source_ips": "source.ip",
        "related_users": "related.user",
    }
    assert shadow["per_day"]["date_histogram"]["calendar_interval"] == "1d"
    assert shadow["top_identities"]["terms"] == {"field": "abusewatch.identity_key", "size": 5}
    assert shadow["detections"] == {"sum": {"field": "abusewatch.count"}}


def test_request_for_one_rule_and_for_all_time() -> None:
    one = triage.shadow_request(3600, SHADOW, ALERTS, "jailbreak-dan")
    assert {"term": {"rule.id": "jailbreak-dan"}} in one["query"]["bool"]["filter"]
    assert triage.shadow_request(None, SHADOW, ALERTS)["query"]["bool"]["filter"] == [{"term": {"event.kind": "alert"}}]


def test_no_buckets_no_aggregations_no_rows() -> None:
    assert triage.shadow_stats(response(), 86400) == []
    assert triage.shadow_stats({"hits": {"total": {"value": 0}, "hits": []}}, 86400) == []  # no index matched
    assert triage.shadow_stats({}, None) == []


def test_a_rule_in_test() -> None:
    (row,) = triage.shadow_stats(response(TEST_RULE), 7 * 86400)
    assert row.rule_id == "abusewatch-anomaly-scraping-campaign-enumeration"
    assert row.rule_name == f"{row.rule_id} name"
    assert (row.shadow_alerts, row.in_test, row.suppressed, row.exceptions) == (12, 12, 0, {})
    assert row.why == "test"
    assert row.detections == 15
    assert (row.identities, row.users, row.api_keys, row.source_ips, row.related_users) == (9, 7, 4, 5, 60)
    assert row.per_day == {"2025-11-20": 2, "2025-11-22": 10}
    assert row.peak_day == 10
    assert row.alerts_per_day == pytest.approx(12 / 7)
    assert row.first_seen == "2025-11-20T01:00:00.000Z"
    assert row.last_seen == "2025-11-22T00:01:30.000Z"  # abusewatch.last_seen, later than any @timestamp
    assert row.top_identities == [("user:u1", 3), ("key:k9", 2)]
    assert row.queue_alerts == 0


def test_a_rule_whose_shadow_alerts_all_come_from_exceptions() -> None:
    (row,) = triage.shadow_stats(response(SUPPRESSED_ONLY), 86400)
    assert (row.shadow_alerts, row.in_test, row.suppressed) == (5, 0, 5)
    assert row.exceptions == {"qa-load-test": 4, "red-team": 1}
    assert row.why == "exception"
    assert row.other_exceptions == 0
    many = shadow_bucket("r", 9, exceptions={"a": 2}, other_exceptions=3)
    (row,) = triage.shadow_stats(response(many), 86400)
    assert (row.in_test, row.suppressed, row.other_exceptions, row.why) == (4, 5, 3, "test + exception")


def test_a_rule_in_both_indices_carries_its_queue_alerts_and_queue_only_rules_are_left_out() -> None:
    rows = triage.shadow_stats(response(TEST_RULE, SUPPRESSED_ONLY, PROMOTED, QUEUE_ONLY), 86400)
    assert [row.rule_id for row in rows] == [
        "abusewatch-anomaly-scraping-campaign-enumeration",
        "prompt_injection-ignore-previous",
        "jailbreak-dan",
    ]
    promoted = rows[2]
    assert (promoted.shadow_alerts, promoted.queue_alerts) == (3, 8)


def test_missing_values_read_as_none_or_zero() -> None:
    """A rule whose alerts lack a field (an older or hand-written alert) still gets its row."""
    sparse = {"key": "r", "doc_count": 2, "shadow": {"doc_count": 2}}
    (row,) = triage.shadow_stats(response(sparse), None)
    assert (row.in_test, row.identities, row.queue_alerts, row.rule_name) == (2, 0, 0, "")
    assert (row.first_seen, row.last_seen, row.alerts_per_day, row.peak_day) == (None, None, None, 0)
    only_timestamp = shadow_bucket("r", 1, first_ms=NOV_20, last_ms=NOV_20 + 1000)
    (row,) = triage.shadow_stats(response(only_timestamp), 86400)
    assert row.last_seen == "2025-11-20T00:00:01.000Z"
    no_string = {
        "key": "r",
        "doc_count": 1,
        "shadow": {"doc_count": 1, "per_day": {"buckets": [{"key": NOV_20, "doc_count": 1}]}},
    }
    assert triage.shadow_stats(response(no_string), None)[0].per_day == {"2025-11-20": 1}


def test_as_dict_is_json_with_the_derived_figures() -> None:
    (row,) = triage.shadow_stats(response(TEST_RULE), 7 * 86400)
    data = json.loads(json.dumps(row.as_dict()))
    assert data["top_identities"] == [{"identity_key": "user:u1", "alerts": 3}, {"identity_key": "key:k9", "alerts": 2}]
    assert data["why"] == "test"
    assert data["alerts_per_day"] == 1.71
    assert data["days_with_alerts"] == 2
    assert data["peak_day"] == 10
    assert data["per_day"] == {"2025-11-20": 2, "2025-11-22": 10}


# -- the command ------------------------------------------------------------------------------------------------------


class CannedClient:
    """Answers every search with ``answer`` (or raises it), remembering the requests."""

    def __init__(self, answer: dict[str, Any] | Exception) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []

    def search(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def close(self) -> None:
        pass


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> CannedClient:
    canned = CannedClient(response(TEST_RULE, SUPPRESSED_ONLY, PROMOTED, QUEUE_ONLY))

    def connect(settings: ElasticsearchSettings) -> CannedClient:
        return canned

    monkeypatch.setattr(triage, "connect", connect)
    return canned


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, ["rules", "shadow", *args], env={"ABW_CONFIG": "", "COLUMNS": "250"})


def test_json_has_a_row_per_shadow_rule_from_one_search_of_both_indices(client: CannedClient) -> None:
    result = invoke("--json", "--since", "2d", "--rule", "jailbreak-dan")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["rule_id"] for row in rows] == [
        "abusewatch-anomaly-scraping-campaign-enumeration",
        "prompt_injection-ignore-previous",
        "jailbreak-dan",
    ]
    assert rows[2]["queue_alerts"] == 8
    assert rows[1]["exceptions"] == {"qa-load-test": 4, "red-team": 1}
    (request,) = client.requests
    assert request["index"] == f"{SHADOW},{ALERTS}"
    assert request["ignore_unavailable"] is True
    assert request["aggs"] == triage.shadow_request(2 * 86400, SHADOW, ALERTS, "jailbreak-dan")["aggs"]
    assert request["query"] == triage.shadow_request(2 * 86400, SHADOW, ALERTS, "jailbreak-dan")["query"]


def test_table_and_summary(client: CannedClient) -> None:
    result = invoke()
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"Shadow alerts per rule, last 7d ({SHADOW}; queue: {ALERTS})" in text
    assert "user:u1 (3), key:k9 (2)" in text
    assert "qa-load-test (4), red-team (1)" in text
    assert "2025-11-20 01:00" in text
    assert (
        "3 rules, 20 shadow alerts (15 of rules in test, 5 suppressed by exceptions); also in the queue: jailbreak-dan"
        in text
    )
    assert "secrets-aws-key" not in text


def test_identities_and_exception_ids_cannot_drive_the_terminal(client: CannedClient) -> None:
    hostile = "user:\x1b]0;owned\x07\x1b[2J\u202eevil"
    client.answer = response(shadow_bucket("r", 2, exceptions={"ex\x1b[31m": 2}, top={hostile: 2}))
    result = invoke()
    assert result.exit_code == 0, result.output
    assert not any(ch in result.stdout for ch in "\x1b\x07\u202e")
    assert "\\u001b]0;owned" in result.stdout


def test_no_shadow_alerts_is_an_empty_report(client: CannedClient) -> None:
    client.answer = {"hits": {"total": {"value": 0}, "hits": []}}  # neither index exists
    result = invoke()
    assert result.exit_code == 0, result.output
    assert "0 rules, 0 shadow alerts" in result.stdout
    assert json.loads(invoke("--json").stdout) == []


def test_unreachable_elasticsearch_exits_1_with_one_line(client: CannedClient) -> None:
    client.answer = TransportConnectionError("connection refused")
    result = invoke()
    assert result.exit_code == 1
    assert result.stderr.startswith("elasticsearch at ")
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.output


def test_a_bad_period_exits_2_before_any_search(client: CannedClient) -> None:
    result = invoke("--since", "week")
    assert result.exit_code == 2
    assert client.requests == []


def test_shadow_is_a_rules_command_and_needs_the_group() -> None:
    groups = {group.name: group.typer_instance for group in cli.registered_groups}
    assert "shadow" in {command.name for command in groups["rules"].registered_commands}
    with pytest.raises(RuntimeError, match="rules"):
        register_shadow(typer.Typer())


# -- an empty window over an index of older alerts (replayed history keeps its event time) ---------------------------

JAN_15 = 1_768_478_400_000  # 2026-01-15T12:00:00Z in epoch milliseconds
EMPTY_WINDOW = {"hits": {"total": {"value": 0}, "hits": []}, "aggregations": {"rules": {"buckets": []}}}
OLDER = {"hits": {"total": {"value": 5}, "hits": []}, "aggregations": {"newest": {"value": float(JAN_15)}}}


class QueuedClient(CannedClient):
    """Answers each search with the next of ``answers``."""

    def __init__(self, *answers: dict[str, Any]) -> None:
        super().__init__({})
        self.answers = list(answers)

    def search(self, **request: Any) -> dict[str, Any]:
        self.answer = self.answers.pop(0)
        return super().search(**request)


def test_an_empty_window_names_the_older_shadow_alerts_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    queued = QueuedClient(EMPTY_WINDOW, OLDER)
    monkeypatch.setattr(triage, "connect", lambda settings: queued)
    result = invoke("--rule", "pirate")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[-2].startswith("0 rules, 0 shadow alerts")
    assert lines[-1].startswith(
        "5 older shadow alerts outside --since 7d (newest: 2026-01-15 12:00 UTC): --since counts in event time "
        "(@timestamp), which replayed or historical traffic keeps; --since "
    )
    older = queued.requests[1]
    assert older["index"] == SHADOW and older["size"] == 0
    filters = older["query"]["bool"]["filter"]
    assert {"range": {"@timestamp": {"lt": "now-604800s"}}} in filters and {"term": {"rule.id": "pirate"}} in filters


def test_with_json_the_note_goes_to_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triage, "connect", lambda settings: QueuedClient(EMPTY_WINDOW, OLDER))
    result = invoke("--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
    assert result.stderr.startswith("5 older shadow alerts outside --since 7d")


def test_rules_stats_on_an_empty_window_names_the_older_alerts(monkeypatch: pytest.MonkeyPatch) -> None:
    queued = QueuedClient(EMPTY_WINDOW, OLDER)
    monkeypatch.setattr(triage, "connect", lambda settings: queued)
    result = CliRunner().invoke(cli, ["rules", "stats"], env={"ABW_CONFIG": "", "COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1].startswith("5 older alerts outside --since 30d (newest: 2026-01-15")
    assert queued.requests[1]["index"] == ALERTS


def test_no_note_without_older_alerts_and_the_since_that_reaches_the_newest() -> None:
    assert older_alerts_note(OlderAlerts(0, None), "7d", "alerts", 0.0) is None
    now = JAN_15 / 1000 + 400.5 * 86400
    note = older_alerts_note(OlderAlerts(2, JAN_15 / 1000), "7d", "alerts", now)
    assert note is not None and note.endswith("; --since 402d reaches the newest")
