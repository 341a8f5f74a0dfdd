"""Triage against the real Elasticsearch: alerts from ``abusewatch replay`` on the bundled samples, loaded with their
ids into indices made from the deploy/elasticsearch templates, then listed, shown, acknowledged and closed through
the CLI, and ``rules stats`` reflecting the verdicts.

Each test gets its own indices (and index templates), removed afterwards.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch, helpers
from typer.testing import CliRunner

from app import triage
from app.cli import cli
from app.commands import alerts as alerts_command
from app.settings import PACKAGE_ROOT, Settings
from app.sinks.elasticsearch import preserving_update
from app.triage import DOCUMENTS_PER_EVENT_ID, TriageError

from .conftest import product_indices

SAMPLES = sorted(str(path) for path in (PACKAGE_ROOT / "samples").glob("*.jsonl"))
ALL_TIME = "3650d"  # the samples are dated early 2026


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def ok(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, f"abusewatch {' '.join(args)} failed: {result.output}"
    return result.output


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("replay")
    ok("replay", *SAMPLES, "--alerts-out", str(out / "alerts.jsonl"), "--events-out", str(out / "events.jsonl"))
    return {name: _read_jsonl(out / f"{name}.jsonl") for name in ("alerts", "events")}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Deployment:
    settings: Settings
    alerts: list[dict[str, Any]]
    events: list[dict[str, Any]]

    @property
    def alerts_index(self) -> str:
        return self.settings.elasticsearch.alerts_index

    def alerts_of(self, rule_id: str) -> list[dict[str, Any]]:
        return [alert for alert in self.alerts if alert["rule"]["id"] == rule_id]

    def stored(self, es: Elasticsearch, alert_id: str) -> dict[str, Any]:
        return es.get(index=self.alerts_index, id=alert_id)["_source"]


@pytest.fixture
def deployment(
    es_client: Elasticsearch,
    es_url: str,
    replayed: dict[str, list[dict[str, Any]]],
) -> Iterator[Deployment]:
    with product_indices(es_client, es_url, "abwtriage") as settings:
        es = settings.elasticsearch
        actions = [
            {"_op_type": "index", "_index": index, "_id": doc["event"][id_field], "_source": doc}
            for index, docs, id_field in (
                (es.alerts_index, replayed["alerts"], "id"),
                (es.events_index, replayed["events"], "hash"),  # as the stream writes them
            )
            for doc in docs
        ]
        helpers.bulk(es_client, actions, refresh="wait_for")
        yield Deployment(settings, replayed["alerts"], replayed["events"])


def listed(*args: str) -> list[dict[str, Any]]:
    return json.loads(ok("alerts", "list", "--json", "--limit", "1000", *args))


def stats(*args: str) -> dict[str, dict[str, Any]]:
    return {row["rule_id"]: row for row in json.loads(ok("rules", "stats", "--json", "--since", ALL_TIME, *args))}


def test_list_shows_the_open_alerts_and_filters(deployment: Deployment) -> None:
    alerts = deployment.alerts
    assert alerts, "the samples must raise alerts"
    assert {a["id"] for a in listed("--status", "open")} == {a["event"]["id"] for a in alerts}
    assert listed("--status", "closed") == []
    top = max(a["event"]["severity"] for a in alerts)
    expected = {a["event"]["id"] for a in alerts if a["event"]["severity"] >= top}
    assert {a["id"] for a in listed("--severity-min", str(top))} == expected
    rule_id = alerts[0]["rule"]["id"]
    assert {a["id"] for a in listed("--rule", rule_id)} == {a["event"]["id"] for a in deployment.alerts_of(rule_id)}
    user = next(a["user"]["id"] for a in alerts if "user" in a)
    assert {a["id"] for a in listed("--user", user)} == {
        a["event"]["id"] for a in alerts if a.get("user", {}).get("id") == user
    }
    assert listed("--since", "1h") == []  # the samples are older than an hour
    assert len(listed("--limit", "1")) == 1
    table = ok("alerts", "list", "--limit", "1000")
    assert f"{len(alerts)} alerts in {deployment.alerts_index}" in table


def test_verdicts_change_rule_precision(deployment: Deployment, es_client: Elasticsearch) -> None:
    by_rule: dict[str, list[str]] = defaultdict(list)
    for alert in deployment.alerts:
        by_rule[alert["rule"]["id"]].append(alert["event"]["id"])
    noisy = next(rule for rule, ids in by_rule.items() if len(ids) >= 2)
    precise = next(rule for rule, ids in by_rule.items() if rule != noisy)
    before = stats()
    assert before[noisy]["alerts"] == len(by_rule[noisy])
    assert before[noisy]["precision"] is None
    assert before[noisy]["triaged_share"] == 0
    assert not before[noisy]["flagged"]

    fp_id, tp_id = by_rule[noisy][:2]
    ok("alerts", "close", fp_id, "--reason", "false_positive", "--by", "ana", "--note", "test traffic")
    ok("alerts", "close", tp_id, "--reason", "true_positive", "--by", "ben")
    ok("alerts", "close", by_rule[precise][0], "--reason", "benign_positive", "--by", "ana")

    after = stats()
    assert after[noisy]["false_positives"] == 1
    assert after[noisy]["true_positives"] == 1
    assert after[noisy]["precision"] == 0.5
    assert after[noisy]["flagged"]
    assert after[noisy]["triaged_share"] == pytest.approx(2 / len(by_rule[noisy]), abs=1e-4)
    assert after[noisy]["median_time_to_triage_seconds"] > 0
    assert after[precise]["benign_positives"] == 1
    assert after[precise]["precision"] == 1.0
    assert not after[precise]["flagged"]
    untouched = [rule for rule in by_rule if rule not in (noisy, precise)]
    assert all(after[rule]["precision"] is None for rule in untouched)
    assert not stats("--min-precision", "0.4")[noisy]["flagged"]
    table = ok("rules", "stats", "--since", ALL_TIME)
    assert f"under 80%: {noisy}" in table

    stored = deployment.stored(es_client, fp_id)
    assert stored["abusewatch"]["status"] == "closed"
    assert stored["abusewatch"]["triage"]["reason"] == "false_positive"
    assert stored["abusewatch"]["triage"]["by"] == "ana"
    assert stored["abusewatch"]["triage"]["note"] == "test traffic"
    assert {a["id"] for a in listed("--status", "closed")} == {fp_id, tp_id, by_rule[precise][0]}


def test_ack_then_close_and_no_reopening(deployment: Deployment, es_client: Elasticsearch) -> None:
    alert_id = deployment.alerts[0]["event"]["id"]
    ok("alerts", "ack", alert_id, "--by", "carla")
    acked = deployment.stored(es_client, alert_id)["abusewatch"]
    assert acked["status"] == "acknowledged"
    assert acked["triage"]["by"] == "carla"
    first_latency = acked["triage"]["time_to_triage_seconds"]
    ok("alerts", "close", alert_id, "--reason", "true_positive", "--by", "dan")
    closed = deployment.stored(es_client, alert_id)["abusewatch"]
    assert closed["status"] == "closed"
    assert closed["triage"]["by"] == "dan"
    assert closed["triage"]["time_to_triage_seconds"] == first_latency  # time to the FIRST triage action
    refused = invoke("alerts", "ack", alert_id)
    assert refused.exit_code == 1
    assert "already closed" in refused.output
    assert deployment.stored(es_client, alert_id)["abusewatch"]["status"] == "closed"


class RacingClient:
    """The real client, but just before this command's write to ``alert_id`` someone else writes to it: ``race``."""

    def __init__(self, client: Elasticsearch, alert_id: str, race: Callable[[], None]) -> None:
        self.client, self.alert_id, self.race = client, alert_id, race
        self.raced = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def update(self, **kwargs: Any) -> Any:
        if kwargs["id"] == self.alert_id and not self.raced:
            self.raced = True
            self.race()
        return self.client.update(**kwargs)


