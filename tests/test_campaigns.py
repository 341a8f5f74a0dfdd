"""Distributed campaigns, judged by template signature whatever identity partition each member is on."""

from __future__ import annotations

import json
import math
import random

import msgspec
import pytest
from msgspec.structs import replace

from app.engine import build_campaign_stage, build_pipeline
from app.settings import Settings
from app.sinks.elasticsearch import preserving_update, reopen_reason
from app.stream.codec import decode_candidates, encode_candidates
from app.traffic.simulate import SimulationConfig, simulate
from detectors.anomaly import AnomalyConfig, AnomalyDetector
from detectors.base import Detection
from detectors.campaigns import (
    CampaignCandidate,
    CampaignDetector,
    CampaignStage,
    campaign_candidates,
    group_by_signature,
    signature_partition,
)
from detectors.documents import supersedes
from detectors.event import Event, Identity, Message
from detectors.exceptions import load_exceptions
from detectors.partitioned import PartitionedPipeline, partition_for
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


def burst(identities: int, requests: int, signature: str = "00ab", offset: float = 0.0) -> list[CampaignCandidate]:
    return [candidate(n * identities + i, i, signature, offset) for n in range(requests) for i in range(identities)]


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
    # the control: sources not declared (and no re-judging of closed windows), source 1 comes too late
    without = CampaignDetector(AnomalyConfig(campaign_rejudge_seconds=0), idle_seconds=60.0, clock=lambda: 0.0)
    assert without.detect(early) + without.detect([c for c in requests if c.source == 1]) == []
    assert without.flush() == []


def stalled(config: AnomalyConfig | None = None) -> tuple[CampaignDetector, list[CampaignCandidate]]:
    """Source 1 (key-4) stalls after its first request while source 0 races on; once source 1 has been silent for
    longer than ``idle_seconds`` the window closes with four members: no campaign. Returns key-4's late requests."""
    clock = [0.0]
    detector = CampaignDetector(config, idle_seconds=60.0, clock=lambda: clock[0])
    requests = [replace(c, source=int(c.identity.api_key_hash == "key-4")) for c in burst(5, 3)]
    assert detector.detect(requests[:5]) == []
    assert detector.detect([c for c in requests[5:] if c.source == 0] + closing()) == []
    clock[0] = 61.0
    assert detector.detect([replace(closing()[0], event_id="later", timestamp=START + 1900.0)]) == []
    return detector, [c for c in requests[5:] if c.source == 1]


def test_late_members_from_a_stalled_partition_still_complete_a_campaign() -> None:
    """A crashed worker's partition catching up after ``idle_seconds``: its members used to be dropped."""
    detector, late = stalled()
    detections = detector.detect(late)
    assert [d.rule.id for d in detections] == [CAMPAIGN_RULE]
    assert "key:key-4" in detections[0].related_users
    assert detections[0].explanation["judged_late"] == 1.0 and "members arrived late" in detections[0].message
    again = [replace(c, event_id=f"again-{c.event_id}") for c in late]
    assert [c.amends for c in detector.campaigns(again)] == [True], "raised once: more requests amend it"
    assert detector.flush() == []
    never, late = stalled(AnomalyConfig(campaign_rejudge_seconds=0))
    assert never.detect(late) + never.flush() == [], "the control: with re-judging off they are dropped"


def test_a_closed_window_is_judged_again_only_for_a_while_and_survives_a_checkpoint() -> None:
    detector, late = stalled(AnomalyConfig(campaign_rejudge_seconds=1500))  # kept until the watermark is at 2,100 s
    restored = CampaignDetector(AnomalyConfig(campaign_rejudge_seconds=1500))
    restored.load_state(msgspec.json.decode(msgspec.json.encode(detector.state())))
    assert [d.rule.id for d in restored.detect(late)] == [CAMPAIGN_RULE]
    detector.detect([replace(closing()[0], event_id="much-later", timestamp=START + 2500.0)])  # watermark: 2,440 s
    assert detector.detect(late) == [], "past campaign_rejudge_seconds the closed window is gone"


