"""Triage logic without Elasticsearch: queries, partial documents, rule statistics from aggregation responses, and the
CLI's wiring and terminal safety."""

from __future__ import annotations

import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st

from app import triage
from app.cli import cli
from app.commands.rules_stats import register as register_stats
from app.sinks.elasticsearch import preserving_update
from app.terminal import terminal_safe
from app.triage import RuleStats, TriageError

ALERT = {
    "@timestamp": "2026-01-15T09:00:00.000Z",
    "event": {"id": "a1", "kind": "alert"},
    "abusewatch": {"status": "open", "count": 1, "event_ids": ["e1"]},
}
T0 = triage.parse_time(ALERT["@timestamp"])


def test_parse_duration() -> None:
    assert triage.parse_duration("24h") == 86400
    assert triage.parse_duration("30d") == 30 * 86400
    assert triage.parse_duration("90s") == 90
    assert triage.parse_duration("2w") == 14 * 86400
    for bad in ("", "h", "24", "-1h", "0d", "1.5h", "3y", "abc"):
        with pytest.raises(ValueError):
            triage.parse_duration(bad)


def test_list_query_has_only_the_given_criteria() -> None:
    assert triage.list_query() == {"bool": {"filter": [{"term": {"event.kind": "alert"}}]}}
    filters = triage.list_query(status="open", severity_min=73, rule_id="r1", user_id="u1", since_seconds=3600)["bool"][
        "filter"
    ]
    assert {"term": {"abusewatch.status": "open"}} in filters
    assert {"range": {"event.severity": {"gte": 73}}} in filters
    assert {"term": {"rule.id": "r1"}} in filters
    assert {"term": {"user.id": "u1"}} in filters
    assert {"range": {"@timestamp": {"gte": "now-3600s"}}} in filters
    assert len(filters) == 6


def test_close_sets_verdict_and_first_time_to_triage() -> None:
    doc = triage.triage_update(ALERT, "closed", by="ana", now=T0 + 90, reason="false_positive", note="lab")
    assert doc == {
        "abusewatch": {
            "status": "closed",
            "triage": {
                "by": "ana",
                "at": "2026-01-15T09:01:30.000Z",
                "time_to_triage_seconds": 90.0,
                "reason": "false_positive",
                "note": "lab",
            },
        }
    }


def test_time_to_triage_is_kept_from_the_first_action() -> None:
    acked = {**ALERT, "abusewatch": {"status": "acknowledged", "triage": {"time_to_triage_seconds": 5.0}}}
    doc = triage.triage_update(acked, "closed", by="ben", now=T0 + 500, reason="true_positive")
    assert "time_to_triage_seconds" not in doc["abusewatch"]["triage"]
    assert doc["abusewatch"]["triage"]["at"] == "2026-01-15T09:08:20.000Z"


def test_time_to_triage_left_out_without_a_timestamp() -> None:
    doc = triage.triage_update({"@timestamp": "garbage"}, "acknowledged", by="ana", now=T0)
    assert doc["abusewatch"] == {"status": "acknowledged", "triage": {"by": "ana", "at": "2026-01-15T09:00:00.000Z"}}


def test_acknowledging_a_closed_alert_is_refused_but_closing_again_is_not() -> None:
    closed = {**ALERT, "abusewatch": {"status": "closed"}}
    with pytest.raises(TriageError, match="already closed"):
        triage.triage_update(closed, "acknowledged", by="ana", now=T0)
    again = triage.triage_update(closed, "closed", by="ana", now=T0, reason="benign_positive")
    assert again["abusewatch"]["triage"]["reason"] == "benign_positive"


def test_closing_again_replaces_the_whole_verdict_and_answers_a_reopening() -> None:
    """A true positive must not keep the false-positive note of the verdict it corrects; a verdict given after the
    stream reopened the alert clears the reopening marks."""
    triaged = {"status": "closed", "triage": {"reason": "false_positive", "note": "QA load test", "by": "ana"}}
    doc = triage.triage_update({**ALERT, "abusewatch": triaged}, "closed", by="bob", now=T0, reason="true_positive")
    assert doc["abusewatch"]["triage"]["note"] is None and doc["abusewatch"]["triage"]["reason"] == "true_positive"
    reopened = {"status": "open", "triage": {"reason": "false_positive", "reopened_because": "severity rose"}}
    acked = triage.triage_update({**ALERT, "abusewatch": reopened}, "acknowledged", by="bob", now=T0)["abusewatch"]
    assert acked["triage"]["reopened_because"] is None and acked["triage"]["reopened_at"] is None
    fresh = triage.triage_update(ALERT, "acknowledged", by="bob", now=T0)["abusewatch"]["triage"]
    assert "reopened_because" not in fresh


def test_a_verdict_is_described_in_words() -> None:
    closed = {"abusewatch": {"status": "closed", "triage": {"reason": "true_positive", "by": "bob", "at": "T"}}}
    assert triage.describe(closed) == "closed as true_positive by bob at T"
    reopened = {"abusewatch": {"status": "open", "triage": {"reopened_because": "severity rose from 47 to 73"}}}
    assert triage.describe(reopened) == "reopened (severity rose from 47 to 73)"
    assert triage.describe({"abusewatch": {"status": "open"}}) == "open"


