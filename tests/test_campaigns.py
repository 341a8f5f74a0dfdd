"""Distributed campaigns, judged by template signature whatever identity partition each member is on."""

from __future__ import annotations

import msgspec
import pytest
from msgspec.structs import replace

from app.engine import build_campaign_stage, build_pipeline
from app.settings import Settings
from app.stream.codec import decode_candidates, encode_candidates
from app.traffic.simulate import SimulationConfig, simulate
from detectors.anomaly import AnomalyDetector
from detectors.campaigns import (
    CampaignCandidate,
    CampaignDetector,
    CampaignStage,
    campaign_candidates,
    group_by_signature,
    signature_partition,
)
from detectors.event import Event, Identity, Message
from detectors.partitioned import PartitionedPipeline
from detectors.pipeline import Pipeline
from detectors.redact import Redactor

CAMPAIGN_RULE = "abusewatch-anomaly-scraping-campaign"
START = 1_767_571_200.0  # a window boundary (600 s)


def candidate(number: int, identity: int, signature: str = "00ab", offset: float = 0.0) -> CampaignCandidate:
    return CampaignCandidate(
        event_id=f"e{number}",
        timestamp=START + offset + number,
        identity=Identity(api_key_hash=f"key-{identity}", source_ip=f"198.51.100.{identity}"),
        signature=signature,
    )


def burst(identities: int, requests: int, signature: str = "00ab") -> list[CampaignCandidate]:
    return [candidate(n * identities + i, i, signature) for n in range(requests) for i in range(identities)]


def closing(signature: str = "ffff") -> list[CampaignCandidate]:
    """A candidate three windows later: its watermark (one window of lateness) closes the first window."""
    return [replace(candidate(0, 99, signature, offset=1800.0), event_id=f"closing-{signature}")]


def test_enough_identities_on_one_template_make_a_campaign() -> None:
    detector = CampaignDetector()
    detections = detector.detect(burst(identities=5, requests=3)) + detector.detect(closing())
    assert [d.rule.id for d in detections] == [CAMPAIGN_RULE]
    assert detections[0].related_users == sorted(f"key:key-{i}" for i in range(5))
    assert detections[0].related_ips == sorted(f"198.51.100.{i}" for i in range(5))


@pytest.mark.parametrize(("identities", "requests"), [(4, 3), (5, 2)])
def test_too_few_identities_or_requests_are_no_campaign(identities: int, requests: int) -> None:
    detector = CampaignDetector()
    assert detector.detect(burst(identities, requests)) + detector.detect(closing()) == []


def test_different_templates_do_not_add_up() -> None:
    detector = CampaignDetector()
    mixed = [candidate(n, n % 5, signature=f"{n % 2:04x}") for n in range(15)]
    assert detector.detect(mixed) + detector.flush() == []


def test_a_source_that_falls_behind_holds_the_windows_open() -> None:
    """One identity partition stalls (its worker died) while another races ahead in event time: the stalled
    partition's members, arriving late, still count; once it has been quiet for ``idle_seconds``, it no longer
    holds the windows open."""
    clock = [0.0]
    detector = CampaignDetector(idle_seconds=60.0, clock=lambda: clock[0])
    requests = [replace(c, source=int(c.identity.api_key_hash == "key-4")) for c in burst(5, 3)]
    first, rest = requests[:5], requests[5:]  # every identity's first request: both sources are heard from
    assert detector.detect(first) == []
    ahead = [c for c in rest if c.source == 0] + closing()  # source 0 goes on, two windows further
    assert detector.detect(ahead) == []  # the first window stays open: source 1 is still in it
    behind = [c for c in rest if c.source == 1]  # key-4's other requests arrive late
    assert detector.detect(behind) == []
    clock[0] = 61.0  # source 1 has been quiet for longer than idle_seconds: the watermark follows source 0
    detections = detector.detect([replace(closing()[0], event_id="later", timestamp=START + 1900.0)])
    assert [d.rule.id for d in detections] == [CAMPAIGN_RULE]
    assert "key:key-4" in detections[0].related_users


def test_a_source_not_heard_from_yet_holds_the_windows_open() -> None:
    """A partition whose worker starts late: its members still count in the first window."""
    clock = [0.0]
    detector = CampaignDetector(sources=2, idle_seconds=60.0, clock=lambda: clock[0])
    requests = [replace(c, source=int(c.identity.api_key_hash == "key-4")) for c in burst(5, 3)]
    early = [c for c in requests if c.source == 0] + closing()  # source 0 races two windows ahead
    assert detector.detect(early) == []
    assert detector.detect([c for c in requests if c.source == 1]) == []  # source 1 starts: the window is open
    clock[0] = 61.0
    detections = detector.detect([replace(closing()[0], event_id="later", timestamp=START + 1900.0)])
    assert [d.rule.id for d in detections] == [CAMPAIGN_RULE]
    assert "key:key-4" in detections[0].related_users
    without = CampaignDetector(idle_seconds=60.0, clock=lambda: 0.0)  # the control: sources not declared
    assert without.detect(early) + without.detect([c for c in requests if c.source == 1]) == []
    assert without.flush() == []


def test_a_candidate_delivered_twice_counts_once() -> None:
    """Four identities with three requests each, and the fifth's two requests re-sent once: no campaign."""
    detector = CampaignDetector()
    candidates = [c for c in burst(5, 3) if not (c.identity.api_key_hash == "key-4" and c.event_id == "e14")]
    repeated = [c for c in candidates if c.identity.api_key_hash == "key-4"]
    assert len(repeated) == 2
    assert detector.detect(candidates) + detector.detect(repeated) + detector.detect(closing()) == []
    once_more = CampaignDetector()
    assert once_more.detect(burst(5, 3)) + once_more.detect(closing()), "the control: a third request makes it"


