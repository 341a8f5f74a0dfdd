"""Remembered event ids as part of each identity partition's checkpointed state.

A partition's memory of processed ids is saved with its detection state and restored with it, so a record
delivered again after the partition moved (or its worker restarted) is dropped instead of counted twice. The
partition log here is an in-memory stand-in for Kafka; the real broker is exercised in
``tests/integration/test_dedupe_restart.py``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from pydantic import SecretStr

from app.replay import decoded_lines
from app.settings import PACKAGE_ROOT, Settings
from app.stream.checkpoints import Checkpoint, PartitionStates
from app.stream.codec import decode_events, encode_events
from app.stream.dedupe import RecentIds
from app.stream.worker import StreamWorker
from detectors.event import Event
from detectors.pipeline import Pipeline

SECRET = b"deployment-secret"
MAGIC_AND_MAC = 6 + 32  # CheckpointCodec's header and HMAC, before the compressed body
MESSAGE_EVENTS = 40  # events per internal message


class MemoryLog:
    """The two topics a partition's state is read from, held in lists: ``(topic, partition) -> values``."""

    def __init__(self) -> None:
        self.topics: dict[tuple[str, int], list[bytes]] = {}

    def append(self, topic: str, partition: int, value: bytes) -> int:
        values = self.topics.setdefault((topic, partition), [])
        values.append(value)
        return len(values) - 1

    def latest(self, topic: str, partition: int) -> bytes | None:
        values = self.topics.get((topic, partition), [])
        return values[-1] if values else None

    def bounds(self, topic: str, partition: int) -> tuple[int, int]:
        return 0, len(self.topics.get((topic, partition), []))

    def messages(self, topic: str, partition: int, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        values = self.topics.get((topic, partition), [])
        yield from ((offset, values[offset]) for offset in range(max(start, 0), min(stop, len(values))))

    def close(self) -> None:
        pass


class CheckpointV1(msgspec.Struct, kw_only=True):
    """A checkpoint as workers wrote it before partitions remembered their event ids."""

    topic: str
    partition: int
    offset: int
    partitions: int
    created: float
    state: dict[str, Any]


def ids(*names: str) -> list[Event]:
    return [Event(id=name, timestamp=1.0, dataset="t") for name in names]


@pytest.fixture(scope="module")
def sample_events() -> list[Event]:
    samples = sorted((PACKAGE_ROOT / "samples").glob("*.jsonl"))
    found = decoded_lines([str(p) for p in samples], max_bytes=1 << 22, max_text_chars=1 << 18)
    events = [event for batch, _letters, _size in found for event in batch]
    assert len(events) > 300, "the bundled samples should hold a few hundred events"
    return events


@pytest.fixture(scope="module")
def template() -> Pipeline:
    return StreamWorker(Settings(), internal_partitions=1, op_types={}).identities.template


def worker_states(template: Pipeline, log: MemoryLog, dedupe_capacity: int = 1_000) -> PartitionStates[Pipeline]:
    """The identity partitions of a new worker (one internal partition) reading ``log``; its pipeline template is
    the shared ``template``, so the many workers of a test do not each build the engine."""
    settings = Settings()
    settings.worker.dedupe_capacity = dedupe_capacity
    settings.detection.redaction_key = SecretStr(SECRET.decode())
    worker = StreamWorker(settings, internal_partitions=1, op_types={})
    states = worker.identities
    states.template = template
    states.log = log  # type: ignore[assignment]
    return states


def messages(events: list[Event]) -> list[bytes]:
    """Internal messages of ``MESSAGE_EVENTS`` events each, as ingest writes them."""
    return [
        message
        for start in range(0, len(events), MESSAGE_EVENTS)
        for message in encode_events(events[start : start + MESSAGE_EVENTS], 1 << 20)
    ]


def run_live(states: PartitionStates[Pipeline], log: MemoryLog, values: list[bytes]) -> None:
    """What the detect agent does with each message: append it to the internal topic, restore the partition if
    new, drop remembered ids, run the rest, then acknowledge (which remembers their ids)."""
    for value in values:
        offset = log.append(states.topic, 0, value)
        if 0 not in states.progress:
            states.restore(0, offset)
        states.progress[0].processed = offset
        events = sorted(decode_events(value), key=lambda event: event.timestamp)
        fresh = states.recent[0].fresh(events)
        states.stages[0].process(fresh)
        states.acknowledge({0: offset}, {0: [event.id for event in fresh]})


def checkpoint(states: PartitionStates[Pipeline], log: MemoryLog) -> Checkpoint:
    """Write the partition's checkpoint to the state topic, as the worker does when it is due."""
    [(partition, offset)] = states.due()
    blob = states.snapshot(partition, offset)
    assert blob is not None
    log.append(states.state_topic, partition, blob)
    states.progress[partition].checkpointed = offset
    return states.codec.decode(blob)


# -- the memory itself ------------------------------------------------------------------------------------------


def test_a_dump_restores_the_same_memory_in_the_same_order() -> None:
    recent = RecentIds(5, secret=SECRET)
    recent.remember(["a", "b", "c", "d"])
    dumped = recent.dump()
    assert len(dumped) == 4 * 8
    restored = recent.empty()
    assert len(restored) == 0 and restored.capacity == 5
    restored.load(dumped)
    assert [event.id for event in restored.fresh(ids("a", "b", "c", "d", "e"))] == ["e"]
    restored.remember(["e", "f"])  # one over capacity: the oldest, "a", goes first, as in the original
    assert "a" not in restored and all(name in restored for name in "bcdef")
    assert restored.dump() == (recent.remember(["e", "f"]), recent.dump())[1]


def test_memory_and_dump_stay_within_capacity() -> None:
    recent = RecentIds(100, secret=SECRET)
    recent.remember(f"event-{n}" for n in range(10_000))
    assert len(recent) == 100
    assert len(recent.dump()) == 100 * 8
    assert "event-9999" in recent and "event-9899" not in recent


def test_a_dump_larger_than_the_capacity_keeps_its_newest_ids() -> None:
    larger = RecentIds(10, secret=SECRET)
    larger.remember(str(n) for n in range(10))
    smaller = RecentIds(3, secret=SECRET)
    smaller.load(larger.dump())
    assert len(smaller) == 3
    assert [name for name in map(str, range(10)) if name in smaller] == ["7", "8", "9"]


def test_a_dump_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        RecentIds(10, secret=SECRET).load(b"\x00" * 12)


def test_hashes_are_keyed_with_the_deployment_secret() -> None:
    ours = RecentIds(10, secret=SECRET)
    ours.remember(["a"])
    theirs = RecentIds(10, secret=b"another deployment")
    theirs.load(ours.dump())
    assert "a" in ours and "a" not in theirs


def test_the_worker_shares_its_capacity_out_among_the_identity_partitions() -> None:
    settings = Settings()
    settings.worker.dedupe_capacity = 10
    worker = StreamWorker(settings, internal_partitions=4, op_types={})
    assert worker.identities.recent_template.capacity == 3  # ceil(10 / 4)
    assert worker.campaigns_state.recent_template.capacity == 0  # the campaign stage remembers its own


# -- with the partition's checkpoint ----------------------------------------------------------------------------


def test_ids_are_remembered_only_once_their_batch_is_acknowledged(template: Pipeline) -> None:
    log = MemoryLog()
    states = worker_states(template, log)
    states.restore(0, 0)
    states.progress[0].processed = 0  # the batch is in flight
    batch = ids("a", "b")
    assert states.recent[0].fresh(batch) == batch
    assert states.snapshot(0, 0) is None, "a partition with a batch in flight is not checkpointed"
    states.acknowledge({0: 0}, {0: ["a", "b"]})
    assert states.recent[0].fresh(batch) == []
    assert states.snapshot(0, 0) is not None


def test_a_checkpoint_carries_the_ids_to_the_next_owner(template: Pipeline, sample_events: list[Event]) -> None:
    """Worker a runs part of the traffic and checkpoints; worker b takes the partition over: the ids a
    processed are dropped by b, the detection state is a's, and b's own checkpoint carries the ids on."""
    log = MemoryLog()
    first = sample_events[: len(sample_events) // 2]
    a = worker_states(template, log)
    run_live(a, log, messages(first))
    written = checkpoint(a, log)
    assert len(written.recent_ids) == len(first) * 8

    b = worker_states(template, log)
    b.restore(0, len(log.topics[(b.topic, 0)]))  # its consumer starts after a's last message
    assert b.progress[0].checkpointed == written.offset
    assert b.stages[0].state() == a.stages[0].state()
    assert b.recent[0].fresh(first) == []
    assert b.recent[0].dump() == a.recent[0].dump()


def test_an_old_checkpoint_without_ids_restores_with_an_empty_memory(
    template: Pipeline, sample_events: list[Event]
) -> None:
    log = MemoryLog()
    a = worker_states(template, log)
    run_live(a, log, messages(sample_events[:80]))
    offset = a.progress[0].acked
    old = CheckpointV1(topic=a.topic, partition=0, offset=offset, partitions=1, created=0.0, state=a.stages[0].state())
    log.append(a.state_topic, 0, a.codec.encode(old))  # type: ignore[arg-type]

    b = worker_states(template, log)
    b.restore(0, offset + 1)
    assert b.progress[0].checkpointed == offset, "the old checkpoint is used, not ignored"
    assert b.stages[0].state() == a.stages[0].state()
    assert len(b.recent[0]) == 0


def test_a_worker_of_the_previous_release_reads_a_new_checkpoint(template: Pipeline) -> None:
    """Rolling upgrade: the body of a new checkpoint decodes as the old type (the ids are ignored)."""
    log = MemoryLog()
    a = worker_states(template, log)
    run_live(a, log, messages(ids("x", "y")))
    blob = a.snapshot(0, 0)
    assert blob is not None
    old = msgspec.msgpack.decode(zlib.decompress(blob[MAGIC_AND_MAC:]), type=CheckpointV1)
    assert (old.offset, old.state) == (0, a.stages[0].state())


def test_a_checkpoint_whose_ids_are_corrupt_is_not_used(template: Pipeline) -> None:
    log = MemoryLog()
    a = worker_states(template, log)
    run_live(a, log, messages(ids("x", "y")))
    broken = Checkpoint(
        topic=a.topic, partition=0, offset=0, partitions=1, created=0.0, state=a.stages[0].state(), recent_ids=b"abc"
    )
    log.append(a.state_topic, 0, a.codec.encode(broken))
    b = worker_states(template, log)
    b.restore(0, 1)  # no crash: state comes from the log instead
    assert b.progress[0].checkpointed == -1
    assert b.recent[0].fresh(ids("x", "y")) == []  # rebuilt by the catch-up over the log


def test_duplicates_after_the_checkpoint_are_dropped_by_the_catch_up_too(
    template: Pipeline, sample_events: list[Event]
) -> None:
    """Worker a checkpoints, then processes more (duplicates included, which it drops) and dies before its next
    checkpoint; worker b catches up from the log and must drop the same duplicates, ending with a's state. With
    no memory (capacity 0) the duplicates count twice: the control that shows the state depends on it."""
    half = len(sample_events) // 2
    first, second = sample_events[:half], sample_events[half:]
    repeated = first[-MESSAGE_EVENTS:]  # a shipper re-sends the last records before the crash

    def run(dedupe_capacity: int) -> tuple[dict[str, Any], dict[str, Any]]:
        log = MemoryLog()
        a = worker_states(template, log, dedupe_capacity)
        run_live(a, log, messages(first))
        checkpoint(a, log)
        run_live(a, log, messages(repeated) + messages(second))
        b = worker_states(template, log, dedupe_capacity)
        b.restore(0, len(log.topics[(b.topic, 0)]))
        return a.stages[0].state(), b.stages[0].state()

    log = MemoryLog()
    once = worker_states(template, log)
    run_live(once, log, messages(first) + messages(second))
    expected = once.stages[0].state()

    live, caught_up = run(dedupe_capacity=1_000)
    assert live == expected
    assert caught_up == expected
    _, forgetful = run(dedupe_capacity=0)
    assert forgetful != expected


def test_a_partition_that_moves_away_forgets_its_ids(template: Pipeline) -> None:
    log = MemoryLog()
    a = worker_states(template, log)
    run_live(a, log, messages(ids("x")))
    a.keep_only([])
    assert a.recent == {} and a.stages == {} and a.progress == {}
