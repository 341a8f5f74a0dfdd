"""``abusewatch rules shadow`` against the real Elasticsearch: the shadow alerts and alerts ``abusewatch replay``
writes for the bundled samples, with an alert exception that suppresses one stable rule for one API key, loaded
into indices made from the deploy/elasticsearch templates; every figure of the command is checked against the
documents themselves.

Shadow alerts come from both causes: rules in ``test`` status, and the excepted detections of a stable rule that also
keeps alerts in the queue (its other keys). One shadow alert of a rule in test is also copied into the alerts index,
as a rule promoted mid-period would write it. Each test gets its own indices (and index templates), removed
afterwards.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch, helpers
from typer.testing import CliRunner

from app.cli import cli
from app.settings import PACKAGE_ROOT, Settings
from app.triage import parse_time
from detectors.documents import iso_time

from .conftest import product_indices

SAMPLES = sorted(str(path) for path in (PACKAGE_ROOT / "samples").glob("*.jsonl"))
ALL_TIME = "3650d"  # the samples are dated early 2026
EXCEPTION_ID = "qa-regression-suite"


def ok(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": "250"})  # table cells on one line each
    assert result.exit_code == 0, f"abusewatch {' '.join(args)} failed: {result.output}"
    return result.stdout


def shadow_rows(*args: str) -> dict[str, dict[str, Any]]:
    return {row["rule_id"]: row for row in json.loads(ok("rules", "shadow", "--json", *args))}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _replay(out: Path) -> dict[str, list[dict[str, Any]]]:
    ok("replay", *SAMPLES, "--alerts-out", str(out / "alerts.jsonl"), "--shadow-alerts-out", str(out / "shadow.jsonl"))
    return {name: _read_jsonl(out / f"{name}.jsonl") for name in ("alerts", "shadow")}


@dataclass
class Replayed:
    alerts: list[dict[str, Any]]
    shadow: list[dict[str, Any]]
    excepted_rule: str


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Replayed:
    """The samples replayed with an exception on one API key for a stable rule that alerts for two keys or more."""
    plain = _replay(tmp_path_factory.mktemp("plain"))
    keys_by_rule: dict[str, set[str]] = defaultdict(set)
    for alert in plain["alerts"]:
        if alert["rule"]["id"] != "abusewatch-entity-risk" and "api_key_hash" in alert["abusewatch"]:
            keys_by_rule[alert["rule"]["id"]].add(alert["abusewatch"]["api_key_hash"])
    rule = min(rule for rule, keys in keys_by_rule.items() if len(keys) >= 2)
    excepted_key = min(keys_by_rule[rule])
    out = tmp_path_factory.mktemp("excepted")
    exceptions = out / "exceptions.yml"
    entry = {
        "id": EXCEPTION_ID,
        "rules": [rule],
        "match": {"abusewatch.api_key_hash": [excepted_key]},
        "reason": "QA regression suite runs on its own key (integration test)",
        "expires": "2099-12-31",
    }
    exceptions.write_text(json.dumps([entry]))  # JSON is YAML
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ABW_DETECTION__EXCEPTIONS_PATH", str(exceptions))
        documents = _replay(out)
    return Replayed(documents["alerts"], documents["shadow"], rule)


@dataclass
class Deployment:
    settings: Settings
    queue: list[dict[str, Any]]
    shadow: list[dict[str, Any]]
    excepted_rule: str
    promoted_rule: str


@pytest.fixture
def deployment(es_client: Elasticsearch, es_url: str, replayed: Replayed) -> Iterator[Deployment]:
    in_test = [doc for doc in replayed.shadow if "exception" not in doc["abusewatch"]]
    assert in_test, "the samples must raise alerts of rules in test"
    assert any(doc["abusewatch"].get("exception", {}).get("id") == EXCEPTION_ID for doc in replayed.shadow)
    promoted = in_test[0]
    as_queued = {
        **promoted,
        "event": {**promoted["event"], "id": "promoted-" + promoted["event"]["id"]},
        "abusewatch": {**promoted["abusewatch"], "shadow": False},
    }
    queue = [*replayed.alerts, as_queued]
    shadow = [*replayed.shadow, *(later(promoted, days, user) for days, user in ((1, None), (1, "extra-1"), (3, None)))]
    with product_indices(es_client, es_url, "abwshadow") as settings:
        es = settings.elasticsearch
        actions = [
            {"_op_type": "index", "_index": index, "_id": doc["event"]["id"], "_source": doc}
            for index, docs in ((es.alerts_index, queue), (es.shadow_alerts_index, shadow))
            for doc in docs
        ]
        helpers.bulk(es_client, actions, refresh="wait_for")
        yield Deployment(settings, queue, shadow, replayed.excepted_rule, promoted["rule"]["id"])


def later(alert: dict[str, Any], days: int, user: str | None) -> dict[str, Any]:
    """Another alert of the rule ``days`` later (by another user if given), grown for two hours and 4 detections:
    what a few more days of production add, so identities, days and last seen differ from the first alert's."""
    start = datetime.fromisoformat(alert["@timestamp"].replace("Z", "+00:00")) + timedelta(days=days)
    identity = {"user": {"id": user}, "abusewatch": {"identity_key": f"user:{user}"}} if user else {}
    return {
        **alert,
        **({"user": identity["user"]} if user else {}),
        "@timestamp": iso_time(start.timestamp()),
        "event": {**alert["event"], "id": f"{alert['event']['id']}-{days}-{user}"},
        "abusewatch": {
            **alert["abusewatch"],
            **identity.get("abusewatch", {}),
            "count": 4,
            "first_seen": iso_time(start.timestamp()),
            "last_seen": iso_time(start.timestamp() + 7200),
        },
    }


