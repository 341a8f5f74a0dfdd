"""Per-partition checkpoints of detection state on a compacted Kafka topic, and reading back what they miss.

Each identity partition of the internal topic has its own pipeline (``detectors.partitioned``). Its state is
written, with the internal-topic offset it covers, to the same partition of the state topic (compacted, one key
per partition, so the newest record is the one that counts). A worker that is given a partition restores the
newest checkpoint and then replays, state only, the internal messages between the checkpoint and the offset its
consumer starts at: those were already written to Elasticsearch by the previous owner, but their effect on
windows and baselines was not in the checkpoint. Without a checkpoint the state is rebuilt from the start of the
partition (bounded). Either way detection continues as if the partition had never moved.

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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
from kafka import KafkaConsumer, TopicPartition

from app.settings import KafkaSettings
from app.stream.kafka_config import kafka_python_options

log = logging.getLogger(__name__)

_MAGIC = b"ABWCK1"
_MAC_BYTES = 32
_POLL_MS = 500


class Checkpoint(msgspec.Struct, kw_only=True):
    """One partition's pipeline state after every internal message up to and including ``offset``."""

    topic: str  # the internal topic it follows
    partition: int
    offset: int
    partitions: int  # the internal topic's partition count: identities map to partitions through it
    created: float
    state: dict[str, Any]


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
    """Blocking reads of the state and internal topics (kafka-python), for the detector thread.

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

    def latest_checkpoint(self, partition: int) -> bytes | None:
        """The newest record of ``partition`` of the state topic (its only key), or ``None`` if it has none."""
        topic_partition = TopicPartition(self.kafka.state_topic, partition)
        start, end = self._bounds(topic_partition)
        if end <= start:
            return None
        for _offset, value in self._read(topic_partition, end - 1, end):
            return value
        return None

    def internal_bounds(self, partition: int) -> tuple[int, int]:
        """The oldest offset still kept in ``partition`` of the internal topic, and the offset after its last."""
        return self._bounds(TopicPartition(self.kafka.internal_topic, partition))

    def internal_messages(self, partition: int, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        """``(offset, value)`` of the internal topic's ``partition`` for ``start <= offset < stop``."""
        return self._read(TopicPartition(self.kafka.internal_topic, partition), start, stop)

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
