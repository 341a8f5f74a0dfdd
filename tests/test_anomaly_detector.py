"""The anomaly detector on simulated traffic: every attacker kind alerted, benign users not, event-time
determinism whatever the batch boundaries, and checkpoints that resume without a new warm-up."""

import json
from collections.abc import Sequence

import msgspec
import pytest

from app.traffic.simulate import ATTACK_KINDS, EXPECTED_CATEGORY, SimulationConfig, simulate
from detectors.anomaly import AnomalyConfig, AnomalyDetector
from detectors.base import Detection, Findings
from detectors.campaigns import CampaignDetector, candidates_from_findings
from detectors.event import Event, Identity, Message
from detectors.pipeline import Pipeline
from detectors.redact import Redactor

CONFIG = AnomalyConfig(peer_warmup_windows=100)


def run(detector: AnomalyDetector, events: Sequence[Event], batch_size: int) -> tuple[list[Detection], list[Findings]]:
    detections: list[Detection] = []
    all_findings: list[Findings] = []
    for offset in range(0, len(events), batch_size):
        batch = events[offset : offset + batch_size]
        findings = [Findings() for _ in batch]
        detections.extend(detector.detect(batch, findings))
        all_findings.extend(findings)
    return detections, all_findings


def fingerprint(detections: Sequence[Detection]) -> list[bytes]:
    return [msgspec.json.encode(d) for d in detections]


@pytest.fixture(scope="module")
def attacked():
    simulation = simulate(
        SimulationConfig(hours=30, benign_users=40, attackers=dict.fromkeys(ATTACK_KINDS, 1), seed=5, campaign_size=6)
    )
    detector = AnomalyDetector(CONFIG)
    detections, findings = run(detector, simulation.events, 500)
    detections.extend(detector.flush())
    campaigns = CampaignDetector(CONFIG)  # the cross-identity stage, fed what the anomaly tier wrote
    detections.extend(campaigns.detect(candidates_from_findings(simulation.events, findings)))
    detections.extend(campaigns.flush())
    return simulation, detections, findings


def named(detection: Detection) -> set[str]:
    identity = detection.identity
    return {identity.key(), *detection.related_users}


def test_every_attacker_kind_is_alerted_with_its_category(attacked) -> None:
    simulation, detections, _ = attacked
    for label in simulation.labels:
        hits = [d for d in detections if label.identity in named(d) and d.timestamp >= label.start]
        assert hits, f"{label.kind} {label.identity} was not alerted"
        assert EXPECTED_CATEGORY[label.kind] in {d.rule.category for d in hits}, label.kind
        first = min(d.timestamp for d in hits)
        assert first - label.start < 3 * 3600, f"{label.kind} alerted only after {first - label.start:.0f}s"


def test_benign_users_and_batch_jobs_are_not_alerted(attacked) -> None:
    simulation, detections, _ = attacked
    attackers = {label.identity for label in simulation.labels}
    attacker_ips = {f"ip:{label.source_ip}" for label in simulation.labels}
    false = [d for d in detections if not named(d) & (attackers | attacker_ips)]
    assert false == []
    assert any(k.startswith("key:svc-batch") for k in simulation.benign_identities)


def test_campaign_alert_lists_every_member(attacked) -> None:
    simulation, detections, _ = attacked
    members = {label.identity for label in simulation.labels if label.kind == "campaign"}
    campaigns = [d for d in detections if d.rule.id == "abusewatch-anomaly-scraping-campaign"]
    assert campaigns
    assert members == set(campaigns[-1].related_users)
    assert len({d.group_key for d in campaigns}) == 1  # repeated windows update one alert


def test_alerts_explain_and_group_per_identity(attacked) -> None:
    _, detections, _ = attacked
    volume = [d for d in detections if d.rule.id == "abusewatch-anomaly-scraping-volume"]
    assert volume
    assert all(d.group_key == f"anomaly:{d.identity.key()}" for d in volume)
    assert any(k.startswith(("z.requests", "peer_z.requests")) for k in volume[0].explanation)
    assert volume[0].rule.atlas and volume[0].rule.owasp == ("LLM10:2025",)


def test_events_are_annotated_with_scores_and_window_counts(attacked) -> None:
    simulation, _, findings = attacked
    scraper = next(label.identity for label in simulation.labels if label.kind == "scraper")
    scores = [
        f.fields["gen_ai.security.anomaly_score"]
        for e, f in zip(simulation.events, findings, strict=True)
        if e.identity.key() == scraper
    ]
    assert max(scores) > 0.5
    assert all("abusewatch.identity.window_requests" in f.fields for f in findings)


@pytest.fixture(scope="module")
def small_traffic() -> list[Event]:
    attackers = {"extractor": 1, "campaign": 1}
    return simulate(SimulationConfig(hours=12, benign_users=12, attackers=attackers, seed=9, campaign_size=5)).events


