"""Remembered events in each identity partition's checkpoint: size, CPU and memory at the default capacity.

The worker's ``worker.dedupe_capacity`` (200,000) is shared out among the internal topic's partitions (4 by
default), so a full partition remembers 50,000 ids. For that memory this reports: the bytes it adds to the
partition's checkpoint (8-byte keyed hashes, through the real codec) beside the same ids kept as strings (msgpack
+ zlib, the obvious alternative), the CPU time to take and to restore it, the memory it holds (tracemalloc, beside
an ``OrderedDict`` of the id strings, which the worker held before), and the per-event cost of the hot path
(``fresh``, which hashes each event's id and content once, then ``remember``, which takes those hashes back). Ids
are UUID-4 strings (36 characters), as most shippers' request ids; hot-path events carry a prompt and a completion
of ``TEXT_CHARS`` characters each.

Run: ``.venv/bin/python -m bench.bench_dedupe`` (``--partitions``, ``--capacity`` to vary); prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import tracemalloc
import uuid
import zlib
from collections import OrderedDict
from typing import Any

import msgspec

from app.stream.checkpoints import Checkpoint, CheckpointCodec
from app.stream.dedupe import RecentIds
from detectors.event import Event, Identity, Message

SECRET = b"bench-secret"
TEXT_CHARS = 1_000


def uuids(count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def exchange(event_id: str) -> Event:
    """An event as a chat exchange logs it, with a prompt and a completion of ``TEXT_CHARS`` characters."""
    return Event(
        id=event_id,
        timestamp=0.0,
        dataset="bench",
        request_model="gpt-4.1",
        identity=Identity(user_id="bench-user"),
        input_messages=[Message(role="user", content=event_id * (TEXT_CHARS // len(event_id)))],
        output_messages=[Message(role="assistant", content="ok " * (TEXT_CHARS // 3))],
    )


def checkpoint_bytes(recent_ids: bytes) -> int:
    """The encoded size of an otherwise empty checkpoint carrying ``recent_ids``."""
    checkpoint = Checkpoint(
        topic="bench", partition=0, offset=0, partitions=1, created=0.0, state={}, recent_ids=recent_ids
    )
    return len(CheckpointCodec(SECRET).encode(checkpoint))


def traced_bytes(build: Any) -> int:
    """Bytes still allocated by what ``build()`` returns (kept alive until measured)."""
    tracemalloc.start()
    kept = build()
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return size


def measure(capacity: int, partitions: int) -> dict[str, Any]:
    per_partition = -(-capacity // partitions)
    ids = uuids(per_partition)
    remembered = [Event(id=event_id, timestamp=0.0, dataset="bench") for event_id in ids]
    recent = RecentIds(per_partition, secret=SECRET)
    recent.remember(recent.hashed(remembered))

    started = time.process_time()
    dumped = recent.dump()
    with_ids = checkpoint_bytes(dumped)
    dump_seconds = time.process_time() - started
    started = time.process_time()
    restored = recent.empty()
    restored.load(CheckpointCodec(SECRET).decode(CheckpointCodec(SECRET).encode(
        Checkpoint(topic="b", partition=0, offset=0, partitions=1, created=0.0, state={}, recent_ids=dumped)
    )).recent_ids)  # fmt: skip
    load_seconds = time.process_time() - started
    assert len(restored) == per_partition
    as_strings = len(zlib.compress(msgspec.msgpack.encode(ids), 1))

    events = [exchange(event_id) for event_id in uuids(20_000, seed=2)]
    hot = RecentIds(per_partition, secret=SECRET)
    started = time.perf_counter()
    for start in range(0, len(events), 500):
        batch = events[start : start + 500]
        hot.remember(hot.fresh(batch))
    hot_path_us = (time.perf_counter() - started) / len(events) * 1e6

    def filled() -> RecentIds:
        memory = RecentIds(per_partition, secret=SECRET)
        memory.remember(memory.hashed(remembered))
        return memory

    return {
        "dedupe_capacity": capacity,
        "partitions": partitions,
        "ids_per_partition": per_partition,
        "checkpoint_bytes_added_per_partition": with_ids - checkpoint_bytes(b""),
        "same_ids_as_strings_msgpack_zlib_bytes": as_strings,
        "checkpoint_bytes_added_per_worker_all_partitions": (with_ids - checkpoint_bytes(b"")) * partitions,
        "take_cpu_ms_per_partition": round(dump_seconds * 1e3, 1),
        "restore_cpu_ms_per_partition": round(load_seconds * 1e3, 1),
        "memory_mb_per_partition": round(traced_bytes(filled) / 2**20, 1),
        "memory_mb_per_partition_as_id_strings": round(
            traced_bytes(lambda: OrderedDict.fromkeys(uuids(per_partition))) / 2**20, 1
        ),
        "hot_path_us_per_event_wall": round(hot_path_us, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--capacity", type=int, default=200_000, help="worker.dedupe_capacity")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the internal topic")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.capacity, args.partitions)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