def test_closed_windows_kept_for_re_judging_are_bounded_by_their_members() -> None:
    """At most ``campaign_rejudge_max_members`` members in all the closed windows kept, the busiest windows first;
    windows of one request never (a window of 200 members costs about 100 KiB: a bound on windows would not do)."""
    detector = CampaignDetector(AnomalyConfig(campaign_rejudge_max_members=6))
    candidates = []
    for window in range(3):  # two signatures of two identities in each of three windows, and a one-off
        for number, (signature, requests) in enumerate([("aa", 2), ("bb", 3), ("cc", 1)]):
            for n in range(requests):
                offset = 600.0 * window + 10 * number + n
                candidates.append(replace(candidate(n, n % 2, f"{signature}{window}", offset), event_id=f"{offset}"))
    detector.detect(candidates)
    detector.detect([replace(closing()[0], timestamp=START + 1861.0)])  # closes all three, expires none
    assert sorted(row[1] for row in detector.state()["closed"]) == ["aa0", "bb0", "bb1"]


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


# --- a campaign spread thin: its window judged in total (rule abusewatch-anomaly-scraping-campaign-enumeration)

ENUMERATION_RULE = "abusewatch-anomaly-scraping-campaign-enumeration"
REVIEW_WORDS = ("amber", "basin", "cedar", "delta", "ember", "fjord", "grove", "harbor")


def spread(identities: int, requests: int, **profile) -> list[CampaignCandidate]:
    """``requests`` candidates on one template from ``identities`` keys in turn, each with other slot values and the
    profile given (value_bucket, context_tokens, slot_chars; a distinct bucket per request unless given)."""
    return [
        replace(candidate(n, n % identities), **{"value_bucket": n % 256, "context_tokens": 20.0, **profile})
        for n in range(requests)
    ]


def judged(candidates: list[CampaignCandidate], **config) -> list[Detection]:
    detector = CampaignDetector(AnomalyConfig(**config))
    return detector.detect(candidates) + detector.detect(closing())


def test_many_identities_with_few_requests_each_are_judged_in_total() -> None:
    """40 keys, 2 requests each on one template with other values: no identity reaches the campaign rule's 3."""
    detections = judged(spread(40, 80))
    assert [d.rule.id for d in detections] == [ENUMERATION_RULE]
    assert detections[0].rule.status == "test", "shadow by default: an app's templated action looks the same"
    assert detections[0].related_users == sorted(f"key:key-{i}" for i in range(40))
    assert detections[0].explanation["requests"] == 80
    assert detections[0].explanation["api_keys"] == 40
    assert [d.rule.status for d in judged(spread(40, 80), campaign_enumeration_status="stable")] == ["stable"]
    assert judged(spread(40, 80), campaign_enumeration_status="off") == []
    assert [d.rule.id for d in judged(burst(40, 3))] == [CAMPAIGN_RULE], "the campaign rule goes first"
    assert [d.rule.id for d in judged(spread(30, 60))] == [ENUMERATION_RULE], "at the threshold: 60 in all"


@pytest.mark.parametrize(
    ("why", "candidates"),
    [
        ("too few requests", spread(40, 59)),
        ("too few identities", spread(4, 80)),
        ("the same values again and again", spread(40, 80, value_bucket=7)),
        ("a payload of their own", spread(40, 80, context_tokens=400.0)),
        ("long slot text (quoted messages)", spread(40, 80, slot_chars=120)),
        ("slot values not known (a worker of an earlier version)", spread(40, 80, value_bucket=-1)),
        (
            "one enumerator and a few others",
            spread(1, 80) + [replace(c, event_id=f"x{c.event_id}") for c in spread(5, 5)],
        ),
    ],
)
def test_a_shared_template_without_enumeration_is_no_campaign(why: str, candidates: list[CampaignCandidate]) -> None:
    assert judged(candidates) == [], why


def test_a_big_campaign_is_not_taken_for_a_repetitive_one() -> None:
    """Past ~1,400 values the distinct-value map is full; 3,000 distinct requests must still count as distinct."""
    rng = random.Random(5)
    many = [replace(c, value_bucket=rng.randrange(256), timestamp=START + c.timestamp % 1) for c in spread(3000, 3000)]
    assert [d.rule.id for d in judged(many, campaign_max_identities=200)] == [ENUMERATION_RULE]


