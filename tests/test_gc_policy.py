"""Long-running commands collect cyclic garbage less often (``app/gc_policy.py``, ``worker.gc_young_threshold``)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from app.cli import cli
from app.gc_policy import tune_garbage_collector
from app.settings import PACKAGE_ROOT, Settings, WorkerSettings

SENTINEL = (777, 10, 10)  # not Python's default, so "left alone" and "set to the default" differ


@pytest.fixture(autouse=True)
def sentinel_thresholds() -> None:
    """Each test starts from thresholds nobody sets (``tests/conftest.py`` restores the suite's after it)."""
    gc.set_threshold(*SENTINEL)


def test_the_young_threshold_is_raised_and_the_older_ratios_kept() -> None:
    gc.set_threshold(777, 12, 13)
    tune_garbage_collector(10_000)
    assert gc.get_threshold() == (10_000, 12, 13)
    tune_garbage_collector(10_000)  # idempotent: a second call changes nothing
    assert gc.get_threshold() == (10_000, 12, 13)


def test_zero_leaves_the_collector_alone() -> None:
    tune_garbage_collector(0)
    assert gc.get_threshold() == SENTINEL


def test_the_setting_defaults_to_10000_reads_the_environment_and_rejects_negatives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert WorkerSettings().gc_young_threshold == 10_000
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
    assert gc.get_threshold() == ((threshold, 10, 10) if threshold else SENTINEL)


def test_backtest_tunes_the_collector_from_the_setting(tmp_path: Path) -> None:
    sample = str(PACKAGE_ROOT / "samples" / "otel.jsonl")
    env = {"ABW_CONFIG": "", "ABW_WORKER__GC_YOUNG_THRESHOLD": "23456"}
    result = CliRunner().invoke(cli, ["backtest", "--input", sample, "--builtin"], env=env)
    assert result.exit_code == 0, result.output
    assert gc.get_threshold() == (23_456, 10, 10)
