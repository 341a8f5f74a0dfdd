"""Identity partitions: which partition an identity's events go to, and one pipeline per partition.

Stateful detection (windows, baselines, session memory, alert groups) is kept per partition, never per process:
the stream gives each partition of its internal topic its own :class:`Pipeline`, and a partition moves between
workers with its state. What a partition detects then depends only on its own events, not on which worker
held it or what else that worker held, so the stream and an embedded replay with the same partition count
produce the same alerts.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

from detectors.campaigns import CampaignStage, campaign_candidates, group_by_signature
from detectors.event import Event
from detectors.pipeline import BatchResult, Pipeline


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


class PartitionedPipeline:
    """One pipeline per identity partition, created on first use from ``template`` (see :meth:`Pipeline.fresh`),
    and, with ``campaigns``, one campaign stage per signature partition: the stream's two stages, in-process.

    ``process`` splits a batch by identity partition, then hands the events' campaign candidates to the
    campaign stages by template signature. ``template`` itself is never run, so its state stays empty.
    """

    def __init__(self, template: Pipeline, partitions: int, campaigns: CampaignStage | None = None) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, not {partitions}")
        self.template = template
        self.partitions = partitions
        self.campaigns = campaigns
        self._pipelines: dict[int, Pipeline] = {}
        self._campaign_stages: dict[int, CampaignStage] = {}

    def pipeline(self, partition: int) -> Pipeline:
        pipeline = self._pipelines.get(partition)
        if pipeline is None:
            pipeline = self._pipelines[partition] = self.template.fresh()
        return pipeline

    def owned(self) -> list[int]:
        """Partitions that have a pipeline (with whatever state it holds)."""
        return sorted(self._pipelines)

    def drop(self, partition: int) -> None:
        """Forget a partition's pipeline and state (it moved to another worker, or its state is stale)."""
        self._pipelines.pop(partition, None)

    def replace(self, partition: int, pipeline: Pipeline) -> None:
        """Install ``pipeline`` (e.g. restored from a checkpoint) for ``partition``."""
        self._pipelines[partition] = pipeline

    def process(self, events: Sequence[Event]) -> BatchResult:
        result = BatchResult()
        candidates = []
        for partition, group in sorted(group_by_partition(events, self.partitions).items()):
            found = self.pipeline(partition).process(group)
            result.extend(found)
            if self.campaigns is not None:
                candidates += campaign_candidates(group, found.events, source=partition)
        for partition, group in sorted(group_by_signature(candidates, self.partitions).items()):
            result.extend(self._campaign_stage(partition).process(group))
        return result

    def flush(self, until: float | None = None) -> BatchResult:
        result = BatchResult()
        for partition in self.owned():
            result.extend(self._pipelines[partition].flush(until))
        for partition in sorted(self._campaign_stages):
            result.extend(self._campaign_stages[partition].flush(until))
        return result

    def _campaign_stage(self, partition: int) -> CampaignStage:
        assert self.campaigns is not None
        stage = self._campaign_stages.get(partition)
        if stage is None:
            stage = self._campaign_stages[partition] = self.campaigns.fresh()
        return stage
