"""The harvest rule (shadow by default): an identity judged on what it took over about a day, not on its timing.

Bare windows (the enumeration rule's payload limits) with enumeration steps add their steps and output tokens to
two sums decayed over ``harvest_span_seconds``, and mark their hour in a ring of the last 24; the rule needs
enough of both sums in at least ``harvest_min_hours`` of those hours, which a scraper working short chunks between
long rests reaches and a person working a day does not."""

import json
import math
import random
from collections.abc import Sequence

import pytest
from msgspec.structs import replace
from pydantic import ValidationError

from app.settings import load_settings
from bench.eval_slow_rests import SLOW, START, resting_scraper
from detectors.anomaly import AnomalyConfig, AnomalyDetector
from detectors.anomaly.rules import SCRAPING_HARVEST
from detectors.base import Detection, Findings
from detectors.event import Event, Identity, Message
from tests.test_anomaly_slow import detections, event, replay

HOUR = 3600.0
HARVEST = SCRAPING_HARVEST.id


def harvest_alerts(events: Sequence[Event], config: AnomalyConfig | None = None) -> list[Detection]:
    return [d for d in detections(events, config) if d.rule.id == HARVEST]


def harvest_state(detector: AnomalyDetector, key: str = "key:key-slow-0") -> list[float]:
    """The entity's checkpointed harvest: decayed steps and output tokens, the hour ring and its newest hour."""
    return detector.state()["entities"][key].get("harvest", [0.0, 0.0, 0, 0])


def chunked_scraper(offset: float = 0.0) -> list[Event]:
    """The simulator's slow scraper working 5 minutes and resting 45, around the clock: about 4 requests a chunk,
    too few for any window's inter-arrival CV, so the slow rule misses it (docs/anomaly.md, session 16)."""
    return resting_scraper(45, offset=offset, cycle_minutes=50)


@pytest.mark.parametrize("offset", [0.0, 4 * 60.0, 9 * 60.0])
def test_a_scraper_in_5_minute_chunks_between_45_minute_rests_raises_a_shadow_harvest_alert(offset: float) -> None:
    events = chunked_scraper(offset)
    found = detections(events)
    assert [d for d in found if d.rule.id == SLOW] == []  # what the timing rule cannot see ...
    harvest = [d for d in found if d.rule.id == HARVEST]
    assert harvest, "the chunked scraper escaped the harvest rule"  # ... what it took shows
    assert {d.identity.key() for d in harvest} == {"key:key-slow-0"}
    assert {d.rule.status for d in harvest} == {"test"}  # shadow: the shadow alerts index, not the SOC queue
    first = min(harvest, key=lambda d: d.timestamp)
    assert first.timestamp - events[0].timestamp < 20 * HOUR  # 20 hours of the last 24, the documented delay
    assert first.explanation["harvest.hours"] >= 20
    assert first.explanation["harvest.steps"] >= 40
    assert "in 20 of the last 24 hours" in first.message


def test_the_status_setting_promotes_or_silences_the_rule() -> None:
    events = chunked_scraper()
    assert {d.rule.status for d in harvest_alerts(events, AnomalyConfig(harvest_status="stable"))} == {"stable"}
    assert harvest_alerts(events, AnomalyConfig(harvest_status="off")) == []


def reading_days(
    rng: random.Random,
    identity: Identity,
    hours: tuple[float, float],
    *,
    days: int,
    pause: float,
    output_tokens: int,
    new_contract_each_session: bool = False,
) -> list[Event]:
    """A person stepping through the numbered clauses of a contract ("next"), 3-8 at a reading pace per session,
    ``pause`` seconds between sessions on average, from ``hours[0]`` to ``hours[1]`` UTC: bare stepped prompts with
    a long answer each, hundreds of records a day, like a scraper's."""
    events, contract, clause = [], rng.randint(100, 999), rng.randint(1, 40)
    for day in range(days):
        timestamp = START + day * 86400 + hours[0] * HOUR + rng.uniform(0, 600)
        while timestamp < START + day * 86400 + hours[1] * HOUR:
            if new_contract_each_session:
                contract, clause = rng.randint(100, 999), rng.randint(1, 40)
            for _ in range(rng.randint(3, 8)):
                clause += 1
                prompt = f"Explain clause {clause} of contract {contract}"
                events.append(event(len(events), timestamp, identity, prompt, output_tokens=output_tokens))
                timestamp += rng.lognormvariate(3.7, 0.4)
            timestamp += rng.expovariate(1 / pause)
    return events


