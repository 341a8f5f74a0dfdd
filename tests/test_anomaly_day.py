"""The day rules: tokens, requests and requests with extraction parameters summed over about a day (decayed with a
24-hour time constant of event time), judged against the entity's own earlier days or, for a new entity, against
its peers' days.

Until session 24 nothing accumulated beyond one 10-minute window, so a key spending 44.9 M tokens a day just under
the resource-abuse rule's 400,000 tokens a window, or distilling the model with 20,000 diverse requests a day under
the volume rule's 150 a window, was never alerted (the review's H4 and H3)."""

import itertools
import json
import math
import random
from collections.abc import Sequence

import pytest

from detectors.anomaly import AnomalyConfig, AnomalyDetector
from detectors.anomaly.models import DayPeers, DaySums
from detectors.anomaly.rules import (
    MODEL_EXTRACTION_DAY,
    RESOURCE_ABUSE,
    RESOURCE_ABUSE_DAY,
    SCRAPING_DAY,
)
from detectors.base import Detection, Findings
from detectors.event import Event, Identity, Message

DAY = 86400.0
HOUR = 3600.0
START = 1_767_830_400.0  # a UTC midnight
# after the detector's first day (its first window: the office's 08:00), when the peers have learnt enough days
ATTACK = START + DAY + 9 * HOUR
WORDS = ("budget", "latency", "contract", "firewall", "roadmap", "invoice", "schema", "outage", "pricing", "audit")
DAY_RULES = {RESOURCE_ABUSE_DAY.id, SCRAPING_DAY.id, MODEL_EXTRACTION_DAY.id}


