"""Per-partition checkpoints of detection state on a compacted Kafka topic, and reading back what they miss.

Each identity partition of the internal topic has its own pipeline (``detectors.partitioned``) and its own memory
of the event ids it processed (``dedupe``). Both are written together, with the internal-topic offset they cover,
to the same partition of the state topic (compacted, one key per partition, so the newest record is the one that
counts). A worker that is given a partition restores the newest checkpoint and then replays, state only, the
internal messages between the checkpoint and the offset its consumer starts at: those were already written to
Elasticsearch by the previous owner, but their effect on windows, baselines and remembered ids was not in the
checkpoint. Without a checkpoint the state is rebuilt from the start of the partition (bounded). Either way
detection continues as if the partition had never moved, and a record delivered again after the move is
recognised as the duplicate it is.

A checkpoint is taken only of a *clean* partition, one whose every processed offset Elasticsearch acknowledged,
so the offset it records never covers events whose documents could still be lost.

Checkpoints are authenticated: the anomaly models inside are river objects restored with ``pickle``, so a
checkpoint loads only if it carries an HMAC made with the deployment's key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, Self, TypeVar

import msgspec
from kafka import KafkaConsumer, TopicPartition

from app.settings import KafkaSettings
from app.stream import metrics
from app.stream.dedupe import HashedEvent, RecentIds
from app.stream.kafka_config import kafka_python_options

log = logging.getLogger(__name__)

_MAGIC = b"ABWCK1"
_MAC_BYTES = 32
_POLL_MS = 500
S = TypeVar("S", bound="Stage")


class Checkpoint(msgspec.Struct, kw_only=True):
    """One partition's pipeline state after every internal message up to and including ``offset``."""

    topic: str  # the internal topic it follows
    partition: int
    offset: int
    partitions: int  # the internal topic's partition count: identities map to partitions through it
    created: float
    state: dict[str, Any]
    # The partition's remembered event ids (``RecentIds.dump``); absent from checkpoints written before it existed,
    # which restore with an empty memory. A field with a default keeps the format readable both ways (msgpack maps
    # by name, unknown fields are ignored), so the header stays ABWCK1.
    recent_ids: bytes = b""


class CheckpointCodec:
    """Checkpoint <-> bytes: msgpack, zlib, and an HMAC-SHA256 over the compressed body."""

    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.blake2b(secret, person=b"abw-checkpoint", digest_size=32).digest()

    def encode(self, checkpoint: Checkpoint) -> bytes:
        body = zlib.compress(msgspec.msgpack.encode(checkpoint), 1)
        return _MAGIC + hmac.digest(self._key, body, "sha256") + body

    def decode(self, blob: bytes) -> Checkpoint:
        """Raises ``ValueError`` for anything that is not a checkpoint this deployment wrote."""
        if not blob.startswith(_MAGIC):
            raise ValueError("not an abusewatch checkpoint (unknown header)")
        mac, body = blob[len(_MAGIC) : len(_MAGIC) + _MAC_BYTES], blob[len(_MAGIC) + _MAC_BYTES :]
        if not hmac.compare_digest(mac, hmac.digest(self._key, body, "sha256")):
            raise ValueError("checkpoint signature does not match this deployment's redaction key")
        try:
            return msgspec.msgpack.decode(zlib.decompress(body), type=Checkpoint)
        except (zlib.error, msgspec.DecodeError) as error:
            raise ValueError(f"corrupt checkpoint: {error}") from error


@dataclass(slots=True)
class PartitionProgress:
    """Offsets of one internal partition as this worker has handled it (-1: none yet).

    ``processed`` is set when a batch is handed to the pipeline and ``acked`` when Elasticsearch acknowledged
    its documents, so while a batch is in flight the partition is not clean and is not checkpointed.
    """

    processed: int = -1
    acked: int = -1
    checkpointed: int = -1

    @property
    def clean(self) -> bool:
        return self.processed == self.acked

    @property
    def due(self) -> bool:
        """Clean, with acknowledged offsets that no checkpoint covers yet."""
        return self.clean and self.acked > self.checkpointed


