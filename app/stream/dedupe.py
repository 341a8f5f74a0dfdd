"""Recently processed events, so a record delivered twice (a shipper's retry, a replayed file) is detected once.

Enriched events and alerts are idempotent in Elasticsearch anyway, but stateful detectors (windows, risk scores)
would count a duplicate twice and raise alerts replay never raises. Each identity partition keeps its own memory,
checkpointed with its detection state (``checkpoints``), so a duplicate is dropped even after its partition moved
to another worker or the worker restarted. Events are remembered only after their batch is fully written, so a
batch interrupted before that (rebalance, crash) is processed again, never skipped; an event that was not written
(dead-lettered as a pipeline error, or its enriched-event document rejected by Elasticsearch) is not remembered, so
the same record ingested again once the cause is fixed is processed.

What is remembered of an event is the whole event but a time the normaliser assumed (``detectors.redelivery``): what a
true redelivery shares with the first delivery. The id alone is not enough: a client can sometimes choose it, and a
benign request followed by an attack under the same id would otherwise have the attack dropped unseen. So a reused id
with anything else different goes through detection, its alerts are written, and its enriched-event document gets its
own ``_id`` (``detectors.documents.event_document_id``, a hash of the same).

Memory is bounded: the oldest events are forgotten first. An event is kept as a 64-bit keyed hash (BLAKE2b keyed
with the deployment's secret), 8 bytes in a checkpoint: two different events share a hash with odds of about one in
2**64 per pair, and nobody without the secret can craft a pair that does (an attacker who could would have their
second request dropped unseen). Hashing encodes the whole event, so each event is hashed once:
:meth:`RecentIds.fresh` returns the kept events with their hashes (:class:`HashedEvent`), which
:meth:`RecentIds.remember` takes back.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from detectors.event import Event
from detectors.redelivery import content_digest

_HASH = np.dtype("<u8")  # one remembered event in a dump: its hash, little-endian whatever the machine


class HashedEvent(NamedTuple):
    """An event with its hash in a :class:`RecentIds` (valid for every memory keyed with the same secret)."""

    event: Event
    digest: int


def partition_share(capacity: int, partitions: int) -> int:
    """Each of ``partitions`` memories' share of a worker's ``capacity`` (rounded up), so the events a worker holds
    stay within it however many partitions it owns, and a partition remembers as much wherever it runs."""
    return -(-capacity // partitions)


class RecentIds:
    """The last ``capacity`` remembered events (as keyed hashes, :mod:`detectors.redelivery`), oldest evicted first."""

    def __init__(self, capacity: int, *, secret: bytes = b"") -> None:
        if capacity < 0:
            raise ValueError(f"capacity must not be negative, not {capacity}")
        self.capacity = capacity
        self._secret = secret
        self._key = hashlib.blake2b(secret, person=b"abw-recent-ids", digest_size=32).digest()
        self._hashes: OrderedDict[int, None] = OrderedDict()

    def __contains__(self, event: object) -> bool:
        return isinstance(event, Event) and self._hash(event) in self._hashes

    def __len__(self) -> int:
        return len(self._hashes)

    def empty(self) -> RecentIds:
        """A memory with the same capacity and key, holding nothing (for a partition new to this worker)."""
        return RecentIds(self.capacity, secret=self._secret)

    def hashed(self, events: Iterable[Event]) -> list[HashedEvent]:
        """``events`` with their hashes, for :meth:`remember` (events that did not come from :meth:`fresh`)."""
        return [HashedEvent(event, self._hash(event)) for event in events]

    def fresh(self, events: Iterable[Event]) -> list[HashedEvent]:
        """``events`` without those already remembered and without repeats within ``events`` (first one kept),
        each with its hash, to hand to :meth:`remember` once written."""
        seen: set[int] = set()
        kept = []
        for event in events:
            hashed = self._hash(event)
            if hashed not in self._hashes and hashed not in seen:
                seen.add(hashed)
                kept.append(HashedEvent(event, hashed))
        return kept

    def remember(self, events: Iterable[HashedEvent]) -> None:
        """Remember ``events`` as the newest (those remembered already move to the newest end)."""
        for _event, hashed in events:
            self._hashes[hashed] = None
            self._hashes.move_to_end(hashed)
        self._evict()

    def dump(self) -> bytes:
        """The remembered hashes, oldest first, 8 bytes each: what a checkpoint keeps."""
        return np.fromiter(self._hashes, dtype=_HASH, count=len(self._hashes)).tobytes()

    def load(self, dumped: bytes) -> None:
        """Remember exactly what ``dumped`` (from :meth:`dump`, same secret) holds, the newest ``capacity`` of it.

        Raises ``ValueError`` for bytes that cannot be a dump.
        """
        if len(dumped) % _HASH.itemsize:
            raise ValueError(f"a dump of recent ids is a multiple of {_HASH.itemsize} bytes, not {len(dumped)}")
        self._hashes = OrderedDict.fromkeys(np.frombuffer(dumped, dtype=_HASH).tolist())
        self._evict()

    def _hash(self, event: Event) -> int:
        """The keyed 64-bit hash of ``event`` (the whole event but an assumed time)."""
        return int.from_bytes(content_digest(event, digest_size=8, key=self._key), "little")

    def _evict(self) -> None:
        while len(self._hashes) > self.capacity:
            self._hashes.popitem(last=False)
