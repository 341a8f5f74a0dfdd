"""Crash, restart, scale out and scale in, on real Kafka and Elasticsearch, with nothing lost or doubled.

Two workers share a four-partition internal topic; one is killed with SIGKILL mid-stream and started again, a
third joins, and one of the first two leaves with SIGTERM. The reference is ``abusewatch replay`` over the same
records with the same partition count: every event document and every alert it writes must be in Elasticsearch
exactly once and *the same*, which holds only if each partition's detection state (windows, baselines, alert
groups) went on where it stopped while the partition moved between workers.

The figures of the run go to ``out/reliability/rebalance.json`` for ``docs/reliability.md``.
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from tests.test_batching_invariance import late_shipper

from .test_stream import (
    ABUSEWATCH,
    Stream,
    count,
    free_port,
    ids_in,
    produce,
    replay,
    wait_until,
    write_figures,
)
from .test_stream import stream as deployment  # noqa: F401  (test_stream's per-test deployment, as a fixture)

pytestmark = pytest.mark.integration

PARTITIONS = 4
STATE_METRICS = (  # figure -> Prometheus series, summed over the workers (the killed one's are lost with it)
    ("restores", "abusewatch_state_restores_total"),
    ("restored_from_checkpoint", 'abusewatch_state_restores_total{source="checkpoint"}'),
    ("events_replayed_for_state", "abusewatch_state_replayed_events_total"),
    ("checkpoints_written", 'abusewatch_state_checkpoints_total{outcome="written"}'),
)


@dataclass
class Worker:
    """One ``abusewatch worker`` process of the deployment, with its own web port and data directory."""

    name: str
    stream: Stream
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.stream.tmp_path / f"worker-{self.name}.log"

    def start(self) -> Worker:
        env = {
            **self.stream.env,
            "ABW_WORKER__WEB_PORT": str(self.port),
            "ABW_WORKER__DATA_DIR": str(self.stream.tmp_path / f"faust-{self.name}"),
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([ABUSEWATCH, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self.healthy, f"worker {self.name} to report healthy", self.log_path)
        return self

    def healthy(self) -> bool:
        assert self.process is not None and self.process.poll() is None, f"worker {self.name} exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as response:
                return response.status == 200
        except (OSError, ValueError):
            return False

    def metric(self, name: str) -> float:
        """Sum of a Prometheus counter over its labels, from this worker's /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self, timeout: float = 90) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def ensure_stopped(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def simulated_traffic(tmp_path: Path, parts: int = 4) -> list[Path]:
    """Three hours of labelled traffic (benign users, a scraper, a slow scraper, a model extractor, a
    denial-of-wallet client and a campaign of eight keys) as a slow shipper delivers it (8 % of the records 90-400 s
    late, so windows see late events and the stream's batches hold them out of order), cut into ``parts``
    consecutive files."""
    whole = tmp_path / "simulated.jsonl"
    subprocess.run(
        [ABUSEWATCH, "simulate", "--hours", "3", "--benign-users", "10", "--seed", "5", "--format", "openai",
         "--attackers", "scraper=1,slow_scraper=1,extractor=1,denial_of_wallet=1,campaign=1", "--out", str(whole)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    lines = [line + b"\n" for line in late_shipper(whole.read_bytes().splitlines())]
    size = -(-len(lines) // parts)
    files = []
    for number in range(parts):
        path = tmp_path / f"part-{number}.jsonl"
        path.write_bytes(b"".join(lines[number * size : (number + 1) * size]))
        files.append(path)
    return files


def flatten(document: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(document, dict):
        return {prefix: document}
    flat: dict[str, Any] = {}
    for key, value in document.items():
        flat |= flatten(value, f"{prefix}.{key}" if prefix else key)
    return flat


def difference(expected: dict[str, Any], stored: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Fields whose values differ: ``path -> (replay's, Elasticsearch's)``."""
    left, right = flatten(expected), flatten(stored)
    return {key: (left.get(key), right.get(key)) for key in sorted(left | right) if left.get(key) != right.get(key)}


def documents(es: Elasticsearch, index: str) -> dict[str, dict[str, Any]]:
    es.indices.refresh(index=index)
    hits = es.search(index=index, size=10_000, query={"match_all": {}})["hits"]["hits"]
    return {hit["_id"]: hit["_source"] for hit in hits}


@pytest.fixture
def rebalancing(deployment: Stream) -> Stream:  # noqa: F811 (a fixture argument, not a redefinition)
    deployment.env.update(
        {
            "ABW_KAFKA__PARTITIONS": str(PARTITIONS),
            "ABW_KAFKA__SESSION_TIMEOUT_S": "8",
            "ABW_WORKER__CHECKPOINT_INTERVAL_S": "3",
        }
    )
    return deployment


def run_scenario(stream: Stream, es: Elasticsearch, files: list[Path], sizes: list[int], alerts: int) -> dict[str, Any]:
    """Two workers; kill one mid-stream and start it again; add a third; stop one gracefully; a part of the
    traffic between each step. Returns the figures of the run."""
    workers = {name: Worker(name, stream) for name in ("a", "b", "c", "a-again")}
    figures: dict[str, Any] = {"partitions": PARTITIONS, "events_in": sum(sizes)}
    try:
        workers["a"].start()
        workers["b"].start()
        produce(stream, files[:1], batch_records=10)
        wait_until(lambda: count(es, stream.events_index) >= sizes[0], "the first part in ES")

        produce(stream, files[1:2], batch_records=10)
        wait_until(lambda: count(es, stream.events_index) >= sizes[0] + 100, "the second part under way")
        killed_at = time.monotonic()
        figures["events_in_es_at_kill"] = count(es, stream.events_index)
        workers["a"].kill()  # mid-stream, no chance to checkpoint or commit
        workers["a-again"].start()
        wait_until(lambda: count(es, stream.events_index) >= sum(sizes[:2]), "the second part after the kill")
        figures["seconds_from_kill_to_part_two_complete"] = round(time.monotonic() - killed_at, 1)

        workers["c"].start()  # scale out: a third member takes partitions over
        produce(stream, files[2:3], batch_records=10)
        wait_until(lambda: count(es, stream.events_index) >= sum(sizes[:2]) + 50, "the third part under way")
        leaver = {key: workers["b"].metric(metric) for key, metric in STATE_METRICS}
        figures["exit_code_after_sigterm"] = workers["b"].terminate()  # scale in, gracefully, mid-stream
        produce(stream, files[3:], batch_records=10)  # for the members left, some from b's checkpoints

        wait_until(lambda: count(es, stream.events_index) >= sum(sizes), "every event in ES", timeout=300)
        wait_until(lambda: count(es, stream.alerts_index) >= alerts, "every alert in ES", timeout=120)
        time.sleep(3)  # anything still in flight would now show up as an extra document
        for key, metric in STATE_METRICS:
            figures[key] = leaver[key] + sum(workers[name].metric(metric) for name in ("a-again", "c"))
    finally:
        for worker in workers.values():
            worker.ensure_stopped()
        for worker in workers.values():
            if worker.log_path.exists():
                print(f"--- worker {worker.name} ---\n{worker.log_path.read_text(errors='replace')[-3000:]}")
    return figures


def test_kill_restart_scale_out_and_in_lose_nothing_double_nothing_and_keep_state(
    rebalancing: Stream, es_client: Elasticsearch
) -> None:
    stream = rebalancing
    files = simulated_traffic(stream.tmp_path)
    sizes = [len(path.read_bytes().splitlines()) for path in files]
    expected = replay(stream, files)  # same partition count: the environment says 4
    expected_events = {doc["event"]["hash"]: doc for doc in expected["events"]}  # by _id
    expected_alerts = {doc["event"]["id"]: doc for doc in expected["alerts"]}
    assert len(expected_events) == sum(sizes)
    rules = {doc["rule"]["id"] for doc in expected_alerts.values()}
    assert "abusewatch-anomaly-scraping-campaign" in rules, "the campaign spans partitions and must still be found"
    stream.cli("bootstrap")
    figures = run_scenario(stream, es_client, files, sizes, len(expected_alerts))

    stored_event_ids = ids_in(es_client, stream.events_index)
    stored_alert_ids = ids_in(es_client, stream.alerts_index)
    figures |= {
        "events_in_es": len(stored_event_ids),
        "event_duplicates": len(stored_event_ids) - len(set(stored_event_ids)),
        "events_lost": len(set(expected_events) - set(stored_event_ids)),
        "alerts_expected": len(expected_alerts),
        "alerts_in_es": len(stored_alert_ids),
        "alerts_lost": len(set(expected_alerts) - set(stored_alert_ids)),
        "alerts_extra": len(set(stored_alert_ids) - set(expected_alerts)),
    }
    write_figures("rebalance", figures)

    assert figures["exit_code_after_sigterm"] == 0
    assert sorted(stored_event_ids) == sorted(expected_events)
    assert sorted(stored_alert_ids) == sorted(expected_alerts)
    # The partitions that moved were restored, from a checkpoint at least once (the graceful leaver's).
    assert figures["restores"] >= 1
    assert figures["restored_from_checkpoint"] >= 1
    # State went on: every enriched event (anomaly window counts and scores included) and every alert is the
    # one an uninterrupted run writes.
    stored_events = documents(es_client, stream.events_index)
    differing = [event_id for event_id, doc in expected_events.items() if stored_events[event_id] != doc]
    assert not differing, (
        f"{len(differing)} events differ from replay, e.g. {differing[0]}: "
        f"{difference(expected_events[differing[0]], stored_events[differing[0]])}"
    )
    stored_alerts = documents(es_client, stream.alerts_index)
    differing = [alert_id for alert_id, doc in expected_alerts.items() if stored_alerts[alert_id] != doc]
    assert not differing, (
        f"{len(differing)} alerts differ from replay, e.g. {differing[0]}: "
        f"{difference(expected_alerts[differing[0]], stored_alerts[differing[0]])}"
    )