def test_parse_time() -> None:
    assert triage.parse_time("1970-01-01T00:01:00Z") == 60.0
    assert triage.parse_time("1970-01-01T00:01:00") == 60.0
    assert triage.parse_time("1970-01-01T01:01:00+01:00") == 60.0
    assert triage.parse_time(None) is None
    assert triage.parse_time(12) is None
    assert triage.parse_time("yesterday") is None


def test_preserving_update_leaves_triage_fields_out_of_the_merge() -> None:
    alert = {**ALERT, "abusewatch": {**ALERT["abusewatch"], "count": 7}}
    body = preserving_update(alert)
    merged = body["doc"]["abusewatch"]
    assert "status" not in merged
    assert "triage" not in merged
    assert merged["count"] == 7
    assert alert["abusewatch"]["status"] == "open"  # the input is not modified


def bucket(rule: str, count: int, triaged: int, reasons: dict[str, int], median: float | None) -> dict:
    return {
        "key": rule,
        "doc_count": count,
        "name": {"buckets": [{"key": f"{rule} name", "doc_count": count}]},
        "triaged": {"doc_count": triaged, "time_to_triage": {"values": {"50.0": median}}},
        "verdicts": {
            "doc_count": sum(reasons.values()),
            "reason": {"buckets": [{"key": k, "doc_count": v} for k, v in reasons.items()]},
        },
    }


def test_rule_stats_from_an_aggregation_response() -> None:
    response = {
        "aggregations": {
            "rules": {
                "buckets": [
                    bucket("noisy", 10, 4, {"false_positive": 3, "true_positive": 1}, 120.0),
                    bucket("good", 4, 3, {"true_positive": 2, "benign_positive": 1}, 30.0),
                    bucket("new", 2, 0, {}, None),
                ]
            }
        }
    }
    rows = {row.rule_id: row for row in triage.rule_stats(response, 0.8)}
    assert rows["noisy"].precision == 0.25
    assert rows["noisy"].flagged
    assert rows["noisy"].triaged_share == 0.4
    assert rows["noisy"].median_time_to_triage_seconds == 120.0
    assert rows["noisy"].rule_name == "noisy name"
    assert rows["good"].precision == 1.0  # benign positives are true detections
    assert rows["good"].benign_positives == 1
    assert not rows["good"].flagged
    assert rows["new"].precision is None
    assert not rows["new"].flagged
    assert rows["new"].median_time_to_triage_seconds is None
    assert triage.overall_precision(rows.values()) == 4 / 7
    assert rows["noisy"].as_dict()["flagged"] is True
    assert rows["new"].as_dict()["precision"] is None


def test_rule_stats_of_an_empty_or_missing_index() -> None:
    assert triage.rule_stats({"hits": {"total": {"value": 0}}}, 0.8) == []
    assert triage.rule_stats({"aggregations": {"rules": {"buckets": []}}}, 0.8) == []
    assert triage.overall_precision([]) is None


@given(tp=st.integers(0, 1000), bp=st.integers(0, 1000), fp=st.integers(0, 1000), bar=st.floats(0, 1, allow_nan=False))
def test_precision_bounds_and_flag(tp: int, bp: int, fp: int, bar: float) -> None:
    row = RuleStats("r", "r", tp + bp + fp, tp + bp + fp, tp, bp, fp, None, bar)
    if tp + bp + fp == 0:
        assert row.precision is None
        assert not row.flagged
    else:
        assert 0.0 <= row.precision <= 1.0
        assert row.flagged == (row.precision < bar)


def test_stats_request_aggregates_per_rule_within_the_window() -> None:
    body = triage.stats_request(30 * 86400)
    assert body["size"] == 0
    assert {"range": {"@timestamp": {"gte": "now-2592000s"}}} in body["query"]["bool"]["filter"]
    rules = body["aggs"]["rules"]
    assert rules["terms"]["field"] == "rule.id"
    assert rules["aggs"]["triaged"]["filter"] == {"terms": {"abusewatch.status": ["acknowledged", "closed"]}}
    percentiles = rules["aggs"]["triaged"]["aggs"]["time_to_triage"]["percentiles"]
    assert percentiles["field"] == triage.TIME_TO_TRIAGE_FIELD
    assert rules["aggs"]["verdicts"]["aggs"]["reason"]["terms"]["field"] == triage.REASON_FIELD
    assert "range" not in str(triage.stats_request(None)["query"])


def test_terminal_safe_neutralises_control_characters() -> None:
    hostile = "ok\x1b]0;owned\x07 \x1b[2J\u202etxt.exe\r\x9b"
    safe = terminal_safe(hostile)
    assert not any(ch in safe for ch in "\x1b\x07\u202e\r\x9b")
    assert safe.startswith("ok\\u001b")
    assert terminal_safe("line one\nline\ttwo ünïcödé") == "line one\nline\ttwo ünïcödé"


def test_cli_has_the_triage_commands() -> None:
    groups = {group.name: group.typer_instance for group in cli.registered_groups}
    assert {c.name for c in groups["alerts"].registered_commands} == {"list", "show", "ack", "close"}
    assert "stats" in {c.name for c in groups["rules"].registered_commands}


def test_stats_needs_the_rules_group() -> None:
    with pytest.raises(RuntimeError, match="rules"):
        register_stats(typer.Typer())
