"""Soak: one worker's memory over minutes of steady traffic with poison records and Kafka broker restarts.

``python -m bench.bench_soak [--minutes 8] [--gc-young-threshold 10000] [--rate 30] [--event-rate 50] [--restarts 2]
[--poison-every 20] [--backlog 0]``: about ``minutes`` + 2 minutes in all (services and worker start, drain), plus
the catch-up of a backlog. Method.

* Services: always a private copy of ``deploy/local/services.sh`` on free ports (``bench/local_services.py``), even
  when ``ABW_KAFKA_BOOTSTRAP`` / ``ABW_ES_URL`` answer, since its broker is restarted; stopped afterwards.
* Deployment: ``bench_e2e.Deployment`` (unique topics, group and indices; ``abusewatch bootstrap``), one
  ``abusewatch worker`` with ``ABW_WORKER__GC_YOUNG_THRESHOLD`` set to ``--gc-young-threshold``.
* Traffic: ``rate x minutes x 60`` Kafka messages of one record each at ``--rate`` messages/s, all ids distinct
  (the bundled workload, ``bench/workload.py``, whose event time advances ``--event-rate`` records per second: a
  lower rate soaks through more event time, so windowed state can expire). Every ``--poison-every``-th message is
  poison instead, in turn (``POISON_KINDS``): a record cut in half (invalid JSON), invalid UTF-8, a JSON scalar,
  JSON of no known format, arrays nested 100,000 deep, and a workload record whose fields all have the wrong type; every
  ``OVERSIZED_EVERY``-th poison message is a record past ``detection.max_record_bytes`` (4 MiB) instead.
* Expectations are computed, not assumed: each message goes through ``normalise_payload`` here with the worker's
  default limits, giving the events and dead letters the worker should write for it.
* Backlog (``--backlog N``, default 0): the first N messages of the stream (same workload, same poison) are produced
  as fast as the broker acknowledges them before the worker starts, so it catches up with full batches, as after an
  outage; the ``minutes`` of feeding (may be 0 with a backlog, then without restarts) follow at ``--rate`` from the
  worker's start. Catch-up time: from the worker answering ``/health`` to the first sample whose index holds the
  backlog's events and dead letters (with feeding alongside, some of those may be fed ones: an upper bound on the
  rate).
* Producer: idempotent, ``acks=all``, retrying for up to ``DELIVERY_TIMEOUT_MS``, so a broker outage delays sends
  instead of dropping or duplicating them; only acknowledged messages count as produced.
* Restarts: ``--restarts`` times, evenly spread over the feeding period, the broker is stopped and started on its
  data (``services.sh stop-kafka`` / ``start-kafka``), so the worker's consumers and producers reconnect.
* Samples every ``--sample-seconds``: the worker's ``VmRSS`` (``/proc/PID/status``), ``python_gc_collections_total``
  per generation (``/metrics``), and the events and dead letters searchable in Elasticsearch.
* Summary: RSS at the start of feeding, its peak (``VmHWM``: since the worker started, including peaks between
  samples) and at the end (after the drain and ``SETTLE_S`` idle); the slope of a least-squares line through the RSS
  samples of the second half of the feeding period (or of the catch-up, when longer), in MB per 10 minutes;
  collections per generation over the run; loss: events in the index against the events of the acknowledged
  messages, dead letters against those expected (the ids of both are deterministic, so redelivery after a restart
  cannot inflate the counts). With a backlog, also its catch-up time and rate in messages/s.
* Also reported: the worker's ``abusewatch_*_total`` counters at the end (duplicates dropped, partition state restored
  and replayed after the rebalances a restart causes) and how many warnings it logged, with the last few.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from app.settings import DetectionSettings
from bench.bench_e2e import Deployment, Sent, index_count, produce
from bench.bench_engine import machine
from bench.local_services import SkipError, services
from bench.workload import WorkloadConfig, load_records
from detectors.normalise import normalise_payload

POISON_EVERY = 20  # 5 % of the messages are poison
OVERSIZED_EVERY = 10  # of the poison messages, every 10th is past max_record_bytes (one 4 MiB record per 200 messages)
DELIVERY_TIMEOUT_MS = 600_000  # a send waits out a broker restart rather than failing
DRAIN_TIMEOUT_S = 600.0
BACKLOG_DRAIN_S = 0.1  # more seconds to drain per backlog message: a catch-up as slow as 10 messages/s still ends
SETTLE_S = 20.0  # sampling goes on this long after the drain: the "end" RSS is that of an idle worker
GC_LINE = re.compile(r'^python_gc_collections_total\{generation="(\d)"\} ([\d.e+]+)$', re.MULTILINE)
COUNTER_LINE = re.compile(r"^abusewatch_(\w+)_total(?:\{[^}]*\})? ([\d.e+]+)$", re.MULTILINE)


def _wrong_types(raw: bytes) -> bytes:
    """The record with every top-level value replaced by one of the wrong type (and nested ones left as they are)."""
    wrong: list[Any] = [None, -1, 1e308, ["\u0000"], {"\U000e0069": True}, "\u202e"]
    record = orjson.loads(raw)
    return orjson.dumps({key: wrong[index % len(wrong)] for index, key in enumerate(record)})


POISON_KINDS: dict[str, Callable[[bytes], bytes]] = {
    "invalid_json": lambda raw: raw[: len(raw) // 2],
    "invalid_utf8": lambda raw: b'{"model": "\xff\xfe\xfd", "messages": []}',
    "scalar": lambda raw: b"42",
    "unknown_format": lambda raw: b'{"hello": "world", "items": [1, 2, 3]}',
    "too_deep": lambda raw: b"[" * 100_000 + b"]" * 100_000,
    "wrong_types": _wrong_types,
}


def oversized(limit: int) -> bytes:
    """Valid JSON just past ``limit`` bytes: the ``oversized`` dead letter, read without being decoded."""
    return b'{"pad": "' + b"x" * (limit + 64 * 1024) + b'"}'


@dataclass(frozen=True)
class Message:
    """One Kafka message: its bytes, its kind ("good" or a poison kind), the events and dead letters it should give."""

    key: str
    raw: bytes
    kind: str
    events: int
    dead_letters: int


def messages(
    count: int, detection: DetectionSettings, poison_every: int = POISON_EVERY, event_rate: float = 50.0
) -> list[Message]:
    """``count`` messages: workload records (``event_rate`` a second of event time) with every ``poison_every``-th
    one poison (0: none), each with what the worker should make of it."""
    records = load_records(WorkloadConfig(events=count, events_per_second=event_rate))
    poison_kinds = list(POISON_KINDS)
    big = oversized(detection.max_record_bytes)  # one copy shared by every oversized message (4 MiB each)
    out, poison = [], 0
    for index, record in enumerate(records):
        kind, raw = "good", record.raw
        if poison_every and index % poison_every == poison_every - 1:
            if poison % OVERSIZED_EVERY == OVERSIZED_EVERY - 1:
                kind, raw = "oversized", big
            else:
                kind = poison_kinds[poison % len(poison_kinds)]
                raw = POISON_KINDS[kind](record.raw)
            poison += 1
        events, letters = normalise_payload(
            raw,
            f"soak:{index}",
            max_bytes=detection.max_record_bytes,
            max_text_chars=detection.max_text_chars,
            max_future_s=detection.max_future_seconds,
        )
        out.append(Message(f"m{index}", raw, kind, len(events), len(letters)))
    return out


@dataclass
class Sample:
    """One reading of the worker: seconds since feeding began, RSS and its high-water mark (MB), collections
    per generation (None when /metrics did not answer), events and dead letters searchable."""

    t: float
    rss_mb: float
    hwm_mb: float
    gc: tuple[int, ...] | None
    events: int
    dead_letters: int


class Watcher(threading.Thread):
    """Samples the worker every ``period`` seconds until stopped; times count from its creation."""

    def __init__(self, deployment: Deployment, period: float) -> None:
        super().__init__(daemon=True)
        self.deployment = deployment
        self.period = period
        self.started = time.monotonic()
        self.samples: list[Sample] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        from elasticsearch import Elasticsearch

        with Elasticsearch(self.deployment.es, request_timeout=30) as client:
            while not self.stop_event.is_set():
                sample = self.sample(client)
                if sample is not None:
                    self.samples.append(sample)
                self.stop_event.wait(self.period)

    def sample(self, client: Any) -> Sample | None:
        status = process_status(self.deployment.workers[0].pid)
        if status is None:  # the worker is gone: the run reports it
            return None
        return Sample(
            round(time.monotonic() - self.started, 1),
            status["VmRSS"],
            status["VmHWM"],
            gc_collections(self.deployment.ports[0]),
            index_count(client, self.deployment.index("events")),
            index_count(client, self.deployment.index("dead_letter")),
        )


def process_status(pid: int) -> dict[str, float] | None:
    """``VmRSS`` and ``VmHWM`` of ``pid`` in MB, None when it has exited."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            fields = dict(line.split(":", 1) for line in status if line.startswith(("VmRSS", "VmHWM")))
    except OSError:
        return None
    return {name: round(int(value.split()[0]) / 1024, 1) for name, value in fields.items()}


