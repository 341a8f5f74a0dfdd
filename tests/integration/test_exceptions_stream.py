"""Alert exceptions applied by ``abusewatch worker`` on real Kafka and Elasticsearch, to a campaign alert and to an
ordinary detection.

Four hours of simulated traffic (the generator tests/test_exceptions_wiring.py uses, rendered as OpenAI logs and
produced to the raw topic) hold a distributed scraping campaign of five API keys sharing one prompt template and a
denial-of-wallet client. The exceptions file names server-derived API-key hashes (as the normaliser derives them)
and expires after the traffic in event time (before today in wall time: expiry is judged in event time).

* ``covered``: one entry lists every campaign member, another the denial-of-wallet key. Both rules' alerts must be
  in the shadow alerts index with ``abusewatch.exception.{id,reason}``, none in the alerts index, and no
  entity-risk alert for those identities (a suppressed detection adds no risk).
* ``one_short``, the control: the campaign entry misses one member and the other entry expired before the traffic
  began. Both rules' alerts must then be in the alerts index, none of them in the shadow alerts, and the
  denial-of-wallet key's risk raises an entity-risk alert.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from elasticsearch import Elasticsearch

from app.traffic.simulate import SimulationConfig, render_records, simulate
from detectors.alerting import RISK_RULE_ID
from detectors.anomaly.rules import RESOURCE_ABUSE, SCRAPING_CAMPAIGN
from detectors.normalise.fields import key_hash

from .test_stream import Stream, count, produce, wait_until
from .test_stream import stream as deployment  # noqa: F401  (test_stream's per-test deployment, as a fixture)

pytestmark = pytest.mark.integration

SEED = 9
CAMPAIGN_RULE = SCRAPING_CAMPAIGN.id
WALLET_RULE = RESOURCE_ABUSE.id
REASONS = {
    "campaign-members": "Sanctioned review-generation load test (CHG-1)",
    "wallet-key": "Sanctioned long-context benchmark (CHG-2)",
}


@dataclass(frozen=True)
class Traffic:
    """Simulated traffic as a raw log file, and the identities the exceptions name."""

    path: Path
    events: int
    members: list[str]  # the campaign's API-key hashes, as the normaliser derives them
    wallet_key: str  # the denial-of-wallet client's
    first_day: date  # event time, UTC
    last_day: date


def simulated_traffic(tmp_path: Path) -> Traffic:
    simulation = simulate(
        SimulationConfig(
            hours=4,
            benign_users=4,
            attackers={"campaign": 1, "denial_of_wallet": 1},
            seed=SEED,
            campaign_size=5,
        )
    )
    path = tmp_path / "simulated.jsonl"
    with path.open("wb") as handle:
        for record in render_records(simulation.events, "openai", SEED):
            handle.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
    keys: dict[str, list[str]] = {}
    for label in simulation.labels:
        keys.setdefault(label.kind, []).append(key_hash(label.api_key_hash) or "")
    members, (wallet_key,) = sorted(keys["campaign"]), keys["denial_of_wallet"]
    assert len(set(members)) == 5 and all(members) and wallet_key
    return Traffic(
        path=path,
        events=len(simulation.events),
        members=members,
        wallet_key=wallet_key,
        first_day=datetime.fromtimestamp(simulation.start, UTC).date(),
        last_day=datetime.fromtimestamp(simulation.end, UTC).date(),
    )


def exceptions_file(path: Path, traffic: Traffic, covered: bool) -> Path:
    """Both entries covering their identities throughout the traffic, or (the control) the campaign entry one
    member short and the other expired at 00:00 UTC of the traffic's first day."""
    after_traffic = (traffic.last_day + timedelta(days=1)).isoformat()
    entries = [
        {
            "id": "campaign-members",
            "rules": [CAMPAIGN_RULE],
            "match": {"abusewatch.api_key_hash": traffic.members if covered else traffic.members[1:]},
            "reason": REASONS["campaign-members"],
            "expires": after_traffic,
        },
        {
            "id": "wallet-key",
            "rules": [WALLET_RULE],
            "match": {"abusewatch.api_key_hash": [traffic.wallet_key]},
            "reason": REASONS["wallet-key"],
            "expires": after_traffic if covered else traffic.first_day.isoformat(),
        },
    ]
    path.write_text(yaml.safe_dump(entries))
    return path


@pytest.fixture
def excepting(deployment: Stream, es_client: Elasticsearch) -> Iterator[Stream]:  # noqa: F811 (a fixture argument)
    """The deployment with two identity partitions; its shadow alerts index deleted afterwards (test_stream's
    fixture deletes the others)."""
    deployment.env["ABW_KAFKA__PARTITIONS"] = "2"
    yield deployment
    with contextlib.suppress(Exception):
        es_client.indices.delete(
            index=deployment.env["ABW_ELASTICSEARCH__SHADOW_ALERTS_INDEX"], ignore_unavailable=True
        )