def test_hostile_numbers_on_a_candidate_do_not_break_the_stage() -> None:
    odd = [replace(c, value_bucket=10**30 + c.value_bucket, context_tokens=math.nan) for c in spread(40, 80)]
    assert judged(odd) == [], "NaN context counts as a payload, not as none"
    huge = [replace(c, value_bucket=2**62 + c.value_bucket) for c in spread(40, 80)]
    assert [d.rule.id for d in judged(huge)] == [ENUMERATION_RULE], "a bucket is taken modulo the map's bits"


def test_a_campaign_raised_at_close_is_not_raised_again_by_late_members() -> None:
    """Review of session 10: a stalled partition's members of a window that alerted at close made a fresh window of
    its signature and raised it a second time. They amend that alert instead (below)."""
    clock = [0.0]
    detector = CampaignDetector(idle_seconds=60.0, clock=lambda: clock[0])
    live = [replace(c, source=0) for c in burst(5, 3)]
    live += [replace(candidate(200 + k, 50 + k, "bbbb"), event_id=f"b{k}") for k in range(2)]  # kept at close
    stalled_source = [replace(candidate(300, 100), event_id="s", source=1)]
    assert detector.detect(stalled_source + live) == []
    clock[0] = 61.0
    at_close = detector.detect([replace(closing()[0], timestamp=START + 1900.0)])
    assert [d.rule.id for d in at_close] == [CAMPAIGN_RULE]
    late = [replace(candidate(400 + n, 100 + n % 5), event_id=f"late{n}", source=1) for n in range(15)]
    assert [c.amends for c in detector.campaigns(late)] == [True], "raised once: the late members amend it"
    restored = CampaignDetector()
    restored.load_state(msgspec.json.decode(msgspec.json.encode(detector.state())))
    again = [replace(c, event_id=f"again-{c.event_id}") for c in late]
    assert [c.amends for c in restored.campaigns(again)] == [True], "also after a restart"


def test_a_late_campaign_is_raised_whatever_the_batching() -> None:
    """Review of session 10: late members, then candidates moving the watermark past the window's re-judge time, in
    one batch lost the campaign that one message at a time raised."""

    def run(split: bool) -> list[str]:
        detector, late = stalled(AnomalyConfig(campaign_rejudge_seconds=1500))
        onward = [
            replace(closing()[0], event_id=f"o{source}", timestamp=START + 2500.0, source=source) for source in (0, 1)
        ]
        found = detector.detect(late) + detector.detect(onward) if split else detector.detect(late + onward)
        return [d.rule.id for d in found]

    assert run(split=True) == run(split=False) == [CAMPAIGN_RULE]


def test_a_shadow_rules_members_do_not_join_a_stable_campaigns_memory() -> None:
    """Review of session 10: customers of an app (the enumeration rule, in shadow) were named in a later stable
    campaign alert of the same template, which an exception for the bulk job then no longer suppressed."""
    detector = CampaignDetector()
    customers = [
        replace(c, identity=Identity(api_key_hash="shop-app", user_id=f"cust-{n}"))
        for n, c in enumerate(spread(80, 80))
    ]
    bulk = [replace(c, event_id=f"bulk{c.event_id}", timestamp=c.timestamp + 600) for c in burst(5, 3)]
    found = detector.detect(customers + bulk) + detector.flush()
    assert [d.rule.id for d in found] == [ENUMERATION_RULE, CAMPAIGN_RULE]
    assert found[1].related_users == sorted(f"key:key-{i}" for i in range(5))


def test_a_few_requests_with_a_payload_do_not_hide_the_bare_ones() -> None:
    """Review of session 10: one request carrying a pasted document (or two with a huge number) pushed the window's
    mean context or slot text over the limit and hid 80 bare requests; now the bare requests are counted."""
    document = replace(candidate(900, 1), event_id="doc", value_bucket=3, context_tokens=20_000.0)
    numbers = [replace(candidate(901 + n, 2), event_id=f"n{n}", value_bucket=4, slot_chars=2**63 - 1) for n in range(2)]
    padded = [*spread(40, 80), document, *numbers]
    detector = CampaignDetector()
    found = detector.detect(padded)
    msgspec.json.encode(detector.state())  # a huge value encodes: nothing is summed from it
    found += detector.detect(closing())
    assert [d.rule.id for d in found] == [ENUMERATION_RULE]
    assert found[0].explanation["bare_requests"] == 80


