"""How the detection pipeline's memory grows over event time, and how much of it is live.

A worker's RSS rises for hours of event time (``bench_soak``). This runs the identity pipeline alone, in this
process, over the bundled workload generated lazily (nothing held but the batch in flight, as the worker holds
it), and at ``--marks`` evenly spaced points reports:

* ``rss_mb``: ``VmRSS`` after a full collection;
* ``rss_after_trim_mb``: after glibc's ``malloc_trim(0)`` too, which gives back the free pages inside the C heap.
  The difference is memory Python freed but the allocator kept (large strings of finished batches), the rest is
  live or held by Python's own small-object arenas; ``trim_ms`` is what the call cost;
* with ``--trace``, the Python heap ``tracemalloc`` sees, and the source lines that grew most from the middle mark
  to the last (bounded state filling its event-time horizons shows here by name; tracing slows the run ~3x).

Run: ``.venv/bin/python -m bench.bench_state_growth [--events 200000] [--event-rate 10] [--identities 5000]
[--marks 10] [--trace]``; prints one JSON object. 200,000 events at 10 a second of event time are 5.6 hours of it
(~15 minutes on the two-core machine).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import time
import tracemalloc
from itertools import islice
from typing import Any

from app.engine import build_pipeline
from app.gc_policy import tune_garbage_collector
from app.settings import load_settings
from bench.process_memory import rss_bytes
from bench.workload import WorkloadConfig, generate_events

BATCH = 500  # events per pipeline call


def rss_mb() -> float:
    return round(rss_bytes() / 2**20, 1)


def trim_heap() -> float | None:
    """``malloc_trim(0)``; its milliseconds, None where the C library has none (not glibc)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    start = time.perf_counter()
    trim(0)
    return round((time.perf_counter() - start) * 1000, 1)


def run(events: int, event_rate: float, identities: int, marks: int, trace: bool, top: int = 15) -> dict[str, Any]:
    settings = load_settings()
    pipeline = build_pipeline(settings)
    tune_garbage_collector(settings.worker.gc_young_threshold)  # as the worker does
    stream = generate_events(WorkloadConfig(events=events, events_per_second=event_rate, identities=identities))
    every = max(BATCH, events // marks // BATCH * BATCH)
    if trace:
        tracemalloc.start(1)
    gc.collect()
    report: dict[str, Any] = {
        "events": events,
        "event_rate_per_s": event_rate,
        "identities": identities,
        "rss_start_mb": rss_mb(),
        "marks": [],
    }
    snapshots: list[tracemalloc.Snapshot] = []
    done = 0
    while batch := [event for event, _kind in islice(stream, BATCH)]:
        pipeline.process(batch)
        done += len(batch)
        if done % every and done != events:
            continue
        gc.collect()
        mark = {"events": done, "event_hours": round(done / event_rate / 3600, 2), "rss_mb": rss_mb()}
        mark["trim_ms"] = trim_heap()
        mark["rss_after_trim_mb"] = rss_mb()
        if trace:
            mark["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 1)
            if len(report["marks"]) == marks // 2 - 1 or done == events:
                snapshots.append(tracemalloc.take_snapshot())
        report["marks"].append(mark)
    if len(snapshots) == 2:
        growth = snapshots[1].compare_to(snapshots[0], "lineno")[:top]
        report["top_growth_second_half"] = [
            {"line": f"{'/'.join(stat.traceback[0].filename.split('/')[-2:])}:{stat.traceback[0].lineno}",
             "kib": round(stat.size_diff / 1024, 1), "objects": stat.count_diff}
            for stat in growth
        ]  # fmt: skip
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_state_growth", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--event-rate", type=float, default=10.0, help="events per second of event time")
    parser.add_argument("--identities", type=int, default=5_000)
    parser.add_argument("--marks", type=int, default=10, help="measurement points, evenly spaced")
    parser.add_argument("--trace", action="store_true", help="also trace the Python heap (slower)")
    args = parser.parse_args(argv)
    if min(args.events, args.identities, args.marks) < 1 or args.event_rate <= 0:
        parser.error("--events, --identities, --marks and --event-rate must be positive")
    print(json.dumps(run(args.events, args.event_rate, args.identities, args.marks, args.trace)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
