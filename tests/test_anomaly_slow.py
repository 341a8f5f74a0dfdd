"""The low-and-slow scraping rule across rests: a run of activity survives up to ``slow_max_gap_windows`` empty
windows, the slow averages ageing one EWMA step per empty window, so a scraper resting 20 minutes every 100 is
caught; an office day with breaks and a templated job paused between chunks stay silent; a longer rest still
starts a new run."""

import json
import random
from collections.abc import Sequence

import pytest

from bench.eval_slow_pauses import paused_bot
from bench.eval_slow_rests import SLOW, START, resting_scraper
from detectors.anomaly import AnomalyConfig, AnomalyDetector
from detectors.anomaly.detector import LONG_SIGNALS
from detectors.anomaly.features import WindowAccumulator
from detectors.base import Detection, Findings
from detectors.event import Event, Identity, Message

MINUTE = 60.0
WORDS = ("invoice", "customer", "contract", "policy", "report", "budget", "forecast", "meeting", "agenda", "email")


def event(number: int, timestamp: float, identity: Identity, prompt: str, *, output_tokens: int = 300) -> Event:
    return Event(
        id=f"{identity.key()}-{number}",
        timestamp=round(timestamp, 3),
        dataset="test",
        input_messages=[Message(role="user", content=prompt)],
        output_messages=[Message(role="assistant", content="Here is what you asked for.")],
        input_tokens=40,
        output_tokens=output_tokens,
        request_params={"temperature": 0.0},
        identity=identity,
    )


def replay(detector: AnomalyDetector, events: Sequence[Event]) -> list[Detection]:
    detections: list[Detection] = []
    for offset in range(0, len(events), 250):
        batch = events[offset : offset + 250]
        detections.extend(detector.detect(batch, [Findings() for _ in batch]))
    return detections


def slow_alerts(events: Sequence[Event], config: AnomalyConfig | None = None) -> list[Detection]:
    detector = AnomalyDetector(config)
    return [d for d in [*replay(detector, events), *detector.flush()] if d.rule.id == SLOW]


def streak(detector: AnomalyDetector, key: str) -> int:
    return detector.state()["entities"][key]["streak"]


