"""Embedded replay: the full pipeline over JSONL files, in-process, without Kafka or Elasticsearch.

This is the main job's default and the reference the stream is tested against: for the same input, the Faust
workers must write exactly the alerts and enriched events that replay writes. So replay drops a record delivered
twice as the stream does (``app.stream.dedupe``): the same memory of recent events, one per identity partition.
"""

from __future__ import annotations

import gzip
import io
import math
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec
import orjson

from app.neighbour_times import Line, NeighbourTimes
from app.settings import WorkerSettings
from app.stream.dedupe import RecentIds, partition_share
from detectors.documents import supersedes
from detectors.event import Event
from detectors.normalise import DEFAULT_MAX_FUTURE_SECONDS, DeadLetter, normalise_payload
from detectors.normalise.decode import GZIP_MAGIC, content
from detectors.partitioned import PartitionedPipeline, group_by_partition
from detectors.pipeline import BatchResult, Pipeline

STDIN = "-"
_READ_CHUNK = 1 << 20
DEFAULT_DEDUPE_CAPACITY: int = WorkerSettings.model_fields["dedupe_capacity"].default


@dataclass(slots=True)
class ReplaySummary:
    """Counts for the summary table; ``seconds`` is wall time of the whole run. ``events`` went through detection;
    ``duplicates`` were dropped as redeliveries of events already processed; ``times_not_believed`` events gave a
    time too far ahead of the records around them or of the wall clock, and ``times_missing`` gave none: both were
    taken at an assumed time (:mod:`app.neighbour_times`)."""

    records: int = 0
    events: int = 0
    duplicates: int = 0
    times_not_believed: int = 0
    times_missing: int = 0
    dead_letters: int = 0
    alerts: int = 0
    shadow_alerts: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    alerts_by_rule: Counter[str] = field(default_factory=Counter)
    alerts_by_severity: Counter[int] = field(default_factory=Counter)
    alerts_by_category: Counter[str] = field(default_factory=Counter)
    dead_letters_by_reason: Counter[str] = field(default_factory=Counter)
    suppressed_by_exception: Counter[str] = field(default_factory=Counter)  # detections, per alert exception id

    def count_alerts(self, alerts: Iterable[dict[str, Any]], shadow_alerts: int) -> None:
        """The alert counts, from the alerts written (one per id) and the number of shadow alerts."""
        for document in alerts:
            self.alerts += 1
            self.alerts_by_rule[document["rule"]["name"]] += 1
            self.alerts_by_severity[document["event"]["severity"]] += 1
            self.alerts_by_category[document["rule"]["category"]] += 1
        self.shadow_alerts = shadow_alerts

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "events": self.events,
            "duplicates": self.duplicates,
            "times_not_believed": self.times_not_believed,
            "times_missing": self.times_missing,
            "dead_letters": self.dead_letters,
            "alerts": self.alerts,
            "shadow_alerts": self.shadow_alerts,
            "bytes_read": self.bytes_read,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events_per_second, 1),
            "alerts_by_rule": dict(self.alerts_by_rule.most_common()),
            "alerts_by_severity": {str(k): v for k, v in sorted(self.alerts_by_severity.items())},
            "alerts_by_category": dict(self.alerts_by_category.most_common()),
            "dead_letters_by_reason": dict(self.dead_letters_by_reason.most_common()),
            "suppressed_by_exception": dict(self.suppressed_by_exception.most_common()),
        }


