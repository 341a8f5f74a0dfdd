"""Input and output files of the CLI commands, checked before the work that reads or fills them."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from app.replay import STDIN


def ensure_readable(names: list[str], param_hint: str) -> None:
    """Each input is stdin (``-``) or a file; otherwise one line saying which and why (a file that cannot be read
    is the command line's one-line file error, app/cli.py)."""
    for name in names:
        if name == STDIN:
            continue
        path = Path(name)
        if path.is_dir():
            raise typer.BadParameter(
                f"{name} is a folder; give the files in it (e.g. {name}/*.jsonl)", param_hint=param_hint
            )
        if not path.is_file():
            raise typer.BadParameter(f"no such file: {name}", param_hint=param_hint)


def ensure_writable(*paths: Path | None) -> None:
    """Create each output's folder and check that the output can be written, without opening it (a named pipe
    would take the open for its reader; a file created now would be left empty if the command stops later), so
    that a wrong path (a folder, a read-only place) stops the command in one line before a long run, instead of in
    a traceback after it, with the results lost. ``None`` (an output not asked for) is skipped."""
    for path in paths:
        if path is None:
            continue
        if path.is_dir():
            raise typer.BadParameter(f"cannot write {path}: Is a directory")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise typer.BadParameter(f"cannot write {path}: {error.strerror or error}") from None
        if not os.access(path if path.exists() else path.parent, os.W_OK):
            raise typer.BadParameter(f"cannot write {path}: Permission denied")
