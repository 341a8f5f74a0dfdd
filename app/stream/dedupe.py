"""Recently processed event ids, so a record delivered twice (a shipper's retry, a replayed file) is detected once.

Enriched events and alerts are idempotent in Elasticsearch anyway, but stateful detectors (windows, risk scores)
would count a duplicate twice and raise alerts replay never raises. Ids are remembered only after their batch
is fully written, so a batch interrupted before that (rebalance, crash) is processed again, never skipped.
Memory is bounded: the oldest ids are forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from detectors.event import Event


class RecentIds:
    """The last ``capacity`` remembered ids, oldest evicted first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must not be negative, not {capacity}")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def fresh(self, events: Iterable[Event]) -> list[Event]:
        """``events`` without those already remembered and without repeats within ``events`` (first one kept)."""
        seen: set[str] = set()
        kept = []
        for event in events:
            if event.id not in self._ids and event.id not in seen:
                seen.add(event.id)
                kept.append(event)
        return kept

    def remember(self, event_ids: Iterable[str]) -> None:
        for event_id in event_ids:
            self._ids[event_id] = None
            self._ids.move_to_end(event_id)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
