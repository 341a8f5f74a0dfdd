"""Recently processed events, so a record delivered twice (a shipper's retry, a replayed file) is detected once.

Enriched events and alerts are idempotent in Elasticsearch anyway, but stateful detectors (windows, risk scores)
would count a duplicate twice and raise alerts replay never raises. Each identity partition keeps its own memory,
checkpointed with its detection state (``checkpoints``), so a duplicate is dropped even after its partition moved
to another worker or the worker restarted. Events are remembered only after their batch is fully written, so a
batch interrupted before that (rebalance, crash) is processed again, never skipped; an event that was not written
(dead-lettered as a pipeline error, or its enriched-event document rejected by Elasticsearch) is not remembered, so
the same record ingested again once the cause is fixed is processed.

What is remembered of an event is its id *and* what a true redelivery shares with it: its texts
(``Event.texts()``), identity key, dataset, operation and models. The id alone is not enough: it is often the
record's own request id, which a client can sometimes choose, and a benign request followed by an attack under the
same id would otherwise have the attack dropped unseen. The timestamp is left out, as a normaliser falls back to the
time of ingestion when a record has none. So a reused id with different content goes through detection and its
alerts are written; its enriched-event document still collides with the first one's in Elasticsearch (``create``:
the first write wins).

Memory is bounded: the oldest events are forgotten first. An event is kept as a 64-bit keyed hash (BLAKE2b keyed
with the deployment's secret), 8 bytes in a checkpoint: two different events share a hash with odds of about one in
2**64 per pair, and nobody without the secret can craft a pair that does (an attacker who could would have their
second request dropped unseen).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator

import numpy as np

from detectors.event import Event

_HASH = np.dtype("<u8")  # one remembered event in a dump: its hash, little-endian whatever the machine
_ABSENT = b"\xff" * 8  # an unknown part (None), which no length prefix can be mistaken for


class RecentIds:
    """The last ``capacity`` remembered events (as keyed hashes of their id and content), oldest evicted first."""

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

    def fresh(self, events: Iterable[Event]) -> list[Event]:
        """``events`` without those already remembered and without repeats within ``events`` (first one kept)."""
        seen: set[int] = set()
        kept = []
        for event in events:
            hashed = self._hash(event)
            if hashed not in self._hashes and hashed not in seen:
                seen.add(hashed)
                kept.append(event)
        return kept

    def remember(self, events: Iterable[Event]) -> None:
        for event in events:
            hashed = self._hash(event)
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
        """The keyed hash of ``event``'s id and content, each part length-prefixed so parts cannot run together."""
        digest = hashlib.blake2b(digest_size=8, key=self._key)
        for part in _identifying_parts(event):
            if part is None:
                digest.update(_ABSENT)
                continue
            encoded = part.encode("utf-8", "surrogatepass")
            digest.update(len(encoded).to_bytes(8, "little"))
            digest.update(encoded)
        return int.from_bytes(digest.digest(), "little")

    def _evict(self) -> None:
        while len(self._hashes) > self.capacity:
            self._hashes.popitem(last=False)


def _identifying_parts(event: Event) -> Iterator[str | None]:
    """What a redelivered record shares with the first delivery: its id and content, not its timestamp."""
    yield event.id
    yield event.dataset
    yield event.identity.key()
    yield event.operation
    yield event.request_model
    yield event.response_model
    for field, text in event.texts():
        yield field
        yield text