def test_same_alerts_whatever_the_batch_boundaries(small_traffic) -> None:
    reference, _ = run(AnomalyDetector(CONFIG), small_traffic, len(small_traffic))
    assert reference
    for batch_size in (1, 97):
        detections, _ = run(AnomalyDetector(CONFIG), small_traffic, batch_size)
        assert fingerprint(detections) == fingerprint(reference), batch_size


def test_state_round_trip_resumes_without_new_warmup(small_traffic) -> None:
    reference, _ = run(AnomalyDetector(CONFIG), small_traffic, 250)
    half = len(small_traffic) // 2
    first = AnomalyDetector(CONFIG)
    before, _ = run(first, small_traffic[:half], 250)
    checkpoint = json.loads(json.dumps(first.state()))
    resumed = AnomalyDetector(CONFIG)
    resumed.load_state(checkpoint)
    after, _ = run(resumed, small_traffic[half:], 250)
    assert fingerprint(before + after) == fingerprint(reference)
    fresh, _ = run(AnomalyDetector(CONFIG), small_traffic[half:], 250)
    assert fingerprint(fresh) != fingerprint(after)  # without the state, identities would warm up again


def test_state_for_exports_only_the_given_identities(small_traffic) -> None:
    detector = AnomalyDetector(CONFIG)
    run(detector, small_traffic, 500)
    keys = sorted(detector.state()["entities"])[:3]
    partial = detector.state_for(keys)
    assert sorted(partial["entities"]) == keys
    assert partial["peers"].keys() == detector.state()["peers"].keys() == {"user", "key", "ip"}


def test_load_state_rejects_unknown_versions() -> None:
    with pytest.raises(ValueError, match="version"):
        AnomalyDetector().load_state({"version": 99})


def chat(number: int, timestamp: float) -> Event:
    return Event(
        id=f"e{number}",
        timestamp=timestamp,
        dataset="test",
        input_messages=[Message(role="user", content=f"Describe catalogue item {number} in full")],
        identity=Identity(user_id="u1", api_key_hash="k1", source_ip="203.0.113.9"),
    )


def test_late_events_are_marked_not_counted() -> None:
    detector = AnomalyDetector(AnomalyConfig(allowed_lateness_seconds=60))
    run(detector, [chat(1, 10_000.0), chat(2, 12_000.0)], 10)
    findings = [Findings()]
    detector.detect([chat(3, 10_100.0)], findings)
    assert findings[0].fields["abusewatch.identity.late"] is True
    assert "abusewatch.identity.window_requests" not in findings[0].fields


def test_an_event_of_the_window_before_arriving_within_the_lateness_is_counted() -> None:
    """The entity's next window has begun, but the watermark has not passed the previous window's end yet: an event
    of that window arriving now (another gateway's log, a slower shipper) still counts in it, not as late."""
    detector = AnomalyDetector(AnomalyConfig(allowed_lateness_seconds=60))
    run(detector, [chat(1, 10_150.0), chat(2, 10_190.0), chat(3, 10_205.0)], 10)  # windows of 600 s: 9,600-10,200, ...
    findings = [Findings()]
    detector.detect([chat(4, 10_199.0)], findings)
    assert "abusewatch.identity.late" not in findings[0].fields
    assert findings[0].fields["abusewatch.identity.window_requests"] == 3, "counted in its own window, 10,200 s"
    assert detector.state()["entities"]["user:u1"]["pending"] is not None, "held open until the watermark passes"
    assert detector.detect([chat(5, 10_270.0)], [Findings()]) == []  # the watermark passes 10,200: closed
    assert detector.state()["entities"]["user:u1"]["pending"] is None


def test_arrival_order_within_the_lateness_does_not_change_what_is_detected() -> None:
    """60 requests in a window and one more in the next: with the boundary's neighbours swapped the window still
    holds all 60 and the enumeration burst is found the same way."""
    config = AnomalyConfig(peer_warmup_windows=0, allowed_lateness_seconds=60)
    ordered = [chat(i, 12_000.0 + 540 + i) for i in range(60)] + [chat(60, 12_600.0 + 5)]
    swapped = [*ordered[:-2], ordered[-1], ordered[-2]]  # the 60th arrives after the next window's first
    results = []
    for events in (ordered, swapped):
        detector = AnomalyDetector(config)
        detections, findings = run(detector, events, 1)
        detections += detector.flush()
        assert not any(found.fields.get("abusewatch.identity.late") for found in findings)
        results.append(
            sorted((d.rule.id, d.identity.key(), d.explanation.get("template_requests")) for d in detections)
        )
    assert results[0] == results[1]
    assert ("abusewatch-anomaly-scraping-enumeration", "user:u1", 60.0) in results[0]


