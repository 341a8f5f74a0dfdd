"""What a tier forgets at its cap on client-chosen state, counted and said without flooding the log."""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

K = TypeVar("K")

WARN_EVERY_S = 60.0  # how often (wall time) a cap that keeps forgetting state is logged


class Tally:
    """``count``: entries a tier forgot (or turned away) at its cap since the detector was built or its state loaded
    (each makes a new one), and how many of them a metric has not been told of yet."""

    def __init__(self) -> None:
        self.count = 0
        self._reported = 0

    def unreported(self) -> int:
        """How many since the last call: what a metric counter adds."""
        new, self._reported = self.count - self._reported, self.count
        return new


class Evictions(Tally):
    """A :class:`Tally` of forgotten entries that :meth:`say` logs, how many since it last spoke, at most once a
    minute of wall time: once per batch, one-event batches would flood the log."""

    def __init__(self, logger: logging.Logger, message: str) -> None:
        super().__init__()
        self.logger = logger
        self.message = message  # %-format with the cap and the number forgotten since last said
        self._said_at, self._said_count = -math.inf, 0

    def say(self, cap: int) -> None:
        now = time.monotonic()
        if self.count > self._said_count and now - self._said_at >= WARN_EVERY_S:
            self.logger.warning(self.message, cap, self.count - self._said_count)
            self._said_at, self._said_count = now, self.count


class LeastRecentlyActive(Generic[K]):
    """The keys of a capped store, the least recently active first (the time each was last active, then
    ``order(key)``), for forgetting them past the cap one at a time: which key goes never depends on batching.

    A heap with lazy deletion: :meth:`touched` pushes a key's new time, and :meth:`pop` skips entries whose time is
    no longer the key's current one (``current(key)``: its time, or None once it is gone); the heap is rebuilt from
    ``live()`` (the store's keys and times) when stale entries outnumber live ones. Pass bound methods of the
    store's owner, not closures: a deep copy of the owner then takes its own store along.
    """

    def __init__(
        self,
        current: Callable[[K], float | None],
        live: Callable[[], Iterable[tuple[K, float]]],
        order: Callable[[K], Any] = lambda key: key,
    ) -> None:
        self._current, self._live, self._order = current, live, order
        self.rebuild()

    def touched(self, key: K, time: float, size: int) -> None:
        """``key`` was active at ``time``; ``size``: how many keys the store holds."""
        heapq.heappush(self._heap, (time, self._order(key), key))
        if len(self._heap) > 2 * size + 64:
            self.rebuild()

    def rebuild(self) -> None:
        self._heap = [(time, self._order(key), key) for key, time in self._live()]
        heapq.heapify(self._heap)

    def pop(self) -> K | None:
        """The least recently active key still in the store (taken off the heap), or None."""
        while self._heap:
            time, _order, key = heapq.heappop(self._heap)
            if self._current(key) == time:
                return key
        return None
