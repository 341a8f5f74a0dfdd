"""Every command's help reads as plain text: docstrings shown as help carry no reST markup (``literal``, :func:)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import typer
from typer.testing import CliRunner

from app.cli import cli

REST_MARKUP = re.compile(r"``|:(?:func|mod|class|meth|attr|data):`")


def commands(command: Any, path: tuple[str, ...] = ("abusewatch",)) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Each command and group under ``command``, with its words on the command line."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


def test_no_help_text_carries_rest_markup() -> None:
    found = [
        (" ".join(path), text)
        for path, command in commands(typer.main.get_command(cli))
        for text in [command.help or "", *(getattr(param, "help", None) or "" for param in command.params)]
        if REST_MARKUP.search(text)
    ]
    assert found == []


def test_alerts_close_help_names_rules_stats_plainly() -> None:
    result = CliRunner().invoke(cli, ["alerts", "close", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "the verdicts feed 'abusewatch rules stats'" in result.stdout