def alerts_of(es: Elasticsearch, index: str, rule_id: str) -> list[dict[str, Any]]:
    """The alert documents of ``rule_id`` in ``index`` (none while the index does not exist)."""
    try:
        es.indices.refresh(index=index)
        hits = es.search(index=index, size=1000, query={"term": {"rule.id": rule_id}})["hits"]["hits"]
    except Exception:  # not created yet
        return []
    return [hit["_source"] for hit in hits]


def settle(es: Elasticsearch, indices: list[str], quiet_s: float = 3.0) -> None:
    """Return once the document counts of ``indices`` have not moved for ``quiet_s`` seconds."""
    last: list[int] = []
    since = time.monotonic()

    def quiet() -> bool:
        nonlocal last, since
        counts = [count(es, index) for index in indices]
        if counts != last:
            last, since = counts, time.monotonic()
        return time.monotonic() - since >= quiet_s

    wait_until(quiet, f"the counts of {indices} to settle")


def exception_of(alert: dict[str, Any]) -> tuple[str, str] | None:
    """The (id, reason) of the exception that suppressed ``alert``, if any."""
    exception = alert["abusewatch"].get("exception")
    return (exception["id"], exception["reason"]) if exception else None


def suppressed(metrics: str, exception_id: str, rule_id: str) -> float:
    """``abusewatch_suppressed_detections_total`` for one exception and rule, from a worker's /metrics text."""
    series = f'abusewatch_suppressed_detections_total{{exception="{exception_id}",rule="{rule_id}"}} '
    return sum(float(line.removeprefix(series)) for line in metrics.splitlines() if line.startswith(series))


@pytest.mark.parametrize("covered", [True, False], ids=["covered", "one_short"])
def test_worker_sends_excepted_campaign_and_detection_alerts_to_the_shadow_alerts_only(
    excepting: Stream, es_client: Elasticsearch, covered: bool
) -> None:
    stream = excepting
    traffic = simulated_traffic(stream.tmp_path)
    exceptions = exceptions_file(stream.tmp_path / "exceptions.yml", traffic, covered)
    stream.env["ABW_DETECTION__EXCEPTIONS_PATH"] = str(exceptions)
    alerts_index = stream.alerts_index
    shadow_index = stream.env["ABW_ELASTICSEARCH__SHADOW_ALERTS_INDEX"]
    expected_index, other_index = (shadow_index, alerts_index) if covered else (alerts_index, shadow_index)
    stream.cli("bootstrap")
    with stream.worker():
        produce(stream, [traffic.path], batch_records=50)
        wait_until(lambda: count(es_client, stream.events_index) >= traffic.events, "every event in ES")
        for rule_id in (CAMPAIGN_RULE, WALLET_RULE):
            wait_until(
                lambda rule=rule_id: alerts_of(es_client, expected_index, rule), f"{rule_id} in {expected_index}"
            )
        settle(es_client, [alerts_index, shadow_index])
        metrics = stream.metrics()

    campaign = alerts_of(es_client, expected_index, CAMPAIGN_RULE)
    wallet = alerts_of(es_client, expected_index, WALLET_RULE)
    print(f"{len(campaign)} campaign and {len(wallet)} denial-of-wallet alerts in {expected_index}")
    assert campaign and wallet
    # The campaign alerts name every member, the other alerts the denial-of-wallet key.
    assert all(sorted(alert["related"]["user"]) == [f"key:{key}" for key in traffic.members] for alert in campaign)
    assert all(alert["abusewatch"]["api_key_hash"] == traffic.wallet_key for alert in wallet)
    assert not alerts_of(es_client, other_index, CAMPAIGN_RULE)
    assert not alerts_of(es_client, other_index, WALLET_RULE)
    # A suppressed detection adds no risk: no entity-risk alert for an excepted identity (the control has some).
    at_risk = {alert["abusewatch"]["identity_key"] for alert in alerts_of(es_client, alerts_index, RISK_RULE_ID)}
    if covered:
        assert {exception_of(alert) for alert in campaign} == {("campaign-members", REASONS["campaign-members"])}
        assert {exception_of(alert) for alert in wallet} == {("wallet-key", REASONS["wallet-key"])}
        assert all(alert["abusewatch"]["shadow"] is True for alert in campaign + wallet)
        assert suppressed(metrics, "campaign-members", CAMPAIGN_RULE) >= len(campaign)
        assert suppressed(metrics, "wallet-key", WALLET_RULE) >= len(wallet)
        assert not at_risk & {f"key:{key}" for key in [*traffic.members, traffic.wallet_key]}
    else:
        assert {exception_of(alert) for alert in campaign + wallet} == {None}
        assert not any(alert["abusewatch"].get("shadow") for alert in campaign + wallet)
        assert suppressed(metrics, "campaign-members", CAMPAIGN_RULE) == 0
        assert suppressed(metrics, "wallet-key", WALLET_RULE) == 0
        assert f"key:{traffic.wallet_key}" in at_risk
