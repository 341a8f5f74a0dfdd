"""End to end through real Kafka and Elasticsearch: sustained events/s, alert latency, consumer lag, loss.

Method.

* Services: the ones ``ABW_KAFKA_BOOTSTRAP`` / ``ABW_ES_URL`` point at when both answer; otherwise a private
  copy of ``deploy/local/services.sh`` (own run directory and ports, the shared download cache) is started and
  stopped afterwards, so other users of the default local services are not disturbed (``bench/local_services.py``).
* Isolation: unique topics, consumer group and indices per run; ``abusewatch bootstrap`` creates them.
* Workers: ``abusewatch worker`` processes (1, then 2 in a fresh deployment), each with its own web port;
  the run starts once every worker's ``/health`` answers 200.
* Load: the workload's records as NDJSON messages of ``BATCH_RECORDS`` lines, produced as fast as the producer
  goes; each message's produce time is stamped against the event ids it carries.
* Sustained events/s: the events index count sampled every second; the rate between 10 % and 90 % of the
  expected count (so start-up and the tail do not count).
* Alert latency: after the saturating load has drained, a second set of records (other ids) is produced one
  record per message at half the measured sustained rate, so latency is measured below capacity rather than
  as queueing time. The alerts index is searched every ``POLL_S`` for new alert ids; an alert's latency is the
  time it was first seen minus the produce time of the last of its events (so it includes Elasticsearch's
  refresh interval; the poll period bounds the error). The saturated phase's latencies are reported too.
* Consumer lag: committed offsets of the group against end offsets (raw + internal topics), each second.
* Loss: at the end, the events index must hold one document per produced event (ids are deterministic, so
  redelivery cannot inflate the count) and the dead-letter index none.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.bench_engine import machine, percentiles
from bench.local_services import SkipError, free_port, services
from bench.workload import WorkloadConfig, load_records

ABUSEWATCH = Path(sys.executable).parent / "abusewatch"
BATCH_RECORDS = 50
POLL_S = 0.25


@dataclass
class Deployment:
    """One isolated deployment: its environment, its worker processes and their logs."""

    kafka: str
    es: str
    partitions: int
    extra_env: dict[str, str] = field(default_factory=dict)  # worker settings of this run, e.g. its GC threshold
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    logs: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="abw-bench-e2e-")))

    @property
    def env(self) -> dict[str, str]:
        s = self.suffix
        env = {
            **os.environ,
            "ABW_KAFKA_BOOTSTRAP": self.kafka,
            "ABW_ES_URL": self.es,
            "ABW_KAFKA__RAW_TOPIC": f"bench-{s}-raw",
            "ABW_KAFKA__INTERNAL_TOPIC": f"bench-{s}-by-identity",
            "ABW_KAFKA__EVENTS_TOPIC": f"bench-{s}-events",
            "ABW_KAFKA__ALERTS_TOPIC": f"bench-{s}-alerts",
            "ABW_KAFKA__DEAD_LETTER_TOPIC": f"bench-{s}-dead-letter",
            "ABW_KAFKA__CONSUMER_GROUP": f"bench-{s}",
            "ABW_KAFKA__PARTITIONS": str(self.partitions),
            "ABW_ELASTICSEARCH__EVENTS_INDEX": f"logs-abwbench.events-{s}",
            "ABW_ELASTICSEARCH__ALERTS_INDEX": f"logs-abwbench.alerts-{s}",
            "ABW_ELASTICSEARCH__SHADOW_ALERTS_INDEX": f"abwbench.shadow_alerts-{s}",
            "ABW_ELASTICSEARCH__DEAD_LETTER_INDEX": f"logs-abwbench.dead_letter-{s}",
            "ABW_WORKER__LOG_LEVEL": "WARNING",
            "ABW_DETECTION__REDACTION_KEY": f"bench-e2e-redaction-key-{s}",  # the worker refuses a weak key
            **self.extra_env,
        }
        env.pop("ABW_CONFIG", None)
        return env

    def index(self, kind: str) -> str:
        return self.env[f"ABW_ELASTICSEARCH__{kind.upper()}_INDEX"]

    def bootstrap(self) -> None:
        done = subprocess.run([str(ABUSEWATCH), "bootstrap"], env=self.env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SkipError(f"abusewatch bootstrap failed: {done.stderr.strip().splitlines()[-3:]}")

    def start_workers(self, count: int, timeout_s: float = 600.0) -> None:
        for index in range(count):
            port = free_port()
            env = {**self.env, "ABW_WORKER__WEB_PORT": str(port), "ABW_WORKER__DATA_DIR": str(self.logs / f"w{index}")}
            log = (self.logs / f"worker-{index}.log").open("wb")
            self.workers.append(
                subprocess.Popen([str(ABUSEWATCH), "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
            )
            self.ports.append(port)
        deadline = time.monotonic() + timeout_s
        while not all(self._healthy(port) for port in self.ports):
            if time.monotonic() > deadline or any(worker.poll() is not None for worker in self.workers):
                raise SkipError(f"workers not healthy; logs in {self.logs}")
            time.sleep(1)

    @staticmethod
    def _healthy(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def worker_rss_mb(self) -> list[float]:
        sizes = []
        for worker in self.workers:
            with contextlib.suppress(OSError), open(f"/proc/{worker.pid}/statm", encoding="ascii") as statm:
                sizes.append(round(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1))
        return sizes

    def stop(self) -> None:
        for worker in self.workers:
            worker.terminate()
        for worker in self.workers:
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

    def cleanup(self) -> None:
        from elasticsearch import Elasticsearch
        from kafka.admin import KafkaAdminClient

        with Elasticsearch(self.es, request_timeout=30) as client:
            for kind in ("events", "alerts", "shadow_alerts", "dead_letter"):
                with contextlib.suppress(Exception):
                    client.indices.delete_data_stream(name=self.index(kind))
                with contextlib.suppress(Exception):
                    client.indices.delete(index=self.index(kind), ignore_unavailable=True)
        with contextlib.suppress(Exception):
            admin = KafkaAdminClient(bootstrap_servers=self.kafka, request_timeout_ms=30_000)
            try:
                names = [n for n in admin.list_topics() if self.suffix in n]
                admin.delete_topics(names)
            finally:
                admin.close()
        shutil.rmtree(self.logs, ignore_errors=True)


class Sampler(threading.Thread):
    """Every second: events in ES and consumer lag; every ``POLL_S``: alert ids newly searchable."""

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(daemon=True)
        self.deployment = deployment
        self.stop_event = threading.Event()
        self.counts: list[tuple[float, int]] = []
        self.lag: list[tuple[float, int]] = []
        self.alert_seen: dict[str, tuple[float, list[str]]] = {}
        self.lag_error: str | None = None
        self._clients: tuple[Any, Any] | None = None

    def run(self) -> None:
        from elasticsearch import Elasticsearch

        with Elasticsearch(self.deployment.es, request_timeout=30) as client:
            last_second = 0.0
            while not self.stop_event.is_set():
                now = time.monotonic()
                self._poll_alerts(client, now)
                if now - last_second >= 1.0:
                    last_second = now
                    self.counts.append((now, index_count(client, self.deployment.index("events"))))
                    self.lag.append((now, self._lag()))
                self.stop_event.wait(POLL_S)

    def _poll_alerts(self, client: Any, now: float) -> None:
        try:
            response = client.search(
                index=self.deployment.index("alerts"),
                size=10_000,
                source=["abusewatch.event_ids"],
                query={"bool": {"must_not": {"ids": {"values": list(self.alert_seen)[-5_000:]}}}},
            )
        except Exception:
            return
        for hit in response["hits"]["hits"]:
            if hit["_id"] not in self.alert_seen:
                self.alert_seen[hit["_id"]] = (now, hit["_source"].get("abusewatch", {}).get("event_ids", []))

    def _lag(self) -> int:
        """Committed offsets of the group against end offsets, raw + internal topics; -1 when unavailable."""
        from kafka import KafkaConsumer, TopicPartition
        from kafka.admin import KafkaAdminClient

        env = self.deployment.env
        try:
            if self._clients is None:
                admin = KafkaAdminClient(bootstrap_servers=self.deployment.kafka, request_timeout_ms=10_000)
                self._clients = (admin, KafkaConsumer(bootstrap_servers=self.deployment.kafka))
            admin, consumer = self._clients
            group = env["ABW_KAFKA__CONSUMER_GROUP"]
            if hasattr(admin, "list_group_offsets"):  # kafka-python >= 3: {group: {partition: offset}}
                committed = admin.list_group_offsets(group).get(group, {})
            else:
                committed = admin.list_consumer_group_offsets(group)
            topics = (env["ABW_KAFKA__RAW_TOPIC"], env["ABW_KAFKA__INTERNAL_TOPIC"])
            partitions = [
                TopicPartition(topic, p) for topic in topics for p in consumer.partitions_for_topic(topic) or ()
            ]
            ends = consumer.end_offsets(partitions)
            return sum(end - (committed[tp].offset if tp in committed else 0) for tp, end in ends.items())
        except Exception as error:  # reported once in the result, sampling goes on
            self.lag_error = f"{type(error).__name__}: {error}"[:300]
            return -1

    def close(self) -> None:
        if self._clients is not None:
            for client in self._clients:
                client.close()


def index_count(client: Any, index: str) -> int:
    """Documents searchable in ``index`` (0 while it does not exist yet)."""
    try:
        return int(client.count(index=index)["count"])
    except Exception:  # not created yet
        return 0


def produce(
    deployment: Deployment,
    records: list[Any],
    batch: int = BATCH_RECORDS,
    rate: float | None = None,
    producer_options: dict[str, Any] | None = None,
) -> tuple[dict[str, float], float]:
    """Send the records as NDJSON messages of ``batch`` lines, at ``rate`` events/s or as fast as possible.

    Returns each acknowledged event id's produce time and the seconds producing took. Only acknowledged records
    count as produced: a send the broker refused is the benchmark's failure, not a loss in the stream.
    ``producer_options`` override the KafkaProducer settings (e.g. to ride out a broker restart).
    """
    from kafka import KafkaProducer

    options = {"acks": "all", "linger_ms": 20, "retries": 10, "max_request_size": 16 * 1024 * 1024}
    producer = KafkaProducer(bootstrap_servers=deployment.kafka, **{**options, **(producer_options or {})})
    pending = []
    produced: dict[str, float] = {}
    started = time.monotonic()
    try:
        for offset in range(0, len(records), batch):
            if rate:
                time.sleep(max(0.0, started + offset / rate - time.monotonic()))
            chunk = records[offset : offset + batch]
            future = producer.send(deployment.env["ABW_KAFKA__RAW_TOPIC"], b"\n".join(r.raw for r in chunk))
            pending.append((future, chunk, time.monotonic()))
        producer.flush()
        for future, chunk, sent_at in pending:
            if future.succeeded():
                produced.update((record.event_id, sent_at) for record in chunk)
    finally:
        producer.close()
    return produced, time.monotonic() - started


@dataclass(frozen=True)
class Sent:
    raw: bytes
    event_id: str


def _event_ids(records: list[Any]) -> list[Sent]:
    from detectors.normalise import normalise_many

    sent = []
    for record in records:
        events = normalise_many(orjson.loads(record.raw))
        sent.extend(Sent(record.raw, event.id) for event in events[:1])
    return sent


def _sustained(counts: list[tuple[float, int]], expected: int) -> float | None:
    low = next((t for t, c in counts if c >= 0.1 * expected), None)
    high = next((t for t, c in counts if c >= 0.9 * expected), None)
    if low is None or high is None or high <= low:
        return None
    return round(0.8 * expected / (high - low), 1)


def _latencies(sampler: Sampler, produced: dict[str, float]) -> list[float]:
    """Seconds from producing an alert's last event to the alert being searchable, for alerts of ``produced``."""
    return [
        seen - max(produced[i] for i in ids if i in produced)
        for seen, ids in sampler.alert_seen.values()
        if any(i in produced for i in ids)
    ]


