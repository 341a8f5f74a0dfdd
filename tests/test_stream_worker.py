"""The worker's pieces that need no broker: app wiring, pipeline isolation, dead letters for poison events."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from msgspec.structs import replace

from app.settings import Settings
from app.stream.codec import encode_events
from app.stream.dedupe import RecentIds
from app.stream.worker import StreamWorker
from detectors.event import Event, Identity
from detectors.pipeline import BatchResult, Pipeline


def event(index: int) -> Event:
    return Event(id=f"e{index}", timestamp=1_700_000_000.0 + index, dataset="t", identity=Identity(user_id="u"))


class PoisonedPipeline:
    """Renders events like the real pipeline but raises whenever the batch holds the poison event."""

    def __init__(self, real: Pipeline, poison: str) -> None:
        self.real = real
        self.poison = poison

    def process(self, events: Sequence[Event]) -> BatchResult:
        if any(e.id == self.poison for e in events):
            raise RuntimeError("renderer exploded")
        return self.real.process(events)


class PoisonedDataset:
    """Renders events like the real pipeline but raises whenever the batch holds an event of dataset "poison"."""

    def __init__(self, real: Pipeline) -> None:
        self.real = real

    def process(self, events: Sequence[Event]) -> BatchResult:
        if any(e.dataset == "poison" for e in events):
            raise RuntimeError("renderer exploded")
        return self.real.process(events)


@pytest.fixture
def worker() -> StreamWorker:
    return StreamWorker(Settings(), internal_partitions=3, op_types={})


def test_worker_registers_its_agents_on_its_topics(worker: StreamWorker) -> None:
    kafka = worker.settings.kafka
    assert set(worker.app.agents) == {"ingest", "detect", "campaigns", "archive_dead_letters"}
    topics = {name: next(iter(agent.channel.topics)) for name, agent in worker.app.agents.items()}
    assert topics == {
        "ingest": kafka.raw_topic,
        "detect": kafka.internal_topic,
        "campaigns": kafka.campaign_topic,
        "archive_dead_letters": kafka.dead_letter_topic,
    }


def test_pipeline_runs_in_batches_and_keeps_every_event(worker: StreamWorker) -> None:
    worker.settings.detection.batch_size = 4
    letters: list[dict[str, object]] = []
    result = asyncio.run(
        worker._run_pipeline(worker.identities.template.fresh(), [event(n) for n in range(10)], letters)
    )
    assert [doc["event"]["id"] for doc in result.events] == [f"e{n}" for n in range(10)]
    assert letters == []


def test_a_poison_event_becomes_a_dead_letter_and_the_rest_of_its_batch_goes_on(worker: StreamWorker) -> None:
    poisoned = PoisonedPipeline(worker.identities.template.fresh(), poison="e3")
    letters: list[dict[str, object]] = []
    result = asyncio.run(worker._run_pipeline(poisoned, [event(n) for n in range(6)], letters))  # type: ignore[arg-type]
    assert [doc["event"]["id"] for doc in result.events] == ["e0", "e1", "e2", "e4", "e5"]
    assert [(letter["reason"], letter["origin"]) for letter in letters] == [("pipeline_error", "event:e3")]
    assert "renderer exploded" in str(letters[0]["detail"])


def test_a_normaliser_crash_becomes_a_dead_letter(worker: StreamWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr("app.stream.worker.normalise_payload", explode)
    events, letters = worker._normalise(b'{"x": 1}', "kafka:raw/0@5")
    assert events == []
    assert [(letter["reason"], letter["origin"], letter["size"]) for letter in letters] == [
        ("normaliser_error", "kafka:raw/0@5", 8)
    ]


def test_a_catch_up_remembers_a_good_event_that_shares_its_id_with_a_poison_one(worker: StreamWorker) -> None:
    good, other = event(1), event(2)
    poison = replace(good, dataset="poison", timestamp=good.timestamp + 0.5)  # another request, the same id "e1"
    [message] = encode_events([good, poison, other], 1_000_000)
    recent = RecentIds(100)
    ran = worker._replay_events(PoisonedDataset(worker.identities.template.fresh()), recent, message)  # type: ignore[arg-type]
    assert ran == 2
    assert good in recent and other in recent  # a redelivery of either is a duplicate ...
    assert poison not in recent  # ... but the poison event goes through again once the cause is fixed