def test_runs_inside_the_pipeline_and_renders_alert_documents() -> None:
    events = [chat(i, 1_000_000.0 + i * 0.5) for i in range(2000)]
    pipeline = Pipeline(
        [AnomalyDetector(AnomalyConfig(peer_warmup_windows=0, volume_hard_requests=300))], Redactor(b"k")
    )
    alerts = []
    for offset in range(0, len(events), 400):
        result = pipeline.process(events[offset : offset + 400])
        alerts.extend(result.alerts)
        assert all("anomaly_score" in doc["gen_ai"]["security"] for doc in result.events)
    assert {a["rule"]["id"] for a in alerts} >= {"abusewatch-anomaly-scraping-volume"}
    state = pipeline.state()["detectors"]["anomaly"]
    assert "user:u1" in state["entities"]


def test_an_event_without_a_usable_time_is_annotated_and_skipped() -> None:
    detector = AnomalyDetector()
    broken = msgspec.structs.replace(chat(1, 0.0), timestamp=float("nan"))
    findings = [Findings(), Findings()]
    assert detector.detect([broken, chat(2, 5_000.0)], findings) == []
    assert findings[0].fields["abusewatch.errors"] == ["anomaly: event time is not a finite number"]
    assert findings[1].fields["abusewatch.identity.window_requests"] == 1


def extraction(key_per_window: bool) -> list[Event]:
    """Three hours of model extraction from one IP (logprobs, temperature sweeps, 56k tokens a request), one request
    every 10 s, with one API key throughout or a new key every 10-minute window."""
    start, words = 1_767_225_600.0, ["alpha", "bravo", "delta", "kilo", "lima", "oscar", "romeo", "tango"]
    events = []
    for n in range(6 * 60 * 3):
        timestamp = start + 10.0 * n
        key = f"stolen-{int(timestamp // 600)}" if key_per_window else "stolen-0"
        params = {"logprobs": True, "top_logprobs": 20, "n": 5, "temperature": (n % 16) / 10, "max_tokens": 32000}
        text = " ".join(words[(n * k) % 8] for k in (1, 3, 5)) + f" explain {words[n % 8]} thoroughly"
        events.append(
            Event(
                id=f"x{n}",
                timestamp=timestamp,
                dataset="t",
                input_messages=[Message(role="user", content=text)],
                identity=Identity(api_key_hash=key, source_ip="198.51.100.77"),
                request_params=params,
                input_tokens=40_000,
                output_tokens=16_000,
            )
        )
    return events


def test_an_ip_rotating_its_key_every_window_is_alerted_as_one_using_one_key() -> None:
    caught = {}
    for rotate in (False, True):
        detector = AnomalyDetector()
        detections, _ = run(detector, extraction(rotate), 500)
        caught[rotate] = {(d.rule.id, d.identity.key()) for d in [*detections, *detector.flush()]}
    expected = {"abusewatch-anomaly-model-extraction", "abusewatch-anomaly-resource-abuse"}
    assert caught[False] == {(rule, "key:stolen-0") for rule in expected}  # the steady key is caught ...
    assert caught[True] == {(rule, "ip:198.51.100.77") for rule in expected}  # ... and the IP behind rotating keys


def test_a_huge_client_chosen_number_cannot_poison_the_baselines() -> None:
    """Two requests asking for max_tokens=1e308 (a finite number the normalisers keep) must leave every baseline,
    the partition's shared peer baseline included, finite: an infinite window sum would hold them at inf / NaN."""
    detector = AnomalyDetector(AnomalyConfig(peer_warmup_windows=0))
    start = 1_767_225_600.0

    def ask(number: int, timestamp: float, user: str, **params: float) -> Event:
        return Event(
            id=f"q{number}",
            timestamp=timestamp,
            dataset="t",
            input_messages=[Message(role="user", content=f"question {number % 3} about things")],
            identity=Identity(user_id=user),
            request_params=params,
        )

    events = [ask(i, start + 60 * i, f"u{i % 5}") for i in range(100)]
    events += [ask(1000 + i, start + 6000 + i, "x", max_tokens=1e308, n=1e308) for i in range(2)]
    events += [ask(2000 + i, start + 7200 + 60 * i, f"u{i % 5}") for i in range(100)]
    run(detector, events, 50)
    detector.flush()
    json.dumps(detector.state(), allow_nan=False)  # raises on any inf or NaN left in a baseline


def test_invented_identities_cannot_grow_the_state_past_max_entities() -> None:
    """A client inventing a user id per request: the least recently seen entities are forgotten at the cap, and
    a steady user's history (its closed windows, so no new warm-up) stays."""
    detector = AnomalyDetector(AnomalyConfig(max_entities=200))
    start, events = 1_767_225_600.0, []
    for n in range(3000):
        timestamp = start + 2.0 * n
        events.append(Event(id=f"i{n}", timestamp=timestamp, dataset="t", identity=Identity(user_id=f"made-up-{n}")))
        if n % 50 == 0:
            events.append(Event(id=f"s{n}", timestamp=timestamp, dataset="t", identity=Identity(user_id="steady")))
    run(detector, events, 100)
    state = detector.state()
    assert len(state["entities"]) <= 200
    assert state["entities"]["user:steady"]["closed"] >= 8  # 6,000 s of 600 s windows, all remembered