def test_the_totals_survive_a_checkpoint_and_an_older_one_still_loads() -> None:
    candidates = spread(40, 80)
    before = CampaignDetector()
    assert before.detect(candidates[:50]) == []
    restored = CampaignDetector()
    restored.load_state(msgspec.json.decode(msgspec.json.encode(before.state())))
    assert [d.rule.id for d in restored.detect(candidates[50:]) + restored.detect(closing())] == [ENUMERATION_RULE]
    older = before.state()
    older["windows"] = [window[:8] for window in older["windows"]]  # written before the totals were kept
    from_older = CampaignDetector()
    from_older.load_state(older)
    assert from_older.detect(candidates[50:]) + from_older.detect(closing()) == [], "not profiled: not judged"


def test_a_candidate_from_an_earlier_worker_version_decodes_unprofiled() -> None:
    old = msgspec.msgpack.encode([{"event_id": "e1", "timestamp": START, "identity": {}, "signature": "00ab"}])
    [decoded] = decode_candidates(old)
    assert (decoded.value_bucket, decoded.slot_chars, decoded.context_tokens) == (-1, 0, 0.0)


def thin_campaign(keys: int, per_window: int, hours: int) -> list[Event]:
    """``keys`` keys writing fake reviews of listings, exactly ``per_window`` requests each per 10-minute window."""
    rng = random.Random(3)
    events = []
    for key in range(keys):
        for slot in range(hours * 6 * per_window):
            listing, word = rng.randint(1, 999_999), rng.choice(REVIEW_WORDS)
            events.append(
                Event(
                    id=f"thin-{key}-{slot}",
                    timestamp=START + (slot + rng.random()) * 600 / per_window,
                    dataset="litellm",
                    identity=Identity(api_key_hash=f"key-thin-{key}", source_ip=f"198.51.100.{key}"),
                    input_messages=[
                        Message(role="user", content=f'Write a five-star review for listing #{listing} about "{word}"')
                    ],
                    input_tokens=45,
                )
            )
    return sorted(events, key=lambda event: event.timestamp)


def rotating_user_ids(requests: int) -> list[Event]:
    """One key sending a new user id (LiteLLM's ``end_user``, the client's to set) with every request."""
    return [
        Event(
            id=f"rot-{n}",
            timestamp=START + 5 * n,
            dataset="litellm",
            identity=Identity(user_id=f"u-{n:08x}", api_key_hash="key-rot", source_ip="203.0.113.9"),
            input_messages=[
                Message(role="user", content=f"Give the full product description and price of SKU {10**5 + n}")
            ],
            input_tokens=30,
        )
        for n in range(requests)
    ]


def shadow_rules(events: list[Event], partitions: int) -> dict[str, set[str]]:
    """The rules of the alerts and shadow alerts the engine raises, and the users its campaign alerts name."""
    redactor = Redactor(b"test")
    stage = CampaignStage(CampaignDetector(), Pipeline([], redactor).grouper)
    engine = PartitionedPipeline(Pipeline([AnomalyDetector()], redactor), partitions, stage)
    results = [engine.process(events[start : start + 500]) for start in range(0, len(events), 500)] + [engine.flush()]
    found: dict[str, set[str]] = {"alerts": set(), "shadow": set(), "named": set()}
    for result in results:
        found["alerts"] |= {alert["rule"]["id"] for alert in result.alerts}
        found["shadow"] |= {alert["rule"]["id"] for alert in result.shadow_alerts}
        found["named"] |= {user for a in result.shadow_alerts for user in a.get("related", {}).get("user", [])}
    return found


