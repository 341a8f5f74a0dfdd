"""Throughput and latency of the text-classifier detector on batches of realistic LLM events.

    python -m bench.bench_classifier [--batch-sizes 1 20 100] [--batches 10]

Events carry a user prompt of 100 B-20 KB (log-uniform) built from benign corpus texts (a small share are corpus
attacks instead, so detections and their explanations are part of the cost), and a third of them one to three
retrieved documents (500 B-8 KB). Runs on one thread (BLAS pinned to one thread) and reports events/s (wall
clock), events per CPU-second (what one dedicated core would do, even on a busy machine), MB/s of text scored,
and p50 / p99 latency per batch and per event (batch latency / batch size).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Sequence

from threadpoolctl import threadpool_limits

from bench import corpora
from detectors.base import Findings
from detectors.event import Event, Message, RetrievedDocument
from detectors.textclf import TextClassifierDetector


def _text(rng: random.Random, pieces: Sequence[str], low: int, high: int) -> str:
    """A text of log-uniform length in ``[low, high]`` characters made of corpus pieces."""
    size = round(low * (high / low) ** rng.random())
    parts, length = [], 0
    while length < size:
        piece = rng.choice(pieces)
        parts.append(piece)
        length += len(piece) + 2
    return "\n\n".join(parts)[:size]


def make_events(
    count: int, pieces: Sequence[str], attacks: Sequence[str], attack_share: float, seed: int
) -> list[Event]:
    rng = random.Random(seed)
    events = []
    for index in range(count):
        prompt = rng.choice(attacks) if rng.random() < attack_share else _text(rng, pieces, 100, 20_000)
        documents = []
        if rng.random() < 1 / 3:
            documents = [RetrievedDocument(content=_text(rng, pieces, 500, 8_000)) for _ in range(rng.randint(1, 3))]
        events.append(
            Event(
                id=f"bench-{index}",
                timestamp=1_700_000_000.0 + index,
                dataset="bench",
                input_messages=[Message(role="user", content=prompt)],
                retrieved_documents=documents,
            )
        )
    return events


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
        chars += sum(len(text) for event in batch for _, text in event.texts())
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_classifier", description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 20, 100])
    parser.add_argument("--batches", type=int, default=10, help="batches timed per batch size")
    parser.add_argument("--events", type=int, default=600, help="distinct events generated")
    parser.add_argument("--attack-share", type=float, default=0.02, help="share of prompts that are attacks")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    records = corpora.load()
    pieces = sorted(r.text for r in records if r.label == "benign")
    attacks = sorted(r.text for r in records if r.label == "attack")
    events = make_events(args.events, pieces, attacks, args.attack_share, args.seed)
    detector = TextClassifierDetector()
    mean_prompt = statistics.mean(len(e.input_messages[0].content) for e in events)
    print(
        f"model textclf {detector.model.version}; {len(events)} events, mean prompt {mean_prompt:.0f} chars, "
        f"{sum(len(e.retrieved_documents) for e in events)} documents; 1 thread"
    )
    print(
        f"{'batch':>6} {'events/s':>9} {'ev/cpu-s':>9} {'MB/s':>6} {'batch p50':>10} {'batch p99':>10} "
        f"{'event p50':>10} {'event p99':>10}"
    )
    with threadpool_limits(limits=1):
        detector.detect(events[:10], [Findings() for _ in range(10)])  # warm-up
        for batch_size in args.batch_sizes:
            row = run(detector, events, batch_size, args.batches)
            print(
                f"{batch_size:>6} {row['events_per_s']:>9.0f} {row['events_per_cpu_s']:>9.0f} {row['mb_per_s']:>6.2f} "
                f"{row['batch_p50_ms']:>8.1f}ms {row['batch_p99_ms']:>8.1f}ms {row['event_p50_ms']:>8.2f}ms "
                f"{row['event_p99_ms']:>8.2f}ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
