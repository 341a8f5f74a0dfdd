"""Bounded state of the session-chain and correlation tiers (``max_sessions``, ``max_groups``) and of campaign
windows (``campaign_max_templates``): what is forgotten first, that it is counted, and that what is kept does not
depend on batching or on a checkpoint taken in between."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence

from msgspec.structs import replace
from prometheus_client import REGISTRY

from app.engine import build_campaign_stage
from app.settings import Settings
from app.stream.codec import encode_candidates
from app.stream.worker import _count_evictions, _count_template_caps
from detectors.anomaly.config import AnomalyConfig
from detectors.base import Detection, Detector, Findings, RuleInfo
from detectors.campaigns import CampaignCandidate, CampaignDetector, CampaignStage
from detectors.caps import Evictions
from detectors.chains import BLOCKED_THEN_THROUGH, SessionChainDetector
from detectors.correlation import BUILTIN_DIR, CorrelationDetector, load_correlations
from detectors.event import Event, GuardrailVerdict, Identity, Message
from detectors.pipeline import Pipeline
from detectors.redact import Redactor
from tests.test_dedupe_partition_state import consume, stub_worker

T0 = 1_767_600_000.0  # a multiple of 600: a campaign window starts here
CAMPAIGN_RULE = "abusewatch-anomaly-scraping-campaign"
CORRELATIONS, _ERRORS = load_correlations([BUILTIN_DIR])
REPEATED_INJECTIONS = "5b0d7c3e-8a51-4f0e-9d6b-0c1e2a3b4c51"  # >= 5 injection attempts of one identity in 10 min


def chat(n: int, timestamp: float, user: str, session: str, *, blocked: bool = False) -> Event:
    return Event(
        id=f"e{n}",
        timestamp=timestamp,
        dataset="test",
        input_messages=[Message(role="user", content=f"attempt {n}")],
        output_messages=[Message(role="assistant", content="Sure, here you go.")],
        guardrails=[GuardrailVerdict(source="gw", action="blocked")] if blocked else [],
        identity=Identity(user_id=user, session_id=session, source_ip=f"198.51.100.{sum(map(ord, user)) % 7}"),
    )


class Attacks(Detector):
    """Stands in for the earlier tiers: a jailbreak verdict on the chosen events."""

    name = "attacks"

    def __init__(self, attacks: set[str]) -> None:
        self.attacks = attacks

    def detect(self, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        rule = RuleInfo(id="r-jailbreak", name="jailbreak", category="jailbreak", level="medium")
        return [
            Detection(rule=rule, event_ids=[event.id], timestamp=event.timestamp, identity=event.identity, message="x")
            for event in events
            if event.id in self.attacks
        ]


def hostile_stream(count: int = 1500, seed: int = 7) -> tuple[list[Event], set[str]]:
    """A few attackers retrying jailbreaks in their sessions among clients inventing session and user ids (some of
    them injecting too), in time order, over five hours (so expiry and the caps both forget)."""
    rng = random.Random(seed)
    events, attacks = [], set()
    for n in range(count):
        timestamp = T0 + n * 12.0
        if rng.random() < 0.35:
            user, session = f"mallory{rng.randrange(3)}", f"s{rng.randrange(2)}"
            blocked = rng.random() < 0.6
            attacks.add(f"e{n}")
        else:
            user, session, blocked = f"u{rng.randrange(400)}", f"s{rng.randrange(10**6)}", False
            if rng.random() < 0.2:  # an injector rotating user ids
                attacks.add(f"e{n}")
        events.append(chat(n, timestamp, user, session, blocked=blocked))
    return events, attacks


def pipeline(attacks: set[str], *, max_sessions: int = 12, max_groups: int = 10) -> Pipeline:
    return Pipeline(
        [
            Attacks(attacks),
            CorrelationDetector(CORRELATIONS, max_groups=max_groups),
            SessionChainDetector(shingle_key=b"k" * 32, max_sessions=max_sessions),
        ],
        Redactor(b"k"),
    )


def run(target: Pipeline, events: Sequence[Event], batch_size: int) -> list[tuple[str, tuple[str, ...]]]:
    found = []
    for start in range(0, len(events), batch_size):
        result = target.process(events[start : start + batch_size])
        found += [(d.rule.id, tuple(d.event_ids)) for d in result.detections if d.rule.id != "r-jailbreak"]
    return found


# ---------------------------------------------------------------- chains: a late turn (review 9i, finding 3)


def test_a_late_turn_neither_restarts_its_session_nor_hides_blocked_then_through() -> None:
    chains = SessionChainDetector(shingle_key=b"k" * 32)
    attack = Findings()
    attack.categories.add("jailbreak")
    turns = [(chat(i, T0 + 30 * i, "mallory", "s1", blocked=True), attack) for i in range(3)]
    turns.append((chat(9, T0 - 3700, "mallory", "s1"), Findings()))  # an older turn delivered late (a retry)
    turns.append((chat(4, T0 + 90, "mallory", "s1"), attack))  # the attack that got through
    raised = [d.rule.id for event, found in turns for d in chains.detect([event], [found])]
    assert raised == [BLOCKED_THEN_THROUGH.id]
    [session] = chains.state()["sessions"].values()
    assert session["last_seen"] == T0 + 90  # never moved back by the late turn
    assert [turn[0] for turn in session["turns"]] == sorted(turn[0] for turn in session["turns"])


def test_a_late_turn_is_judged_with_the_turns_before_it_in_time() -> None:
    chains = SessionChainDetector(shingle_key=b"k" * 32)
    attack = Findings()
    attack.categories.add("jailbreak")
    blocked = [chat(i, T0 + 30 * i, "mallory", "s1", blocked=True) for i in range(1, 4)]
    chains.detect(blocked, [Findings() for _ in blocked])
    early = chat(0, T0, "mallory", "s1")  # an answered attack older than every refusal: nothing blocked before it
    assert chains.detect([early], [attack]) == []


# ---------------------------------------------------------------- chains: the session cap


def test_past_max_sessions_the_least_recently_active_session_is_forgotten_and_counted() -> None:
    chains = SessionChainDetector(shingle_key=b"k" * 32, max_sessions=3)
    for n, session in enumerate(["a", "b", "c"]):
        chains.detect([chat(n, T0 + n, "u", session)], [Findings()])
    chains.detect([chat(3, T0 + 10, "u", "a")], [Findings()])  # "a" is active again: "b" is now the oldest
    chains.detect([chat(4, T0 + 11, "u", "d")], [Findings()])
    assert sorted(chains.state()["sessions"]) == ["user:u|session:a", "user:u|session:c", "user:u|session:d"]
    assert chains.evictions.count == 1


def test_a_smaller_max_sessions_applies_when_a_checkpoint_is_loaded() -> None:
    chains = SessionChainDetector(shingle_key=b"k" * 32)
    chains.detect([chat(n, T0 + n, "u", f"s{n}") for n in range(5)], [Findings() for _ in range(5)])
    smaller = SessionChainDetector(shingle_key=b"k" * 32, max_sessions=2)
    smaller.load_state(json.loads(json.dumps(chains.state())))
    assert sorted(smaller.state()["sessions"]) == ["user:u|session:s3", "user:u|session:s4"]


# ---------------------------------------------------------------- correlation: the group cap


def test_past_max_groups_the_group_with_the_oldest_hit_is_forgotten_and_counted() -> None:
    repeated = [c for c in CORRELATIONS if c.info.id == REPEATED_INJECTIONS]
    correlation = CorrelationDetector(repeated, max_groups=2)
    attack = Findings()
    attack.categories.add("jailbreak")
    for n, user in enumerate(["a", "b", "a", "c"]):
        correlation.detect([chat(n, T0 + n, user, "s")], [attack])
    users = sorted(group[0] for _rule, group, _hits in correlation.state()["groups"])
    assert users == ["user:a", "user:c"]
    assert correlation.evictions.count == 1


# ---------------------------------------------------------------- both tiers: batching and checkpoints


def test_what_the_caps_forget_does_not_depend_on_batching() -> None:
    events, attacks = hostile_stream()
    outcomes = []
    for batch_size in (1, 7, 500):
        target = pipeline(attacks)
        detections = run(target, events, batch_size)
        correlation, chains = target.detectors[1], target.detectors[2]
        assert chains.evictions.count > 0 and correlation.evictions.count > 0  # type: ignore[attr-defined]
        outcomes.append((sorted(detections), json.dumps(target.state())))  # tiers' order within a batch aside
    assert outcomes[0] == outcomes[1] == outcomes[2]
    rules = {rule for rule, _ids in outcomes[0][0]}
    assert BLOCKED_THEN_THROUGH.id in rules and REPEATED_INJECTIONS in rules


def test_a_checkpoint_taken_after_evictions_restores_the_same_state_and_verdicts() -> None:
    events, attacks = hostile_stream()
    whole = pipeline(attacks)
    expected = run(whole, events, 50)
    for cut in (300, 750, 1200):
        first = pipeline(attacks)
        found = run(first, events[:cut], 50)
        saved = json.loads(json.dumps(first.state()))
        restored = first.fresh()
        restored.load_state(saved)
        assert json.dumps(restored.state()) == json.dumps(saved)
        found += run(restored, events[cut:], 50)
        assert found == expected
        assert json.dumps(restored.state()) == json.dumps(whole.state())


# ---------------------------------------------------------------- campaigns: the template cap (finding 6)


def one_offs(count: int) -> list[CampaignCandidate]:
    """Distinct benign prompts: one signature each, one request of one identity."""
    return [
        CampaignCandidate(
            event_id=f"n{i}", timestamp=T0 + i * 0.005, identity=Identity(user_id=f"b{i}"), signature=f"{i:016x}"
        )
        for i in range(count)
    ]


def campaign(signature: str = "feedfacecafebeef", at: float = 300.0) -> list[CampaignCandidate]:
    """Six keys sending four requests each on one template (five keys and three requests make a campaign)."""
    return [
        CampaignCandidate(
            event_id=f"c{m}-{r}-{signature}",
            timestamp=T0 + at + m + r * 30,
            identity=Identity(api_key_hash=f"camp-{m}"),
            signature=signature,
        )
        for m in range(6)
        for r in range(4)
    ]


def judged(detector: CampaignDetector, candidates: list[CampaignCandidate], batch_size: int) -> list[tuple]:
    out = []
    for start in range(0, len(candidates), batch_size):
        out += detector.campaigns(candidates[start : start + batch_size])
    out += detector.flush_campaigns()
    return [(c.detection.rule.id, c.detection.group_key, c.overflowed) for c in out]


def test_a_campaign_first_seen_after_the_template_cap_filled_is_still_judged() -> None:
    detector = CampaignDetector()  # the default cap, 50,000 signatures a window
    found = judged(detector, one_offs(50_000) + campaign(), 10_000)
    assert found == [(CAMPAIGN_RULE, "campaign:feedfacecafebeef", False)]
    assert detector.templates_evicted.count == 1 and detector.templates_overflowed.count == 0


def test_at_the_template_cap_a_signature_that_cannot_become_a_campaign_goes_not_the_newcomer() -> None:
    detector = CampaignDetector(AnomalyConfig(campaign_max_templates=10))
    noise = one_offs(10)
    repeated = [replace(c, event_id=f"{c.event_id}-again", timestamp=c.timestamp + 1) for c in noise[:4]]
    detector.campaigns([*noise, *repeated, *campaign()])
    kept = {signature for _start, signature, *_rest in detector.state()["windows"]}
    # the oldest single request went (n4: n0 to n3 were sent twice); everything else stayed
    assert kept == {f"{i:016x}" for i in range(10) if i != 4} | {"feedfacecafebeef"}
    assert detector.templates_evicted.count == 1 and detector.templates_overflowed.count == 0
    found = [(c.detection.group_key, c.overflowed) for c in detector.flush_campaigns()]
    assert found == [("campaign:feedfacecafebeef", False)]


def test_a_full_window_whose_signatures_all_repeat_refuses_and_counts(caplog) -> None:
    detector = CampaignDetector(AnomalyConfig(campaign_max_templates=5))
    noise = one_offs(5)
    twice = [*noise, *(replace(c, event_id=f"{c.event_id}-again", timestamp=c.timestamp + 1) for c in noise)]
    found = judged(detector, twice + campaign(), 4)
    assert found == []
    assert detector.templates_overflowed.count == 24 and detector.templates_evicted.count == 0
    assert sum("campaign_max_templates" in record.getMessage() for record in caplog.records) == 1  # once per window


def test_a_signature_that_lost_a_request_at_the_cap_is_marked_overflowed() -> None:
    detector = CampaignDetector(AnomalyConfig(campaign_max_templates=3))
    members = campaign()
    first, rest = members[0], members[1:]  # the campaign's first request, alone for a while, goes at the cap
    found = judged(detector, [first, *[replace(c, timestamp=first.timestamp + 1) for c in one_offs(3)], *rest], 1)
    assert found == [(CAMPAIGN_RULE, "campaign:feedfacecafebeef", True)]  # no exception may suppress it


def test_the_template_cap_does_not_depend_on_batching_or_a_checkpoint() -> None:
    config = AnomalyConfig(campaign_max_templates=40)
    rng = random.Random(3)
    candidates = one_offs(300) + campaign("aaaa", at=1.0) + campaign("bbbb", at=200.0)
    candidates.sort(key=lambda c: (c.timestamp, rng.random()))
    candidates.append(replace(candidates[-1], event_id="closing", signature="cccc", timestamp=T0 + 3000))
    outcomes = []
    for batch_size in (1, 13, 500):
        detector = CampaignDetector(config)
        found = []
        for start in range(0, len(candidates), batch_size):
            found += judged_batch(detector, candidates[start : start + batch_size])
        outcomes.append((found, json.dumps(detector.state()), detector.templates_evicted.count))
    assert outcomes[0] == outcomes[1] == outcomes[2] and outcomes[0][2] > 0
    cut = len(candidates) // 2
    first = CampaignDetector(config)
    found = judged_batch(first, candidates[:cut])
    restored = first.fresh()
    restored.load_state(json.loads(json.dumps(first.state())))
    assert json.dumps(restored.state()) == json.dumps(first.state())
    found += judged_batch(restored, candidates[cut:])
    assert (found, json.dumps(restored.state())) == outcomes[0][:2]


def judged_batch(detector: CampaignDetector, candidates: list[CampaignCandidate]) -> list[tuple]:
    return [(c.detection.group_key, c.overflowed) for c in detector.campaigns(candidates)]


def test_evictions_are_said_at_most_once_a_minute_with_the_count_since_last_said(caplog, monkeypatch) -> None:
    clock = iter([1000.0, 1010.0, 1070.0])
    monkeypatch.setattr("detectors.caps.time.monotonic", lambda: next(clock))
    evictions = Evictions(logging.getLogger("test-caps"), "cap %d reached; forgot %d")
    evictions.count += 3
    evictions.say(10)
    evictions.count += 2
    evictions.say(10)  # ten seconds later: quiet
    evictions.say(10)  # a minute after the first: says the two since
    assert [record.getMessage() for record in caplog.records] == [
        "cap 10 reached; forgot 3",
        "cap 10 reached; forgot 2",
    ]


def test_the_worker_exports_what_each_capped_tier_forgot_once() -> None:
    """``abusewatch_state_evictions_total{detector}`` grows by what was forgotten since the last batch, and a
    state load (which restarts the detector's count) neither loses nor repeats what was already exported."""

    def exported() -> float:
        return REGISTRY.get_sample_value("abusewatch_state_evictions_total", {"detector": "chains"}) or 0.0

    chains = SessionChainDetector(max_sessions=2)
    target = Pipeline([chains], Redactor(b"k"))
    before = exported()
    target.process([chat(n, 1000.0 + n, f"u{n}", f"s{n}") for n in range(5)])
    _count_evictions(target)
    _count_evictions(target)  # nothing new
    assert exported() - before == chains.evictions.count == 3
    chains.load_state(chains.state())
    target.process([chat(9, 2000.0, "u9", "s9")])
    _count_evictions(target)
    assert exported() - before == 4
    assert Detector.evictions is None  # tiers without a cap export nothing


def template_caps_exported() -> tuple[float, float]:
    """``abusewatch_state_evictions_total`` and ``abusewatch_state_refusals_total`` of the campaign stage."""
    names = ("abusewatch_state_evictions_total", "abusewatch_state_refusals_total")
    evicted, refused = (REGISTRY.get_sample_value(name, {"detector": "campaigns"}) or 0.0 for name in names)
    return evicted, refused


def campaign_stage(max_templates: int) -> CampaignStage:
    settings = Settings()
    settings.detection.anomaly = AnomalyConfig(campaign_max_templates=max_templates)
    return build_campaign_stage(settings)


def test_the_worker_exports_what_the_campaign_template_cap_forgot_and_refused_once() -> None:
    """Signatures forgotten at ``campaign_max_templates`` are evictions of the ``campaigns`` stage, the candidates
    of new signatures refused there its refusals; each grows by what happened since the last batch, and a state load
    (which restarts the detector's counts) neither loses nor repeats what was already exported."""
    stage = campaign_stage(5)
    before = template_caps_exported()

    def exported() -> tuple[float, float]:
        now = template_caps_exported()
        return now[0] - before[0], now[1] - before[1]

    noise = one_offs(6)  # the sixth signature makes room by forgetting the first
    stage.process(noise)
    _count_template_caps(stage)
    _count_template_caps(stage)  # nothing new
    assert exported() == (1, 0) and stage.detector.templates_evicted.count == 1
    stage.load_state(stage.state())
    again = [replace(c, event_id=f"{c.event_id}-again", timestamp=c.timestamp + 1) for c in noise[1:]]
    stage.process(again + campaign())  # five signatures sent twice: none can go, so the campaign's 24 are refused
    _count_template_caps(stage)
    assert exported() == (1, 24) and stage.detector.templates_overflowed.count == 24


def test_the_campaigns_agent_exports_the_template_cap_after_each_batch() -> None:
    worker = stub_worker(pipeline(set()))
    worker.campaigns_state.template = campaign_stage(5)
    worker.campaigns_state.restore(0, 0)
    before = template_caps_exported()
    consume(worker.campaigns, worker.campaigns_state.topic, 0, encode_candidates(one_offs(7)))
    evicted, refused = template_caps_exported()
    assert (evicted - before[0], refused - before[1]) == (2, 0)


def test_a_fresh_copy_keeps_its_own_eviction_count_and_order() -> None:
    """Pipeline.fresh copies detectors shallowly: a partition's evictions must not count or pick another's."""
    template = pipeline(set(), max_sessions=1, max_groups=1)
    first, second = template.fresh(), template.fresh()
    first.process([chat(n, 1000.0 + n, f"u{n}", f"s{n}") for n in range(3)])
    chains = [next(d for d in p.detectors if d.name == "chains") for p in (first, second)]
    assert (chains[0].evictions.count, chains[1].evictions.count) == (2, 0)
    assert chains[0].evictions is not chains[1].evictions