def test_a_campaign_of_two_requests_per_key_is_found_in_shadow() -> None:
    """Session 7's review: 40 keys sending 2 templated requests each per window raised nothing."""
    found = shadow_rules(thin_campaign(keys=40, per_window=2, hours=2), partitions=4)
    assert ENUMERATION_RULE in found["shadow"]
    assert {f"key:key-thin-{key}" for key in range(40)} <= found["named"]
    assert CAMPAIGN_RULE not in found["alerts"] | found["shadow"], "the precondition: no key makes 3 a window"


def test_one_key_rotating_user_ids_over_many_partitions_is_found_in_shadow() -> None:
    """Session 9's review: with 48 identity partitions each sees 1/48 of the key's traffic and no user id repeats;
    the campaign stage sees the template's whole window."""
    found = shadow_rules(rotating_user_ids(720), partitions=48)
    assert ENUMERATION_RULE in found["shadow"]


# --- late members of a window that already alerted join that alert (issue #5)

LATE_KEYS = [f"key:key-{i}" for i in (5, 6, 7)]


def idle_partition(partitions: int | None = None) -> tuple[CampaignStage, list[float], list[list[CampaignCandidate]]]:
    """Keys 0-4 send 3 requests each on one template in one window, keys 5-7 (source 1) 4 each, the window's
    earliest (so they push one another out of its event ids); source 1 sends its first request, then goes silent for
    longer than ``idle_seconds`` while source 0 moves on. With ``partitions``, each candidate's source is its
    identity's partition instead. Returns the stage, its clock, and the batches in arrival order: the live requests,
    the one that closes the window (with a campaign of keys 0-4), then keys 5-7's late ones."""
    clock = [0.0]
    detector = CampaignDetector(idle_seconds=60.0, clock=lambda: clock[0])
    stage = CampaignStage(detector, Pipeline([], Redactor(b"test")).grouper)

    def source(c: CampaignCandidate) -> int:
        if partitions is not None:
            return partition_for(c.identity.key(), partitions)
        return int(c.identity.key() in LATE_KEYS)

    early = [replace(candidate(3 * n + key - 5, key), event_id=f"s{n}-{key}") for n in range(4) for key in (5, 6, 7)]
    everything = [replace(c, source=source(c)) for c in early + burst(5, 3, offset=100.0)]
    live = everything[:1] + everything[len(early) :]
    late = everything[1 : len(early)]
    onward = [replace(c, timestamp=START + 1900.0, source=source(c)) for c in closing()]
    return stage, clock, [live, onward, late]


def run_stalled(stage: CampaignStage, clock: list[float], batches: list[list[CampaignCandidate]]) -> list[dict]:
    """The alerts written, batch by batch (the clock passes ``idle_seconds`` after the live batch), and the flush."""
    written = []
    for number, batch in enumerate(batches):
        written += stage.process(batch).alerts
        if number == 0:
            clock[0] = 61.0
    return written + stage.flush().alerts


def last_written(alerts: list[dict]) -> dict[str, dict]:
    """The final version of each alert, as the sink keeps it (a later rendering supersedes an earlier one)."""
    final: dict[str, dict] = {}
    for alert in alerts:
        stored = final.get(alert["event"]["id"])
        if stored is None or supersedes(alert, stored):
            final[alert["event"]["id"]] = alert
    return final


def test_late_members_of_a_window_that_alerted_at_close_are_named_in_its_alert() -> None:
    """Issue #5: an analyst blocking a campaign's keys from its alert missed the identities of a partition that was
    idle when the window closed. They join the alert: written again under the same id, naming all eight, with the
    same count and severity, so a triaged alert is not re-opened."""
    stage, clock, (live, onward, late) = idle_partition()
    assert stage.process(live).alerts == []
    clock[0] = 61.0
    [at_close] = stage.process(onward).alerts
    assert at_close["related"]["user"] == [f"key:key-{i}" for i in range(5)], "the precondition: closed without them"
    [amended] = stage.process(late).alerts
    assert amended["event"]["id"] == at_close["event"]["id"]
    assert amended["related"]["user"] == sorted(f"key:key-{i}" for i in range(8))
    assert amended["abusewatch"]["explanation"]["identities"] == 8.0
    assert amended["abusewatch"]["explanation"]["judged_late"] == 1.0
    assert (amended["abusewatch"]["count"], amended["event"]["severity"]) == (1, at_close["event"]["severity"])
    assert supersedes(amended, at_close)
    triaged = {**at_close, "abusewatch": {**at_close["abusewatch"], "status": "closed"}}
    assert reopen_reason(triaged, amended) is None
    assert "status" not in preserving_update(amended)["doc"]["abusewatch"]
    assert stage.flush().alerts == [], "nothing more to say"