def traffic(
    identity: Identity,
    start: float,
    hours: float,
    per_window: float,
    *,
    tokens: tuple[int, int],
    params: dict | None = None,
    cap: int = 10**6,
    seed: int = 0,
) -> list[Event]:
    """Poisson requests at ``per_window`` a 10-minute window (at most ``cap`` in one), each a question of its own
    with ``tokens`` (input, output)."""
    rng = random.Random(f"{identity.key()}-{seed}")
    events, counts, timestamp = [], {}, start
    while timestamp < start + hours * HOUR:
        window = int(timestamp // 600)
        if counts.get(window, 0) < cap:
            counts[window] = counts.get(window, 0) + 1
            prompt = " ".join(rng.sample(WORDS, 5)) + f" {rng.choice(WORDS)}s and {rng.choice(WORDS)}?"
            events.append(
                Event(
                    id=f"{identity.key()}-{len(events)}",
                    timestamp=round(timestamp, 3),
                    dataset="test",
                    input_messages=[Message(role="user", content=prompt)],
                    output_messages=[Message(role="assistant", content="Here you are.")],
                    input_tokens=tokens[0],
                    output_tokens=tokens[1],
                    request_params=params or {"temperature": 0.7},
                    identity=identity,
                )
            )
        timestamp += rng.expovariate(per_window / 600)
    return events


def office(days: int = 3, users: int = 40) -> list[Event]:
    """People at work 08-17 UTC, a few requests an hour each, one of them heavy: the peers' days."""
    events = []
    for user in range(users):
        identity = Identity(user_id=f"person-{user}", api_key_hash=f"k-person-{user}", source_ip=f"203.0.113.{user}")
        rate, size = (4.0, (3000, 600)) if user == 0 else (0.5, (400, 300))
        for day in range(days):
            events += traffic(identity, START + day * DAY + 8 * HOUR, 9, rate, tokens=size, seed=day)
    return events


def key(name: str) -> Identity:
    return Identity(api_key_hash=name, source_ip=f"198.51.100.{len(name)}")


def drain(start: float = ATTACK, hours: float = 16.0) -> list[Event]:
    """The review's F1: a new key, 12 requests a window of ~27,500 + 2,000 tokens, under 400,000 tokens a window."""
    return traffic(key("sk-drain"), start, hours, 12, tokens=(27_500, 2_000), cap=12)


def detect(events: Sequence[Event], config: AnomalyConfig | None = None) -> list[Detection]:
    detector = AnomalyDetector(config)
    ordered = sorted(events, key=lambda e: e.timestamp)
    return detector.detect(ordered, [Findings() for _ in ordered]) + detector.flush()


def day_alerts(detections: Sequence[Detection], who: str | None = None) -> list[Detection]:
    return [d for d in detections if d.rule.id in DAY_RULES and (who is None or d.identity.key() == who)]


def test_a_new_key_spending_just_under_the_window_threshold_all_day_is_a_days_resource_abuse() -> None:
    events = drain()
    assert max(sum(e.input_tokens + e.output_tokens for e in events if e.timestamp // 600 == w) for w in
               {e.timestamp // 600 for e in events}) < 400_000  # fmt: skip
    found = detect(office() + events)
    assert [d for d in found if d.rule.id == RESOURCE_ABUSE.id] == []  # no window shows it
    (alert,) = day_alerts(found)
    assert alert.rule.id == RESOURCE_ABUSE_DAY.id and alert.rule.category == "resource_abuse"
    assert alert.identity.key() == "key:sk-drain" and alert.rule.status == "stable"
    assert alert.timestamp - events[0].timestamp < 8 * HOUR
    assert alert.explanation["day.tokens"] >= AnomalyConfig().day_min_tokens
    assert alert.explanation["day.tokens"] >= 10 * alert.explanation["day.peer_quantile.tokens"]
    assert "as a new identity" in alert.message and "tokens over the last day" in alert.message


def test_a_distiller_under_150_requests_a_window_is_a_days_scraping() -> None:
    """The review's C2: diverse prompts, at most 145 requests a window, ~2,000-token answers."""
    events = traffic(key("sk-distil"), ATTACK, 16, 160, tokens=(150, 2000), cap=145)
    found = detect(office() + events)
    rules = {d.rule.id: d for d in day_alerts(found, "key:sk-distil")}
    assert SCRAPING_DAY.id in rules and RESOURCE_ABUSE_DAY.id in rules
    assert rules[SCRAPING_DAY.id].rule.category == "scraping"
    assert rules[SCRAPING_DAY.id].timestamp - events[0].timestamp < 6 * HOUR
    assert not [d for d in found if d.rule.id == "abusewatch-anomaly-scraping-volume"]


@pytest.mark.parametrize(
    "params",
    [
        {"temperature": 1.0, "logprobs": True, "top_logprobs": 20, "max_tokens": 1024},  # the review's B
        {"temperature": 0.9, "n": 8, "max_tokens": 512},  # the review's E
    ],
)
def test_logprobs_or_several_choices_at_one_temperature_all_day_are_a_days_extraction(params: dict) -> None:
    events = traffic(key("sk-topk"), ATTACK, 16, 60, tokens=(150, 800), params=params)
    found = detect(office() + events)
    assert not [d for d in found if d.rule.id == "abusewatch-anomaly-model-extraction"]  # no sweep: no window rule
    extraction = [d for d in day_alerts(found, "key:sk-topk") if d.rule.id == MODEL_EXTRACTION_DAY.id]
    assert extraction and extraction[0].rule.category == "model_extraction"
    assert extraction[0].timestamp - events[0].timestamp < 3 * HOUR
    assert extraction[0].explanation["day.extraction_requests"] >= 500


def heavy_app(start: float, days: float) -> list[Event]:
    """An application key shared by many end users: ~35 requests a window around the clock, ~4,000 tokens each
    (~20 M tokens and ~5,000 requests a day), every day alike."""
    events = []
    for user in range(50):
        identity = Identity(user_id=f"member-{user}", api_key_hash="sk-app", source_ip="10.9.9.9")
        events += traffic(identity, start, days * 24, 35 / 50, tokens=(3400, 600), seed=user)
    return events


def test_an_established_heavy_key_is_judged_on_its_own_days_and_stays_silent() -> None:
    """There from the detector's first day, it is no new identity: its peers' days are not its measure."""
    found = detect(office(days=4) + heavy_app(START, 4))
    assert day_alerts(found) == []


def test_the_same_key_launched_after_the_first_day_alerts_once_by_design() -> None:
    """A new key that spends like no identity before it from its first day is the drained key's traffic: one
    alert a day while it is judged against its peers (``day_new_days``), then its own days take over."""
    found = day_alerts(detect(office(days=5) + heavy_app(ATTACK, 4)), "key:sk-app")
    assert found, "a new key spending 10x the heaviest identity-day was not alerted"
    assert all("as a new identity" in d.message for d in found)
    by_rule = {}
    for detection in found:
        by_rule.setdefault(detection.rule.id, []).append(detection.timestamp)
    for times in by_rule.values():  # at most one a day per sum (a day of window starts: its last request may vary)
        assert all(b - a >= DAY - 600 for a, b in itertools.pairwise(times))
    assert max(d.timestamp for d in found) < START + 4 * DAY  # its own days judge it from its third UTC day


def test_an_established_key_far_above_its_own_days_alerts_on_its_own_history() -> None:
    """A stolen key with a light history: judged against its own days, not its peers'."""
    light = traffic(key("sk-ci"), START, 3 * 24, 2, tokens=(2000, 500))  # ~0.7 M tokens a day
    burst = traffic(key("sk-ci"), START + 3 * DAY + HOUR, 12, 12, tokens=(27_500, 2_000), cap=12, seed=1)
    (alert,) = day_alerts(detect(office(days=4) + light + burst), "key:sk-ci")
    assert alert.rule.id == RESOURCE_ABUSE_DAY.id
    assert "standard deviations above its own days" in alert.message
    assert alert.explanation["day.z.tokens"] >= 4 and alert.explanation["day.own_days"] == 3
    assert alert.explanation["day.typical.tokens"] < 2_000_000


def test_a_window_rule_of_the_same_category_is_not_repeated_by_a_day_rule() -> None:
    """The simulator's denial of wallet (~50,000-token contexts every 45 s) is named by the window rule; the day rule
    waits a day after it."""
    events = traffic(key("sk-dow"), ATTACK, 3, 13, tokens=(40_000, 16_000))
    found = detect(office() + events)
    assert [d for d in found if d.rule.id == RESOURCE_ABUSE.id]
    assert [d for d in day_alerts(found) if d.rule.id == RESOURCE_ABUSE_DAY.id] == []


def test_an_optional_daily_budget_alerts_whatever_the_history() -> None:
    light = traffic(key("sk-ci"), START, 2 * 24, 3, tokens=(4000, 1000))  # ~2.2 M tokens a day, every day
    assert day_alerts(detect(office(days=2) + light)) == []
    budget = AnomalyConfig(day_token_budget=1_500_000)
    alerts = day_alerts(detect(office(days=2) + light, budget), "key:sk-ci")
    assert [a.rule.id for a in alerts] == [RESOURCE_ABUSE_DAY.id] * 2  # once each UTC day
    assert all(a.explanation["day.budget"] == 1_500_000 for a in alerts)
    assert all("over the budget of 1,500,000" in a.message for a in alerts)


def test_the_status_setting_sends_the_day_rules_to_the_shadow_alerts_or_silences_them() -> None:
    events = office() + drain()
    assert {d.rule.status for d in day_alerts(detect(events, AnomalyConfig(day_status="test")))} == {"test"}
    assert day_alerts(detect(events, AnomalyConfig(day_status="off"))) == []


def test_people_and_mirrored_keys_carry_no_alert_and_only_judged_entities_keep_day_sums() -> None:
    detector = AnomalyDetector()
    events = sorted(office(days=2), key=lambda e: e.timestamp)
    assert detector.detect(events, [Findings() for _ in events]) + detector.flush() == []
    state = detector.state()
    judged = {k for k, entity in state["entities"].items() if "day" in entity}
    assert judged == {f"user:person-{n}" for n in range(40)}  # each person's key and IP only repeats them
    assert state["day_peers"]["identity"]["learned"] == 40  # each person's first day, learnt at the second


@pytest.mark.parametrize("cut", [700, 2500, 4100])
def test_a_checkpoint_resumes_to_the_same_day_alerts(cut: int) -> None:
    events = sorted(office() + drain(), key=lambda e: e.timestamp)
    reference = detect(events)
    assert day_alerts(reference)
    first = AnomalyDetector()
    before = first.detect(events[:cut], [Findings() for _ in range(cut)])
    resumed = AnomalyDetector()
    resumed.load_state(json.loads(json.dumps(first.state())))
    after = resumed.detect(events[cut:], [Findings() for _ in events[cut:]]) + resumed.flush()
    assert [(d.rule.id, d.timestamp, d.message) for d in before + after] == [
        (d.rule.id, d.timestamp, d.message) for d in reference
    ]


def test_a_checkpoint_of_the_earlier_code_loads_and_the_day_rules_start_afresh() -> None:
    """Earlier checkpoints hold no day sums and no peers' days: every entity then is one the detector already knew
    (judged on its own days once it has one), and the peers learn again from the next UTC day."""
    events = sorted(office() + drain(), key=lambda e: e.timestamp)
    cut = next(i for i, e in enumerate(events) if e.timestamp >= START + DAY + 2 * HOUR)  # the drain has begun
    first = AnomalyDetector()
    first.detect(events[:cut], [Findings() for _ in range(cut)])
    state = json.loads(json.dumps(first.state()))
    for data in state["entities"].values():
        data.pop("day", None)
    del state["day_peers"], state["day_origin"]
    resumed = AnomalyDetector()
    resumed.load_state(state)
    after = resumed.detect(events[cut:], [Findings() for _ in events[cut:]]) + resumed.flush()
    assert day_alerts(after) == []  # the drain is no new key to it, and has no day of its own yet
    assert "day" in resumed.state()["entities"]["key:sk-drain"]


def test_day_sums_decay_learn_and_stay_the_same_size() -> None:
    sums = DaySums(new=True)
    assert sums.advance(START + 600, DAY) is None  # the first day: nothing finished
    sums.add((1000.0, 10.0, 2.0))
    sums.advance(START + 600 + DAY / 2, DAY)  # half a day later, the same UTC day
    assert sums.sum(0) == pytest.approx(1000 * math.exp(-0.5)) and sums.today(0) == 1000
    finished = sums.advance(START + DAY + 600, DAY)
    assert finished == (1000.0, 10.0, 2.0) and sums.today(0) == 0
    sums.learn_one(finished, 14)
    assert sums.days == 1 and sums.typical(0) == pytest.approx(1000)
    assert sums.score_one(0) < 0  # decayed below its own day
    assert len(sums.values) == len(DaySums().values) and DaySums.load(sums.dump()).values == sums.values


def test_peer_days_give_a_high_quantile_robust_to_a_crowd_of_tiny_days() -> None:
    peers = DayPeers(span=5000)
    for _ in range(1000):  # one-request identities (an app that hands out a user id per request) ...
        peers.learn_one((500.0, 1.0, 0.0))
    for n in range(100):  # ... and people
        peers.learn_one((50_000.0 * (1 + n % 10), 100.0, 0.0))
    assert 500_000 <= peers.quantile(0, 0.99) <= 500_000 * math.sqrt(2)
    assert peers.quantile(2, 0.99) == 1.0  # nobody asks for log-probabilities
    restored = DayPeers(span=5000)
    restored.load(json.loads(json.dumps(peers.dump())))
    assert restored.quantile(0, 0.99) == peers.quantile(0, 0.99) and restored.learned == 1100