def test_a_colleagues_verdict_is_never_replaced_unseen(deployment: Deployment, es_client: Elasticsearch) -> None:
    """Bob closes Y as a true positive while Ana closes X and Y as false positives: X is closed, Y keeps Bob's verdict,
    and Ana is told which alert was not changed and why."""
    first, second = (alert["event"]["id"] for alert in deployment.alerts[:2])

    def bob_closes() -> None:
        ok("alerts", "close", second, "--reason", "true_positive", "--by", "bob", "--note", "key revoked")

    racing = RacingClient(es_client, second, bob_closes)
    with pytest.raises(TriageError) as refused:
        triage.set_status(racing, deployment.alerts_index, [first, second], "closed", by="ana", reason="false_positive")
    message = str(refused.value)
    assert f"alert {second} was closed as true_positive by bob" in message
    assert f"changed: {first}; not changed: {second}" in message
    assert deployment.stored(es_client, first)["abusewatch"]["triage"]["reason"] == "false_positive"
    kept = deployment.stored(es_client, second)["abusewatch"]["triage"]
    assert (kept["reason"], kept["by"], kept["note"]) == ("true_positive", "bob", "key revoked")

    replaced = ok("alerts", "close", second, "--reason", "false_positive", "--by", "ana")  # now knowingly
    assert f"{second}: replaced the verdict it had (closed as true_positive by bob" in replaced
    corrected = deployment.stored(es_client, second)["abusewatch"]["triage"]
    assert (corrected["reason"], corrected["by"], corrected["note"]) == ("false_positive", "ana", None)


