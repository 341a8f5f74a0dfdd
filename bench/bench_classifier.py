"""Throughput and latency of the text-classifier detector on batches of LLM events, per workload.

    python -m bench.bench_classifier [--workloads short 3.6k 20k-doc mix] [--batch-sizes 1 100] [--profile]

Workloads (texts are made of benign corpus texts; 2 % of prompts are corpus attacks instead, so detections and
their explanations are part of the cost):

* ``short``: one chat-sized user prompt (20-300 characters) per event;
* ``3.6k``: one 3.6 KB user prompt per event;
* ``20k-doc``: a short prompt and one 20 KB retrieved document per event;
* ``mix``: the realistic mix, a prompt of 100 B-20 KB (log-uniform, mean about 3.6 KB) and, for a third of the
  events, one to three retrieved documents of 500 B-8 KB;
* ``engine``: the events of the engine benchmark (``bench.workload``, attack-heavy: about 40 % of them raise a
  classifier detection, so explanations weigh in).

Runs on one thread (BLAS pinned to one thread) and reports events/s (wall clock), events per CPU-second (what one
dedicated core would do, even on a busy machine), MB/s of text scored and p50 / p99 latency per batch and per
event (batch latency / batch size). ``--profile`` adds a cProfile of the ``mix`` workload at the largest batch size.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence

from threadpoolctl import threadpool_limits

from bench import corpora
from bench.workload import WorkloadConfig, load_records, normalise_records
from detectors.base import Findings
from detectors.event import Event, Message, RetrievedDocument
from detectors.textclf import TextClassifierDetector
from detectors.textclf.detector import DIRECT_FIELDS, INDIRECT_FIELDS

Shape = Callable[[random.Random, Sequence[str]], tuple[str, list[str]]]


def _text(rng: random.Random, pieces: Sequence[str], low: int, high: int) -> str:
    """A text of log-uniform length in ``[low, high]`` characters made of corpus pieces."""
    size = round(low * (high / low) ** rng.random())
    parts, length = [], 0
    while length < size:
        piece = rng.choice(pieces)
        parts.append(piece)
        length += len(piece) + 2
    return "\n\n".join(parts)[:size]


def _mix(rng: random.Random, pieces: Sequence[str]) -> tuple[str, list[str]]:
    documents = []
    if rng.random() < 1 / 3:
        documents = [_text(rng, pieces, 500, 8_000) for _ in range(rng.randint(1, 3))]
    return _text(rng, pieces, 100, 20_000), documents


ENGINE = "engine"  # the engine benchmark's events rather than generated ones
WORKLOADS: dict[str, Shape] = {
    "short": lambda rng, pieces: (_text(rng, pieces, 20, 300), []),
    "3.6k": lambda rng, pieces: (_text(rng, pieces, 3_600, 3_600), []),
    "20k-doc": lambda rng, pieces: (_text(rng, pieces, 20, 300), [_text(rng, pieces, 20_000, 20_000)]),
    "mix": _mix,
}


def make_events(
    count: int, pieces: Sequence[str], attacks: Sequence[str], attack_share: float, seed: int, shape: Shape = _mix
) -> list[Event]:
    """``count`` events of the given shape; a share of the prompts are corpus attacks."""
    rng = random.Random(seed)
    events = []
    for index in range(count):
        prompt, documents = shape(rng, pieces)
        if rng.random() < attack_share:
            prompt = rng.choice(attacks)
        events.append(
            Event(
                id=f"bench-{index}",
                timestamp=1_700_000_000.0 + index,
                dataset="bench",
                input_messages=[Message(role="user", content=prompt)],
                retrieved_documents=[RetrievedDocument(content=document) for document in documents],
            )
        )
    return events


def _scored_chars(event: Event) -> int:
    """Characters of the texts the classifier scores (prompts, documents, tool results)."""
    return sum(len(text) for field, text in event.texts() if field in DIRECT_FIELDS or field in INDIRECT_FIELDS)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(detector: TextClassifierDetector, events: list[Event], batch_size: int, batches: int) -> dict[str, float]:
    """Time ``batches`` consecutive batches of ``batch_size`` events (cycling through ``events``)."""
    latencies = []
    cpu = 0.0
    chars = 0
    for number in range(batches):
        start = (number * batch_size) % len(events)
        batch = (events + events)[start : start + batch_size]
        chars += sum(map(_scored_chars, batch))
        began, began_cpu = time.perf_counter(), time.process_time()
        detector.detect(batch, [Findings() for _ in batch])
        latencies.append(time.perf_counter() - began)
        cpu += time.process_time() - began_cpu
    total = sum(latencies)
    per_event = [latency / batch_size for latency in latencies]
    return {
        "events_per_s": batch_size * batches / total,
        "events_per_cpu_s": batch_size * batches / cpu,
        "mb_per_s": chars / total / 1e6,
        "batch_p50_ms": 1e3 * statistics.median(latencies),
        "batch_p99_ms": 1e3 * _percentile(latencies, 0.99),
        "event_p50_ms": 1e3 * statistics.median(per_event),
        "event_p99_ms": 1e3 * _percentile(per_event, 0.99),
    }


def profile(detector: TextClassifierDetector, events: list[Event], batch_size: int, top: int = 15) -> None:
    """cProfile of scoring ``events`` in batches of ``batch_size``: where the time goes, by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for start in range(0, len(events), batch_size):
        batch = events[start : start + batch_size]
        detector.detect(batch, [Findings() for _ in batch])
    profiler.disable()
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_classifier", description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", choices=[*WORKLOADS, ENGINE], default=[*WORKLOADS, ENGINE])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--seconds", type=float, default=3.0, help="about this long per workload and batch size")
    parser.add_argument("--events", type=int, default=600, help="distinct events generated per workload")
    parser.add_argument("--attack-share", type=float, default=0.02, help="share of prompts that are attacks")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="also profile the mix at the largest batch size")
    args = parser.parse_args(argv)
    records = corpora.load()
    pieces = sorted(r.text for r in records if r.label == "benign")
    attacks = sorted(r.text for r in records if r.label == "attack")
    detector = TextClassifierDetector()
    print(f"model textclf {detector.model.version}; 1 thread; {args.events} distinct events per workload")
    print(
        f"{'workload':>8} {'chars/ev':>8} {'batch':>6} {'events/s':>9} {'ev/cpu-s':>9} {'MB/s':>6} "
        f"{'batch p50':>10} {'batch p99':>10} {'event p50':>10} {'event p99':>10}"
    )
    with threadpool_limits(limits=1):
        for name in args.workloads:
            if name == ENGINE:
                events = normalise_records(load_records(WorkloadConfig(events=args.events)))
            else:
                events = make_events(args.events, pieces, attacks, args.attack_share, args.seed, WORKLOADS[name])
            chars = statistics.mean(map(_scored_chars, events))
            detector.detect(events[:10], [Findings() for _ in range(10)])  # warm-up
            for batch_size in args.batch_sizes:
                began = time.perf_counter()
                run(detector, events, batch_size, 1)
                batches = max(3, min(2_000, round(args.seconds / max(time.perf_counter() - began, 1e-6))))
                row = run(detector, events, batch_size, batches)
                print(
                    f"{name:>8} {chars:>8.0f} {batch_size:>6} {row['events_per_s']:>9.0f} "
                    f"{row['events_per_cpu_s']:>9.0f} {row['mb_per_s']:>6.2f} {row['batch_p50_ms']:>8.1f}ms "
                    f"{row['batch_p99_ms']:>8.1f}ms {row['event_p50_ms']:>8.3f}ms {row['event_p99_ms']:>8.3f}ms"
                )
        if args.profile:
            events = make_events(args.events, pieces, attacks, args.attack_share, args.seed, WORKLOADS["mix"])
            print(f"\nprofile: mix, batch {max(args.batch_sizes)}")
            profile(detector, events, max(args.batch_sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
