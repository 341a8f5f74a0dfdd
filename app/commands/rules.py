"""``abusewatch rules``: lint, test, convert and list signature rules.

Without directories the commands work on the built-in pack plus the ``detection.rules_dir`` setting, the same rules
the workers run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from app.settings import load_settings
from detectors.signatures.convert import BACKENDS, Conversion, convert
from detectors.signatures.ruleset import RuleSet, default_directories

rules_cli = typer.Typer(
    help="Signature rules: lint, test, convert to Elasticsearch queries, list; shadow alerts and triage stats.",
    no_args_is_help=True,
)

# Worded as rules lint words a rule without examples ("abusewatch.tests has no 'match' example").
NO_EXAMPLES = "abusewatch.tests has no 'match' or 'nomatch' example"
NO_EXAMPLES_AT_ALL = "no rule has abusewatch.tests examples"
NO_RULES = "no rules were loaded"
DIRECTORIES = typer.Argument(None, help="Rule files or directories (default: built-in pack + settings rules_dir).")


def _load(directories: list[Path] | None) -> RuleSet:
    if not directories:
        detection = load_settings().detection
        directories = default_directories(detection.rules_dir, builtin=detection.builtin_rules)
    return RuleSet.load(directories)


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


@rules_cli.command("lint")
def lint(directories: list[Path] | None = DIRECTORIES) -> None:
    """Check rules: load errors, pySigma validators and the product's requirements (tags, category, tests). No rule
    to check is an error: a CI step pointed at the wrong folder must not pass."""
    ruleset = _load(directories)
    issues = ruleset.lint()
    out = _out()
    for issue in issues:
        out.print(str(issue), markup=False)
    errors = sum(1 for issue in issues if issue.severity == "error")
    warnings = len(issues) - errors
    if not ruleset.rules:
        out.print(f"error: nothing was linted: {NO_RULES}", markup=False)
        errors += 1
    out.print(f"{len(ruleset.rules)} rules, {errors} errors, {warnings} warnings", markup=False)
    if errors:
        raise typer.Exit(1)


@rules_cli.command("test")
def test(directories: list[Path] | None = DIRECTORIES) -> None:
    """Run every rule's match / nomatch examples. A file that does not load and a rule without examples count as
    failures, and a run in which no example ran fails: a CI step that tested nothing must not pass."""
    ruleset = _load(directories)
    results = ruleset.run_tests()
    out = _out()
    for error in ruleset.errors:
        out.print(f"ERROR {error}", markup=False)
    untested = [rule for rule in ruleset.rules if not rule.tests]
    for rule in untested:
        out.print(f"FAIL {rule.label} [{rule.path}]: {NO_EXAMPLES}", markup=False)
    failed = [result for result in results if not result.passed]
    for result in failed:
        out.print(f"FAIL {result.describe()}", markup=False)
    if not results:
        out.print(f"error: no test case ran: {NO_EXAMPLES_AT_ALL if ruleset.rules else NO_RULES}", markup=False)
    passed = len(results) - len(failed)
    out.print(f"{passed} passed, {len(failed) + len(ruleset.errors) + len(untested)} failed", markup=False)
    if failed or ruleset.errors or untested or not results:
        raise typer.Exit(1)


@rules_cli.command("convert")
def convert_rules(
    directories: list[Path] | None = DIRECTORIES,
    target: str = typer.Option("lucene", "--target", "-t", help=f"Query language: {', '.join(BACKENDS)}."),
    rule_id: str | None = typer.Option(None, "--rule", help="Convert only the rule with this id."),
    output_format: str = typer.Option("default", "--format", help="Backend output format (e.g. kibana_ndjson)."),
) -> None:
    """Convert rules to Elasticsearch queries for hunting in the enriched-event index."""
    if target not in BACKENDS:
        raise typer.BadParameter(f"choose one of {', '.join(BACKENDS)}", param_hint="--target")
    if output_format not in BACKENDS[target].formats:
        formats = ", ".join(BACKENDS[target].formats)
        raise typer.BadParameter(f"{target} writes one of {formats}", param_hint="--format")
    ruleset = _load(directories)
    _report_load_errors(ruleset)  # first: a hunter must not read "no hits" for a rule that was never converted
    rules = [rule for rule in ruleset.rules if rule_id is None or rule.id == rule_id]
    if rule_id is not None and not rules:
        typer.echo(f"no loaded rule has id {rule_id}", err=True)
        raise typer.Exit(1)
    converted = sum(_print_conversion(conversion, target) for conversion in convert(rules, target, output_format))
    if not converted:
        typer.echo(f"no rule converted to {target}", err=True)
    if ruleset.errors or not converted:
        raise typer.Exit(1)


def _report_load_errors(ruleset: RuleSet) -> None:
    """``ERROR <error>`` on stderr for each file that did not load, as ``rules test`` words it; stderr, so the
    queries on stdout stay clean for a pipe."""
    for error in ruleset.errors:
        typer.echo(f"ERROR {error}", err=True)


def _print_conversion(conversion: Conversion, target: str) -> bool:
    """The rule's query (with its approximation notes), or why it has none; whether it had one."""
    typer.echo(f"# {conversion.rule.title} ({conversion.rule.id})")
    if conversion.query is None:
        typer.echo(f"# not convertible to {target}: {conversion.error}")
        return False
    for note in conversion.finds_more:
        typer.echo(f"# approximate, finds more than the engine: {note}")
    for note in conversion.finds_fewer:
        typer.echo(f"# approximate, finds FEWER than the engine: {note}")
    typer.echo(conversion.query)
    return True


@rules_cli.command("list")
def list_rules(directories: list[Path] | None = DIRECTORIES) -> None:
    """List the loaded rules, and the files that failed to load (exit 1 if any did)."""
    ruleset = _load(directories)
    table = Table("id", "title", "level", "category", "status", "file")
    for rule in sorted(ruleset.rules, key=lambda r: (r.category, r.title)):
        cells = (rule.id, rule.title, rule.level, rule.category, rule.status, str(rule.path or ""))
        table.add_row(*(Text(cell) for cell in cells))  # literally: a title may hold "[/]"
    out = _out()
    out.print(table)
    for error in ruleset.errors:
        out.print(f"ERROR {error}", markup=False)
    out.print(f"{len(ruleset.rules)} rules loaded, {len(ruleset.errors)} files with errors", markup=False)
    if ruleset.errors:  # as lint and test: a CI step listing the rules must not pass on a broken file
        raise typer.Exit(1)


def register(cli: typer.Typer) -> None:
    cli.add_typer(rules_cli, name="rules")


def add_rules_command(cli: typer.Typer, name: str, command: Callable[..., None]) -> None:
    """Add ``command`` to the ``rules`` group that :func:`register` made (modules register in alphabetical order, so
    it exists by the time ``rules_*`` modules run)."""
    rules_group = next((group for group in cli.registered_groups if group.name == "rules"), None)
    if rules_group is None or rules_group.typer_instance is None:
        raise RuntimeError("the 'rules' command group is not registered; app/commands/rules.py must register it")
    rules_group.typer_instance.command(name)(command)