def test_triage_goes_through_when_the_stream_just_rewrote_the_alert(
    deployment: Deployment, es_client: Elasticsearch
) -> None:
    """The stream re-writes a growing alert after every batch, not yet visible to search (refresh interval): the
    retry reads the alert by id, in real time, and the analyst's ack goes through at once."""
    alert_id = deployment.alerts[0]["event"]["id"]

    def stream_rewrites() -> None:
        es_client.update(index=deployment.alerts_index, id=alert_id, doc={"abusewatch": {"count": 99}}, refresh=False)

    racing = RacingClient(es_client, alert_id, stream_rewrites)
    (change,) = triage.set_status(racing, deployment.alerts_index, [alert_id], "acknowledged", by="carla")
    assert racing.raced and change.alert_id == alert_id and change.replaced is None
    stored = deployment.stored(es_client, alert_id)["abusewatch"]
    assert (stored["status"], stored["count"], stored["triage"]["by"]) == ("acknowledged", 99, "carla")


def test_unknown_ids_fail_clearly_and_change_nothing(deployment: Deployment, es_client: Elasticsearch) -> None:
    known = deployment.alerts[0]["event"]["id"]
    for args in (("ack", "no-such-alert"), ("close", known, "no-such-alert", "--reason", "false_positive")):
        result = invoke("alerts", *args)
        assert result.exit_code == 1
        assert "no alert with id no-such-alert" in result.output
    assert deployment.stored(es_client, known)["abusewatch"]["status"] == "open"
    shown = invoke("alerts", "show", "no-such-alert")
    assert shown.exit_code == 1
    assert "no alert with id no-such-alert" in shown.output
    assert invoke("alerts", "close", known, "--reason", "maybe").exit_code == 2


def test_show_has_the_alert_and_its_linked_events(deployment: Deployment) -> None:
    alert = max(deployment.alerts, key=lambda a: len(a["abusewatch"]["event_ids"]))
    shown = json.loads(ok("alerts", "show", alert["event"]["id"], "--json"))
    assert shown["alert"]["id"] == alert["event"]["id"]
    assert shown["alert"]["abusewatch"]["evidence"] == alert["abusewatch"]["evidence"]
    stored_events = {event["event"]["id"] for event in deployment.events}
    expected = [event_id for event_id in alert["abusewatch"]["event_ids"] if event_id in stored_events]
    assert expected, "the alert's events were replayed too"
    assert sorted(event["event"]["id"] for event in shown["events"]) == sorted(expected)
    assert all(event["id"] == event["event"]["id"] for event in shown["events"])  # id: the request's event.id
    assert all(event["hash"] == event["event"]["hash"] for event in shown["events"])  # hash: its document id
    text = ok("alerts", "show", alert["event"]["id"])
    assert f"Linked events: {len(expected)} of {len(alert['abusewatch']['event_ids'])}" in text