def _distinct(docs: list[dict[str, Any]], *path: str) -> int:
    values: set[Any] = set()
    for doc in docs:
        node: Any = doc
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        values.update(node if isinstance(node, list) else [node] if node is not None else [])
    return len(values)


def expected_row(rule: str, shadow: list[dict[str, Any]], queue: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``rules shadow --json`` must say of ``rule``, computed from the documents written."""
    docs = [doc for doc in shadow if doc["rule"]["id"] == rule]
    exceptions = Counter(doc["abusewatch"]["exception"]["id"] for doc in docs if "exception" in doc["abusewatch"])
    identities = Counter(doc["abusewatch"]["identity_key"] for doc in docs)
    lasts = [parse_time(time) for doc in docs for time in (doc["@timestamp"], doc["abusewatch"].get("last_seen"))]
    return {
        "rule_name": docs[0]["rule"]["name"],
        "shadow_alerts": len(docs),
        "detections": sum(doc["abusewatch"]["count"] for doc in docs),
        "in_test": len(docs) - sum(exceptions.values()),
        "suppressed": sum(exceptions.values()),
        "exceptions": dict(exceptions),
        "identities": len(identities),
        "users": _distinct(docs, "user", "id"),
        "api_keys": _distinct(docs, "abusewatch", "api_key_hash"),
        "source_ips": _distinct(docs, "source", "ip"),
        "related_users": _distinct(docs, "related", "user"),
        "first_seen": min(doc["@timestamp"] for doc in docs),
        "last_seen_epoch": max(time for time in lasts if time is not None),
        "per_day": dict(Counter(doc["@timestamp"][:10] for doc in docs)),
        "top_identities": sorted(identities.items(), key=lambda item: (-item[1], item[0]))[:5],
        "queue_alerts": sum(1 for doc in queue if doc["rule"]["id"] == rule),
    }


def test_every_figure_matches_the_documents(deployment: Deployment) -> None:
    rows = shadow_rows("--since", ALL_TIME)
    assert set(rows) == {doc["rule"]["id"] for doc in deployment.shadow}
    for rule, row in rows.items():
        expected = expected_row(rule, deployment.shadow, deployment.queue)
        assert parse_time(row["last_seen"]) == pytest.approx(expected.pop("last_seen_epoch"), abs=0.001), rule
        assert parse_time(row["first_seen"]) == parse_time(expected.pop("first_seen")), rule
        top = expected.pop("top_identities")
        assert {(item["identity_key"], item["alerts"]) for item in row["top_identities"]} == set(top), rule
        assert {key: row[key] for key in expected} == expected, rule
    excepted = rows[deployment.excepted_rule]
    assert excepted["why"] == "exception"
    assert excepted["exceptions"] == {EXCEPTION_ID: excepted["shadow_alerts"]}
    assert excepted["queue_alerts"] >= 1  # its other keys' alerts still reach the queue
    promoted = rows[deployment.promoted_rule]
    assert promoted["why"] == "test"
    assert promoted["queue_alerts"] == 1
    assert (promoted["shadow_alerts"], promoted["identities"], promoted["days_with_alerts"]) == (4, 2, 3)
    assert promoted["top_identities"][0]["alerts"] == 3
    assert promoted["last_seen"] > max(doc["@timestamp"] for doc in deployment.shadow)  # abusewatch.last_seen


def test_one_rule_the_period_and_the_table(deployment: Deployment) -> None:
    assert set(shadow_rows("--since", ALL_TIME, "--rule", deployment.excepted_rule)) == {deployment.excepted_rule}
    assert shadow_rows("--since", "1h") == {}  # the samples are older than an hour
    table = " ".join(ok("rules", "shadow", "--since", ALL_TIME).split())
    es = deployment.settings.elasticsearch
    assert f"Shadow alerts per rule, last {ALL_TIME} ({es.shadow_alerts_index}; queue: {es.alerts_index})" in table
    assert EXCEPTION_ID in table
    also_in_queue = table[table.index("also in the queue: ") :]
    assert deployment.excepted_rule in also_in_queue
    assert deployment.promoted_rule in also_in_queue


def test_missing_indices_are_an_empty_result(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABW_ELASTICSEARCH__ALERTS_INDEX", "logs-abwshadow.absent-alerts")
    rows = shadow_rows("--since", ALL_TIME)
    assert set(rows) == {doc["rule"]["id"] for doc in deployment.shadow}
    assert all(row["queue_alerts"] == 0 for row in rows.values())
    monkeypatch.setenv("ABW_ELASTICSEARCH__SHADOW_ALERTS_INDEX", "logs-abwshadow.absent-shadow")
    assert shadow_rows("--since", ALL_TIME) == {}
    assert "0 rules, 0 shadow alerts" in ok("rules", "shadow", "--since", ALL_TIME)
