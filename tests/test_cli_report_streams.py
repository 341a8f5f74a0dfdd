"""A report the user asked for goes to stdout, so ``> report.txt`` and pipes work; progress, warnings and errors go
to stderr (``backtest``'s report: tests/test_backtest.py; ``demo``'s: tests/test_demo.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.settings import PACKAGE_ROOT

SAMPLE = str(PACKAGE_ROOT / "samples" / "otel.jsonl")
STRONG_KEY = "kP3xV9qL2mZ7wR4tY8nB6cJ1hF5dS0aG"


def test_the_replay_summary_goes_to_stdout_and_the_key_warning_to_stderr(tmp_path: Path) -> None:
    args = ["replay", SAMPLE, "--alerts-out", str(tmp_path / "alerts.jsonl")]
    result = CliRunner().invoke(cli, args, env={"ABW_CONFIG": "", "ABW_DETECTION__REDACTION_KEY": "short-key"})
    assert result.exit_code == 0, result.output
    assert "Replay summary" in result.stdout and "records read" in result.stdout
    assert result.stderr.startswith("warning: the outputs' masks are not safe to share")
    assert "Replay summary" not in result.stderr


def test_check_config_prints_the_settings_as_json_on_stdout_and_its_verdict_on_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("app.commands.stream.check_kafka", lambda settings: [])  # no services here
    monkeypatch.setattr("app.commands.stream.check_elasticsearch", lambda settings: [])
    env = {"ABW_CONFIG": "", "ABW_DETECTION__REDACTION_KEY": STRONG_KEY}
    result = CliRunner().invoke(cli, ["check-config"], env=env)
    assert result.exit_code == 0, result.output
    settings = json.loads(result.stdout)  # the whole of stdout, for a file or `| jq`
    assert settings["detection"]["redaction_key"] == "**********"
    assert result.stderr.startswith("configuration OK")