def active_windows(events: Sequence[Event], since: float = -1.0) -> int:
    return len({e.timestamp // 600 for e in events if e.timestamp >= since})


@pytest.mark.parametrize("offset", [0.0, 3 * MINUTE, 7 * MINUTE])  # rests covering two or one whole empty window
def test_a_slow_scraper_resting_20_minutes_every_100_is_alerted_within_the_stated_delay(offset: float) -> None:
    events = resting_scraper(20, offset=offset)
    alerts = slow_alerts(events)
    assert alerts, "the resting scraper escaped the slow-scraping rule"
    assert {d.identity.key() for d in alerts} == {"key:key-slow-0"}
    assert min(d.timestamp for d in alerts) - events[0].timestamp < 2.5 * 3600  # the documented delay target
    hours = alerts[0].explanation["continuous_hours"]
    assert hours * 3600 < alerts[0].timestamp - events[0].timestamp  # hours of activity: the rests are not counted


def test_the_run_counts_active_windows_and_survives_a_checkpoint_taken_during_a_rest() -> None:
    events = resting_scraper(20)
    before = [e for e in events if e.timestamp < START + 180 * MINUTE]  # up to the second rest
    after = events[len(before) :]
    whole = AnomalyDetector()
    expected = [*replay(whole, events), *whole.flush()]
    first = AnomalyDetector()
    detections = replay(first, before)
    assert streak(first, "key:key-slow-0") == active_windows(before) - 1  # across the first rest; last window open
    resumed = AnomalyDetector()
    resumed.load_state(json.loads(json.dumps(first.state())))
    detections += [*replay(resumed, after), *resumed.flush()]
    assert [d.rule.id for d in expected if d.rule.id == SLOW]  # the run bridged the rests ...
    assert [(d.rule.id, d.timestamp) for d in detections] == [(d.rule.id, d.timestamp) for d in expected]  # ... alike


def office_day(seed: int) -> tuple[list[Event], float]:
    """A person's working day: 9:00-12:30 and 13:30-17:30, a prompt every 1-4 minutes, coffee breaks of 15-20
    minutes at 10:30 and 15:30, lunch (six empty windows) at 12:30. Returns the events and the end of lunch."""
    rng = random.Random(seed)
    identity = Identity(user_id=f"office-{seed}", source_ip="198.51.100.20", user_agent="Mozilla/5.0")
    day, events = START + 2 * 86400, []
    breaks = [(10.5, rng.uniform(15, 20)), (12.5, 60.0), (15.5, rng.uniform(15, 20))]
    timestamp, stop = day + 9 * 3600, day + 17.5 * 3600
    while timestamp < stop:
        for at, minutes in breaks:
            if day + at * 3600 <= timestamp < day + at * 3600 + minutes * MINUTE:
                timestamp = day + at * 3600 + minutes * MINUTE
        words = " ".join(rng.choices(WORDS, k=rng.randint(4, 12)))
        events.append(event(len(events), timestamp, identity, f"Can you help me {rng.choice(WORDS)} this: {words}?"))
        timestamp += rng.choice((rng.uniform(5, 40), rng.uniform(60, 240)))  # bursts and pauses
    return events, day + 13.5 * 3600


def paused_job(seed: int) -> list[Event]:
    """A templated classification job like the simulator's nightly one (a request every 15-40 s ±5 %, ticket ids
    ascending with gaps), run as five 55-minute chunks with 15-minute pauses: regular and templated, no
    enumeration, under the 12 h of around-the-clock traffic."""
    rng = random.Random(seed)
    identity = Identity(api_key_hash=f"svc-chunks-{seed}", source_ip="10.20.0.9", user_agent="batch-worker/4.1")
    cadence, ticket, events = rng.uniform(15, 40), rng.randint(10_000, 90_000), []
    for chunk in range(5):
        timestamp = START + 86400 + chunk * 70 * MINUTE
        stop = timestamp + 55 * MINUTE
        while timestamp < stop:
            ticket += rng.randint(3, 60)
            text = " ".join(rng.choices(WORDS, k=rng.randint(15, 50)))
            prompt = f'Classify support ticket #{ticket} as billing, technical, account or other: "{text}"'
            events.append(event(len(events), timestamp, identity, prompt, output_tokens=2))
            timestamp += cadence * rng.uniform(0.95, 1.05)
    return events


@pytest.mark.parametrize("seed", range(3))
def test_short_breaks_join_a_benign_run_without_raising_the_slow_rule(seed: int) -> None:
    """Bridging the breaks makes these runs longer than two hours, yet they stay silent: people are bursty and
    use many prompts, and a regular templated job that does not enumerate needs 12 h of activity."""
    office, after_lunch = office_day(seed)
    job = paused_job(seed)
    detector = AnomalyDetector()
    detections = [*replay(detector, sorted(office + job, key=lambda e: e.timestamp)), *detector.flush()]
    assert streak(detector, f"user:office-{seed}") == active_windows(office, after_lunch)  # coffee bridged
    assert streak(detector, f"key:svc-chunks-{seed}") == active_windows(job)  # one run over the pauses
    assert active_windows(job) * 600 >= 3 * 3600
    assert [d for d in detections if d.rule.id == SLOW] == []


def test_a_rest_longer_than_the_gap_limit_starts_a_new_run() -> None:
    """Resting 30 minutes on the window boundaries leaves three empty windows: one more than the default limit,
    so every run is 70 minutes and nothing is raised; allowing three empty windows catches the same traffic."""
    events = resting_scraper(30)
    assert slow_alerts(events) == []
    assert slow_alerts(events, AnomalyConfig(slow_max_gap_windows=3))
    detector = AnomalyDetector()
    replay(detector, events)
    detector.flush()
    last_cycle = START + (events[-1].timestamp - START) // (100 * MINUTE) * (100 * MINUTE)
    assert streak(detector, "key:key-slow-0") == active_windows(events, last_cycle)  # the last run only


@pytest.mark.parametrize("gap", [1, 2])
def test_the_slow_averages_decay_across_a_short_gap(gap: int) -> None:
    """Across g empty windows the old averages keep (1 - alpha) ** (g + 1) of their weight: each empty window ages
    them as one step of the EWMA would, instead of wiping them (a reset) or ignoring the gap."""
    events = resting_scraper(0, hours=1.0)  # six windows of scraping ...
    window = 600.0
    resume = (events[-1].timestamp // window + 1 + gap) * window  # ... then g empty windows, then one more window
    identity = events[0].identity
    events += [event(1000 + n, resume + 60.0 * n, identity, f"Write a poem about {WORDS[n]}") for n in range(5)]
    detector = AnomalyDetector()
    replay(detector, events)
    entity = detector.state()["entities"]["key:key-slow-0"]
    features = WindowAccumulator.load(entity["window"]).features(detector.config.template_hamming)
    old, new = entity["long"], [features[name] for name in LONG_SIGNALS]
    detector.flush()
    kept = (1.0 - 2.0 / (detector.config.long_span_windows + 1.0)) ** (gap + 1)
    assert detector.state()["entities"]["key:key-slow-0"]["long"] == pytest.approx(
        [n + kept * (o - n) for o, n in zip(old, new, strict=True)]
    )
    assert old != pytest.approx(new)  # the last window differs from the averages, so the weight shows


def test_a_benign_bot_pausing_40_minutes_alerts_only_once_its_pauses_are_bridged() -> None:
    """The measured cost of a longer gap limit (``bench.eval_slow_pauses``): a health-check bot, one fixed prompt
    every 30-90 s, pausing 40 minutes after every hour (three empty windows here) never reaches the 12 h
    around-the-clock path while each pause ends its run; one more empty window bridged, it does within a day."""
    events = paused_bot("monitor", 60, 40, offset=3 * MINUTE, hours=24)
    assert slow_alerts(events) == []
    bridged = slow_alerts(events, AnomalyConfig(slow_max_gap_windows=3))
    assert bridged and bridged[0].explanation["continuous_hours"] >= AnomalyConfig().around_clock_hours
