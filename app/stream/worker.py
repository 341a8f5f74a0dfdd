"""The Faust application: topics, the three agents and the shared state they report through ``/health``.

``ingest``  raw topic -> normalise -> internal topic (events regrouped by identity), dead letters -> DL topic.
``detect``  internal topic -> one pipeline per partition -> Elasticsearch (events, alerts, shadow alerts) and output
            topics; campaign candidates -> campaign topic, regrouped by template signature.
``campaigns``  campaign topic -> one campaign stage per partition -> Elasticsearch (alerts).
Each partition's state is checkpointed to a compacted state topic (see ``checkpoints``); an identity partition's
includes the events it processed (hashed), so a record delivered twice is detected once (see ``dedupe``).
``archive_dead_letters``  DL topic -> Elasticsearch dead-letter index.
A timer swaps changed signature rules, correlation rules and alert exceptions into every stage between batches
(see ``reload``).

Each agent awaits everything a batch produced (Kafka delivery, Elasticsearch acknowledgement) before taking the
next batch; Faust acknowledges a batch's offsets only then, so a crash or restart redelivers instead of losing.
Faust also acknowledges a batch whose agent raised (its ``take_events`` acks in a ``finally``) and restarts the
agent: so an unexpected error in a batch stops the whole worker at once, before that can happen, and the batch is
redelivered on restart (:meth:`StreamWorker._unacknowledged_on_failure`). Redelivery is harmless in Elasticsearch
(deterministic ids); output topics are at-least-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import faust
import msgspec
from elasticsearch import AsyncElasticsearch

from app.engine import build_campaign_stage, build_exceptions, build_pipeline
from app.settings import Settings
from app.sinks.dead_letters import RAW_BODY_LIMIT_BYTES, dead_letter_document, failure
from app.sinks.elasticsearch import Document, ElasticsearchSink, WriteReport, client_options
from app.stream import metrics
from app.stream.checkpoints import CheckpointCodec, PartitionLog, PartitionStates
from app.stream.codec import (
    decode_candidates,
    decode_document,
    decode_events,
    encode_candidates,
    encode_document,
    encode_events,
)
from app.stream.dedupe import HashedEvent, RecentIds, partition_share
from app.stream.kafka_config import faust_credentials
from app.stream.reload import ExceptionsWatcher, Reloader, correlation_watcher, signature_watcher
from detectors.campaigns import CampaignCandidate, CampaignStage, campaign_candidates, group_by_signature
from detectors.catalogue import running_rules
from detectors.documents import event_document_id
from detectors.event import Event
from detectors.exceptions import ExceptionList
from detectors.normalise import normalise_payload
from detectors.partitioned import group_by_partition
from detectors.pipeline import BatchResult, Pipeline

log = logging.getLogger(__name__)
T = TypeVar("T")
# exit status of a worker stopped by an unexpected error in a batch (EX_SOFTWARE): the batch was not acknowledged
EXIT_BATCH_FAILED = 70
MAX_DOCUMENT_ID_BYTES = 512  # Elasticsearch refuses a longer _id (the whole bulk request, with a 400)
# room for a Kafka record's own framing (batch header, key, headers) beside its value
_RECORD_OVERHEAD_BYTES = 1024
S = TypeVar("S", Pipeline, CampaignStage)


@dataclass(slots=True)
class WorkerState:
    """What ``/health`` reports; updated by the agents and the Elasticsearch probe."""

    es_reachable: bool = False
    es_error: str | None = "not probed yet"
    # per agent, why Elasticsearch has not acknowledged documents the sink keeps retrying for it (refused writes,
    # throttling); cleared by that agent's next write that goes through, not by another's
    es_write_errors: dict[str, str] = field(default_factory=dict)
    last_batch_at: dict[str, float] = field(default_factory=dict)

    @property
    def es_write_error(self) -> str | None:
        """Every agent's write error, one line each (``agent: why``); None when none waits."""
        return "; ".join(f"{agent}: {error}" for agent, error in sorted(self.es_write_errors.items())) or None