def clause_reader(seed: int) -> list[Event]:
    """One person reading one agreement through long days of 11 hours, 5 days."""
    identity = Identity(user_id=f"analyst-{seed}", source_ip="198.51.100.9", user_agent="Mozilla/5.0 portal")
    return reading_days(random.Random(seed), identity, (8.0, 19.0), days=5, pause=600, output_tokens=800)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_person_stepping_through_records_all_day_is_not_a_harvest(seed: int) -> None:
    events = clause_reader(seed)
    assert harvest_alerts(events) == []
    # what holds it back is the hour ring: a day of 11 hours, not 20 of 24, though the sums are well past theirs
    assert harvest_alerts(events, AnomalyConfig(harvest_min_hours=11))


def status_lookups(seed: int, hours: float = 48.0) -> list[Event]:
    """A benign bot looking up each new order's status around the clock: bare stepped prompts, two-word answers."""
    rng = random.Random(seed)
    identity = Identity(api_key_hash=f"order-status-{seed}", source_ip="203.0.113.9", user_agent="orders/3.0")
    events, order, timestamp = [], rng.randint(100_000, 900_000), START
    while timestamp < START + hours * HOUR:
        order += 1
        events.append(event(len(events), timestamp, identity, f"Status of order {order}?", output_tokens=4))
        timestamp += rng.expovariate(1 / 120)
    return events


def test_an_around_the_clock_bot_taking_short_answers_is_not_a_harvest() -> None:
    events = status_lookups(0)
    assert harvest_alerts(events) == []
    assert harvest_alerts(events, AnomalyConfig(harvest_min_output_tokens=0))  # steps and hours alone would alert


def test_payload_windows_and_unstepped_prompts_harvest_nothing() -> None:
    """Only bare windows with enumeration steps count: the same scraper sending a document with each request, or
    asking for its entries in random order, leaves the sums at zero."""
    rng = random.Random(0)
    events = chunked_scraper()
    with_documents = [replace(e, input_tokens=1500) for e in events]
    shuffled = [
        replace(e, input_messages=[Message(role="user", content=f"Give me encyclopedia entry {rng.randint(1, 10**6)}")])
        for e in events
    ]
    for variant in (with_documents, shuffled):
        detector = AnomalyDetector()
        replay(detector, variant)
        detector.flush()
        assert harvest_state(detector)[:3] == [0.0, 0.0, 0]
    detector = AnomalyDetector()
    replay(detector, events)
    detector.flush()
    assert harvest_state(detector)[0] > 0  # as sent, it harvests