def test_late_members_join_the_alert_across_a_checkpoint() -> None:
    """The stage restarts between the window's close and its late members: a checkpoint of the new code keeps the
    alerted window; one of the earlier code (which kept none) still loads, and raises no second alert."""
    stage, clock, (live, onward, late) = idle_partition()
    uninterrupted = run_stalled(*idle_partition()[:2], [live, onward, late])
    stage.process(live)
    clock[0] = 61.0
    [at_close] = stage.process(onward).alerts
    checkpoint = msgspec.json.decode(msgspec.json.encode(stage.state()))
    restored = stage.fresh()
    restored.load_state(checkpoint)
    [amended] = restored.process(late).alerts
    assert [at_close, amended] == uninterrupted
    assert len(amended["related"]["user"]) == 8
    older = msgspec.json.decode(msgspec.json.encode(checkpoint))
    older["campaigns"]["closed"] = [row for row in older["campaigns"]["closed"] if len(row) == 9]  # none alerted
    from_older = stage.fresh()
    from_older.load_state(older)
    assert from_older.process(late).alerts + from_older.flush().alerts == [], "not kept then: no second alert"


@pytest.mark.parametrize("partitions", [1, 4, 16])
def test_late_members_are_named_whatever_the_batching_and_partitions(partitions: int) -> None:
    """One batch, one candidate at a time, late ones out of time order, or the watermark moving past the re-judge
    time in the same batch: the alert finally written is the same, one alert naming all eight."""
    _stage, _clock, (live, onward, late) = idle_partition(partitions)
    beyond = [replace(c, event_id=f"beyond-{c.event_id}", timestamp=START + 3000.0) for c in onward]
    batchings = {
        "one batch": [live, onward, late],
        "one at a time": [live, onward, *([c] for c in late)],
        "backwards": [live, onward, *([c] for c in late[::-1])],
        "with the watermark": [live, onward, late + beyond],
    }
    finals = {}
    for name, batches in batchings.items():
        stage, clock, _ = idle_partition(partitions)
        finals[name] = last_written(run_stalled(stage, clock, batches))
    reference = finals["one batch"]
    assert [len(alert["related"]["user"]) for alert in reference.values()] == [8]
    assert all(final == reference for final in finals.values()), "the final alert depends on the batching"
    alone, clock, two_sources = idle_partition()
    assert last_written(run_stalled(alone, clock, two_sources)) == reference, "or on the partitions"


def test_alerted_windows_kept_for_late_members_count_against_the_same_bound() -> None:
    """The alerted window and its late members count against ``campaign_rejudge_max_members``; windows without a
    campaign (which could still become one) are kept first. At the bound, a late member not kept is not named."""

    def bounded(members: int | None) -> tuple[dict[str, int], list[str]]:
        """The closed windows kept (members each) once the late members came, and whom the alert names last."""
        stage, clock, (live, onward, late) = idle_partition()
        if members is not None:
            stage.detector.config = AnomalyConfig(campaign_rejudge_max_members=members)
        near = [replace(candidate(100 + n, 20 + n % 4, "cccc"), event_id=f"c{n}") for n in range(8)]  # 4 members
        stage.process(live + near)
        clock[0] = 61.0
        written = stage.process(onward).alerts + stage.process(late).alerts
        rows = {row[1]: len(row[2]) for row in stage.detector.state()["closed"]}
        return rows, written[-1]["related"]["user"]

    # at close: cccc (4 members) and the alerted 00ab (6: keys 0-4 and key-5's first request), 10 in all
    rows, named = bounded(members=11)
    assert rows == {"cccc": 4, "00ab": 7}, "key-5 (a member already) and key-6 join; key-7 is past the bound"
    assert named == sorted(f"key:key-{i}" for i in range(7)), "only those kept are named"
    rows, named = bounded(members=9)
    assert rows == {"cccc": 4}, "the window without a campaign first; the alerted one does not fit"
    assert named == [f"key:key-{i}" for i in range(5)]
    rows, named = bounded(members=None)
    assert rows == {"cccc": 4, "00ab": 8} and len(named) == 8, "the control: room for all"


