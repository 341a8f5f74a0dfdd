"""The false-alert side of bridging rests: benign regular bots that pause, under each pair of gap limits.

``python -m bench.eval_slow_pauses`` builds five benign bots the simulator lacks, added here and not to the
simulator's default mix (so the tables of ``bench.eval_anomaly`` stay comparable), each working in chunks of C
minutes with P-minute pauses around the clock for 48 h, at 10 one-minute offsets against the windows:

* ``classifier``: the simulator's nightly classification job (a request every 15-40 s ±5 %, ticket ids ascending
  by 3-60 with the quoted ticket text): templated and regular, not enumerating;
* ``monitor``: a health-check bot sending one fixed prompt every 30-90 s ±5 %;
* ``pager``: a batch job paging through knowledge-base articles in id order (one id after the other, a request
  every 20-60 s ±5 %, under the enumeration rule's 60 a window): templated, regular and enumerating, the same
  traffic as a slow scraper, so the honest worst case for bridging rests on enumeration;
* ``pager2``: the pager taking two collections in turn (an article, then a manual page, each in id order): two
  templates, each stepping only across the other's prompts (session 18);
* ``summariser``: a notebook loop summarising numbered documents in order at the pager's pace, each request sent
  with its document (~2,100 context tokens, over the enumeration rule's payload limit of 150), but one in five
  documents is a short note (~90 tokens): templated, regular and enumerating, and bare only in the odd window
  that holds nothing but short notes (the case for ``slow_min_bare_share``).

The first two can reach the slow-scraping rule only by its around-the-clock path (12 h of active windows, counted
across gaps of at most ``slow_max_gap_windows``); the last three by its enumeration path too (2 h of active windows
in a run, which bridges gaps of up to ``slow_enumeration_max_gap_windows``). It reports per bot, chunk and pause
how many of the runs raised ``abusewatch-anomaly-scraping-slow`` (or, with ``--rules``, any of the rules named)
under each pair of limits (``--gaps``: ``g`` for both at g, session 12's single limit; ``c/e`` for c and e), and
the median hour of the first alert. ``docs/anomaly.md`` ("Runs of activity and rests", "A day's harvest") quotes
its tables next to ``bench.eval_slow_rests``.
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Collection, Sequence

from bench.eval_slow_rests import SLOW, START, add_rules_option, first_alert, rule_ids
from detectors.anomaly import AnomalyConfig
from detectors.event import Event, Identity, Message

MINUTE = 60.0
BOTS = ("classifier", "monitor", "pager", "pager2", "summariser")
CADENCES = {"classifier": (15, 40), "monitor": (30, 90), "pager": (20, 60), "pager2": (20, 60), "summariser": (20, 60)}
WORDS = ("invoice", "login", "refund", "error", "password", "delivery", "upgrade", "charge", "crash", "account")


def paused_bot(
    kind: str, chunk_minutes: float, pause_minutes: float, *, seed: int = 0, offset: float = 0.0, hours: float = 48.0
) -> list[Event]:
    """A benign bot of ``kind`` working ``chunk_minutes`` then pausing ``pause_minutes``, for ``hours``; ``offset``
    (seconds) shifts it against the window boundaries."""
    rng = random.Random(f"{kind}-{seed}")
    start, cycle = START + offset, (chunk_minutes + pause_minutes) * MINUTE
    low, high = CADENCES[kind]
    cadence = rng.uniform(low, high)  # one draw, so each bot's later draws stay those of session 12
    identity = Identity(api_key_hash=f"svc-{kind}-{seed}", source_ip="10.20.0.9", user_agent="worker/4.1")
    ticket, timestamp, events = rng.randint(10_000, 90_000), start, []
    while timestamp < start + hours * 3600:
        into_cycle = (timestamp - start) % cycle
        if into_cycle >= chunk_minutes * MINUTE:  # paused until the next chunk
            timestamp += cycle - into_cycle
            continue
        if kind == "classifier":
            ticket += rng.randint(3, 60)
            text = " ".join(rng.choices(WORDS, k=rng.randint(15, 50)))
            prompt = f'Classify support ticket #{ticket} as billing, technical, account or other: "{text}"'
        elif kind == "pager":
            ticket += 1
            prompt = f"Summarise knowledge-base article {ticket} in three sentences for the search index"
        elif kind == "pager2":  # two collections in turn, each page after page
            ticket += 1
            collection = ("knowledge-base article", "product-manual page")[ticket % 2]
            prompt = f"Summarise {collection} {ticket // 2} in three sentences for the search index"
        elif kind == "summariser":
            ticket += 1
            prompt = f"Summarise quarterly filing document {ticket} in three bullet points"
        else:
            prompt = "Health check: reply with the single word OK."
        events.append(
            Event(
                id=f"{kind}-{seed}-{len(events)}",
                timestamp=round(timestamp, 3),
                dataset="bench",
                input_messages=[Message(role="user", content=prompt)],
                output_messages=[Message(role="assistant", content="OK")],
                input_tokens=input_tokens(kind, rng),
                output_tokens=2,
                request_params={"temperature": 0.0, "max_tokens": 5},
                identity=identity,
            )
        )
        timestamp += cadence * rng.uniform(0.95, 1.05)
    return events


def input_tokens(kind: str, rng: random.Random) -> int:
    """A request's input tokens: the classifier's quoted ticket, the summariser's document (a short note one time in
    five), the others' bare prompt."""
    if kind == "summariser":
        return round(rng.gauss(90, 10)) if rng.random() < 0.2 else round(rng.gauss(2100, 300))
    return max(1, round(rng.gauss(250 if kind == "classifier" else 12, 5)))