class PartitionLog:
    """Blocking reads of state and input topics (kafka-python), for the detector thread.

    One consumer, outside any group, assigned to one partition at a time.
    """

    def __init__(self, kafka: KafkaSettings, *, timeout_s: float = 60.0) -> None:
        self.kafka = kafka
        self.timeout_s = timeout_s
        self._consumer: KafkaConsumer | None = None

    @property
    def consumer(self) -> KafkaConsumer:
        if self._consumer is None:
            self._consumer = KafkaConsumer(
                **kafka_python_options(self.kafka),
                group_id=None,
                enable_auto_commit=False,
                client_id="abusewatch-state-reader",
                max_partition_fetch_bytes=self.kafka.max_message_bytes,
                fetch_max_bytes=max(self.kafka.max_message_bytes, 50 * 1024 * 1024),
            )
        return self._consumer

    def latest(self, topic: str, partition: int) -> bytes | None:
        """The newest record of ``topic[partition]`` (a state topic's only key there), or ``None``."""
        topic_partition = TopicPartition(topic, partition)
        start, end = self._bounds(topic_partition)
        if end <= start:
            return None
        for _offset, value in self._read(topic_partition, end - 1, end):
            return value
        return None

    def bounds(self, topic: str, partition: int) -> tuple[int, int]:
        """The oldest offset still kept in ``topic[partition]``, and the offset after its last."""
        return self._bounds(TopicPartition(topic, partition))

    def messages(self, topic: str, partition: int, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        """``(offset, value)`` of ``topic[partition]`` for ``start <= offset < stop``."""
        return self._read(TopicPartition(topic, partition), start, stop)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _bounds(self, topic_partition: TopicPartition) -> tuple[int, int]:
        consumer = self.consumer
        start = consumer.beginning_offsets([topic_partition])[topic_partition]
        end = consumer.end_offsets([topic_partition])[topic_partition]
        return start, end

    def _read(self, topic_partition: TopicPartition, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        if start >= stop:
            return
        consumer = self.consumer
        consumer.assign([topic_partition])
        consumer.seek(topic_partition, start)
        deadline = time.monotonic() + self.timeout_s
        while True:
            records = consumer.poll(timeout_ms=_POLL_MS).get(topic_partition, [])
            for record in records:
                if record.offset >= stop:
                    return
                yield record.offset, record.value or b""
            if consumer.position(topic_partition) >= stop:
                return
            if records:
                deadline = time.monotonic() + self.timeout_s
            elif time.monotonic() > deadline:
                raise TimeoutError(
                    f"{topic_partition.topic}[{topic_partition.partition}]: no records for {self.timeout_s:.0f}s "
                    f"while reading offsets {start}..{stop - 1} (at {consumer.position(topic_partition)})"
                )


class Stage(Protocol):
    """What one partition's state lives in: a detection pipeline, or the campaign stage."""

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...

    def fresh(self) -> Self: ...


@dataclass(slots=True)
class PartitionStates(Generic[S]):
    """The stages of one input topic's partitions that this worker owns, with their progress, their memories of
    processed events (empty copies of ``recent_template``; capacity 0 where a stage needs none) and checkpoints.

    ``replay(stage, recent, value)`` runs one input message through a stage for its effect on state only, dropping
    and remembering events as the live path does, and returns how many records it ran. Every method but ``keep_only``
    blocks on Kafka or on detection or reads what the detector thread writes: call it on the detector thread.
    """

    topic: str
    state_topic: str
    partitions: int
    template: S
    codec: CheckpointCodec
    log: PartitionLog
    replay: Callable[[S, RecentIds, bytes], int]
    recent_template: RecentIds
    max_catch_up_messages: int
    stages: dict[int, S] = field(default_factory=dict)
    recent: dict[int, RecentIds] = field(default_factory=dict)
    progress: dict[int, PartitionProgress] = field(default_factory=dict)

    def restore(self, partition: int, first_offset: int) -> None:
        """Give ``partition`` its state before its first batch here.

        The newest checkpoint, then the input messages between it and ``first_offset`` (where this consumer
        starts) replayed for their effect on state only: their outputs were written by the previous owner.
        """
        started = time.perf_counter()
        stage, recent = self.template.fresh(), self.recent_template.empty()
        checkpoint = self._load(partition)
        if checkpoint is not None:
            try:
                stage.load_state(checkpoint.state)
                recent.load(checkpoint.recent_ids)
            except Exception:
                log.exception("%s[%d]: checkpoint at offset %d does not load", self.topic, partition, checkpoint.offset)
                stage, recent, checkpoint = self.template.fresh(), self.recent_template.empty(), None
        if checkpoint is not None:
            start = checkpoint.offset + 1
        else:
            start = max(self._bounds(partition)[0], first_offset - self.max_catch_up_messages)
        replayed = self._catch_up(stage, recent, partition, start, first_offset)
        covered = max(first_offset - 1, checkpoint.offset if checkpoint else -1)
        self.stages[partition] = stage
        self.recent[partition] = recent
        self.progress[partition] = PartitionProgress(
            processed=covered, acked=covered, checkpointed=checkpoint.offset if checkpoint else -1
        )
        metrics.STATE_RESTORES.labels("checkpoint" if checkpoint else "log" if replayed else "empty").inc()
        log.info(
            "%s[%d]: state from %s, then %s in %.2fs",
            self.topic,
            partition,
            f"the checkpoint at offset {checkpoint.offset}" if checkpoint else "the log",
            _caught_up(replayed, start, first_offset),
            time.perf_counter() - started,
        )

    def snapshot(self, partition: int, offset: int) -> bytes | None:
        """The encoded checkpoint of ``partition``, whose state and remembered ids cover every input offset up to
        ``offset``; ``None`` if the partition has moved on since ``offset`` was found due (a batch is in flight or
        was acknowledged meanwhile), as its state would then cover more than the checkpoint says."""
        progress = self.progress.get(partition)
        if progress is None or not (progress.processed == progress.acked == offset):
            return None
        checkpoint = Checkpoint(
            topic=self.topic,
            partition=partition,
            offset=offset,
            partitions=self.partitions,
            created=time.time(),
            state=self.stages[partition].state(),
            recent_ids=self.recent[partition].dump(),
        )
        return self.codec.encode(checkpoint)

    def acknowledge(self, last: dict[int, int], written: dict[int, list[HashedEvent]] | None = None) -> None:
        """Elasticsearch and Kafka acknowledged everything up to ``last[partition]``: those partitions are clean,
        and the events they ran and wrote (``written[partition]``, as the partition's ``fresh`` returned them) are
        remembered, both at once."""
        for partition, offset in last.items():
            self.recent[partition].remember((written or {}).get(partition, ()))
            self.progress[partition].acked = offset

    def due(self, partitions: Iterable[int] | None = None) -> list[tuple[int, int]]:
        """``(partition, offset)`` of the owned partitions (all, or those in ``partitions``) worth checkpointing."""
        wanted = self.progress if partitions is None else [p for p in partitions if p in self.progress]
        return [(p, self.progress[p].acked) for p in sorted(wanted) if self.progress[p].due]

    def keep_only(self, kept: Iterable[int]) -> None:
        """Forget partitions not in ``kept``, and any whose state ran ahead of its acknowledged outputs."""
        kept = set(kept)
        for partition in list(self.progress):
            if partition not in kept or not self.progress[partition].clean:
                self.stages.pop(partition, None)
                self.recent.pop(partition, None)
                del self.progress[partition]

    def _load(self, partition: int) -> Checkpoint | None:
        try:
            blob = self.log.latest(self.state_topic, partition)
            checkpoint = self.codec.decode(blob) if blob is not None else None
        except Exception:
            log.exception("%s[%d]: cannot read its checkpoint; state is rebuilt from the log", self.topic, partition)
            return None
        if checkpoint is None:
            return None
        problem = None
        if checkpoint.topic != self.topic or checkpoint.partition != partition:
            problem = f"it follows {checkpoint.topic}[{checkpoint.partition}]"
        elif checkpoint.partitions != self.partitions:
            problem = f"it was taken with {checkpoint.partitions} partitions, the topic has {self.partitions}"
        elif checkpoint.offset >= self._bounds(partition)[1]:
            problem = f"its offset {checkpoint.offset} is beyond the topic's end (was the topic re-created?)"
        if problem:
            log.warning("%s[%d]: checkpoint ignored: %s", self.topic, partition, problem)
            return None
        return checkpoint

    def _bounds(self, partition: int) -> tuple[int, int]:
        try:
            return self.log.bounds(self.topic, partition)
        except Exception:
            log.exception("%s[%d]: cannot read the topic's offsets", self.topic, partition)
            return 0, 2**63 - 1

    def _catch_up(self, stage: S, recent: RecentIds, partition: int, start: int, stop: int) -> int:
        """Replay ``start <= offset < stop`` into ``stage`` and ``recent``; a message whose replay raises is skipped
        (logged), as the live path dead-letters what fails, so one poison message does not end the catch-up."""
        replayed = 0
        try:
            for offset, value in self.log.messages(self.topic, partition, start, stop):
                try:
                    replayed += self.replay(stage, recent, value)
                except Exception:
                    log.exception("%s[%d]: catch-up skipped the message at offset %d", self.topic, partition, offset)
        except Exception:
            log.exception(
                "%s[%d]: catch-up stopped after %d records; state may miss some", self.topic, partition, replayed
            )
        metrics.STATE_REPLAYED_EVENTS.inc(replayed)
        return replayed


def _caught_up(replayed: int, start: int, stop: int) -> str:
    """What a catch-up ran, for the restore log line: the items it replayed (events, or a campaign stage's
    candidates) and the messages they came from, or why there was nothing to replay."""
    if start >= stop:
        return f"nothing to replay (consuming from offset {stop}, which the state already covers)"
    return f"{replayed} items replayed from the messages at offsets {start} to {stop - 1}"