def test_show_finds_the_alerted_request_among_others_reusing_its_id(
    deployment: Deployment, es_client: Elasticsearch
) -> None:
    """A client that sent many other requests under the alerted request's id (each its own document, as their
    ``event.hash`` differ) cannot push the alerted one out of ``alerts show``, which says that the id is shared."""
    documents_per_id = Counter(event["event"]["id"] for event in deployment.events)
    alert = next(
        a
        for a in deployment.alerts
        if len(a["abusewatch"]["event_ids"]) == 1 and documents_per_id[a["abusewatch"]["event_ids"][0]] == 1
    )
    (event_id,) = alert["abusewatch"]["event_ids"]
    original = next(event for event in deployment.events if event["event"]["id"] == event_id)
    alerted_at = datetime.fromisoformat(alert["@timestamp"].replace("Z", "+00:00"))
    decoys = 10
    helpers.bulk(
        es_client,
        [
            {
                "_op_type": "create",
                "_index": deployment.settings.elasticsearch.events_index,
                "_id": f"decoy{n:02d}",
                "_source": {
                    **original,
                    "@timestamp": (alerted_at - timedelta(days=1, minutes=n)).isoformat().replace("+00:00", "Z"),
                    "event": {**original["event"], "hash": f"decoy{n:02d}"},
                    "gen_ai": {"prompt": f"benign question {n}"},
                },
            }
            for n in range(decoys)
        ],
        refresh="wait_for",
    )
    shown = json.loads(ok("alerts", "show", alert["event"]["id"], "--json"))
    hashes = [event["hash"] for event in shown["events"]]
    assert original["event"]["hash"] in hashes
    assert len(hashes) == DOCUMENTS_PER_EVENT_ID
    assert all(event["id"] == event_id for event in shown["events"])
    assert shown["linked"] == [{"event_id": event_id, "documents": decoys + 1, "shown": DOCUMENTS_PER_EVENT_ID}]
    text = " ".join(ok("alerts", "show", alert["event"]["id"]).split())
    assert f"Linked events: 1 of 1 found in {deployment.settings.elasticsearch.events_index}" in text
    assert (
        f"{decoys + 1} documents share event id {event_id}; showing the {DOCUMENTS_PER_EVENT_ID} nearest the alert"
        in text
    )


def test_verdict_survives_a_rewrite_only_with_preserving_update(
    deployment: Deployment, es_client: Elasticsearch
) -> None:
    """What the stream's sink must do when an alert grows after triage (and what a plain index does instead)."""
    kept, wiped = deployment.alerts[:2]
    for alert in (kept, wiped):
        ok("alerts", "close", alert["event"]["id"], "--reason", "true_positive", "--by", "eve")
    grown = {
        alert["event"]["id"]: {
            **alert,
            "abusewatch": {**alert["abusewatch"], "count": alert["abusewatch"]["count"] + 3},
        }
        for alert in (kept, wiped)
    }
    helpers.bulk(
        es_client,
        [
            {"_op_type": "update", "_index": deployment.alerts_index, "_id": kept["event"]["id"]}
            | preserving_update(grown[kept["event"]["id"]]),
            {"_op_type": "index", "_index": deployment.alerts_index, "_id": wiped["event"]["id"]}
            | {"_source": grown[wiped["event"]["id"]]},
        ],
        refresh="wait_for",
    )
    survived = deployment.stored(es_client, kept["event"]["id"])["abusewatch"]
    assert survived["count"] == kept["abusewatch"]["count"] + 3
    assert survived["status"] == "closed"
    assert survived["triage"]["reason"] == "true_positive"
    overwritten = deployment.stored(es_client, wiped["event"]["id"])["abusewatch"]
    assert overwritten["status"] == "open"
    assert "triage" not in overwritten


