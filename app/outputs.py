"""Output files of the CLI commands, checked before the work that fills them."""

from __future__ import annotations

from pathlib import Path

import typer


def ensure_writable(*paths: Path | None) -> None:
    """Create each output's folder and open the output for appending, so that a wrong path (a folder, a read-only
    place) stops the command in one line before a long run, instead of in a traceback after it, with the results
    lost. ``None`` (an output not asked for) is skipped."""
    for path in paths:
        if path is None:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("ab"):
                pass
        except OSError as error:
            raise typer.BadParameter(f"cannot write {path}: {error.strerror or error}") from None
