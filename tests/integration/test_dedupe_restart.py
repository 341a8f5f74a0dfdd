"""Records delivered again after a worker restart are dropped, not counted twice, on real Kafka and Elasticsearch.

Worker *a* processes the first half of an hour of traffic (benign users, a scraper, a denial-of-wallet client)
and stops with SIGTERM, checkpointing every identity partition. A shipper then re-sends the last 200 records of
that half, followed by the second half, and worker *b* (a new process, nothing in memory) takes over. The
duplicates land in open windows, so counted twice they would change window counts, risk scores and alerts; the
test demands that Elasticsearch holds exactly the documents ``abusewatch replay`` writes for the traffic
*without* the duplicates, field for field. The control runs the same scenario with no memory of ids
(``worker.dedupe_capacity`` 0) and must find documents that differ.

The figures of the run go to ``out/reliability/dedupe_restart.json`` for ``docs/reliability.md``.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from .test_reliability_rebalance import Worker, difference, documents
from .test_stream import ABUSEWATCH, Stream, count, produce, replay, settled, wait_until, write_figures
from .test_stream import stream as deployment  # noqa: F401  (test_stream's per-test deployment, as a fixture)

pytestmark = pytest.mark.integration

PARTITIONS = 2
REPEATED = 200  # records the shipper sends again after the restart


def traffic(tmp_path: Path) -> tuple[Path, Path, Path]:
    """One hour of simulated traffic cut in two halves, and the last ``REPEATED`` records of the first half."""
    whole = tmp_path / "simulated.jsonl"
    simulated = subprocess.run(
        [ABUSEWATCH, "simulate", "--hours", "1", "--benign-users", "6", "--seed", "5", "--format", "openai",
         "--attackers", "scraper=1,denial_of_wallet=1", "--out", str(whole)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert simulated.returncode == 0, f"abusewatch simulate failed:\n{simulated.stdout}\n{simulated.stderr}"
    lines = whole.read_bytes().splitlines(keepends=True)
    half = len(lines) // 2
    parts = {"first": lines[:half], "repeated": lines[half - REPEATED : half], "second": lines[half:]}
    for name, part in parts.items():
        (tmp_path / f"{name}.jsonl").write_bytes(b"".join(part))
    return tmp_path / "first.jsonl", tmp_path / "repeated.jsonl", tmp_path / "second.jsonl"


@pytest.mark.parametrize("remembered", [True, False], ids=["ids_checkpointed", "control_no_memory"])
def test_records_delivered_again_after_a_restart_are_not_counted_twice(
    deployment: Stream,  # noqa: F811 (a fixture argument, not a redefinition)
    es_client: Elasticsearch,
    remembered: bool,
) -> None:
    stream = deployment
    stream.env.update(
        {
            "ABW_KAFKA__PARTITIONS": str(PARTITIONS),
            "ABW_WORKER__CHECKPOINT_INTERVAL_S": "2",
            "ABW_WORKER__DEDUPE_CAPACITY": "200000" if remembered else "0",
        }
    )
    first, repeated, second = traffic(stream.tmp_path)
    sizes = {path.stem: len(path.read_bytes().splitlines()) for path in (first, repeated, second)}
    expected = replay(stream, [first, second])  # each record once
    expected_events = {doc["event"]["hash"]: doc for doc in expected["events"]}  # by _id
    expected_alerts = {doc["event"]["id"]: doc for doc in expected["alerts"]}
    assert len(expected_events) == sizes["first"] + sizes["second"]
    stream.cli("bootstrap")

    figures: dict[str, Any] = {"partitions": PARTITIONS, "dedupe_capacity": stream.env["ABW_WORKER__DEDUPE_CAPACITY"]}
    figures |= {f"records_{name}": size for name, size in sizes.items()}
    a, b = Worker("a", stream), Worker("b", stream)
    try:
        a.start()
        produce(stream, [first], batch_records=10)
        wait_until(lambda: count(es_client, stream.events_index) >= sizes["first"], "the first half in ES")
        figures["exit_code_after_sigterm"] = a.terminate()  # checkpoints every clean partition on the way out

        b.start()
        produce(stream, [repeated, second], batch_records=10)
        wait_until(lambda: count(es_client, stream.events_index) >= len(expected_events), "every event in ES")
        wait_until(lambda: settled(es_client, stream.alerts_index, len(expected_alerts)), "the alerts in ES")
        time.sleep(3)  # anything still in flight would now show up
        figures["duplicates_dropped"] = b.metric("abusewatch_duplicate_events_total")
        figures["restored_from_checkpoint"] = b.metric('abusewatch_state_restores_total{source="checkpoint"}')
        figures["checkpoints_written_by_b"] = b.metric("abusewatch_state_checkpoint_bytes_count")
        figures["checkpoint_bytes_mean_b"] = round(
            b.metric("abusewatch_state_checkpoint_bytes_sum") / max(1.0, figures["checkpoints_written_by_b"])
        )
    finally:
        for worker in (a, b):
            worker.ensure_stopped()
            if worker.log_path.exists():
                print(f"--- worker {worker.name} ---\n{worker.log_path.read_text(errors='replace')[-3000:]}")

    stored_events = documents(es_client, stream.events_index)
    stored_alerts = documents(es_client, stream.alerts_index)
    differing_events = sorted(i for i, doc in expected_events.items() if stored_events.get(i) != doc)
    differing_alerts = sorted(i for i, doc in expected_alerts.items() if stored_alerts.get(i) != doc)
    figures |= {
        "events_in_es": len(stored_events),
        "alerts_expected": len(expected_alerts),
        "alerts_in_es": len(stored_alerts),
        "events_differing_from_replay": len(differing_events),
        "alerts_differing_from_replay": len(differing_alerts),
        "alerts_extra": len(set(stored_alerts) - set(expected_alerts)),
    }
    write_figures("dedupe_restart" if remembered else "dedupe_restart_control", figures)

    assert figures["exit_code_after_sigterm"] == 0
    # Worker b resumed every identity and campaign partition from a's checkpoints.
    assert figures["restored_from_checkpoint"] == 2 * PARTITIONS
    assert sorted(stored_events) == sorted(expected_events), "events lost or extra"
    if not remembered:  # the control: without the memory, the duplicates are counted and the documents change
        assert differing_events or differing_alerts or figures["alerts_extra"]
        return
    # Every re-sent record was recognised (more if b re-ingested raw records a had not committed yet) ...
    assert figures["duplicates_dropped"] >= REPEATED
    # ... and counted once: every enriched event (window counts, scores) and every alert is replay's.
    assert not differing_events, (
        f"{len(differing_events)} events differ from replay, e.g. {differing_events[0]}: "
        f"{difference(expected_events[differing_events[0]], stored_events.get(differing_events[0], {}))}"
    )
    assert sorted(stored_alerts) == sorted(expected_alerts)
    assert not differing_alerts, (
        f"{len(differing_alerts)} alerts differ from replay, e.g. {differing_alerts[0]}: "
        f"{difference(expected_alerts[differing_alerts[0]], stored_alerts[differing_alerts[0]])}"
    )
