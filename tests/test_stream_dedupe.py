"""Dropping events delivered twice, with bounded memory."""

from __future__ import annotations

import pytest

from app.stream.dedupe import RecentIds
from detectors.event import Event


def events(*ids: str) -> list[Event]:
    return [Event(id=i, timestamp=1.0, dataset="t") for i in ids]


def test_fresh_drops_remembered_ids_and_repeats_within_the_batch() -> None:
    recent = RecentIds(capacity=10)
    recent.remember(["a", "b"])
    assert [e.id for e in recent.fresh(events("a", "c", "c", "d", "b"))] == ["c", "d"]


def test_nothing_is_dropped_until_remembered() -> None:
    """An interrupted batch (not yet remembered) must be processed again when redelivered."""
    recent = RecentIds(capacity=10)
    batch = events("a", "b")
    assert recent.fresh(batch) == batch
    assert recent.fresh(batch) == batch
    recent.remember(e.id for e in batch)
    assert recent.fresh(batch) == []


def test_oldest_ids_are_forgotten_beyond_capacity() -> None:
    recent = RecentIds(capacity=3)
    recent.remember(["a", "b", "c"])
    recent.remember(["a"])  # refreshed: now the newest
    recent.remember(["d"])
    assert len(recent) == 3
    assert "b" not in recent
    assert all(i in recent for i in ("a", "c", "d"))


def test_zero_capacity_remembers_nothing_and_negative_is_refused() -> None:
    recent = RecentIds(capacity=0)
    recent.remember(["a"])
    assert "a" not in recent
    with pytest.raises(ValueError):
        RecentIds(capacity=-1)
