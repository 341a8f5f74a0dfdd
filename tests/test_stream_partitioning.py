"""Partitioning of events by identity and the internal topic's wire format."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.stream.codec import decode_document, decode_events, encode_document, encode_events
from detectors.event import Event, Identity, Message
from detectors.partitioned import group_by_partition, partition_for


def make_event(index: int, user: str | None = None, text: str = "hello") -> Event:
    return Event(
        id=f"event-{index}",
        timestamp=1_700_000_000.0 + index,
        dataset="test",
        identity=Identity(user_id=user),
        input_messages=[Message(role="user", content=text)],
    )


@given(st.text(), st.integers(min_value=1, max_value=512))
def test_partition_is_in_range_and_repeatable(key: str, partitions: int) -> None:
    partition = partition_for(key, partitions)
    assert 0 <= partition < partitions
    assert partition_for(key, partitions) == partition


def test_partition_is_stable_across_processes() -> None:
    """Python's hash() is salted per process; the partition must not be."""
    code = "from detectors.partitioned import partition_for; print(partition_for('user:alice', 12))"
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        for _ in range(2)
    }
    assert outputs == {str(partition_for("user:alice", 12))}


def test_partitions_spread_keys() -> None:
    used = {partition_for(f"user:{n}", 8) for n in range(200)}
    assert used == set(range(8))


def test_partition_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        partition_for("user:a", 0)


def test_group_by_partition_keeps_identities_together_and_order() -> None:
    events = [make_event(n, user=f"u{n % 5}") for n in range(50)]
    groups = group_by_partition(events, 4)
    assert sorted(e.id for group in groups.values() for e in group) == sorted(e.id for e in events)
    for partition, group in groups.items():
        assert all(partition_for(e.identity.key(), 4) == partition for e in group)
        positions = [events.index(e) for e in group]
        assert positions == sorted(positions)
    owners = {}
    for partition, group in groups.items():
        for event in group:
            assert owners.setdefault(event.identity.key(), partition) == partition


def test_events_round_trip_through_the_internal_format() -> None:
    events = [make_event(n, user="alice") for n in range(10)]
    messages = list(encode_events(events, max_bytes=1 << 20))
    assert len(messages) == 1
    assert decode_events(messages[0]) == events


def test_internal_messages_are_split_by_size_in_order() -> None:
    events = [make_event(n, user="bob", text="x" * 1000) for n in range(20)]
    messages = list(encode_events(events, max_bytes=3000))
    assert len(messages) > 1
    assert all(len(message) <= 3000 + 100 for message in messages)
    assert [e for message in messages for e in decode_events(message)] == events


def test_an_event_larger_than_the_limit_goes_alone() -> None:
    events = [make_event(0, text="y" * 5000), make_event(1)]
    messages = list(encode_events(events, max_bytes=1000))
    assert [len(decode_events(m)) for m in messages] == [1, 1]


def test_corrupt_internal_message_raises_value_error() -> None:
    with pytest.raises(ValueError):
        decode_events(b"\x93not msgpack of events")
    with pytest.raises(msgspec.ValidationError):
        decode_events(msgspec.msgpack.encode([{"id": 1}]))


def test_documents_round_trip_and_non_objects_are_refused() -> None:
    document = {"event": {"id": "a"}, "n": 1}
    assert decode_document(encode_document(document)) == document
    with pytest.raises(ValueError):
        decode_document(b"[1, 2]")
    with pytest.raises(ValueError):
        decode_document(b"{not json")
