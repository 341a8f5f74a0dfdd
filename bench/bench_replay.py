"""Embedded replay at scale: ``python -m bench.bench_replay [--events 100000]``.

Simulates multi-user traffic (benign users, batch jobs and every attacker kind) until it has at least ``--events``
events, writes it as JSONL in the mixed formats, replays it through the full pipeline exactly as ``abusewatch
replay`` does, and reports events/s (wall and CPU), alerts and dead letters as a table and JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import orjson

from app.engine import build_pipeline
from app.replay import replay
from app.settings import load_settings
from app.traffic.simulate import SimulationConfig, render_records, simulate

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "bench"
ATTACKERS = {"scraper": 2, "slow_scraper": 1, "campaign": 1, "extractor": 1, "denial_of_wallet": 1}


def traffic(events: int, seed: int = 1) -> Path:
    """A JSONL file of at least ``events`` simulated events (cached)."""
    path = CACHE / f"replay-{events}-{seed}.jsonl"
    if path.exists():
        return path
    users = 100
    while True:
        simulation = simulate(SimulationConfig(hours=24.0, benign_users=users, attackers=ATTACKERS, seed=seed))
        if len(simulation.events) >= events:
            break
        users = int(users * events / max(1, len(simulation.events)) * 1.1) + 1
    CACHE.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with temporary.open("wb") as handle:
        for record in render_records(simulation.events, "mixed", seed):
            handle.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
    temporary.replace(path)
    return path


def run(events: int, out: Path | None) -> dict:
    source = traffic(events)
    pipeline = build_pipeline(load_settings())
    wall, cpu = time.perf_counter(), time.process_time()
    summary = replay([str(source)], pipeline, alerts_out=None)
    result = {
        "events": summary.events,
        "records": summary.records,
        "alerts": summary.alerts,
        "dead_letters": summary.dead_letters,
        "bytes": summary.bytes_read,
        "wall_seconds": round(time.perf_counter() - wall, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
        "load_average": os.getloadavg()[0],
    }
    result["events_per_second_wall"] = round(result["events"] / result["wall_seconds"], 1)
    result["events_per_cpu_second"] = round(result["events"] / result["cpu_seconds"], 1)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_replay", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON")
    args = parser.parse_args(argv)
    result = run(args.events, args.out)
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
