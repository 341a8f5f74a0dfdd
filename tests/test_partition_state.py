"""State per identity partition: fresh pipelines, partitioned replay, and checkpoints that resume exactly."""

from __future__ import annotations

import pytest

from app.engine import build_pipeline
from app.replay import decoded_lines
from app.settings import PACKAGE_ROOT, Settings
from app.stream.checkpoints import Checkpoint, CheckpointCodec, PartitionProgress
from detectors.base import Detector
from detectors.event import Event
from detectors.partitioned import PartitionedPipeline, group_by_partition
from detectors.pipeline import BatchResult, Pipeline

SAMPLES = sorted((PACKAGE_ROOT / "samples").glob("*.jsonl"))
PARTITIONS = 3


@pytest.fixture(scope="module")
def template() -> Pipeline:
    return build_pipeline(Settings())


@pytest.fixture(scope="module")
def sample_events() -> list[Event]:
    events = [
        event
        for found, _letters, _size in decoded_lines(
            [str(p) for p in SAMPLES], max_bytes=1 << 22, max_text_chars=1 << 18
        )
        for event in found
    ]
    assert len(events) > 300, "the bundled samples should hold a few hundred events"
    return events


def batches(events: list[Event], size: int = 50) -> list[list[Event]]:
    return [events[start : start + size] for start in range(0, len(events), size)]


def outputs(results: list[BatchResult]) -> tuple[dict[str, dict], dict[str, dict]]:
    """Event documents and the latest version of each alert, by id."""
    events: dict[str, dict] = {}
    alerts: dict[str, dict] = {}
    for result in results:
        events.update((doc["event"]["id"], doc) for doc in result.events)
        alerts.update((doc["event"]["id"], doc) for doc in result.alerts)
    return events, alerts


def test_fresh_pipelines_share_stateless_tiers_and_keep_their_own_state(template: Pipeline) -> None:
    one, two = template.fresh(), template.fresh()
    for first, second in zip(one.detectors, two.detectors, strict=True):
        stateful = type(first).state is not Detector.state
        assert (first is second) != stateful, first.name
    assert one.grouper is not two.grouper


def test_state_of_one_partition_does_not_leak_into_another(template: Pipeline, sample_events: list[Event]) -> None:
    one, two = template.fresh(), template.fresh()
    empty = two.state()
    for batch in batches(sample_events):
        one.process(batch)
    assert one.state() != empty
    assert two.state() == empty
    assert template.state() == empty


def test_partitioned_replay_with_one_partition_is_the_plain_pipeline(
    template: Pipeline, sample_events: list[Event]
) -> None:
    plain = template.fresh()
    partitioned = PartitionedPipeline(template, 1)
    expected = outputs([plain.process(batch) for batch in batches(sample_events)])
    got = outputs([partitioned.process(batch) for batch in batches(sample_events)])
    assert got == expected
    assert partitioned.owned() == [0]


def test_each_partition_sees_only_its_identities(template: Pipeline, sample_events: list[Event]) -> None:
    partitioned = PartitionedPipeline(template, PARTITIONS)
    for batch in batches(sample_events):
        partitioned.process(batch)
    groups = group_by_partition(sample_events, PARTITIONS)
    assert partitioned.owned() == sorted(groups)
    # replaying one partition's events alone gives that partition's state: nothing else reached it
    for partition, events in groups.items():
        alone = template.fresh()
        for batch in batches(events):
            alone.process(batch)
        assert alone.state() == partitioned.pipeline(partition).state(), partition


@pytest.mark.parametrize("cut", [0.3, 0.6])
def test_a_checkpointed_partition_resumes_exactly_where_it_stopped(
    template: Pipeline, sample_events: list[Event], cut: float
) -> None:
    """Stop after part of the traffic, checkpoint through the codec, restore into a new pipeline, go on: the
    documents and alerts are those of a run that never stopped (anomaly baselines and windows included)."""
    codec = CheckpointCodec(b"test-key")
    parts = batches(sample_events)
    split = int(len(parts) * cut)
    uninterrupted = template.fresh()
    expected = outputs([uninterrupted.process(batch) for batch in parts])

    before = template.fresh()
    results = [before.process(batch) for batch in parts[:split]]
    blob = codec.encode(
        Checkpoint(topic="t", partition=0, offset=split - 1, partitions=1, created=0.0, state=before.state())
    )
    restored = template.fresh()
    restored.load_state(codec.decode(blob).state)
    assert restored.state() == before.state()
    results += [restored.process(batch) for batch in parts[split:]]
    assert outputs(results) == expected


def test_a_new_pipeline_without_the_checkpoint_does_not_resume(template: Pipeline, sample_events: list[Event]) -> None:
    """The control for the test above: losing the state changes what is detected, so that test can fail."""
    parts = batches(sample_events)
    uninterrupted = template.fresh()
    expected = outputs([uninterrupted.process(batch) for batch in parts])
    split = len(parts) // 2
    results = [template.fresh().process(batch) for batch in parts[:split]]
    restarted = template.fresh()
    results += [restarted.process(batch) for batch in parts[split:]]
    assert outputs(results) != expected


def test_checkpoints_are_authenticated(template: Pipeline) -> None:
    codec = CheckpointCodec(b"deployment-key")
    blob = codec.encode(Checkpoint(topic="t", partition=2, offset=41, partitions=4, created=1.0, state={"x": [1, 2]}))
    assert codec.decode(blob) == Checkpoint(
        topic="t", partition=2, offset=41, partitions=4, created=1.0, state={"x": [1, 2]}
    )
    with pytest.raises(ValueError, match="signature"):
        CheckpointCodec(b"another-key").decode(blob)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(ValueError, match="signature"):
        codec.decode(tampered)
    with pytest.raises(ValueError, match="header"):
        codec.decode(b"\x80\x04pickle")


def test_a_partition_is_checkpointed_only_when_clean_and_behind() -> None:
    progress = PartitionProgress()
    assert progress.clean and not progress.due
    progress.processed = 10  # a batch is in flight
    assert not progress.clean and not progress.due
    progress.acked = 10
    assert progress.due
    progress.checkpointed = 10
    assert progress.clean and not progress.due
