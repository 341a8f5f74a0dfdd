"""``abusewatch replay`` and ``backtest`` warn on stderr (and still run) when their masks would be keyed with the
development key or a weak one: anyone holding their outputs could recover masked values. ``demo`` replays made-up
traffic and stays quiet."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.settings import DEVELOPMENT_REDACTION_KEY, PACKAGE_ROOT

SAMPLE = str(PACKAGE_ROOT / "samples" / "otel.jsonl")
STRONG_KEY = "kP3xV9qL2mZ7wR4tY8nB6cJ1hF5dS0aG"


def replay(tmp_path: Path, env: dict[str, str]) -> tuple[int, list[str], Path]:
    alerts = tmp_path / "alerts.jsonl"
    result = CliRunner().invoke(cli, ["replay", SAMPLE, "--alerts-out", str(alerts)], env={"ABW_CONFIG": "", **env})
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    return result.exit_code, warnings, alerts


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (DEVELOPMENT_REDACTION_KEY, "it is the built-in development key"),
        ("short-key", "it is shorter than 16 bytes"),
        ("CHANGE-ME-to-32-random-bytes-base64", "it is the deployment manifests' placeholder"),
    ],
)
def test_a_weak_key_is_warned_about_and_the_replay_still_runs(key: str, reason: str, tmp_path: Path) -> None:
    code, warnings, alerts = replay(tmp_path, {"ABW_DETECTION__REDACTION_KEY": key})
    assert code == 0 and alerts.is_file()
    assert len(warnings) == 1
    prefix = "warning: the outputs' masks are not safe to share: detection.redaction_key is weak: "
    assert warnings[0].startswith(prefix + reason), warnings
    assert "ABW_DETECTION__REDACTION_KEY" in warnings[0]
    assert key not in warnings[0] or key == DEVELOPMENT_REDACTION_KEY  # a configured key is never printed


@pytest.mark.parametrize(
    "env",
    [
        {"ABW_DETECTION__REDACTION_KEY": STRONG_KEY},
        {"ABW_DETECTION__REDACTION_KEY": DEVELOPMENT_REDACTION_KEY, "ABW_DETECTION__ALLOW_WEAK_REDACTION_KEY": "true"},
    ],
)
def test_a_strong_or_explicitly_allowed_key_is_quiet(env: dict[str, str], tmp_path: Path) -> None:
    code, warnings, alerts = replay(tmp_path, env)
    assert code == 0 and alerts.is_file()
    assert warnings == []


def test_demo_replays_made_up_traffic_without_the_warning(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path)], env={"ABW_CONFIG": ""})
    assert result.exit_code == 0, result.output
    assert "warning: " not in result.stderr and (tmp_path / "alerts.jsonl").is_file()


@pytest.mark.parametrize(("key", "warned"), [(DEVELOPMENT_REDACTION_KEY, True), (STRONG_KEY, False)])
def test_backtest_warns_as_replay_does(key: str, warned: bool, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        cli,
        ["backtest", "--engine", "--input", SAMPLE, "--out", str(out)],
        env={"ABW_CONFIG": "", "ABW_DETECTION__REDACTION_KEY": key},
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert [w.startswith("warning: the outputs' masks are not safe to share") for w in warnings] == [True] * warned
    assert out.is_file()
