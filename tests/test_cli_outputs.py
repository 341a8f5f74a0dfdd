"""A wrong output path stops a command in one line before its work, not in a traceback after it (app/files.py);
any other file error is one line too (app/cli.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.files import ensure_writable
from app.settings import PACKAGE_ROOT

SAMPLE = str(PACKAGE_ROOT / "samples" / "openai.jsonl")


def commands(folder: Path, tmp_path: Path) -> dict[str, list[str]]:
    """Each command with an output, that output pointed at an existing folder."""
    alerts = str(tmp_path / "alerts.jsonl")
    return {
        "replay-alerts": ["replay", SAMPLE, "--alerts-out", str(folder), "--events-out", str(tmp_path / "ev.jsonl")],
        "replay-report": ["replay", SAMPLE, "--alerts-out", alerts, "--report", str(folder)],
        "replay-summary": ["replay", SAMPLE, "--alerts-out", alerts, "--summary-out", str(folder)],
        "demo": ["demo", "--out", str(folder.parent)],
        "simulate": ["simulate", "--hours", "1", "--out", str(folder)],
        "simulate-labels": ["simulate", "--hours", "1", "--out", alerts, "--labels-out", str(folder)],
        "backtest": ["backtest", "--builtin", "--input", SAMPLE, "--out", str(folder)],
    }


@pytest.mark.parametrize(
    "name",
    ["replay-alerts", "replay-report", "replay-summary", "demo", "simulate", "simulate-labels", "backtest"],
)
def test_an_output_that_is_a_folder_stops_the_command_before_it_runs(name: str, tmp_path: Path) -> None:
    folder = tmp_path / "out" / ("report.html" if name == "demo" else "taken")
    folder.mkdir(parents=True)  # for the demo: its report's name, taken by a folder
    result = CliRunner().invoke(cli, commands(folder, tmp_path)[name], env={"ABW_CONFIG": "", "COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    assert f"cannot write {folder}" in " ".join(result.stderr.split())
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "ev.jsonl").exists() or (tmp_path / "ev.jsonl").stat().st_size == 0  # nothing was run


def test_a_file_error_during_the_work_is_one_line_and_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device", str(tmp_path / "out.jsonl"))

    monkeypatch.setattr("app.commands.simulate.render_records", full_disk)
    result = CliRunner().invoke(cli, ["simulate", "--hours", "1", "--out", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 1
    assert "No space left on device" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize(
    "arguments",
    [
        ["replay", "{input}", "--alerts-out", "{tmp}/a.jsonl"],
        ["backtest", "--builtin", "--input", "{input}"],
        ["produce", "{input}"],
    ],
    ids=["replay", "backtest", "produce"],
)
@pytest.mark.parametrize("kind", ["folder", "missing"])
def test_an_input_that_is_a_folder_or_missing_is_named_in_one_line(
    arguments: list[str], kind: str, tmp_path: Path
) -> None:
    given = tmp_path / "logs"
    if kind == "folder":
        given.mkdir()
    argv = [a.format(input=given, tmp=tmp_path) for a in arguments]
    result = CliRunner().invoke(cli, argv, env={"ABW_CONFIG": "", "COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    expected = f"{given} is a folder; give the files in it" if kind == "folder" else f"no such file: {given}"
    assert expected in " ".join(result.stderr.split())


def test_the_output_check_opens_nothing_and_creates_no_file(tmp_path: Path) -> None:
    """A file created by the check would be left empty if the command stopped later (a bad exceptions file), and a
    named pipe opened by it would see its reader take that open for the end of the output."""
    output, pipe = tmp_path / "new" / "alerts.jsonl", tmp_path / "pipe"
    os.mkfifo(pipe)
    ensure_writable(output, pipe)  # opening the pipe without a reader would block here
    assert output.parent.is_dir() and not output.exists()
    assert stat.S_ISFIFO(pipe.stat().st_mode)


def test_a_reader_that_goes_away_ends_the_command_quietly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``abusewatch ... | head``: a broken pipe is not an error to report, and not exit code 1."""

    def reader_gone(*_args: object, **_kwargs: object) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("app.commands.simulate.render_records", reader_gone)
    result = CliRunner().invoke(cli, ["simulate", "--hours", "1", "--out", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 141 and result.stderr == ""


def test_an_error_that_is_not_a_files_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only file errors are put in one line: a socket error in a worker is a bug report, traceback and all."""

    def refused(*_args: object, **_kwargs: object) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr("app.commands.simulate.render_records", refused)
    result = CliRunner().invoke(cli, ["simulate", "--hours", "1", "--out", str(tmp_path / "out.jsonl")])
    assert isinstance(result.exception, ConnectionRefusedError)
