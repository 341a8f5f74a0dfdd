"""Long-running commands collect cyclic garbage less often (``app/gc_policy.py``, ``worker.gc_young_threshold``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from app.cli import cli
from app.gc_policy import tune_garbage_collector
from app.settings import PACKAGE_ROOT, Settings, WorkerSettings


@pytest.fixture(autouse=True)
def python_default_thresholds() -> Iterator[None]:
    """Each test starts from Python's own thresholds and leaves the suite's as they were."""
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)


def test_the_young_threshold_is_raised_and_the_older_ratios_kept() -> None:
    tune_garbage_collector(50_000)
    assert gc.get_threshold() == (50_000, 10, 10)
    tune_garbage_collector(50_000)  # idempotent: a second call changes nothing
    assert gc.get_threshold() == (50_000, 10, 10)


def test_zero_keeps_pythons_default() -> None:
    tune_garbage_collector(0)
    assert gc.get_threshold() == (700, 10, 10)


def test_the_setting_defaults_to_50000_reads_the_environment_and_rejects_negatives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert WorkerSettings().gc_young_threshold == 50_000
    monkeypatch.setenv("ABW_WORKER__GC_YOUNG_THRESHOLD", "0")
    assert Settings().worker.gc_young_threshold == 0
    with pytest.raises(ValidationError, match="gc_young_threshold"):
        WorkerSettings(gc_young_threshold=-1)


@pytest.mark.parametrize("threshold", [12_345, 0])
def test_replay_tunes_the_collector_from_the_setting(threshold: int, tmp_path: Path) -> None:
    sample = str(PACKAGE_ROOT / "samples" / "otel.jsonl")
    env = {"ABW_CONFIG": "", "ABW_WORKER__GC_YOUNG_THRESHOLD": str(threshold)}
    result = CliRunner().invoke(cli, ["replay", sample, "--alerts-out", str(tmp_path / "alerts.jsonl")], env=env)
    assert result.exit_code == 0, result.output
    assert gc.get_threshold() == ((threshold or 700), 10, 10)
