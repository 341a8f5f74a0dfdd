"""Which internal partition an event goes to: all events of one identity meet at one ``detect`` worker."""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from detectors.event import Event


def partition_for(key: str, partitions: int) -> int:
    """A stable partition for ``key``: the same on every process and run (CRC-32, not Python's salted hash)."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, not {partitions}")
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % partitions


def group_by_partition(events: Iterable[Event], partitions: int) -> dict[int, list[Event]]:
    """Events grouped by the partition of their identity key, in their original order within each group."""
    groups: dict[int, list[Event]] = {}
    for event in events:
        groups.setdefault(partition_for(event.identity.key(), partitions), []).append(event)
    return groups