def test_event_ids_do_not_depend_on_arrival_order() -> None:
    candidates = burst(6, 4)
    forward, backward = CampaignDetector(), CampaignDetector()
    one = forward.detect(candidates) + forward.detect(closing())
    two = backward.detect(candidates[::-1]) + backward.detect(closing())
    assert one and [d.event_ids for d in one] == [d.event_ids for d in two]


def test_a_restored_stage_goes_on_exactly_where_it_stopped() -> None:
    stage = build_campaign_stage(Settings())
    requests = burst(5, 3)
    first, second = requests[:10], requests[10:]  # 2 requests each, then the third that makes the campaign
    uninterrupted = stage.fresh()
    expected = [
        *uninterrupted.process(first).alerts,
        *uninterrupted.process(second).alerts,
        *uninterrupted.flush().alerts,
    ]
    before = stage.fresh()
    got = before.process(first).alerts
    restored = stage.fresh()
    restored.load_state(msgspec.msgpack.decode(msgspec.msgpack.encode(before.state())))
    got += [*restored.process(second).alerts, *restored.flush().alerts]
    assert [a["rule"]["id"] for a in expected] == [CAMPAIGN_RULE]
    assert got == expected


def test_candidates_cross_the_wire_unchanged() -> None:
    candidates = burst(3, 2)
    assert decode_candidates(encode_candidates(candidates)) == candidates
    with pytest.raises(ValueError):
        decode_candidates(b"\x93not msgpack")
    groups = group_by_signature(candidates + burst(3, 1, signature="beef"), 4)
    assert all(signature_partition(c.signature, 4) == partition for partition, g in groups.items() for c in g)
    assert sum(map(len, groups.values())) == len(candidates) + 3


@pytest.fixture(scope="module")
def campaign_traffic() -> tuple[list[Event], set[str]]:
    simulation = simulate(
        SimulationConfig(hours=12, benign_users=12, attackers={"campaign": 1}, seed=9, campaign_size=6)
    )
    members = {label.identity for label in simulation.labels if label.kind == "campaign"}
    return simulation.events, members


def campaign_alerts(events: list[Event], partitions: int) -> dict[str, dict]:
    redactor = Redactor(b"test")
    anomaly_only = Pipeline([AnomalyDetector()], redactor)
    stage = CampaignStage(CampaignDetector(), Pipeline([], redactor).grouper)
    engine = PartitionedPipeline(anomaly_only, partitions, stage)
    alerts: dict[str, dict] = {}
    for start in range(0, len(events), 500):
        alerts.update((a["event"]["id"], a) for a in engine.process(events[start : start + 500]).alerts)
    alerts.update((a["event"]["id"], a) for a in engine.flush().alerts)
    return {alert_id: a for alert_id, a in alerts.items() if a["rule"]["id"] == CAMPAIGN_RULE}


def test_a_campaign_is_found_whatever_the_partition_count(campaign_traffic) -> None:
    """The members hash to different identity partitions; the campaign stage still sees them all."""
    events, members = campaign_traffic
    alerts = {partitions: campaign_alerts(events, partitions) for partitions in (1, 4, 16)}
    assert alerts[1], "the simulated campaign should be found"
    assert alerts[4] == alerts[1]
    assert alerts[16] == alerts[1]
    assert members <= {user for alert in alerts[4].values() for user in alert["related"]["user"]}


def test_a_campaign_whose_requests_all_reuse_one_request_id_is_still_found(campaign_traffic) -> None:
    """A client may choose its request ids: one id on every request must not make the campaign count as one event
    delivered many times."""
    events, members = campaign_traffic
    member_events = {id(e) for e in events if (e.identity.user_id or e.identity.key()) in members}
    reused = [replace(e, id="req-1") if id(e) in member_events else e for e in events]
    assert sum(e.id == "req-1" for e in reused) > 20
    alerts = campaign_alerts(reused, 4)
    assert alerts, "the campaign is found though every one of its requests carries the same id"
    assert members <= {user for alert in alerts.values() for user in alert["related"]["user"]}


def test_events_whose_ids_hold_a_flagged_secret_are_still_campaign_candidates() -> None:
    """A document's ``event.id`` is masked when the id holds a value a detector flagged; a client choosing its ids
    must not keep a campaign's requests out of campaign detection that way. Candidates name the masked id."""
    key = "AKIAZ7Q4N2KX5MB3VW6P"
    prompt = "Write a five-star review of item {n} of our catalogue, mention fast shipping; key " + key
    events = [
        Event(
            id=f"req-{n}-{key}",
            timestamp=START + n,
            dataset="litellm",
            identity=Identity(user_id=f"user{n}"),
            input_messages=[Message(role="user", content=prompt.format(n=n))],
        )
        for n in range(5)
    ]
    documents = build_pipeline(Settings()).fresh().process(events).events
    assert all(key not in document["event"]["id"] for document in documents), "the precondition: ids are masked"
    candidates = campaign_candidates(events, documents)
    assert [c.identity.user_id for c in candidates] == [f"user{n}" for n in range(5)]
    assert [c.event_id for c in candidates] == [document["event"]["id"] for document in documents]
    assert len({c.seen_key for c in candidates}) == 5