def test_a_gap_longer_than_the_ring_forgets_the_hours_and_the_sums_decay() -> None:
    day_one = [e for e in chunked_scraper() if e.timestamp < START + 10 * HOUR]
    three_days_on = [e for e in chunked_scraper(3 * 86400.0) if e.timestamp < START + 3 * 86400 + 600]
    detector = AnomalyDetector()
    replay(detector, day_one)
    steps, tokens, hours, _ = harvest_state(detector)
    assert steps > 0 and tokens > 0 and hours.bit_count() >= 9  # nine or ten hours of chunks so far
    replay(detector, three_days_on)
    detector.flush()
    steps_after, tokens_after, hours_after, hour = harvest_state(detector)
    assert hours_after == 1  # only the new window's hour
    assert hour == int((START + 3 * 86400) // HOUR)
    new_steps = len(three_days_on) - 1  # its first prompt starts the entries again: not a step
    day_one_steps = len(day_one) - 1
    # the day-one part decayed, by at least the 62 h from its last window, not reset
    assert new_steps < steps_after <= new_steps + day_one_steps * math.exp(-62 / 24)
    assert tokens_after < tokens


def test_a_checkpoint_mid_stream_and_one_of_the_earlier_code_resume_to_the_same_alerts() -> None:
    events = chunked_scraper()
    expected = [(d.rule.id, d.timestamp) for d in detections(events)]
    assert HARVEST in {rule for rule, _ in expected}
    cut = START + 3 * HOUR
    before, after = [e for e in events if e.timestamp < cut], [e for e in events if e.timestamp >= cut]
    first = AnomalyDetector()
    found = replay(first, before)
    state = json.loads(json.dumps(first.state()))
    resumed = AnomalyDetector()
    resumed.load_state(state)
    resumed_found = [*found, *replay(resumed, after), *resumed.flush()]
    assert [(d.rule.id, d.timestamp) for d in resumed_found] == expected
    assert "harvest" in state["entities"]["key:key-slow-0"]  # harvesting by the cut
    for data in state["entities"].values():  # earlier code kept no harvest: it starts from nothing, and loads
        data.pop("harvest", None)
    older = AnomalyDetector()
    older.load_state(state)
    assert harvest_state(older) == [0.0, 0.0, 0, 0]
    later = [*found, *replay(older, after), *older.flush()]
    assert [d for d in later if d.rule.id == HARVEST]  # the scraper keeps working: its harvest builds up again


def test_no_harvest_alert_in_a_window_that_raised_another_scraping_rule() -> None:
    """A scraper the slow rule catches is not alerted twice for one window: harvest alerts come from windows that
    no other scraping rule judged."""
    found = detections(resting_scraper(20))  # caught by the slow rule within 2.5 h, around the clock for 24 h
    slow_windows = {d.timestamp // 600 for d in found if d.rule.id == SLOW}
    harvest_windows = {d.timestamp // 600 for d in found if d.rule.id == HARVEST}
    assert slow_windows
    assert not slow_windows & harvest_windows


def test_operators_promote_the_rule_with_one_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented promotion (docs/anomaly.md, "A day's harvest"): one environment variable, validated."""
    monkeypatch.setenv("ABW_DETECTION__ANOMALY__HARVEST_STATUS", "stable")
    assert load_settings().detection.anomaly.harvest_status == "stable"
    monkeypatch.setenv("ABW_DETECTION__ANOMALY__HARVEST_STATUS", "on")
    with pytest.raises(ValidationError, match="harvest_status"):
        load_settings()


def ring_after(timestamps: Sequence[float]) -> list[float]:
    """The harvest state of an identity sending a stepped entry at each of ``timestamps`` (two per window: a step)."""
    identity = Identity(api_key_hash="ring")
    events = [
        event(k, ts, identity, f"Give me entry number {100 + k} of the catalogue") for k, ts in enumerate(timestamps)
    ]
    detector = AnomalyDetector()
    replay(detector, events)
    detector.flush()
    return harvest_state(detector, "key:ring")


def test_the_hour_ring_keeps_23_hours_back_drops_the_24th_and_counts_an_hour_once() -> None:
    *_, hours, hour = ring_after([START + 10, START + 20, START + 23 * HOUR + 10, START + 23 * HOUR + 20])
    assert (hours, hour) == (1 << 23 | 1, int(START // HOUR) + 23)
    assert ring_after([START + 10, START + 20, START + 24 * HOUR + 10, START + 24 * HOUR + 20])[2] == 1
    assert ring_after([START + k * 300 + 5 for k in range(12)])[2] == 1  # six windows of one hour: one bit


def test_batch_cuts_and_checkpoints_at_many_points_keep_the_harvest_alerts() -> None:
    events = chunked_scraper()

    def key(found: Sequence[Detection]) -> list[tuple[str, float, str]]:
        return [(d.rule.id, d.timestamp, d.message) for d in found]

    expected = key(detections(events))
    assert HARVEST in {rule for rule, *_ in expected}
    one_by_one = AnomalyDetector()
    found = [d for e in events for d in one_by_one.detect([e], [Findings()])]
    assert key([*found, *one_by_one.flush()]) == expected
    for cut in range(5, len(events), 9):
        first = AnomalyDetector()
        before = replay(first, events[:cut])
        resumed = AnomalyDetector()
        resumed.load_state(json.loads(json.dumps(first.state())))
        assert key([*before, *replay(resumed, events[cut:]), *resumed.flush()]) == expected, f"cut at {cut}"


def follow_the_sun(seed: int, days: int = 3) -> list[Event]:
    """One organisation key behind one office IP, shared by analysts in three regions (01-09, 08-16 and 14-22 UTC),
    two each, reading a few clauses every half hour or so: 21 hours of 24 on the key and the IP, 8 per person (the
    session-17 review's case, 20/20 before the rule read one identity's own windows only)."""
    rng = random.Random(seed)
    events: list[Event] = []
    for region, hours in enumerate(((1.0, 9.0), (8.0, 16.0), (14.0, 22.0))):
        for person in range(2):
            identity = Identity(user_id=f"analyst-{region}-{person}", api_key_hash="org", source_ip="198.51.100.20")
            events += reading_days(
                rng, identity, hours, days=days, pause=1800, output_tokens=600, new_contract_each_session=True
            )
    return sorted(events, key=lambda e: e.timestamp)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_key_and_ip_shared_around_the_clock_by_people_working_their_days_are_not_a_harvest(seed: int) -> None:
    events = follow_the_sun(seed)
    assert harvest_alerts(events) == []
    detector = AnomalyDetector()
    replay(detector, events)
    entities = detector.state()["entities"]
    assert "harvest" not in entities["key:org"] and "harvest" not in entities["ip:198.51.100.20"]  # not counted
    assert "harvest" in entities["user:analyst-0-0"]  # each person's own steps are


def test_the_anonymous_entity_and_a_key_that_carries_a_second_identity_harvest_nothing() -> None:
    """The anonymous entity pools every request that names no one; a key that carries a second identity is no
    longer one identity's, so what it harvested alone is dropped, not left to go stale in its checkpoint."""
    nobody = [replace(e, identity=Identity()) for e in chunked_scraper()]
    assert harvest_alerts(nobody) == []
    detector = AnomalyDetector()
    replay(detector, nobody)
    assert "harvest" not in detector.state()["entities"]["anonymous"]

    events = [e for e in chunked_scraper() if e.timestamp < START + 10 * HOUR]
    detector = AnomalyDetector()
    replay(detector, events)
    assert harvest_state(detector)[0] > 0
    someone = replace(events[-1], id="a-user", timestamp=events[-1].timestamp + 3600)
    someone = replace(someone, identity=replace(someone.identity, user_id="u-1"))
    replay(detector, [someone, replace(someone, id="later", timestamp=someone.timestamp + 1800)])
    assert harvest_state(detector) == [0.0, 0.0, 0, 0]


def test_only_a_harvesting_identity_carries_the_harvest_in_its_alerts() -> None:
    accounts = random.Random(0).sample(range(10_000, 99_999), 120)  # in random order: no enumeration steps
    burst = [
        event(n, START + 5 * n, Identity(api_key_hash="burst"), f"Give me the record of account {account}")
        for n, account in enumerate(accounts)
    ]
    (alert,) = [d for d in detections(burst) if d.rule.id.endswith("scraping-enumeration")]
    assert not any(name.startswith("harvest.") for name in alert.explanation)  # it stepped through nothing
    (first,) = [d for d in detections(chunked_scraper()) if d.rule.id == HARVEST][:1]
    assert {"harvest.steps", "harvest.output_tokens", "harvest.hours"} <= set(first.explanation)
