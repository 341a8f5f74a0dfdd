"""The benchmark suite's end-to-end part (``bench/bench_e2e.py``) runs on the session's Kafka and Elasticsearch.

The other benches run at a tiny size in ``tests/test_bench_smoke.py``; this one needs the services, so it lives here.
Structure and loss only, never timings.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench import __main__ as suite

from .conftest import Services


def test_quick_e2e_part_runs_without_loss(services: Services, tmp_path: Path) -> None:
    code = suite.main(["--quick", "--only", "e2e", "--out", str(tmp_path)])
    e2e = json.loads((tmp_path / "latest.json").read_text(encoding="utf-8"))["parts"]["e2e"]
    assert code == 0, e2e.get("failed")
    assert "skipped" not in e2e, e2e["skipped"]  # the services fixture exported ABW_KAFKA_BOOTSTRAP / ABW_ES_URL
    (run,) = e2e["runs"]  # --quick: one deployment, one worker
    assert run["workers"] == 1 and run["events_produced"] > 0
    assert run["zero_loss"], {key: run[key] for key in ("events_produced", "events_in_es", "lost", "dead_letters")}
    assert run["paced_events"] > 0
    assert "## End to end (Kafka + Elasticsearch)" in (tmp_path / "latest.md").read_text(encoding="utf-8")
