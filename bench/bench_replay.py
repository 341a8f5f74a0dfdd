"""Embedded replay at scale: ``python -m bench.bench_replay [--events 100000] [--gc-young-threshold N]``.

Simulates multi-user traffic (benign users, batch jobs and every attacker kind) until it has at least ``--events``
events, writes it as JSONL in the mixed formats, replays it through the full pipeline exactly as ``abusewatch
replay`` does (the garbage collector tuned as replay tunes it, unless ``--gc-young-threshold`` says otherwise), and
reports events/s (wall and CPU), the collector's passes, alerts, dead letters and the event times not believed or
missing (simulated traffic has none), and the CPU cost per event of judging the times alone (on time-ordered traffic,
and when every other time is put to a vote), as a table and JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from pathlib import Path

import orjson

from app.engine import build_pipeline
from app.gc_policy import tune_garbage_collector
from app.neighbour_times import Line, NeighbourTimes
from app.replay import replay
from app.settings import load_settings
from app.traffic.simulate import SimulationConfig, render_records, simulate
from detectors.event import Event, Identity
from detectors.normalise import DEFAULT_MAX_FUTURE_SECONDS

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


def time_judge_cost(events: int, *, stale: bool = False) -> float:
    """CPU microseconds per event of replay's judge of event times alone (:class:`NeighbourTimes`), over as many
    time-ordered one-event lines of a dozen identities: its share of the replay's cost. With ``stale``, every other
    line is one identity's record dated 8 h before the others: each honest time is then put to the vote of the
    look-ahead, the judge's worst case."""
    lines: list[Line] = []
    for n in range(events):
        identity = Identity(user_id="stale" if stale and n % 2 else f"user-{n % 12}")
        at = 1.7e9 - 8 * 3600 if stale and n % 2 else 1.7e9 + n / 2
        lines.append(([Event(id=str(n), dataset="openai", timestamp=at, identity=identity)], [], 1))
    cpu = time.process_time()
    judged = sum(1 for _ in NeighbourTimes(DEFAULT_MAX_FUTURE_SECONDS).judged(lines))
    return round((time.process_time() - cpu) / max(1, judged) * 1e6, 2)


def run(events: int, out: Path | None, gc_young_threshold: int | None = None) -> dict:
    source = traffic(events)
    settings = load_settings()
    pipeline = build_pipeline(settings)
    young = settings.worker.gc_young_threshold if gc_young_threshold is None else gc_young_threshold
    tune_garbage_collector(young)  # as ``abusewatch replay`` does
    collections_before = [generation["collections"] for generation in gc.get_stats()]
    wall, cpu = time.perf_counter(), time.process_time()
    summary = replay([str(source)], pipeline, alerts_out=None)
    result = {
        "events": summary.events,
        "records": summary.records,
        "alerts": summary.alerts,
        "dead_letters": summary.dead_letters,
        "times_not_believed": summary.times_not_believed,
        "times_missing": summary.times_missing,
        "bytes": summary.bytes_read,
        "wall_seconds": round(time.perf_counter() - wall, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
        "load_average": os.getloadavg()[0],
        "gc_young_threshold": gc.get_threshold()[0],
        **{
            f"gc_collections_{name}": generation["collections"] - before
            for name, generation, before in zip(
                ("young", "middle", "full"), gc.get_stats(), collections_before, strict=True
            )
        },
    }
    result["events_per_second_wall"] = round(result["events"] / result["wall_seconds"], 1)
    result["events_per_cpu_second"] = round(result["events"] / result["cpu_seconds"], 1)
    result["time_judge_cpu_us_per_event"] = time_judge_cost(summary.events)
    result["time_judge_voting_cpu_us_per_event"] = time_judge_cost(summary.events, stale=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_replay", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON")
    parser.add_argument(
        "--gc-young-threshold",
        type=int,
        default=None,
        help="the garbage collector's young threshold (default: worker.gc_young_threshold, as replay; 0 leaves "
        "Python's 700)",
    )
    args = parser.parse_args(argv)
    result = run(args.events, args.out, args.gc_young_threshold)
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
