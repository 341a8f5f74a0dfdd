"""Do the enumeration-step rules survive a scraper that hides its steps? Detection of evading slow scrapers.

``python -m bench.eval_evasions`` builds the slow scraper of :mod:`bench.eval_slow_rests` in three paces (working
steadily, 40 minutes of every 60, 5 minutes of every 50) and with each evasion of
:data:`bench.eval_slow_rests.EVASIONS` (a cheap decoy request after each entry, seconds later or half-way to the
next; three decoys seconds apart; a decoy with a random id on the scraper's own template; two, three or four
phrasings taken in turn; ids stepped by 3; ids counting down; two runs of ids taken in turn; entries in random
order), replays each run alone through :class:`detectors.anomaly.AnomalyDetector` and reports, per pace and evasion,
how many runs each rule alerted and the median delay from the first request (event time). ``docs/anomaly.md``
("Enumeration steps across decoys and phrasings", "More evasions of the steps") gives its tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence

from bench.eval_slow_rests import EVASIONS, RULE_PREFIX, add_rules_option, first_alerts, resting_scraper, rule_ids
from detectors.anomaly import AnomalyConfig

# name: (minutes resting of every cycle, cycle minutes, hours of work)
PACES: dict[str, tuple[float, float, float]] = {
    "steady": (0.0, 60.0, 24.0),
    "40/60": (20.0, 60.0, 24.0),
    "5/50": (45.0, 50.0, 30.0),
}
OFFSETS_MINUTES = (0, 3, 7)


def table(
    paces: Sequence[str], evasions: Sequence[str], seeds: Sequence[int], config: AnomalyConfig, rules: Sequence[str]
) -> str:
    """One Markdown row per pace and evasion: runs alerted by each rule and by any, with the median delay."""
    names = [rule.removeprefix(RULE_PREFIX) for rule in rules]
    rows = [
        "| pace | evasion | requests | " + " | ".join(names) + " | any | median delay (min) |",
        "|---|---|---|" + "---|" * (len(names) + 2),
    ]
    for pace in paces:
        rest, cycle, hours = PACES[pace]
        for evasion in evasions:
            runs: list[dict[str, float]] = []
            requests: list[int] = []
            for seed in seeds:
                for minute in OFFSETS_MINUTES:
                    events = resting_scraper(
                        rest, seed=seed, offset=60.0 * minute, hours=hours, cycle_minutes=cycle, evasion=evasion
                    )
                    requests.append(len(events))
                    runs.append(first_alerts(events, config))
            counts = [f"{sum(rule in run for run in runs)}/{len(runs)}" for rule in rules]
            delays = [min(run[rule] for rule in rules if rule in run) for run in runs if any(r in run for r in rules)]
            median = f"{statistics.median(delays):,.0f}" if delays else "-"
            rows.append(
                f"| {pace} | {evasion} | {statistics.mean(requests):,.0f} | "
                + " | ".join(counts)
                + f" | {len(delays)}/{len(runs)} | {median} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paces", default=",".join(PACES), help=f"Comma-separated, of: {', '.join(PACES)}.")
    parser.add_argument("--evasions", default=",".join(EVASIONS), help=f"Comma-separated, of: {', '.join(EVASIONS)}.")
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6", help="Comma-separated seeds (each at 3 offsets).")
    parser.add_argument("--config", default="{}", help="AnomalyConfig overrides as JSON.")
    add_rules_option(parser)
    parser.set_defaults(rules="scraping-slow,scraping-harvest")
    args = parser.parse_args(argv)
    paces = args.paces.split(",")
    evasions = args.evasions.split(",")
    for name, chosen, known in (("pace", paces, PACES), ("evasion", evasions, EVASIONS)):
        unknown = sorted(set(chosen) - set(known))
        if unknown:
            parser.error(f"no such {name}: {', '.join(unknown)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    config = AnomalyConfig(**json.loads(args.config))
    print(table(paces, evasions, seeds, config, rule_ids(parser, args.rules)), flush=True)


if __name__ == "__main__":
    main()
