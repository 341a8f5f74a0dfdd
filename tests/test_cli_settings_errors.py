"""Every command ends a settings error (a missing ``ABW_CONFIG`` file, a bad or misspelt variable) the same way: one
line on stderr naming the setting, exit code 2, no traceback (app/cli.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.settings import PACKAGE_ROOT

SAMPLE = str(PACKAGE_ROOT / "samples" / "openai.jsonl")


def commands(tmp_path: Path) -> list[list[str]]:
    """Each command that reads the settings, with the arguments it needs to get that far."""
    return [
        ["worker"],
        ["bootstrap"],
        ["check-config"],
        ["produce", SAMPLE],
        ["replay", SAMPLE, "--alerts-out", str(tmp_path / "alerts.jsonl")],
        ["demo", "--out", str(tmp_path / "demo")],
        ["backtest", "--input", SAMPLE],
        ["alerts", "list"],
        ["rules", "list"],
        ["rules", "stats"],
        ["rules", "shadow"],
    ]


def run(arguments: list[str], env: dict[str, str]) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(cli, arguments, env={"ABW_CONFIG": "", **env})
    return result.exit_code, result.stderr, result.exception


@pytest.mark.parametrize("index", range(11))
def test_a_missing_settings_file_is_one_line_and_exit_2(index: int, tmp_path: Path) -> None:
    arguments = commands(tmp_path)[index]
    absent = tmp_path / "absent.yml"
    code, stderr, exception = run(arguments, {"ABW_CONFIG": str(absent)})
    expected = f"error: invalid settings: cannot read the settings file {absent} (ABW_CONFIG or --config): No such "
    assert code == 2 and stderr.splitlines()[-1] == expected + "file or directory", (arguments, stderr)
    assert "Traceback" not in stderr
    assert isinstance(exception, SystemExit)
    assert not (tmp_path / "alerts.jsonl").exists()  # nothing ran


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        (
            "ABW_DETECTION__BATCH_SIZE",
            "abc",
            "detection.batch_size (ABW_DETECTION__BATCH_SIZE): Input should be a valid",
        ),
        ("ABW_DETECTION__BATCH_SIZE", "0", "detection.batch_size (ABW_DETECTION__BATCH_SIZE): Input should be greater"),
        (
            "ABW_DETECTION__RULE_DIR",
            "/rules",
            "detection.rule_dir (ABW_DETECTION__RULE_DIR): not a setting (misspelt?)",
        ),
        ("ABW_WORKER__LOG_LEVEL", "verbose", "worker.log_level (ABW_WORKER__LOG_LEVEL): Input should be 'CRITICAL'"),
    ],
)
@pytest.mark.parametrize("arguments", [["check-config"], ["rules", "list"], ["alerts", "list"], ["worker"]])
def test_a_bad_variable_names_the_setting(variable: str, value: str, named: str, arguments: list[str]) -> None:
    code, stderr, exception = run(arguments, {variable: value})
    assert code == 2 and isinstance(exception, SystemExit), stderr
    assert len(stderr.splitlines()) == 1
    assert stderr.startswith(f"error: invalid settings: {named}"), stderr


def test_a_settings_file_that_is_not_yaml_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("kafka: [unclosed\n")
    code, stderr, exception = run(["check-config"], {"ABW_CONFIG": str(config)})
    assert code == 2 and isinstance(exception, SystemExit)
    assert len(stderr.splitlines()) == 1
    assert stderr.startswith(f"error: invalid settings: the settings file {config} is not valid YAML: "), stderr


def test_other_errors_are_not_reported_as_settings_errors(tmp_path: Path) -> None:
    """A missing input file is not a settings problem: the handler leaves it to the command."""
    code, stderr, _ = run(["replay", str(tmp_path / "absent.jsonl"), "--alerts-out", str(tmp_path / "a.jsonl")], {})
    assert code == 2 and "invalid settings" not in stderr and "no such file" in stderr