def _wait_for(sampler: Sampler, expected: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (not sampler.counts or sampler.counts[-1][1] < expected):
        time.sleep(1)


def run_deployment(
    kafka: str, es: str, workers: int, records: list[Any], paced: list[Any], timeout_s: float
) -> dict[str, Any]:
    """Saturate with ``records`` (throughput, lag, loss), then send ``paced`` at half the measured rate (latency)."""
    deployment = Deployment(kafka, es, partitions=4)
    sent, paced_sent = _event_ids(records), _event_ids(paced)
    try:
        deployment.bootstrap()
        deployment.start_workers(workers)
        sampler = Sampler(deployment)
        sampler.start()
        produced, produce_seconds = produce(deployment, sent)
        _wait_for(sampler, len(produced), timeout_s)
        sustained = _sustained(sampler.counts, len(produced))
        pace = max((sustained or 1.0) / 2, 0.5)
        paced_produced, _ = produce(deployment, paced_sent, batch=1, rate=pace)
        expected = len(produced) + len(paced_produced)
        _wait_for(sampler, expected, timeout_s)
        time.sleep(3)  # alerts of the last batch, and anything that would be a duplicate
        sampler.stop_event.set()
        sampler.join()
        sampler.close()
        rss = deployment.worker_rss_mb()
        from elasticsearch import Elasticsearch

        with Elasticsearch(es, request_timeout=30) as client:
            client.indices.refresh(index=f"logs-abwbench.*-{deployment.suffix}", ignore_unavailable=True)
            events = index_count(client, deployment.index("events"))
            dead = index_count(client, deployment.index("dead_letter"))
        latencies, paced_latencies = _latencies(sampler, produced), _latencies(sampler, paced_produced)
        lag = [value for _, value in sampler.lag if value >= 0]
        return {
            "workers": workers,
            "partitions": deployment.partitions,
            "events_produced": expected,
            "events_refused_by_kafka": len(sent) + len(paced_sent) - expected,
            "produce_seconds": round(produce_seconds, 1),
            "events_in_es": events,
            "dead_letters": dead,
            "lost": max(expected - events, 0),
            "zero_loss": events == expected and dead == 0,
            "sustained_events_per_s": sustained,
            "alerts": len(sampler.alert_seen),
            "alert_latency_saturated": percentiles(latencies) if latencies else None,
            "paced_events_per_s": round(pace, 1),
            "paced_events": len(paced_produced),
            "alert_latency": percentiles(paced_latencies) if paced_latencies else None,
            "consumer_lag_max": max(lag) if lag else None,
            "consumer_lag_error": sampler.lag_error,
            "consumer_lag_series": [round(float(v)) for v in np.asarray(lag)[:: max(len(lag) // 60, 1)]],
            "worker_rss_mb": rss,
        }
    finally:
        deployment.stop()
        deployment.cleanup()


def run(quick: bool = False) -> dict[str, Any]:
    records = load_records(WorkloadConfig(events=200 if quick else 3_000))
    paced = load_records(WorkloadConfig(events=100 if quick else 300, seed=7))  # other ids: no dedupe
    before = machine()["load_average"]
    try:
        with services() as running:
            results = [
                run_deployment(running.kafka, running.es, workers, records, paced, timeout_s=300 if quick else 600)
                for workers in ((1,) if quick else (1, 2))
            ]
    except SkipError as reason:
        return {"skipped": str(reason)}
    return {"runs": results, "load_average": {"before": before, "after": machine()["load_average"]}}