def test_a_reopened_alert_is_marked_in_the_queue_until_answered(
    deployment: Deployment, es_client: Elasticsearch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream reopens a closed alert whose severity rose: the list says so, and the next verdict answers it."""
    alert = deployment.alerts[0]
    alert_id = alert["event"]["id"]
    ok("alerts", "close", alert_id, "--reason", "false_positive", "--by", "eve", "--note", "probe only")
    es_client.update(
        index=deployment.alerts_index,
        id=alert_id,
        refresh="wait_for",
        **preserving_update(alert, reopen_because="severity rose from 47 to 73 after the alert was closed"),
    )
    monkeypatch.setattr(alerts_command.out, "_width", 300)  # the status column whole (undone to None: auto)
    (row,) = [
        line for line in ok("alerts", "list", "--status", "open", "--limit", "1000").splitlines() if alert_id in line
    ]
    assert "open (reopened)" in row
    reopened = deployment.stored(es_client, alert_id)["abusewatch"]["triage"]
    assert (reopened["reason"], reopened["note"]) == ("false_positive", "probe only")  # the earlier verdict is kept
    ok("alerts", "close", alert_id, "--reason", "true_positive", "--by", "eve")
    answered = deployment.stored(es_client, alert_id)["abusewatch"]
    assert answered["status"] == "closed" and answered["triage"]["reopened_because"] is None
    assert answered["triage"]["note"] is None


def test_a_misspelt_alerts_index_is_an_error_not_an_empty_report(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``rules stats --json`` gates pipelines on ``flagged``: a typo in the index name must not pass as no alerts."""
    monkeypatch.setenv("ABW_ELASTICSEARCH__ALERTS_INDEX", deployment.alerts_index + "-typo")
    for args in (
        ("rules", "stats", "--json"),
        ("alerts", "list"),
        ("alerts", "ack", deployment.alerts[0]["event"]["id"]),
    ):
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        assert f"no index or data stream {deployment.alerts_index}-typo" in result.output
    monkeypatch.setenv("ABW_ELASTICSEARCH__ALERTS_INDEX", "logs-abwtriage.alerts-nothing-*")  # a pattern may match none
    assert json.loads(ok("rules", "stats", "--json")) == []


def test_reach_names_every_identity_an_exception_would_cover(deployment: Deployment, tmp_path: Path) -> None:
    """An exception drafted for one customer on an API key others share reaches them all: ``exceptions reach``
    names each identity whose events match, and the alerts of its rules they raised (review 22: it hid another
    customer's real injection, and nothing but a labelled backtest showed it)."""

    def of_key(documents: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
        return [doc for doc in documents if doc["abusewatch"].get("api_key_hash") == key]

    def injection_alerts(key: str) -> Counter[str]:
        return Counter(
            alert["abusewatch"]["identity_key"]
            for alert in of_key(deployment.alerts, key)
            if alert["rule"]["category"] == "prompt_injection"
        )

    keys = sorted(
        {alert["abusewatch"]["api_key_hash"] for alert in deployment.alerts if alert["abusewatch"].get("api_key_hash")}
    )
    key = next(key for key in keys if len(injection_alerts(key)) > 1)  # two customers' injections on one key
    assert {a["rule"]["category"] for a in of_key(deployment.alerts, key)} - {"prompt_injection"}, "not to count"
    drafted = ok(
        "exceptions", "draft", "--category", "prompt_injection", "--api-key-hash", key, "--reason", "one KB article"
    )
    path = tmp_path / "exceptions.yml"
    path.write_text(drafted)
    (found,) = json.loads(ok("exceptions", "reach", str(path), "--since", ALL_TIME, "--json"))
    events = Counter(doc["abusewatch"]["identity_key"] for doc in of_key(deployment.events, key))
    assert found["events"] == sum(events.values()) and found["event_identities"] == len(events) > 1
    assert {item["identity"]: item["events"] for item in found["top_event_identities"]} == dict(events)
    assert {item["identity"]: item["alerts"] for item in found["alert_identities"]} == dict(injection_alerts(key))
    text = " ".join(ok("exceptions", "reach", str(path), "--since", ALL_TIME).split())
    assert f"reaches {len(events)} identities" in text
