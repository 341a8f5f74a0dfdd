"""Recently processed event ids, so a record delivered twice (a shipper's retry, a replayed file) is detected once.

Enriched events and alerts are idempotent in Elasticsearch anyway, but stateful detectors (windows, risk scores)
would count a duplicate twice and raise alerts replay never raises. Each identity partition keeps its own memory,
checkpointed with its detection state (``checkpoints``), so a duplicate is dropped even after its partition moved
to another worker or the worker restarted. Ids are remembered only after their batch is fully written, so a batch
interrupted before that (rebalance, crash) is processed again, never skipped.

Memory is bounded: the oldest ids are forgotten first. An id is kept as a 64-bit keyed hash (BLAKE2b keyed with
the deployment's secret), 8 bytes in a checkpoint instead of a ~36-character string: two different ids share a
hash with odds of about one in 2**64 per pair, and nobody without the secret can craft a pair that does (an
attacker who could would have their second request dropped unseen).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np

from detectors.event import Event

_HASH = np.dtype("<u8")  # one remembered id in a dump: its hash, little-endian whatever the machine


class RecentIds:
    """The last ``capacity`` remembered ids (as keyed hashes), oldest evicted first."""

    def __init__(self, capacity: int, *, secret: bytes = b"") -> None:
        if capacity < 0:
            raise ValueError(f"capacity must not be negative, not {capacity}")
        self.capacity = capacity
        self._secret = secret
        self._key = hashlib.blake2b(secret, person=b"abw-recent-ids", digest_size=32).digest()
        self._hashes: OrderedDict[int, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return isinstance(event_id, str) and self._hash(event_id) in self._hashes

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
            hashed = self._hash(event.id)
            if hashed not in self._hashes and hashed not in seen:
                seen.add(hashed)
                kept.append(event)
        return kept

    def remember(self, event_ids: Iterable[str]) -> None:
        for event_id in event_ids:
            hashed = self._hash(event_id)
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

    def _hash(self, event_id: str) -> int:
        digest = hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8, key=self._key).digest()
        return int.from_bytes(digest, "little")

    def _evict(self) -> None:
        while len(self._hashes) > self.capacity:
            self._hashes.popitem(last=False)