class StreamWorker:
    """Builds the Faust app for ``settings`` and holds what its agents share.

    ``internal_partitions`` is the partition count of the internal topic and ``op_types`` the bulk op type per
    Elasticsearch target; ``abusewatch worker`` reads both from the clusters before starting.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        internal_partitions: int,
        op_types: dict[str, str],
    ) -> None:
        self.settings = settings
        self.internal_partitions = internal_partitions
        self.op_types = op_types
        self.state = WorkerState()
        self.fail_stop: Callable[[int], NoReturn] = os._exit  # ends the process without acknowledging (tests swap it)
        kafka = settings.kafka
        self.partition_log = PartitionLog(kafka)
        recent_per_partition = partition_share(settings.worker.dedupe_capacity, internal_partitions)
        exceptions_path = settings.detection.exceptions_path  # watched from before they load: see ExceptionsWatcher
        exceptions = ExceptionsWatcher(exceptions_path, self._load_exceptions) if exceptions_path else None
        self.identities: PartitionStates[Pipeline] = self._partition_states(
            kafka.internal_topic,
            kafka.state_topic,
            build_pipeline(settings),
            self._replay_events,
            recent_per_partition,
        )
        self.campaigns_state: PartitionStates[CampaignStage] = self._partition_states(
            kafka.campaign_topic,
            kafka.campaign_state_topic,
            build_campaign_stage(settings, sources=internal_partitions, exceptions=self.identities.template.exceptions),
            self._replay_candidates,
            0,  # the campaign stage remembers its candidates' event ids itself
        )
        # One checkpoint timer per stage: an agent checkpoints its own partitions, never mid-batch of the other.
        self._last_checkpoint = dict.fromkeys((self.identities.topic, self.campaigns_state.topic), time.monotonic())
        self._detector_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="abusewatch-detect")
        self._es: AsyncElasticsearch | None = None
        self._sink: ElasticsearchSink | None = None
        self.app = self._build_app()
        kafka = settings.kafka
        self.raw_topic = self._topic(kafka.raw_topic)
        self.internal_topic = self._topic(kafka.internal_topic)
        self.campaign_topic = self._topic(kafka.campaign_topic)
        self.state_topics = {
            kafka.state_topic: self._topic(kafka.state_topic),
            kafka.campaign_state_topic: self._topic(kafka.campaign_state_topic),
        }
        self.events_topic = self._topic(kafka.events_topic)
        self.alerts_topic = self._topic(kafka.alerts_topic)
        self.dead_letter_topic = self._topic(kafka.dead_letter_topic)
        self.app.agent(self.raw_topic, name="ingest")(self.ingest)
        self.app.agent(self.internal_topic, name="detect")(self.detect)
        self.app.agent(self.campaign_topic, name="campaigns")(self.campaigns)
        self.app.agent(self.dead_letter_topic, name="archive_dead_letters")(self.archive_dead_letters)
        self.app.on_partitions_revoked.connect(self._on_partitions_revoked)
        self.app.on_partitions_assigned.connect(self._on_partitions_assigned)
        self.app.on_before_shutdown.connect(self._close)
        self.reloader = Reloader(
            self._stages,
            rules=signature_watcher(self.identities.template),
            correlations=correlation_watcher(self.identities.template),
            exceptions=exceptions,
        )
        if settings.worker.reload_interval_s > 0:
            self.app.timer(settings.worker.reload_interval_s, name="reload")(self.reload)

    # -- set-up -------------------------------------------------------------------------------------------------

    def _build_app(self) -> faust.App:
        kafka, worker = self.settings.kafka, self.settings.worker
        data_dir = worker.data_dir or Path(tempfile.gettempdir()) / f"abusewatch-{kafka.consumer_group}"
        return faust.App(
            kafka.consumer_group,
            broker=[f"kafka://{host.strip()}" for host in kafka.bootstrap.split(",") if host.strip()],
            broker_credentials=faust_credentials(kafka),
            key_serializer="raw",
            value_serializer="raw",
            autodiscover=False,
            store="memory://",
            datadir=str(data_dir),
            web_enabled=True,
            web_port=worker.web_port,
            web_bind=worker.web_host,
            web_host=worker.web_host,
            producer_acks=-1,
            producer_max_request_size=kafka.max_message_bytes,
            consumer_auto_offset_reset="earliest",
            stream_buffer_maxsize=worker.stream_buffer_messages,
            broker_commit_interval=1.0,
            broker_session_timeout=kafka.session_timeout_s,
            broker_heartbeat_interval=min(3.0, kafka.session_timeout_s / 4),
            topic_partitions=kafka.partitions,
            topic_replication_factor=kafka.replication_factor,
            topic_disable_leader=True,
            topic_allow_declare=False,
        )

    def _topic(self, name: str) -> faust.TopicT:
        return self.app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    def _partition_states(
        self,
        topic: str,
        state_topic: str,
        template: S,
        replay: Callable[[S, RecentIds, bytes], int],
        recent_capacity: int,
    ) -> Any:
        """Per-partition state of one stage: its partitions follow the internal topic's, each remembers up to
        ``recent_capacity`` processed event ids; checkpoints and remembered ids are keyed with the deployment's
        redaction key."""
        secret = self.settings.detection.redaction_key.get_secret_value().encode("utf-8")
        return PartitionStates(
            topic=topic,
            state_topic=state_topic,
            partitions=self.internal_partitions,
            template=template,
            codec=CheckpointCodec(secret),
            log=self.partition_log,
            replay=replay,
            recent_template=RecentIds(recent_capacity, secret=secret),
            max_catch_up_messages=self.settings.worker.max_catch_up_messages,
        )

    @property
    def sink(self) -> ElasticsearchSink:
        """The Elasticsearch sink, created inside the running event loop on first use."""
        if self._sink is None:
            self._es = AsyncElasticsearch(**client_options(self.settings.elasticsearch, retries=False))
            es = self.settings.elasticsearch
            self._sink = ElasticsearchSink(
                self._es,
                op_type_for=lambda index: self.op_types.get(index, "index"),
                max_docs=es.bulk_max_docs,
                max_bytes=es.bulk_max_bytes,
                initial_backoff_s=es.retry_initial_backoff_s,
                max_backoff_s=es.retry_max_backoff_s,
            )
        return self._sink

    def _on_bulk_retry(self, agent: str, count: int, reason: str) -> None:
        """A bulk round left ``count`` of ``agent``'s documents to retry: count it, and show why on ``/health``."""
        metrics.ES_BULK_RETRIES.inc()
        self.state.es_write_errors[agent] = f"{count} documents not acknowledged, retrying: {reason}"[:500]

    @contextlib.contextmanager
    def _unacknowledged_on_failure(self, agent: str) -> Iterator[None]:
        """Around one batch of ``agent``: an error nothing handled stops the worker at once (exit status
        :data:`EXIT_BATCH_FAILED`), before Faust could acknowledge the batch (it would, on its way to restarting the
        agent, and the batch would be lost). The restarted worker gets the batch again from the last commit and its
        partitions' state from their checkpoints, as after a crash; a deterministic failure shows as a restart loop
        with this message, not as silent loss. Bad input never gets here: it is dead-lettered where it is found."""
        try:
            yield
        except Exception:
            log.critical(
                "%s: unexpected error in a batch; stopping the worker without acknowledging it (it is redelivered on "
                "restart)",
                agent,
                exc_info=True,
            )
            logging.shutdown()
            self.fail_stop(EXIT_BATCH_FAILED)

    @property
    def es(self) -> AsyncElasticsearch:
        _ = self.sink
        assert self._es is not None
        return self._es

    async def _close(self, app: faust.App, **kwargs: Any) -> None:
        """On shutdown, after the consumer stopped: checkpoint what is clean, release connections and threads."""
        for states in (self.identities, self.campaigns_state):
            await self._checkpoint(states)
        if self._es is not None:
            await self._es.close()
        self._detector_thread.submit(self.partition_log.close)
        self._detector_thread.shutdown(wait=True)

    def _stages(self) -> list[Pipeline | CampaignStage]:
        """Every partition's stage and the templates later ones are made from. Called on the detector thread (which
        creates stages); ``list`` copies each dict at once, as the event loop may drop partitions meanwhile."""
        identities, campaigns = self.identities, self.campaigns_state
        return [
            identities.template,
            *list(identities.stages.values()),
            campaigns.template,
            *list(campaigns.stages.values()),
        ]

    def _load_exceptions(self) -> ExceptionList:
        """The configured alert exceptions, checked against the rules the worker runs (or, mid-reload, is about to)
        rather than against a second load of the rule files."""
        return build_exceptions(self.settings, running_rules(self.identities.template.detectors))

    async def reload(self) -> None:
        """Timer (``worker.reload_interval_s``): load changed rules and exceptions on a thread of the loop's default
        executor, where a rule set compiles while detection goes on, then swap them in on the detector thread."""
        changes = await asyncio.get_running_loop().run_in_executor(None, self.reloader.load)
        await self._in_thread(self.reloader.apply, changes)

    async def _on_partitions_revoked(self, app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        """Faust has finished the in-flight batches: checkpoint the partitions that may move away."""
        for states in (self.identities, self.campaigns_state):
            await self._checkpoint(states, [tp.partition for tp in revoked if tp.topic == states.topic])

    async def _on_partitions_assigned(self, app: faust.App, assigned: set[Any], **kwargs: Any) -> None:
        """Forget partitions that moved away, and any whose state ran ahead of Elasticsearch (restored on use)."""
        for states in (self.identities, self.campaigns_state):
            states.keep_only(tp.partition for tp in assigned if tp.topic == states.topic)

    # -- agents -------------------------------------------------------------------------------------------------

    async def ingest(self, stream: faust.StreamT) -> None:
        """Raw messages -> events on the internal topic (one message per partition per batch) + dead letters."""
        size, within = self.settings.worker.ingest_batch_size, self.settings.detection.batch_timeout_s
        async for batch in stream.take_events(size, within=within):
            with self._unacknowledged_on_failure("ingest"):
                await self._ingest_one(batch)

    async def detect(self, stream: faust.StreamT) -> None:
        """Events of identity partitions -> each partition's pipeline -> Elasticsearch and the output topics."""
        size, within = self.settings.worker.detect_batch_messages, self.settings.detection.batch_timeout_s
        async for batch in stream.take_events(size, within=within):
            with self._unacknowledged_on_failure("detect"):
                await self._detect_one(batch)

    async def campaigns(self, stream: faust.StreamT) -> None:
        """Campaign candidates regrouped by template signature -> campaign stages -> alerts in Elasticsearch."""
        size, within = self.settings.worker.detect_batch_messages, self.settings.detection.batch_timeout_s
        async for batch in stream.take_events(size, within=within):
            with self._unacknowledged_on_failure("campaigns"):
                await self._campaigns_one(batch)

    async def archive_dead_letters(self, stream: faust.StreamT) -> None:
        """Dead letters from their topic into the dead-letter index (rejections there are logged and counted)."""
        size, within = self.settings.elasticsearch.bulk_max_docs, self.settings.detection.batch_timeout_s
        async for batch in stream.take_events(size, within=within):
            with self._unacknowledged_on_failure("archive_dead_letters"):
                await self._archive_one(batch)

    # -- one batch of each agent --------------------------------------------------------------------------------

    async def _ingest_one(self, batch: Sequence[Any]) -> None:
        """A batch is normalised and encoded off the event loop, in one hop to the loop's default executor:
        inflating and parsing a batch of compressed exports takes seconds of CPU, during which heartbeats and
        ``/health`` must go on (``bench/bench_ingest_loop.py`` measures the loop's longest stall)."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        payloads = [
            (record.message.value or b"", _origin(record.message), record.message.timestamp) for record in batch
        ]
        messages, letters, events = await loop.run_in_executor(None, self._ingest_batch, payloads)
        deliveries: list[Awaitable[Any]] = []
        for partition, payload in messages:
            deliveries.append(await self.internal_topic.send(value=payload, partition=partition, force=True))
        deliveries.extend(await self._send_dead_letters(letters, stage="ingest"))
        await asyncio.gather(*deliveries)
        metrics.RAW_MESSAGES.inc(len(batch))
        metrics.EVENTS_IN.inc(events)
        self._finished("ingest", started)

    async def _detect_one(self, batch: Sequence[Any]) -> None:
        settings = self.settings
        started = time.perf_counter()
        letters: list[Any] = []
        by_partition, last = await self._new_records(self.identities, batch, decode_events, letters)
        result = BatchResult()
        processed: dict[int, list[HashedEvent]] = {}
        failed: list[Event] = []
        candidates: list[CampaignCandidate] = []
        for partition, offset in sorted(last.items()):
            self.identities.progress[partition].processed = offset  # in flight until acknowledged
            # Arrival order, as replay reads a file: what a partition detects must not depend on how its events
            # were cut into batches (detectors place late events by their own time).
            events = by_partition.get(partition, [])
            kept = processed[partition] = self.identities.recent[partition].fresh(events)
            fresh = [event for event, _digest in kept]
            metrics.DUPLICATE_EVENTS.inc(len(events) - len(fresh))
            failed_before = len(failed)
            stage = self.identities.stages[partition]
            found = await self._run_pipeline(stage, fresh, letters, failed)
            result.extend(found)
            _count_evictions(stage)
            left_out = {id(event) for event in failed[failed_before:]}  # no document: dead-lettered
            rendered = [event for event in fresh if id(event) not in left_out]
            candidates += campaign_candidates(rendered, found.events, source=partition)
        es = settings.elasticsearch
        documents = self._alert_documents(result)  # alerts first
        documents += [Document(es.events_index, doc["event"]["hash"], doc) for doc in result.events]
        outputs = [(self.events_topic, result.events), (self.alerts_topic, result.alerts)]
        deliveries, report = await self._store(documents, letters, "detect", outputs)
        for partition, group in group_by_signature(candidates, self.internal_partitions).items():
            for payload in self._candidate_messages(group):
                deliveries.append(await self.campaign_topic.send(value=payload, partition=partition, force=True))
        await asyncio.gather(*deliveries)
        # Everything is written: the partitions are clean and their events remembered, on the detector thread,
        # where a checkpoint reads both (it never sees one without the other). Events dead-lettered or whose
        # document Elasticsearch rejected are not: ingested again once the cause is fixed, they must go through.
        # A rejected document is matched to its event by its _id, which redaction never touches (a body's
        # event.id may be masked); a failed event is that very object (another request may share its id).
        rejected = {r.document.id for r in report.rejections if r.document.index == es.events_index}
        written = {
            p: [item for item in _without(ran, failed) if not self._rejected(item, rejected)]
            for p, ran in processed.items()
        }
        await self._in_thread(self.identities.acknowledge, last, written)
        metrics.EVENTS_DETECTED.inc(sum(map(len, processed.values())))
        _count_alerts(result)
        self._finished("detect", started)
        await self._maybe_checkpoint(self.identities)

    async def _campaigns_one(self, batch: Sequence[Any]) -> None:
        started = time.perf_counter()
        letters: list[Any] = []
        by_partition, last = await self._new_records(self.campaigns_state, batch, decode_candidates, letters)
        result = BatchResult()
        for partition, offset in sorted(last.items()):
            self.campaigns_state.progress[partition].processed = offset
            stage = self.campaigns_state.stages[partition]
            isolated = await self._in_thread(_process_isolating, stage, by_partition.get(partition, []))
            result.extend(isolated.result)
            for candidate, reason in isolated.failures:
                origin = (
                    f"candidate:{candidate.event_id} (campaign partition {partition}, signature {candidate.signature})"
                )
                letters.append(failure("pipeline_error", reason, origin))
            _count_template_caps(stage)
        documents = self._alert_documents(result)
        outputs = [(self.alerts_topic, result.alerts)]
        deliveries, _report = await self._store(documents, letters, "campaigns", outputs)
        await asyncio.gather(*deliveries)
        self.campaigns_state.acknowledge(last)
        _count_alerts(result)
        self._finished("campaigns", started)
        await self._maybe_checkpoint(self.campaigns_state)

    async def _archive_one(self, batch: Sequence[Any]) -> None:
        settings = self.settings
        started = time.perf_counter()
        documents = []
        for record in batch:
            message = record.message
            try:
                document = decode_document(message.value or b"")
                doc_id = document["event"]["id"]
                if not isinstance(doc_id, str) or not 0 < len(doc_id.encode()) <= MAX_DOCUMENT_ID_BYTES:
                    raise ValueError(f"event.id is not an id Elasticsearch takes: {str(doc_id)[:64]!r}")
            except (ValueError, KeyError, TypeError) as error:
                origin = f"kafka:{message.topic}/{message.partition}@{message.offset}"
                document = dead_letter_document(
                    failure("corrupt_dead_letter", str(error), origin, size=len(message.value or b"")),
                    stage="archive",
                )
                doc_id = document["event"]["id"]
            documents.append(Document(settings.elasticsearch.dead_letter_index, doc_id, document))
        report = await self._write(documents, "archive_dead_letters")
        for rejection in report.rejections:
            log.error("dead letter %s rejected by Elasticsearch: %s", rejection.document.id, rejection.error)
        self._finished("archive_dead_letters", started)

    # -- helpers ------------------------------------------------------------------------------------------------

    def _ingest_batch(
        self, payloads: Sequence[tuple[bytes, str, float | None]]
    ) -> tuple[list[tuple[int, bytes]], list[Any], int]:
        """The internal-topic messages ``(partition, payload)`` of the events in ``(payload, origin, Kafka
        timestamp)`` triples, kept in their order within each partition, the dead letters, and how many events there
        were."""
        events: list[Event] = []
        letters: list[Any] = []
        for payload, origin, received_at in payloads:
            found, bad = self._normalise(payload, origin, received_at)
            events.extend(found)
            letters.extend(bad)
        messages = []
        for partition, group in group_by_partition(events, self.internal_partitions).items():
            for message in encode_events(group, min(self.settings.kafka.internal_message_bytes, self._message_limit)):
                if len(message) <= self._message_limit:
                    messages.append((partition, message))
                    continue
                for event in decode_events(message):  # an event alone, too large for Kafka (limits lowered)
                    detail = (
                        f"the normalised event is over kafka.max_message_bytes ({self._message_limit} bytes after "
                        "framing): raise it, or lower detection.max_record_bytes / max_text_chars"
                    )
                    letters.append(failure("oversized", detail, f"event:{event.id}", size=len(message)))
        return messages, letters, len(events)

    def _candidate_messages(self, group: list[CampaignCandidate]) -> list[bytes]:
        """Campaign-topic messages of ``group`` (one signature partition's candidates from one batch), each within a
        Kafka message: a batch of a campaign's events gives one large group."""
        payload = encode_candidates(group)
        if len(payload) <= self._message_limit or len(group) == 1:
            return [payload]
        middle = len(group) // 2
        return self._candidate_messages(group[:middle]) + self._candidate_messages(group[middle:])

    def _alert_documents(self, result: BatchResult) -> list[Document]:
        """A batch's alerts and shadow alerts as documents, alerts first (they lead the first bulk request, which is
        what an analyst waits for); each is stored under its alert id."""
        es = self.settings.elasticsearch
        return [
            *(Document(es.alerts_index, doc["event"]["id"], doc) for doc in result.alerts),
            *(Document(es.shadow_alerts_index, doc["event"]["id"], doc) for doc in result.shadow_alerts),
        ]

    @property
    def _raw_limit(self) -> int:
        """The most of a body a dead letter keeps: it must fit in a Kafka message, with room for the rest of it."""
        return min(RAW_BODY_LIMIT_BYTES, self.settings.kafka.max_message_bytes // 4)

    @property
    def _message_limit(self) -> int:
        """The largest value a Kafka message of this worker may carry: ``kafka.max_message_bytes`` less framing."""
        return self.settings.kafka.max_message_bytes - _RECORD_OVERHEAD_BYTES

    def _normalise(self, payload: bytes, origin: str, received_at: float | None) -> tuple[list[Event], list[Any]]:
        """Events and dead letters of one raw record; its time is judged against ``received_at``, the Kafka
        record's timestamp (when the shipper produced it), not the worker's clock, so a backlog is read as logged."""
        detection = self.settings.detection
        try:
            return normalise_payload(
                payload,
                origin,
                max_bytes=detection.max_record_bytes,
                max_text_chars=detection.max_text_chars,
                keep_raw=detection.keep_raw_dead_letters,
                received_at=received_at,
                max_future_s=detection.max_future_seconds,
            )
        except Exception as error:  # a normaliser bug must not stop the stream: the record becomes a dead letter
            log.exception("normaliser failed on %s", origin)
            raw = payload[: detection.max_record_bytes] if detection.keep_raw_dead_letters else None
            detail = f"{type(error).__name__}: {error}"
            return [], [failure("normaliser_error", detail, origin, size=len(payload), raw=raw)]

    async def _run_pipeline(
        self, pipeline: Pipeline, events: Sequence[Event], letters: list[Any], failed: list[Event] | None = None
    ) -> BatchResult:
        """``pipeline`` over ``events`` in batches of ``detection.batch_size``, off the event loop.

        One dedicated thread: detectors never run concurrently, and heartbeats and ``/health`` stay responsive.
        An event that fails alone (see :func:`_process_isolating`) becomes a dead letter and goes to ``failed``.
        """
        merged = BatchResult()
        size = self.settings.detection.batch_size
        for start in range(0, len(events), size):
            isolated = await self._in_thread(_process_isolating, pipeline, events[start : start + size])
            merged.extend(isolated.result)
            for event, reason in isolated.failures:
                letters.append(self._pipeline_error(event, reason))
                if failed is not None:
                    failed.append(event)
        return merged

    def _pipeline_error(self, event: Event, reason: str) -> dict[str, Any]:
        """The dead letter of an event the pipeline failed on alone: named by its document id too (another request
        may reuse its client-chosen id and fail the same way), with the event itself where raw records are kept."""
        body = msgspec.json.encode(event)
        return failure(
            "pipeline_error",
            reason,
            f"event:{event.id} (_id {event_document_id(event, self.identities.template.redactor)})",
            size=len(body),
            raw=body if self.settings.detection.keep_raw_dead_letters else None,
            raw_limit=self._raw_limit,
        )

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` on the detector thread, which owns every pipeline and the partition log."""
        return await asyncio.get_running_loop().run_in_executor(self._detector_thread, function, *args)

    # -- partition state ----------------------------------------------------------------------------------------

    async def _new_records(
        self, states: PartitionStates[Any], batch: Sequence[Any], decode: Callable[[bytes], list[T]], letters: list[Any]
    ) -> tuple[dict[int, list[T]], dict[int, int]]:
        """The batch's records by partition, and each partition's last offset, without what a partition's state
        already holds; partitions new to this worker are restored first."""
        messages = [record.message for record in batch]
        for partition, first in _first_offsets(messages).items():
            if partition not in states.progress:
                await self._in_thread(states.restore, partition, first)
        by_partition: dict[int, list[T]] = {}
        last: dict[int, int] = {}
        for message in messages:
            if message.offset <= states.progress[message.partition].acked:
                metrics.STATE_SKIPPED_MESSAGES.inc()  # written before, and its effect is in the restored state
                continue
            last[message.partition] = max(last.get(message.partition, -1), message.offset)
            try:
                by_partition.setdefault(message.partition, []).extend(decode(message.value or b""))
            except ValueError as error:
                origin = f"kafka:{message.topic}/{message.partition}@{message.offset}"
                letters.append(failure("corrupt_internal_message", str(error), origin, size=len(message.value or b"")))
        return by_partition, last

    def _replay_events(self, pipeline: Pipeline, recent: RecentIds, value: bytes) -> int:
        """One internal message through ``pipeline`` for state only (a catch-up), without the events the previous
        owner dropped as duplicates, and leaving out those that fail alone as the live path does; remembers and
        returns how many it ran."""
        try:
            kept = recent.fresh(decode_events(value))
        except ValueError:  # dead-lettered when it was first processed
            return 0
        events = [event for event, _digest in kept]
        size = self.settings.detection.batch_size
        failed = [
            event
            for start in range(0, len(events), size)
            for event, _reason in _process_isolating(pipeline, events[start : start + size]).failures
        ]
        ran = _without(kept, failed)  # as the live path leaves them out
        recent.remember(ran)
        return len(ran)

    @staticmethod
    def _replay_candidates(stage: CampaignStage, recent: RecentIds, value: bytes) -> int:
        try:
            candidates = decode_candidates(value)
        except ValueError:
            return 0
        isolated = _process_isolating(stage, candidates)  # leaving out what fails alone, as the live path does
        return len(candidates) - len(isolated.failures)

    async def _maybe_checkpoint(self, states: PartitionStates[Any]) -> None:
        """Checkpoint ``states`` if its interval has passed; called by its own agent after a batch, when every one
        of its partitions is clean, so none is skipped as in flight."""
        if time.monotonic() - self._last_checkpoint[states.topic] >= self.settings.worker.checkpoint_interval_s:
            self._last_checkpoint[states.topic] = time.monotonic()
            await self._checkpoint(states)

    async def _checkpoint(self, states: PartitionStates[Any], partitions: Sequence[int] | None = None) -> None:
        """Checkpoint the partitions of ``states`` (all, or those in ``partitions``) that are clean and have news.
        Failures are only logged: a missing checkpoint costs a longer catch-up, never data."""
        topic = self.state_topics[states.state_topic]
        for partition, offset in states.due(partitions):
            try:
                blob = await self._in_thread(states.snapshot, partition, offset)
                if blob is None:  # it moved on since: the next round takes it
                    continue
                if len(blob) > self.settings.kafka.max_message_bytes:
                    raise ValueError(f"{len(blob)} bytes exceed kafka.max_message_bytes")
                delivery = await topic.send(key=str(partition).encode(), value=blob, partition=partition)
                await delivery
            except Exception:
                log.exception("%s[%d]: checkpoint at offset %d not written", states.topic, partition, offset)
                metrics.CHECKPOINTS.labels("failed").inc()
                continue
            states.progress[partition].checkpointed = max(states.progress[partition].checkpointed, offset)
            metrics.CHECKPOINTS.labels("written").inc()
            metrics.CHECKPOINT_BYTES.observe(len(blob))

    async def _store(
        self,
        documents: list[Document],
        letters: list[Any],
        stage: str,
        outputs: Sequence[tuple[faust.TopicT, Sequence[dict[str, Any]]]],
    ) -> tuple[list[Awaitable[Any]], WriteReport]:
        """Write ``documents`` to Elasticsearch (until acknowledged), then send the dead letters (with the
        rejections) and the ``outputs`` to their topics; returns the deliveries to await before acknowledging, and
        what Elasticsearch made of the documents."""
        report = await self._write(documents, stage)
        letters.extend(self._rejection_letters(report, self._raw_limit))
        deliveries = await self._send_dead_letters(letters, stage=stage)
        for topic, output in outputs:
            for doc in output:
                deliveries.append(await self._send_document(topic, doc))
        return deliveries, report

    async def _write(self, documents: list[Document], agent: str) -> WriteReport:
        """``documents`` into Elasticsearch, until each is stored or rejected for good; while the sink retries,
        ``/health`` says why under ``agent``, until that agent's own write goes through."""
        report = await self.sink.write(documents, on_retry=lambda count, why: self._on_bulk_retry(agent, count, why))
        self.state.es_write_errors.pop(agent, None)
        metrics.ES_DOCUMENTS.labels("stored").inc(report.stored)
        metrics.ES_DOCUMENTS.labels("duplicate").inc(report.duplicates)
        metrics.ES_DOCUMENTS.labels("kept_larger").inc(report.kept_larger)
        for rejection in report.rejections:
            metrics.ES_REJECTIONS.labels(rejection.document.index).inc()
        return report

    @staticmethod
    def _rejection_letters(report: WriteReport, raw_limit: int = RAW_BODY_LIMIT_BYTES) -> list[dict[str, Any]]:
        """A dead letter per document Elasticsearch rejected, with its body (redacted already, as every document
        written is) in ``raw``, so it can be re-indexed once the cause is fixed; a body past ``raw_limit`` bytes
        is cut, with a marker saying so."""
        letters = []
        for rejection in report.rejections:
            body = encode_document(rejection.document.body)
            letters.append(
                failure(
                    "elasticsearch_rejected",
                    f"HTTP {rejection.status}: {rejection.error} (document _id {rejection.document.id})",
                    f"elasticsearch:{rejection.document.index}/{rejection.document.body['event']['id']}",
                    size=len(body),
                    raw=body,
                    raw_limit=raw_limit,
                )
            )
        return letters

    def _rejected(self, item: HashedEvent, rejected_ids: set[str]) -> bool:
        """Whether Elasticsearch rejected ``item``'s enriched-event document (its ``_id`` is among ``rejected_ids``)."""
        return bool(rejected_ids) and event_document_id(item.event, self.identities.template.redactor) in rejected_ids

    async def _send_dead_letters(self, letters: list[Any], *, stage: str) -> list[Awaitable[Any]]:
        deliveries = []
        for letter in letters:
            document = dead_letter_document(letter, stage=stage)
            metrics.DEAD_LETTERS.labels(stage, str(document.get("reason"))).inc()
            deliveries.append(await self._send_document(self.dead_letter_topic, document))
        return deliveries

    async def _send_document(self, topic: faust.TopicT, document: dict[str, Any]) -> Awaitable[Any]:
        """``document`` to ``topic``, keyed by its event id. A copy too large for a Kafka message (the enriched event
        of a huge prompt: masks are longer than what they hide, and the prompt is stored twice) is not sent; a dead
        letter ``output_too_large`` names it instead (the document itself is in Elasticsearch), and the batch goes
        on: a send refused for size would stop the worker on every redelivery."""
        value = encode_document(document)
        if len(value) > self._message_limit and topic is not self.dead_letter_topic:
            name, doc_id = topic.get_topic_name(), document["event"].get("hash") or document["event"]["id"]
            detail = (
                f"{len(value)} bytes, over kafka.max_message_bytes ({self.settings.kafka.max_message_bytes}) less "
                f"framing: not copied to {name}; the document (_id {doc_id}) is in Elasticsearch"
            )
            metrics.DEAD_LETTERS.labels("output", "output_too_large").inc()
            document = dead_letter_document(
                failure("output_too_large", detail, f"kafka:{name}/{doc_id}", size=len(value)), stage="output"
            )
            topic, value = self.dead_letter_topic, encode_document(document)
        return await topic.send(key=str(document["event"]["id"]).encode(), value=value, force=True)

    def _finished(self, agent: str, started: float) -> None:
        metrics.BATCH_SECONDS.labels(agent).observe(time.perf_counter() - started)
        self.state.last_batch_at[agent] = time.time()


def _count_alerts(result: BatchResult) -> None:
    """Add a batch's alerts, shadow alerts and suppressed detections to their metrics."""
    metrics.ALERTS_OUT.labels("alert").inc(len(result.alerts))
    metrics.ALERTS_OUT.labels("shadow").inc(len(result.shadow_alerts))
    for (exception_id, rule_id), count in result.suppressed_counts().items():
        metrics.SUPPRESSED.labels(exception_id, rule_id).inc(count)


def _count_evictions(pipeline: Pipeline) -> None:
    """Add what the pipeline's capped tiers forgot since the last batch to the eviction metric."""
    for detector in pipeline.detectors:
        if detector.evictions is not None:
            metrics.STATE_EVICTIONS.labels(detector.name).inc(detector.evictions.unreported())


def _count_template_caps(stage: CampaignStage) -> None:
    """Add the signatures the campaign windows forgot, and the candidates they refused, at
    ``campaign_max_templates`` since the last batch to the eviction and refusal metrics."""
    metrics.STATE_EVICTIONS.labels("campaigns").inc(stage.detector.templates_evicted.unreported())
    metrics.STATE_REFUSALS.labels("campaigns").inc(stage.detector.templates_overflowed.unreported())


def _origin(message: Any) -> str:
    """Where a raw Kafka message came from, as dead letters name it."""
    return f"kafka:{message.topic}/{message.partition}@{message.offset}"


@dataclass(slots=True)
class _Isolated:
    """What :func:`_process_isolating` made of a batch: the stage's result, and the items (events, or campaign
    candidates) that failed alone with their error's type and message (left out of it)."""

    result: BatchResult
    failures: list[tuple[Any, str]]  # the error as text: an exception kept would hold its frames, and the batch


def _process_isolating(stage: Pipeline | CampaignStage, items: Sequence[Any]) -> _Isolated:
    """``stage.process(items)`` (a pipeline's events, a campaign stage's candidates); should it raise (the pipeline
    isolates failing detectors itself), the batch is retried item by item and one that fails alone is left out, so
    one poison item cannot stall its partition, live or in a catch-up, nor stop the worker. Blocking: call it on
    the detector thread."""
    try:
        return _Isolated(stage.process(items), [])
    except Exception:
        log.exception("%s failed on a batch of %d; isolating", type(stage).__name__, len(items))
    isolated = _Isolated(BatchResult(), [])
    for item in items:
        try:
            isolated.result.extend(stage.process([item]))
        except Exception as error:
            log.exception("%s failed on %s; it is left out", type(stage).__name__, _item_id(item))
            isolated.failures.append((item, f"{type(error).__name__}: {error}"))
    return isolated


def _item_id(item: Any) -> str:
    """The event id of an event or a campaign candidate, for the log."""
    return str(getattr(item, "event_id", None) or getattr(item, "id", "?"))


def _without(items: Sequence[HashedEvent], failed: Sequence[Event]) -> list[HashedEvent]:
    """``items`` but the events of ``failed``, matched as objects: not by id, which another request may share (a
    client-chosen request id), and whose good event must still be remembered."""
    left_out = {id(event) for event in failed}
    return [item for item in items if id(item.event) not in left_out]


def _first_offsets(messages: Sequence[Any]) -> dict[int, int]:
    """The lowest offset of each partition among ``messages``."""
    first: dict[int, int] = {}
    for message in messages:
        first[message.partition] = min(first.get(message.partition, message.offset), message.offset)
    return first
