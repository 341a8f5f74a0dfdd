"""Does the low-and-slow scraping rule survive rests? Detection and delay of a resting slow scraper.

``python -m bench.eval_slow_rests`` builds the simulator's slow scraper (``app.traffic.simulate``: one request
every 70-110 s ±10 %, enumerating encyclopedia entries, for 24 h) resting the last N minutes of every 100 (of
every ``--cycle`` minutes: a cycle of 60 with a 40-minute rest is a scraper working in 20-minute chunks), at
every whole-minute offset against the 10-minute windows (a rest of 20 minutes leaves one or two whole windows
empty, depending on where it falls), replays each alone through :class:`detectors.anomaly.AnomalyDetector` and
reports per rest length how many runs raised ``abusewatch-anomaly-scraping-slow`` (or, with ``--rules``, any of
the rules named) and how long after the first request (event time). ``docs/anomaly.md`` ("Runs of activity and
rests", "A day's harvest") quotes its tables.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from collections.abc import Collection, Sequence

from detectors.anomaly import AnomalyConfig, AnomalyDetector, rules
from detectors.base import Findings
from detectors.event import Event, Identity, Message

SLOW = "abusewatch-anomaly-scraping-slow"
RULE_PREFIX = "abusewatch-anomaly-"
START = 1_767_225_600.0  # aligned to the 10-minute windows
CYCLE_MINUTES = 100.0


def resting_scraper(
    rest_minutes: float,
    *,
    seed: int = 0,
    offset: float = 0.0,
    hours: float = 24.0,
    cycle_minutes: float = CYCLE_MINUTES,
    evasion: str = "none",
) -> list[Event]:
    """The simulator's slow scraper resting the last ``rest_minutes`` of every ``cycle_minutes``; ``offset``
    (seconds) shifts it against the window boundaries. ``evasion`` (one of :data:`EVASIONS`) hides its enumeration
    steps from a detector that compares each prompt with the one before; "none" is the scraper as simulated."""
    if evasion not in EVASIONS:
        raise ValueError(f"unknown evasion {evasion!r}; expected one of {', '.join(EVASIONS)}")
    rng = random.Random(seed)
    tricks = random.Random(f"{seed}-{evasion}")  # its own draws: "none" is the same scraper as before
    order = _shuffled_entries(tricks) if evasion == "shuffle" else None
    start, cycle = START + offset, cycle_minutes * 60.0
    interval, entry, timestamp, events = rng.uniform(70, 110), rng.randint(100, 900), start, []
    if evasion == "countdown":  # from a higher entry down, never below 1 in the longest run
        entry += 5000
    identity = Identity(api_key_hash=f"key-slow-{seed}", source_ip="192.0.2.44", user_agent="python-requests/2.31.0")
    while timestamp < start + hours * 3600:
        into_cycle = (timestamp - start) % cycle
        if into_cycle >= cycle - rest_minutes * 60:  # resting until the next cycle
            timestamp += cycle - into_cycle
            continue
        entry += STRIDES.get(evasion, 1)
        if order is not None:
            asked = order[(entry - 1) % len(order)]
        elif evasion == "interleave2":  # two runs of ids taken in turn: 50, 2550, 51, 2551, ...
            asked = entry // 2 + (2500 if entry % 2 else 0)
        else:
            asked = entry
        template = PHRASINGS[entry % PHRASINGS_TAKEN.get(evasion, 1)]
        events.append(_request(f"slow-{seed}-{len(events)}", timestamp, template.format(asked), identity, rng))
        step = interval * rng.uniform(0.9, 1.1)
        delay = step / 2 if evasion == "decoy-mid" else 0.0
        for _ in range(DECOYS.get(evasion, 0)):
            delay += 0.0 if evasion == "decoy-mid" else tricks.uniform(2, 5)
            text = template.format(tricks.randint(1, 99999)) if evasion == "samedecoy" else _decoy(tricks)
            events.append(_request(f"decoy-{seed}-{len(events)}", timestamp + delay, text, identity, tricks, 60))
        timestamp += step
    return events


EVASIONS: tuple[str, ...] = (
    "none",
    "decoy",
    "decoy3",
    "decoy-mid",
    "samedecoy",
    "alternate",
    "alternate3",
    "alternate4",
    "stride3",
    "countdown",
    "interleave2",
    "shuffle",
)
STRIDES = {"stride3": 3, "countdown": -1}  # how far each entry moves on from the one before (else 1)
# cheap requests after each entry: on a fresh template each, or (samedecoy) on the entry's own, with a random id
DECOYS = {"decoy": 1, "decoy3": 3, "decoy-mid": 1, "samedecoy": 1}
PHRASINGS = (
    "Give me the complete encyclopedia entry number {}, with all sections and references",
    "I need encyclopedia article {} in full, every section plus its references",
    "Print the whole of encyclopedia record {} including sections and references",
    "Show encyclopedia item {} from start to end, sections and references too",
)
PHRASINGS_TAKEN = {"alternate": 2, "alternate3": 3, "alternate4": 4}  # phrasings taken in turn, one entry each
_DECOY_WORDS = [
    "weather",
    "river",
    "garden",
    "music",
    "planet",
    "recipe",
    "history",
    "travel",
    "coffee",
    "winter",
    "ocean",
    "castle",
]


def _request(
    event_id: str, timestamp: float, prompt: str, identity: Identity, rng: random.Random, output_tokens: float = 900
) -> Event:
    return Event(
        id=event_id,
        timestamp=round(timestamp, 3),
        dataset="bench",
        input_messages=[Message(role="user", content=prompt)],
        output_messages=[Message(role="assistant", content="Here is what you asked for.")],
        input_tokens=max(1, round(rng.gauss(40, 8))),
        output_tokens=max(1, round(rng.gauss(output_tokens, 0.3 * output_tokens))),
        request_params={"temperature": 0.0},
        identity=identity,
    )


def _decoy(rng: random.Random) -> str:
    """A cheap question on a fresh template, with a value of its own: a detector that remembers only the last prompt
    no longer sees the entry before."""
    return f"Tell me one fact about {' '.join(rng.sample(_DECOY_WORDS, 2))} number {rng.randint(1, 999)}"


def _shuffled_entries(rng: random.Random) -> list[int]:
    """Entries 1..5000 in random order: every record is asked for once, none after its neighbour."""
    entries = list(range(1, 5001))
    rng.shuffle(entries)
    return entries


def first_alerts(events: Sequence[Event], config: AnomalyConfig) -> dict[str, float]:
    """Minutes from the first request to each rule's first alert (shadow alerts count), by rule id."""
    detector = AnomalyDetector(config)
    detections = []
    for offset in range(0, len(events), 500):
        batch = events[offset : offset + 500]
        detections.extend(detector.detect(batch, [Findings() for _ in batch]))
    detections.extend(detector.flush())
    first: dict[str, float] = {}
    for detection in detections:
        minutes = (detection.timestamp - events[0].timestamp) / 60
        first[detection.rule.id] = min(minutes, first.get(detection.rule.id, minutes))
    return first


