"""The ``abusewatch`` command line.

Each module in :mod:`app.commands` adds its commands through ``register(cli)``: ``replay.py`` (embedded replay and
the demo), ``rules.py`` (rule tooling), ``stream.py`` (worker, bootstrap, produce), and so on.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pkgutil
import sys

import click
import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from app import commands
from app.settings import describe_settings_error, is_settings_error


class _SettingsErrorsInWords(TyperGroup):
    """The one handler for bad settings (a missing ``ABW_CONFIG`` file, a bad or misspelt variable) in every command:
    one line naming the setting on stderr, exit code 2, no traceback. A file the command cannot read or write (a
    full disk, a path that is a folder) is one line too, exit code 1; ``--verbose`` logs its traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except Exception as error:  # errors load_settings() marked, and file errors; anything else is a bug
            console = Console(stderr=True, soft_wrap=True)
            if is_settings_error(error):
                console.print(Text.assemble(("error: ", "red"), f"invalid settings: {describe_settings_error(error)}"))
                raise typer.Exit(2) from None
            if isinstance(error, BrokenPipeError):  # the reader went away (``| head``): nothing left to say to it
                _silence_stdout()
                raise typer.Exit(141) from None  # as a shell reports SIGPIPE
            if not isinstance(error, OSError) or error.filename is None:  # not a file's (a socket's: a traceback)
                raise
            logging.getLogger(__name__).debug("file error", exc_info=True)
            console.print(Text.assemble(("error: ", "red"), str(error)))
            raise typer.Exit(1) from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's own flush at exit does not fail on the closed pipe again."""
    with contextlib.suppress(OSError, ValueError):  # stdout is not a file (captured in tests)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


cli = typer.Typer(
    cls=_SettingsErrorsInWords,
    name="abusewatch",
    help="LLM Abuse Watch: detect prompt injection, jailbreaks, scraping and data exfiltration in LLM traffic.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@cli.callback()
def _configure(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _register_commands() -> None:
    for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{module_info.name}")
        module.register(cli)


_register_commands()


def main() -> None:
    cli()