class JsonlWriter:
    """Writes one JSON document per line; a ``None`` path discards (counts still kept by the caller)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._handle: IO[bytes] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = path.open("wb")

    def write(self, documents: Iterable[Any]) -> None:
        if self._handle is None:
            return
        for document in documents:
            self._handle.write(orjson.dumps(document, option=orjson.OPT_APPEND_NEWLINE))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def read_lines(source: str, max_bytes: int) -> Iterator[tuple[bytes, str]]:
    """Yield ``(line, origin)`` from a file or stdin without ever holding more than ``max_bytes + 1`` of a line.

    An oversized line is skipped to its end and yielded cut at ``max_bytes + 1``, so it becomes a dead letter. A
    blank line is skipped, and so is one of byte-order marks only (an empty file saved with one, joined on by
    ``cat``); a BOM leading a line with content is left to the decoder, which drops it. A file starting with the
    gzip magic bytes (S3 log delivery writes ``*.json.gz``) is inflated as it is read; where it turns out corrupt
    or truncated, the bare magic bytes are yielded, which decode to an ``invalid_gzip`` dead letter, and the file
    ends there.
    """
    handle = _open(source)
    name = "stdin" if source == STDIN else source
    number = 0
    try:
        while True:
            line = handle.readline(max_bytes + 1)
            if not line:
                return
            number += 1
            oversized = len(line) > max_bytes and not line.endswith(b"\n")
            if oversized:
                while True:
                    rest = handle.readline(_READ_CHUNK)
                    if not rest or rest.endswith(b"\n"):
                        break
            if oversized or content(line):  # not only whitespace and byte-order marks
                yield line, f"{name}:{number}"
    except (OSError, EOFError, zlib.error):
        if not isinstance(handle, gzip.GzipFile):
            raise
        yield GZIP_MAGIC, f"{name}:{number + 1}"
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()


def _open(source: str) -> IO[bytes]:
    """stdin, a file, or a gzip file or stream (told by its first bytes, not its name) inflated as it is read."""
    if source == STDIN:
        stdin = sys.stdin.buffer
        compressed = isinstance(stdin, io.BufferedReader) and stdin.peek(len(GZIP_MAGIC)).startswith(GZIP_MAGIC)
        return gzip.GzipFile(fileobj=stdin, mode="rb") if compressed else stdin
    with Path(source).open("rb") as probe:
        compressed = probe.read(len(GZIP_MAGIC)) == GZIP_MAGIC
    return gzip.open(source, "rb") if compressed else Path(source).open("rb")


def decoded_lines(
    sources: list[str],
    *,
    max_bytes: int,
    max_text_chars: int,
    keep_raw: bool = False,
    times: NeighbourTimes | None = None,
) -> Iterator[Line]:
    """Each input line as ``(events, dead letters, bytes read)``: the one way files enter the engine.

    Event times are judged by ``times`` (by default with ``max_future_s`` of 15 minutes) against the records around
    them in their file and the wall clock, instead of by the normaliser against the wall clock alone
    (:mod:`app.neighbour_times`).
    """
    judge = times if times is not None else NeighbourTimes(DEFAULT_MAX_FUTURE_SECONDS)
    for source in sources:  # one file at a time: the next one usually goes back in time
        lines = _normalised_lines(source, max_bytes=max_bytes, max_text_chars=max_text_chars, keep_raw=keep_raw)
        yield from judge.judged(lines)


def _normalised_lines(source: str, *, max_bytes: int, max_text_chars: int, keep_raw: bool) -> Iterator[Line]:
    """Each line of ``source`` normalised, every time it gave taken at its word (judged after, by its neighbours)."""
    for line, origin in read_lines(source, max_bytes):
        events, letters = normalise_payload(
            line,
            origin,
            max_bytes=max_bytes,
            max_text_chars=max_text_chars,
            keep_raw=keep_raw,
            max_future_s=math.inf,
        )
        yield events, letters, len(line)


def merge_by_time(sources: list[str], out: Path, *, max_bytes: int, max_text_chars: int) -> Path:
    """Write the lines of ``sources`` to ``out`` in event-time order (stable; lines without events keep their
    place at the end), as one collector would have logged the traffic the files hold. For small inputs such as
    the bundled samples: it holds every line in memory."""
    keyed: list[tuple[float, int, bytes]] = []
    for source in sources:
        for line, origin in read_lines(source, max_bytes):
            events, _ = normalise_payload(line, origin, max_bytes=max_bytes, max_text_chars=max_text_chars)
            first = min((event.timestamp for event in events), default=float("inf"))
            keyed.append((first, len(keyed), line.rstrip(b"\n") + b"\n"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"".join(line for _, _, line in sorted(keyed)))
    return out


def dead_letter_document(letter: DeadLetter) -> dict[str, Any]:
    return msgspec.to_builtins(letter)


class Redeliveries:
    """Drops events delivered twice as the stream's detect agent does: each identity partition remembers its
    share of ``capacity`` recent events (:class:`RecentIds`, what a stream partition keeps)."""

    def __init__(self, capacity: int, partitions: int, secret: bytes) -> None:
        self.partitions = partitions
        self._template = RecentIds(partition_share(capacity, partitions), secret=secret)
        self._recent: dict[int, RecentIds] = {}

    def fresh(self, events: list[Event]) -> list[Event]:
        """``events`` without those seen before (in earlier calls or earlier in ``events``), in their order; the
        kept ones are remembered."""
        kept: set[int] = set()
        for partition, group in group_by_partition(events, self.partitions).items():
            recent = self._recent.setdefault(partition, self._template.empty())
            hashed = recent.fresh(group)
            recent.remember(hashed)
            kept.update(id(event) for event, _digest in hashed)
        return [event for event in events if id(event) in kept]


def replay(
    sources: list[str],
    pipeline: Pipeline | PartitionedPipeline,
    *,
    alerts_out: Path | None,
    events_out: Path | None = None,
    dead_letter_out: Path | None = None,
    shadow_alerts_out: Path | None = None,
    batch_size: int = 500,
    max_bytes: int = 4 * 1024 * 1024,
    max_text_chars: int = 256 * 1024,
    keep_raw: bool = False,
    flush: bool = True,
    on_progress: Callable[[int], None] | None = None,
    dedupe_capacity: int = DEFAULT_DEDUPE_CAPACITY,
    max_future_s: float = DEFAULT_MAX_FUTURE_SECONDS,
) -> ReplaySummary:
    """Run ``pipeline`` over every record of ``sources`` and write the outputs; returns the counts.

    Events delivered twice are dropped as the stream drops them, each identity partition remembering its share of
    ``dedupe_capacity`` events (the stream's ``worker.dedupe_capacity``). A time more than ``max_future_s`` ahead
    of the records around it in its file, or of the wall clock, is not believed (:mod:`app.neighbour_times`).

    Alerts are written at the end, one line per alert id, so an alert updated by a later batch appears once: its
    largest version, as the Elasticsearch sink keeps (:func:`detectors.documents.supersedes`).
    With ``flush`` the detectors' open windows are closed at the end of the input, as a finished day of logs
    warrants; without it the output is exactly what a live stream has written after the same records.
    """
    summary = ReplaySummary()
    started = time.perf_counter()
    events_writer, dead_writer = JsonlWriter(events_out), JsonlWriter(dead_letter_out)
    alerts: dict[str, dict[str, Any]] = {}
    shadow: dict[str, dict[str, Any]] = {}
    batch: list[Event] = []
    partitions = pipeline.partitions if isinstance(pipeline, PartitionedPipeline) else 1
    template = pipeline.template if isinstance(pipeline, PartitionedPipeline) else pipeline
    redeliveries = Redeliveries(dedupe_capacity, partitions, template.redactor.derive_key("replay redeliveries"))

    def keep(result: BatchResult) -> None:
        for documents, kept in ((result.alerts, alerts), (result.shadow_alerts, shadow)):
            for document in documents:
                stored = kept.get(document["event"]["id"])
                if stored is None or supersedes(document, stored):
                    kept[document["event"]["id"]] = document
        summary.suppressed_by_exception.update(exception.id for _detection, exception in result.suppressed)

    def process_batch() -> None:
        fresh = redeliveries.fresh(batch)
        result = pipeline.process(fresh)
        events_writer.write(result.events)
        keep(result)
        summary.events += len(fresh)
        summary.duplicates += len(batch) - len(fresh)
        batch.clear()

    times = NeighbourTimes(max_future_s)
    try:
        for events, letters, size in decoded_lines(
            sources, max_bytes=max_bytes, max_text_chars=max_text_chars, keep_raw=keep_raw, times=times
        ):
            summary.records += 1
            summary.bytes_read += size
            if letters:
                dead_writer.write(dead_letter_document(letter) for letter in letters)
                summary.dead_letters += len(letters)
                summary.dead_letters_by_reason.update(letter.reason for letter in letters)
            batch.extend(events)
            if len(batch) >= batch_size:
                process_batch()
            if on_progress is not None:
                on_progress(size)
        if batch:
            process_batch()
        if flush:
            keep(pipeline.flush())
    finally:
        events_writer.close()
        dead_writer.close()
    _write_all(alerts_out, alerts.values())
    _write_all(shadow_alerts_out, shadow.values())
    summary.count_alerts(alerts.values(), len(shadow))
    summary.times_not_believed, summary.times_missing = times.not_believed, times.missing
    summary.seconds = time.perf_counter() - started
    return summary


def _write_all(path: Path | None, documents: Iterable[dict[str, Any]]) -> None:
    writer = JsonlWriter(path)
    try:
        writer.write(sorted(documents, key=lambda d: (d["@timestamp"], d["event"]["id"])))
    finally:
        writer.close()