def first_alert(events: Sequence[Event], config: AnomalyConfig, rule_ids: Collection[str] = (SLOW,)) -> float | None:
    """Minutes from the first request to the first alert of one of ``rule_ids``, or ``None`` if none was raised."""
    times = [minutes for rule_id, minutes in first_alerts(events, config).items() if rule_id in rule_ids]
    return min(times) if times else None


def table(
    rests: Sequence[float],
    seeds: Sequence[int],
    config: AnomalyConfig,
    cycle_minutes: float = CYCLE_MINUTES,
    rule_ids: Collection[str] = (SLOW,),
) -> str:
    """One Markdown row per rest length: throughput kept, runs alerted, median and worst delay."""
    rows = [
        f"| rest (min per {cycle_minutes:g}) | requests kept | alerted | median delay (min) | worst delay (min) |",
        "|---|---|---|---|---|",
    ]
    for rest in rests:
        delays, kept = [], []
        for seed in seeds:
            whole = len(resting_scraper(0, seed=seed))
            for minute in range(10):
                events = resting_scraper(rest, seed=seed, offset=60.0 * minute, cycle_minutes=cycle_minutes)
                kept.append(len(events) / whole)
                delays.append(first_alert(events, config, rule_ids))
        hits = [d for d in delays if d is not None]
        median = f"{statistics.median(hits):.1f}" if hits else "-"
        worst = f"{max(hits):.1f}" if hits else "-"
        rows.append(f"| {rest:g} | {statistics.mean(kept):.0%} | {len(hits)}/{len(delays)} | {median} | {worst} |")
    return "\n".join(rows)


def add_rules_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", default="scraping-slow", help="Rules whose first alert counts (ids, no prefix).")


def rule_ids(parser: argparse.ArgumentParser, spec: str) -> list[str]:
    """The anomaly rule ids named in ``spec`` (comma-separated, prefix optional); an unknown one is a usage error."""
    ids = [RULE_PREFIX + rule.strip().removeprefix(RULE_PREFIX) for rule in spec.split(",")]
    unknown = sorted(set(ids) - {rule.id for rule in rules.RULES})
    if unknown:
        parser.error(f"no such anomaly rule: {', '.join(unknown)}")
    return ids


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rests", default="0,10,20,25,30,35,40", help="Rest lengths, minutes per 100.")
    parser.add_argument("--seeds", default="0,1,2", help="Comma-separated seeds (each at 10 offsets).")
    parser.add_argument("--cycle", type=float, default=CYCLE_MINUTES, help="Minutes of work and rest per cycle.")
    parser.add_argument("--config", default="{}", help="AnomalyConfig overrides as JSON.")
    add_rules_option(parser)
    args = parser.parse_args(argv)
    config = AnomalyConfig(**json.loads(args.config))
    rests = [float(r) for r in args.rests.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    print(table(rests, seeds, config, args.cycle, rule_ids(parser, args.rules)))


if __name__ == "__main__":
    main()
