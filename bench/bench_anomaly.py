"""Throughput and memory of the anomaly detector: ``python -m bench.bench_anomaly``.

* events per CPU second (one core; wall-clock figures are also printed, but suffer on a shared machine): simulated
  traffic (``--hours``, ``--benign-users``, every attacker kind) replayed through
  :class:`detectors.anomaly.AnomalyDetector` in batches of 500, after a warm-up run of the same traffic;
* memory per 100,000 identities: that many distinct users (each also bringing an API key and an IP entity, so
  three entities per identity) sending a few requests, measured with tracemalloc and as RSS growth, both while
  their windows are open and after they closed (baselines only), plus the size of the JSON checkpoint. With
  ``--templates N`` each identity takes N prompt templates in turn, each with its own numbers: an entity then
  remembers the last prompt of up to ``step_templates`` of them (the worst case of that memory with 4 templates
  and at least 4 events per identity).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc

from app.traffic.simulate import ATTACK_KINDS, SimulationConfig, simulate
from bench.process_memory import rss_bytes
from detectors.anomaly import AnomalyConfig, AnomalyDetector
from detectors.base import Findings
from detectors.event import Event, Identity, Message


def throughput(hours: float, benign_users: int, seed: int) -> dict[str, float]:
    simulation = simulate(
        SimulationConfig(hours=hours, benign_users=benign_users, attackers=dict.fromkeys(ATTACK_KINDS, 1), seed=seed)
    )
    events = simulation.events
    best_cpu = best_wall = 0.0
    for _ in range(2):  # the first pass also warms caches and imports
        detector = AnomalyDetector()
        cpu, wall = time.process_time(), time.perf_counter()
        for offset in range(0, len(events), 500):
            batch = events[offset : offset + 500]
            detector.detect(batch, [Findings() for _ in batch])
        best_cpu = max(best_cpu, len(events) / (time.process_time() - cpu))
        best_wall = max(best_wall, len(events) / (time.perf_counter() - wall))
    started = time.process_time()
    generated = len(simulate(SimulationConfig(hours=hours, benign_users=benign_users, seed=seed + 1)).events)
    simulated = time.process_time() - started
    return {
        "events": len(events),
        "events_per_cpu_second": round(best_cpu),  # one core: the detector is single-threaded
        "events_per_wall_second": round(best_wall),  # lower than the above on a shared machine
        "simulator_events_per_cpu_second": round(generated / simulated),
    }


_TEMPLATES = (
    "Summarise meeting notes {j} for project {p}",
    "List the open tasks of sprint {j} in team {p}",
    "Draft a reply to ticket {j} from customer {p}",
    "Translate paragraph {j} of contract {p} into German",
    "Explain error code {j} raised by service {p}",
)


def identity_events(identities: int, per_identity: int, start: float, templates: int = 1) -> list[Event]:
    return [
        Event(
            id=f"m{i}-{j}",
            timestamp=start + j * 30.0 + i * 1e-4,
            dataset="bench",
            input_tokens=300,
            output_tokens=400,
            input_messages=[Message(role="user", content=_TEMPLATES[j % templates].format(j=j, p=i % 997))],
            identity=Identity(
                user_id=f"u{i}", api_key_hash=f"k{i}", source_ip=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
            ),
        )
        for j in range(per_identity)
        for i in range(identities)
    ]


def _feed(detector: AnomalyDetector, events: list[Event]) -> AnomalyDetector:
    for offset in range(0, len(events), 5000):
        batch = events[offset : offset + 5000]
        detector.detect(batch, [Findings() for _ in batch])
    return detector


def memory(
    identities: int, per_identity: int, templates: int = 1, config: AnomalyConfig | None = None
) -> dict[str, float]:
    start = 1_767_571_200.0
    events = identity_events(identities, per_identity, start, templates)
    config = config or AnomalyConfig()
    gc.collect()
    rss_before = rss_bytes()
    untraced = _feed(AnomalyDetector(config), events)
    gc.collect()
    rss_open = rss_bytes() - rss_before
    del untraced
    gc.collect()
    tracemalloc.start()
    detector = _feed(AnomalyDetector(config), events)
    gc.collect()
    open_traced, _ = tracemalloc.get_traced_memory()
    detector.flush(start + 3600.0)
    gc.collect()
    closed_traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    checkpoint = len(json.dumps(detector.state()))
    scale = 100_000 / identities
    mib = 1 / (1 << 20)
    return {
        "identities": identities,
        "entities": len(detector.state()["entities"]),
        "mib_per_100k_identities_windows_open": round(open_traced * scale * mib, 1),
        "mib_per_100k_identities_windows_closed": round(closed_traced * scale * mib, 1),
        "rss_mib_per_100k_identities_windows_open": round(rss_open * scale * mib, 1),
        "checkpoint_mib_per_100k_identities": round(checkpoint * scale * mib, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--benign-users", type=int, default=300)
    parser.add_argument("--identities", type=int, default=100_000)
    parser.add_argument("--events-per-identity", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--templates", type=int, choices=range(1, len(_TEMPLATES) + 1), default=1, help="Prompt templates per identity."
    )
    parser.add_argument("--config", default="{}", help="AnomalyConfig overrides as JSON, for the memory measure.")
    args = parser.parse_args(argv)
    config = AnomalyConfig(**json.loads(args.config))
    report = {
        "throughput": throughput(args.hours, args.benign_users, args.seed),
        "memory": memory(args.identities, args.events_per_identity, args.templates, config),
    }
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
