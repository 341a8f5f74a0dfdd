"""How long the ingest agent keeps the Faust event loop from running while it normalises a batch.

Heartbeats, ``/health`` (the liveness probe) and Faust's own tasks share that loop. A batch of small gzip messages
that each inflate to a 4 MiB OTLP export of tiny GenAI spans (the review's worst case) goes through the real
``StreamWorker.ingest``; a coroutine ticking every 50 ms records the longest gap between its ticks. Kafka is
replaced by an in-memory stream and topic (nothing here measures Kafka).

Run: ``.venv/bin/python -m bench.bench_ingest_loop [--messages 5] [--gc-young-threshold N]``; prints one JSON
object. The garbage collector is tuned as the worker tunes it (``worker.gc_young_threshold``, default 10,000;
``--gc-young-threshold 0`` keeps Python's default of 700, for comparison: ``app/gc_policy.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import json
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import orjson

from app.gc_policy import tune_garbage_collector
from app.settings import Settings, WorkerSettings
from app.stream.worker import StreamWorker

TICK_S = 0.05
SPANS = 45_000  # about 4 MiB of JSON: just under the default max_record_bytes


def otlp_message() -> bytes:
    span = {"traceId": "t", "spanId": "s", "attributes": [{"key": "gen_ai.x", "value": {"stringValue": "y"}}]}
    return gzip.compress(orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span] * SPANS}]}]}))


class Batch:
    """``take_events`` of a Faust stream that holds one batch."""

    def __init__(self, values: list[bytes]) -> None:
        now = time.time()  # the Kafka timestamp: produced just now, as in a live stream
        self.records = [
            SimpleNamespace(message=SimpleNamespace(topic="raw", partition=0, offset=n, value=value, timestamp=now))
            for n, value in enumerate(values)
        ]

    async def take_events(self, size: int, within: float) -> AsyncIterator[list[Any]]:
        yield self.records


class Discard:
    """An internal topic that accepts every message at once."""

    async def send(self, **_: Any) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def measure(messages: int, gc_young_threshold: int) -> dict[str, Any]:
    worker = StreamWorker(Settings(), internal_partitions=3, op_types={})
    tune_garbage_collector(gc_young_threshold)
    worker.internal_topic = Discard()  # type: ignore[assignment]
    message = otlp_message()
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(4 * TICK_S)
    started = time.monotonic()
    await worker.ingest(Batch([message] * messages))  # type: ignore[arg-type]
    seconds = time.monotonic() - started
    await asyncio.sleep(4 * TICK_S)
    task.cancel()
    return {
        "messages": messages,
        "gc_thresholds": list(gc.get_threshold()),
        "message_bytes": len(message),
        "batch_seconds": round(seconds, 2),
        "longest_loop_gap_s": round(max(gaps), 3),
        "tick_s": TICK_S,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument(
        "--gc-young-threshold",
        type=int,
        default=WorkerSettings().gc_young_threshold,
        help="as the worker setting (default %(default)s); 0 leaves Python's 700",
    )
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(measure(args.messages, args.gc_young_threshold)), indent=2))


if __name__ == "__main__":
    main()
