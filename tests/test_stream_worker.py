"""The worker's pieces that need no broker: app wiring, pipeline isolation, dead letters for poison events."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from msgspec.structs import replace

import app.stream.worker as worker_module
from app.settings import PACKAGE_ROOT, Settings
from app.stream.codec import decode_events, encode_events
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
        self.detectors = real.detectors

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
    assert [(letter["reason"], str(letter["origin"]).split(" (_id ")[0]) for letter in letters] == [
        ("pipeline_error", "event:e3")
    ]
    assert "renderer exploded" in str(letters[0]["detail"])


def test_a_normaliser_crash_becomes_a_dead_letter(worker: StreamWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr("app.stream.worker.normalise_payload", explode)
    events, letters = worker._normalise(b'{"x": 1}', "kafka:raw/0@5", None)
    assert events == []
    assert [(letter["reason"], letter["origin"], letter["size"]) for letter in letters] == [
        ("normaliser_error", "kafka:raw/0@5", 8)
    ]


def test_a_record_time_is_judged_against_its_kafka_timestamp(worker: StreamWorker) -> None:
    """A backlog read hours after it was logged: a record dated two hours ahead of its Kafka timestamp is a forgery
    or a broken clock, even though it lies in the past of the worker's clock (review 9i, finding 1)."""
    logged = 1_767_225_600.0
    sample = (PACKAGE_ROOT / "samples" / "openai.jsonl").read_text().splitlines()[0]
    honest, forged = (orjson.dumps({**orjson.loads(sample), "timestamp": logged + ahead}) for ahead in (-2, 7200))
    messages, letters, count = worker._ingest_batch(
        [(honest, "kafka:raw/0@1", logged), (forged, "kafka:raw/0@2", logged)]
    )
    events = [event for _, payload in messages for event in decode_events(payload)]
    assert (count, letters) == (2, [])
    assert sorted((event.timestamp, event.timestamp_assumed) for event in events) == [
        (logged - 2, False),
        (logged, True),
    ]


def test_raw_values_led_by_a_byte_order_mark_decode(worker: StreamWorker) -> None:
    """A record written by a Windows tool, and an NDJSON message of such files joined with ``cat`` (``abusewatch
    produce --batch-records``): each line led by a BOM, CRLF line ends; none is dead-lettered."""
    bom = "\ufeff".encode()
    lines = (PACKAGE_ROOT / "samples" / "openai.jsonl").read_bytes().splitlines()[:3]
    joined = bom + lines[1] + b"\r\n" + bom + bom + lines[2] + b"\r\n"
    messages, letters, count = worker._ingest_batch(
        [(bom + lines[0], "kafka:raw/0@1", None), (joined, "kafka:raw/0@2", None)]
    )
    events = [event for _, payload in messages for event in decode_events(payload)]
    assert (count, letters) == (3, [])
    assert sorted(event.id for event in events) == sorted(orjson.loads(line)["request_id"] for line in lines)


def test_a_catch_up_remembers_a_good_event_that_shares_its_id_with_a_poison_one(worker: StreamWorker) -> None:
    good, other = event(1), event(2)
    poison = replace(good, dataset="poison", timestamp=good.timestamp + 0.5)  # another request, the same id "e1"
    [message] = encode_events([good, poison, other], 1_000_000)
    recent = RecentIds(100)
    ran = worker._replay_events(PoisonedDataset(worker.identities.template.fresh()), recent, message)  # type: ignore[arg-type]
    assert ran == 2
    assert good in recent and other in recent  # a redelivery of either is a duplicate ...
    assert poison not in recent  # ... but the poison event goes through again once the cause is fixed


class RecordingOrder:
    """Renders events like the real pipeline and records the order it was given them in."""

    def __init__(self, real: Pipeline) -> None:
        self.real = real
        self.seen: list[str] = []

    def process(self, events: Sequence[Event]) -> BatchResult:
        self.seen += [e.id for e in events]
        return self.real.process(events)


def test_a_catch_up_runs_a_message_in_arrival_order_not_event_time(worker: StreamWorker) -> None:
    """The live path keeps arrival order, as replay does; a restored partition's catch-up must rebuild the same
    state, so it must not re-sort a message's events by event time either."""
    on_time, late = event(2), event(1)  # the late one arrived after a newer event
    [message] = encode_events([on_time, late], 1_000_000)
    recording = RecordingOrder(worker.identities.template.fresh())
    worker._replay_events(recording, RecentIds(100), message)  # type: ignore[arg-type]
    assert recording.seen == ["e2", "e1"]


class RawRecord:
    """What ``take_events`` hands the ingest agent: an event whose ``message`` is the Kafka record."""

    def __init__(self, offset: int, value: bytes) -> None:
        self.message = SimpleNamespace(topic="raw", partition=0, offset=offset, value=value, timestamp=None)


class OneBatchStream:
    def __init__(self, batch: list[RawRecord]) -> None:
        self.batch = batch

    async def take_events(self, size: int, within: float) -> AsyncIterator[list[RawRecord]]:
        yield self.batch


class RecordingTopic:
    """Keeps what the ingest agent sends to the internal topic; delivery is a finished future."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, *, value: bytes, partition: int, force: bool) -> asyncio.Future[None]:
        self.sent.append(value)
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def test_ingest_normalises_a_batch_off_the_event_loop_in_order_with_its_dead_letters(
    worker: StreamWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inflating and parsing a batch takes seconds of CPU: it must not run on the loop that sends heartbeats."""
    threads: set[int] = set()
    real = worker_module.normalise_payload

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.add(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(worker_module, "normalise_payload", recording)
    good = [
        orjson.dumps(
            {"request_id": f"r{n}", "request": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}
        )
        for n in range(5)
    ]
    batch = [RawRecord(0, good[0]), RawRecord(1, b"not json"), *(RawRecord(n + 1, good[n]) for n in range(1, 5))]
    topic = RecordingTopic()
    worker.internal_topic = topic  # type: ignore[assignment]
    dead: list[Any] = []

    async def keep_dead_letters(letters: list[Any], *, stage: str) -> list[Any]:
        dead.extend(letters)
        return []

    monkeypatch.setattr(worker, "_send_dead_letters", keep_dead_letters)

    async def run() -> int:
        await worker.ingest(OneBatchStream(batch))  # type: ignore[arg-type]
        return threading.get_ident()

    loop_thread = asyncio.run(run())
    assert threads and loop_thread not in threads
    sent = [event.id for payload in topic.sent for event in decode_events(payload)]
    assert sorted(sent) == [f"r{n}" for n in range(5)]
    assert [(letter.reason, letter.origin) for letter in dead] == [("invalid_json", "kafka:raw/0@1")]