def _metrics(port: int) -> str | None:
    """The worker's ``/metrics`` page, None when it does not answer (during an outage it may not)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()
    except OSError:
        return None


def gc_collections(port: int) -> tuple[int, ...] | None:
    """``python_gc_collections_total`` per generation from the worker's ``/metrics``; None when it does not answer."""
    text = _metrics(port)
    if text is None:
        return None
    counts = {int(gen): int(float(value)) for gen, value in GC_LINE.findall(text)}
    return tuple(counts[gen] for gen in sorted(counts)) or None


def worker_counters(port: int) -> dict[str, int]:
    """The worker's own ``abusewatch_*_total`` counters, summed over their labels (duplicates dropped, state
    restored and replayed after a rebalance, dead letters): what the restarts made it do."""
    totals: dict[str, int] = {}
    for name, value in COUNTER_LINE.findall(_metrics(port) or ""):
        totals[name] = totals.get(name, 0) + int(float(value))
    return totals


def slope_mb_per_10_min(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points in MB per 10 minutes; None with fewer than 3 points or no span."""
    if len(points) < 3:
        return None
    t, mb = np.array(points, dtype=float).T
    if np.ptp(t) == 0:
        return None
    return round(float(np.polyfit(t, mb, 1)[0]) * 600, 1)


def summarise(samples: Sequence[Sample], feed_seconds: float) -> dict[str, Any]:
    """RSS start / peak / end, second-half slope and collections of a run whose feeding lasted ``feed_seconds``."""
    if not samples:
        return {"samples": 0}
    half = [(s.t, s.rss_mb) for s in samples if feed_seconds / 2 <= s.t <= feed_seconds]
    with_gc = [s.gc for s in samples if s.gc is not None]
    return {
        "samples": len(samples),
        "rss_start_mb": samples[0].rss_mb,
        "rss_peak_mb": max(max(s.hwm_mb, s.rss_mb) for s in samples),
        "rss_end_mb": samples[-1].rss_mb,
        "rss_slope_second_half_mb_per_10_min": slope_mb_per_10_min(half),
        "gc_collections": [end - start for start, end in zip(with_gc[0], with_gc[-1], strict=True)]
        if len(with_gc) > 1
        else None,
        "rss_series_mb": [s.rss_mb for s in samples[:: max(len(samples) // 60, 1)]],
    }


def _restart_broker(running: Any, at: float, watcher: Watcher) -> dict[str, float]:
    """Wait until ``at`` seconds into feeding, then stop and start the broker: when, and seconds from the stop until
    it was healthy again."""
    watcher.stop_event.wait(max(0.0, at - (time.monotonic() - watcher.started)))
    began = time.monotonic()
    running.command("stop-kafka")
    running.command("start-kafka")
    return {"at_s": round(began - watcher.started, 1), "down_s": round(time.monotonic() - began, 1)}


def caught_up_at(samples: Sequence[Sample], events: int, letters: int) -> float | None:
    """Seconds into the run of the first sample whose index holds ``events`` events and ``letters`` dead letters;
    None when none did."""
    return next((s.t for s in samples if s.events >= events and s.dead_letters >= letters), None)


def _drain(watcher: Watcher, events: int, letters: int, worker: Any, timeout_s: float) -> None:
    """Wait until the index holds ``events`` events and ``letters`` dead letters, the worker exits, or time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and worker.poll() is None:
        last = watcher.samples[-1] if watcher.samples else None
        if last is not None and last.events >= events and last.dead_letters >= letters:
            return
        time.sleep(watcher.period)


def _log_tail(deployment: Deployment, lines: int = 8) -> dict[str, Any]:
    """Warnings and errors the worker logged (it logs at WARNING): how many, and the last few."""
    text = (deployment.logs / "worker-0.log").read_text(encoding="utf-8", errors="replace").splitlines()
    flagged = [line for line in text if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback", line)]
    return {"warnings_and_errors": len(flagged), "last": [line[:300] for line in flagged[-lines:]]}


def run(
    minutes: float,
    threshold: int,
    rate: float,
    restarts: int,
    sample_seconds: float,
    poison_every: int = POISON_EVERY,
    event_rate: float = 50.0,
    backlog: int = 0,
) -> dict[str, Any]:
    """One soak (see the module docstring): the worker's memory, collections and loss, as a JSON-able dict."""
    detection = DetectionSettings()
    stream = messages(backlog + round(rate * minutes * 60), detection, poison_every, event_rate)
    queued, feed = stream[:backlog], stream[backlog:]
    before = machine()["load_average"]
    with services(private=True) as running:
        deployment = Deployment(
            running.kafka, running.es, partitions=4, extra_env={"ABW_WORKER__GC_YOUNG_THRESHOLD": str(threshold)}
        )
        try:
            deployment.bootstrap()
            options = {"enable_idempotence": True, "retries": 2**31 - 1, "delivery_timeout_ms": DELIVERY_TIMEOUT_MS}
            produced, queued_s = (
                produce(deployment, [Sent(m.raw, m.key) for m in queued], 1, None, options) if queued else ({}, 0.0)
            )
            queued_acked = [m for m in queued if m.key in produced]
            deployment.start_workers(1)
            watcher = Watcher(deployment, sample_seconds)
            watcher.start()
            producer = threading.Thread(
                target=lambda: produced.update(
                    produce(deployment, [Sent(m.raw, m.key) for m in feed], 1, rate, options)[0]
                ),
                daemon=True,
            )
            if feed:
                producer.start()
            span = len(feed) / rate
            outages = [_restart_broker(running, span * (i + 1) / (restarts + 1), watcher) for i in range(restarts)]
            if feed:
                producer.join()
            feed_seconds = time.monotonic() - watcher.started
            acked = [m for m in stream if m.key in produced]
            expected_events = sum(m.events for m in acked)
            expected_letters = sum(m.dead_letters for m in acked)
            timeout_s = DRAIN_TIMEOUT_S + BACKLOG_DRAIN_S * backlog
            _drain(watcher, expected_events, expected_letters, deployment.workers[0], timeout_s)
            drained_s = time.monotonic() - watcher.started - feed_seconds
            watcher.stop_event.wait(SETTLE_S)
            watcher.stop_event.set()
            watcher.join()
            from elasticsearch import Elasticsearch

            with Elasticsearch(running.es, request_timeout=30) as client:
                client.indices.refresh(index=f"logs-abwbench.*-{deployment.suffix}", ignore_unavailable=True)
                events = index_count(client, deployment.index("events"))
                letters = index_count(client, deployment.index("dead_letter"))
            worker_exit = deployment.workers[0].poll()
            counters = worker_counters(deployment.ports[0])
            log = _log_tail(deployment)
        finally:
            deployment.stop()
            deployment.cleanup()
    caught_up = caught_up_at(
        watcher.samples, sum(m.events for m in queued_acked), sum(m.dead_letters for m in queued_acked)
    )
    catch_up = {
        "backlog": backlog,
        "backlog_acknowledged": len(queued_acked),
        "backlog_produce_seconds": round(queued_s, 1),
        "catch_up_seconds": caught_up,
        "catch_up_messages_per_s": round(len(queued_acked) / caught_up, 1) if caught_up else None,
    }
    return {
        "gc_young_threshold": threshold,
        "event_rate_per_s": event_rate,
        "minutes": minutes,
        "rate_messages_per_s": rate,
        "poison_every": poison_every,
        "messages": len(stream),
        "acknowledged": len(acked),
        "acknowledged_by_kind": dict(Counter(m.kind for m in acked)),
        "feed_seconds": round(feed_seconds, 1),
        "drain_seconds": round(drained_s, 1),
        **(catch_up if backlog else {}),
        "broker_restarts": outages,
        "worker_exit_code": worker_exit,
        "events_expected": expected_events,
        "events_in_es": events,
        "dead_letters_expected": expected_letters,
        "dead_letters_in_es": letters,
        "no_loss": events == expected_events and letters == expected_letters,
        **summarise(watcher.samples, max(feed_seconds, caught_up or 0.0)),
        "worker_counters": counters,
        "worker_log": log,
        "load_average": {"before": before, "after": machine()["load_average"]},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--minutes", type=float, default=8.0, help="length of the feeding period (default 8; may be 0 with --backlog)"
    )
    parser.add_argument(
        "--gc-young-threshold",
        type=int,
        default=10_000,
        help="the worker's worker.gc_young_threshold (default 10000; 0 leaves Python's 700)",
    )
    parser.add_argument("--rate", type=float, default=30.0, help="messages per second, one record each (default 30)")
    parser.add_argument(
        "--event-rate", type=float, default=50.0, help="records per second of event time in the workload (default 50)"
    )
    parser.add_argument("--restarts", type=int, default=2, help="broker restarts during feeding (default 2)")
    parser.add_argument(
        "--poison-every", type=int, default=POISON_EVERY, help=f"every Nth message is poison; 0: none ({POISON_EVERY})"
    )
    parser.add_argument(
        "--backlog", type=int, default=0, help="messages produced before the worker starts, to catch up (default 0)"
    )
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="seconds between samples (default 5)")
    parser.add_argument("--out", type=str, default=None, help="also write the JSON result to this file")
    args = parser.parse_args(argv)
    if min(args.rate, args.event_rate, args.sample_seconds) <= 0:
        parser.error("--rate, --event-rate, --sample-seconds must be positive")
    if min(args.restarts, args.poison_every, args.backlog, args.minutes) < 0:
        parser.error("--restarts, --poison-every, --backlog, --minutes must not be negative")
    if args.minutes == 0 and (args.backlog == 0 or args.restarts > 0):
        parser.error("--minutes 0 needs a --backlog and --restarts 0 (restarts are spread over the feeding)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        result = run(
            args.minutes,
            args.gc_young_threshold,
            args.rate,
            args.restarts,
            args.sample_seconds,
            args.poison_every,
            event_rate=args.event_rate,
            backlog=args.backlog,
        )
    except SkipError as reason:
        result = {"skipped": str(reason)}
    text = json.dumps(result, indent=2)
    if args.out:
        with contextlib.suppress(OSError), open(args.out, "w", encoding="utf-8") as out:
            out.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