def test_hostile_late_members_do_not_break_the_stage() -> None:
    """Late members from the topic with hostile numbers, an empty identity, or a time far ahead: no crash, and the
    alert still names the late identities it can."""
    stage, clock, (live, onward, late) = idle_partition()
    odd = [replace(c, value_bucket=2**63 - 1, context_tokens=math.nan, slot_chars=2**63 - 1, source=-5) for c in late]
    hostile = [
        *odd,
        replace(late[0], event_id="nobody", identity=Identity()),
        replace(late[0], event_id="nan", timestamp=math.nan),
        replace(late[0], event_id="inf", timestamp=math.inf),
    ]
    wire = decode_candidates(encode_candidates(hostile))
    written = run_stalled(stage, clock, [live, onward, wire, [replace(late[0], event_id="far", timestamp=1e300)]])
    msgspec.json.encode(stage.state())
    [final] = [a for a in last_written(written).values() if a["rule"]["id"] == CAMPAIGN_RULE]
    assert set(LATE_KEYS) <= set(final["related"]["user"])


def test_a_late_member_outside_an_exception_brings_a_suppressed_campaign_to_the_queue(tmp_path) -> None:
    """The window's alert was suppressed (an exception for keys 0-4, a bulk job); keys 5-7 are not excepted, so the
    campaign they join is no longer covered: it is alerted in the queue, and charged to a risk score, as a
    campaign alert naming them at close would have been."""
    path = tmp_path / "exceptions.yml"
    bulk = {"abusewatch.api_key_hash": [f"key-{i}" for i in range(5)]}
    rule = {"id": "bulk-job", "rules": [CAMPAIGN_RULE], "match": bulk, "reason": "CHG-1", "expires": "2099-01-01"}
    path.write_text(json.dumps([rule]))
    stage, clock, (live, onward, late) = idle_partition()
    stage.exceptions = load_exceptions(path)
    stage.process(live)
    clock[0] = 61.0
    at_close = stage.process(onward)
    assert at_close.alerts == [] and len(at_close.shadow_alerts) == 1, "the precondition: suppressed at close"
    assert stage.grouper.state()["risk"] == {}
    found = stage.process(late)
    [alert] = found.alerts
    assert alert["related"]["user"] == sorted(f"key:key-{i}" for i in range(8)) and found.suppressed == []
    assert list(stage.grouper.state()["risk"]) == ["key:key-0"]


def test_a_shadow_alert_whose_late_members_make_a_campaign_raises_the_campaign_alert() -> None:
    """The window alerted in shadow (the enumeration rule: 40 keys, 2 requests each); late requests give five of
    them a third: the window now meets the campaign rule, whose alert is a new one, in the queue (not an amendment
    of the shadow alert, which is of another rule)."""

    def closed_in_shadow() -> CampaignStage:
        stage = CampaignStage(CampaignDetector(), Pipeline([], Redactor(b"test")).grouper)
        assert stage.process(spread(40, 80)).alerts == []
        assert [a["rule"]["id"] for a in stage.process(closing()).shadow_alerts] == [ENUMERATION_RULE]
        return stage

    late = [replace(candidate(90 + n, n), event_id=f"third-{n}", value_bucket=200 + n) for n in range(5)]
    [campaign] = closed_in_shadow().detector.campaigns(late)
    assert (campaign.detection.rule.id, campaign.amends) == (CAMPAIGN_RULE, False)
    found = closed_in_shadow().process(late)
    assert [(a["rule"]["id"], a["abusewatch"]["count"]) for a in found.alerts] == [(CAMPAIGN_RULE, 1)]
    assert found.alerts[0]["related"]["user"] == sorted(f"key:key-{n}" for n in range(5))