def limits(spec: str) -> AnomalyConfig:
    """``g``: both gap limits at g (session 12's single limit); ``c/e``: ``slow_max_gap_windows`` c and
    ``slow_enumeration_max_gap_windows`` e."""
    clock, _, enumeration = spec.partition("/")
    return AnomalyConfig(slow_max_gap_windows=int(clock), slow_enumeration_max_gap_windows=int(enumeration or clock))


def table(
    chunks: Sequence[float],
    pauses: Sequence[float],
    gaps: Sequence[str],
    seeds: Sequence[int],
    *,
    hours: float,
    offsets: int,
    bots: Sequence[str] = BOTS,
    rules: Collection[str] = (SLOW,),
) -> str:
    """One Markdown row per bot, chunk and pause: runs alerted (and median hour of the first alert) per gap limit."""
    header = " | ".join(f"alerted, gap {gap} (median h)" for gap in gaps)
    rows = [f"| bot | chunk / pause (min) | {header} |", "|---|---|" + "---|" * len(gaps)]
    for kind in bots:
        for chunk in chunks:
            for pause in pauses:
                runs = [
                    paused_bot(kind, chunk, pause, seed=seed, offset=MINUTE * minute, hours=hours)
                    for seed in seeds
                    for minute in range(offsets)
                ]
                cells = []
                for gap in gaps:
                    config = limits(gap)
                    hits = [m / 60 for m in (first_alert(run, config, rules) for run in runs) if m is not None]
                    median = f" ({statistics.median(hits):.1f})" if hits else ""
                    cells.append(f"{len(hits)}/{len(runs)}{median}")
                rows.append(f"| {kind} | {chunk:g} / {pause:g} | {' | '.join(cells)} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", default="60,120", help="Working minutes between pauses, comma-separated.")
    parser.add_argument("--pauses", default="20,30,40,50,60", help="Pause lengths in minutes, comma-separated.")
    parser.add_argument(
        "--gaps", default="2,3,4,6,2/4,2/5", help="Gap limits compared: g (both at g) or c/e (clock c, enumeration e)."
    )
    parser.add_argument("--seeds", default="0", help="Comma-separated seeds (each at --offsets offsets).")
    parser.add_argument("--bots", default=",".join(BOTS), help="Bots compared, comma-separated.")
    parser.add_argument("--hours", type=float, default=48.0, help="Hours each bot runs.")
    parser.add_argument("--offsets", type=int, default=10, help="One-minute offsets against the windows per seed.")
    add_rules_option(parser)
    args = parser.parse_args(argv)
    print(
        table(
            [float(c) for c in args.chunks.split(",")],
            [float(p) for p in args.pauses.split(",")],
            args.gaps.split(","),
            [int(s) for s in args.seeds.split(",")],
            hours=args.hours,
            offsets=args.offsets,
            bots=args.bots.split(","),
            rules=rule_ids(parser, args.rules),
        )
    )


if __name__ == "__main__":
    main()
