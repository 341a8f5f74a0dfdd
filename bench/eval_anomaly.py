"""Detection rate, detection delay and false alerts of the anomaly detector on simulated labelled traffic.

``python -m bench.eval_anomaly`` simulates several days per seed (:mod:`app.traffic.simulate`), replays the events
through :class:`detectors.anomaly.AnomalyDetector` in batches, and reports per attacker kind whether it was
alerted and how long after the attack started (event time), plus false alerts per 1,000 benign identity-days.
Thresholds are tuned on seeds 0-2 and reported on the held-out seeds 10-12 (``docs/anomaly.md``).

A false alert is one alert group (rule, subject, hour: what the alert grouper merges) that names no attacking
identity, key or IP. An attacker counts as detected by any anomaly alert naming it after its attack started.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace

from app.traffic.simulate import ATTACK_KINDS, EXPECTED_CATEGORY, SimulationConfig, simulate
from detectors.anomaly import AnomalyConfig, AnomalyDetector
from detectors.base import Detection, Findings

TUNING_SEEDS = (0, 1, 2)
HELD_OUT_SEEDS = (10, 11, 12)
HOUR = 3600.0


@dataclass(slots=True)
class SeedResult:
    seed: int
    events: int
    benign_identity_days: float
    false_alerts: int
    false_alert_rules: dict[str, int]
    detected: dict[str, list[float | None]]  # kind -> delay (s) per attacking identity, None when missed
    categories: dict[str, list[str]] = field(default_factory=dict)  # kind -> categories of its first alerts


def involved(detection: Detection) -> set[str]:
    """Every identity, key and IP an alert names."""
    identity = detection.identity
    names = {identity.key(), *detection.related_users}
    if identity.api_key_hash:
        names.add(f"key:{identity.api_key_hash}")
    if identity.source_ip:
        names.add(f"ip:{identity.source_ip}")
    names.update(f"ip:{ip}" for ip in detection.related_ips)
    return names


def run_seed(seed: int, traffic: SimulationConfig, config: AnomalyConfig, batch_size: int = 500) -> SeedResult:
    simulation = simulate(replace(traffic, seed=seed))
    detector = AnomalyDetector(config)
    detections: list[Detection] = []
    events = simulation.events
    for offset in range(0, len(events), batch_size):
        batch = events[offset : offset + batch_size]
        detections.extend(detector.detect(batch, [Findings() for _ in batch]))
    detections.extend(detector.flush())

    attacker_names: dict[str, str] = {}  # identity / key / ip -> attacking identity
    for label in simulation.labels:
        attacker_names[label.identity] = label.identity
        if label.api_key_hash:
            attacker_names[f"key:{label.api_key_hash}"] = label.identity
        if label.source_ip:
            attacker_names[f"ip:{label.source_ip}"] = label.identity
    first: dict[str, Detection] = {}
    false_groups: set[tuple[str, str, int]] = set()
    for detection in sorted(detections, key=lambda d: d.timestamp):
        hits = {attacker_names[name] for name in involved(detection) if name in attacker_names}
        if not hits:
            subject = detection.group_key or detection.identity.key()
            false_groups.add((detection.rule.id, subject, int(detection.timestamp // HOUR)))
        for identity in hits:
            first.setdefault(identity, detection)
    result = SeedResult(
        seed=seed,
        events=len(events),
        benign_identity_days=len(simulation.benign_identities) * simulation.days,
        false_alerts=len(false_groups),
        false_alert_rules=dict(sorted(Counter(rule for rule, _, _ in false_groups).items())),
        detected=defaultdict(list),
    )
    for label in simulation.labels:
        detection = first.get(label.identity)
        delay = None if detection is None else max(0.0, detection.timestamp - label.start)
        result.detected[label.kind].append(delay)
        if detection is not None:
            result.categories.setdefault(label.kind, []).append(detection.rule.category)
    result.detected = dict(result.detected)
    return result


def summarise(results: list[SeedResult]) -> dict[str, object]:
    """Per kind: identities detected, median and worst delay (minutes); false alerts per 1,000 identity-days."""
    kinds: dict[str, dict[str, object]] = {}
    for kind in ATTACK_KINDS:
        delays = [d for r in results for d in r.detected.get(kind, [])]
        found = [d for d in delays if d is not None]
        categories = sorted({c for r in results for c in r.categories.get(kind, [])})
        kinds[kind] = {
            "detected": f"{len(found)}/{len(delays)}",
            "median_delay_min": round(statistics.median(found) / 60, 1) if found else None,
            "max_delay_min": round(max(found) / 60, 1) if found else None,
            "alert_categories": categories,
            "expected_category": EXPECTED_CATEGORY[kind],
        }
    identity_days = sum(r.benign_identity_days for r in results)
    false_alerts = sum(r.false_alerts for r in results)
    return {
        "seeds": [r.seed for r in results],
        "events": sum(r.events for r in results),
        "kinds": kinds,
        "false_alerts": false_alerts,
        "benign_identity_days": round(identity_days, 1),
        "false_alerts_per_1000_identity_days": round(1000 * false_alerts / identity_days, 3) if identity_days else None,
        "false_alert_rules": dict(sum((Counter(r.false_alert_rules) for r in results), Counter())),
    }


def markdown(title: str, summary: dict[str, object]) -> str:
    kinds = summary["kinds"]
    assert isinstance(kinds, dict)
    lines = [
        f"**{title}** (seeds {', '.join(map(str, summary['seeds']))}; {summary['events']:,} events)",
        "",
        "| attacker kind | detected | median delay (min) | worst delay (min) | alert category |",
        "|---|---|---|---|---|",
    ]
    for kind, row in kinds.items():
        lines.append(
            f"| {kind} | {row['detected']} | {row['median_delay_min']} | {row['max_delay_min']} | "
            f"{', '.join(row['alert_categories']) or '-'} |"
        )
    lines += [
        "",
        f"False alerts: {summary['false_alerts']} over {summary['benign_identity_days']:,} benign identity-days = "
        f"**{summary['false_alerts_per_1000_identity_days']} per 1,000 identity-days** "
        f"(by rule: {summary['false_alert_rules'] or 'none'}).",
    ]
    return "\n".join(lines)


def evaluate(seeds: tuple[int, ...], traffic: SimulationConfig, config: AnomalyConfig, jobs: int) -> list[SeedResult]:
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_seed, seed, traffic, config) for seed in seeds]
        return [future.result() for future in futures]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=72.0, help="Event-time span per seed (default 3 days).")
    parser.add_argument("--benign-users", type=int, default=300)
    parser.add_argument("--seeds", default=None, help="Comma-separated seeds (default: tuning and held-out sets).")
    parser.add_argument("--config", default=None, help="AnomalyConfig overrides as JSON.")
    parser.add_argument("--burst-probability", type=float, default=None, help="Stress: notebook bursts per user-day.")
    parser.add_argument("--heavy-share", type=float, default=None, help="Stress: share of heavy benign users.")
    parser.add_argument("--jobs", type=int, default=2, help="Seeds simulated in parallel.")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of Markdown.")
    args = parser.parse_args(argv)
    config = AnomalyConfig(**json.loads(args.config)) if args.config else AnomalyConfig()
    traffic = SimulationConfig(
        hours=args.hours, benign_users=args.benign_users, attackers=dict.fromkeys(ATTACK_KINDS, 1)
    )
    if args.burst_probability is not None:
        traffic = replace(traffic, burst_probability=args.burst_probability)
    if args.heavy_share is not None:
        traffic = replace(traffic, heavy_share=args.heavy_share)
    sets = (
        [("Seeds " + args.seeds, tuple(int(s) for s in args.seeds.split(",")))]
        if args.seeds
        else [("Tuning", TUNING_SEEDS), ("Held out", HELD_OUT_SEEDS)]
    )
    output = {}
    for title, seeds in sets:
        results = evaluate(seeds, traffic, config, args.jobs)
        output[title] = {"summary": summarise(results), "per_seed": [asdict(r) for r in results]}
        if not args.json:
            print(markdown(title, output[title]["summary"]) + "\n", flush=True)
    if args.json:
        json.dump(output, sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
