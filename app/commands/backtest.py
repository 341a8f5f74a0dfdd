"""``abusewatch backtest``: run a rule set over labelled history before shipping it.

Event ids, prompts and rule names in the history are attacker-controlled, so they are printed without Rich markup
and with terminal control characters made visible; the JSON report (``--out``) is written before anything is
printed. The printed report goes to stdout (``> report.txt``, a pipe); progress, warnings and errors to stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from app.backtest import (
    DeadLetters,
    LabelsError,
    diff,
    history_batches,
    load_labels,
    report,
    run_backtest,
)
from app.commands.exceptions import exit_on_bad_exceptions
from app.commands.replay import bytes_progress, warn_if_masks_unsafe
from app.engine import build_engine, build_exceptions, build_grouper, build_history
from app.files import ensure_readable, ensure_writable
from app.gc_policy import tune_garbage_collector
from app.neighbour_times import NeighbourTimes
from app.replay import STDIN
from app.settings import Settings, load_settings
from app.terminal import terminal_safe
from detectors.partitioned import PartitionedPipeline
from detectors.pipeline import Pipeline
from detectors.redact import Redactor
from detectors.signatures.detector import SignatureDetector
from detectors.signatures.ruleset import RuleSet, default_directories

console = Console(stderr=True, markup=False, highlight=False)  # progress, warnings, errors
stdout = Console(markup=False, highlight=False)  # the report, for `> report.txt` and pipes
EXAMPLE_CHARS = 100
RULE_NAME_CHARS = 60


def register(cli: typer.Typer) -> None:
    cli.command("backtest")(backtest_command)


def backtest_command(
    rules: list[Path] = typer.Option(None, "--rules", help="Rule directories to test (repeatable)."),
    inputs: list[str] = typer.Option(..., "--input", help="JSONL history in any supported format (repeatable)."),
    labels_path: Path | None = typer.Option(None, "--labels", help="Labels: event id -> category (or benign)."),
    baseline: list[Path] = typer.Option(None, "--baseline", help="Rule directories of the current set, to diff."),
    builtin: bool = typer.Option(False, "--builtin/--no-builtin", help="Add the built-in pack to --rules."),
    engine: bool = typer.Option(
        False,
        "--engine",
        help="Run the whole engine (all tiers, campaigns) as replay does, not only rules; with --rules / --builtin "
        "its signature tier runs those rules instead of the configured ones, and so does the --baseline engine.",
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the report as JSON."),
) -> None:
    """Replay INPUT through a rule set; report per-rule precision, recall per category, volume and a diff."""
    ensure_readable(inputs, "--input")
    if baseline and STDIN in inputs:
        raise typer.BadParameter("standard input can be read once: give files with --baseline", param_hint="--input")
    settings = load_settings()
    ensure_writable(out)
    warn_if_masks_unsafe(settings, console)
    try:
        labels = load_labels(labels_path) if labels_path else None
    except LabelsError as error:
        raise typer.BadParameter(str(error), param_hint="--labels") from None
    build = _engine_pipeline if engine else _rules_pipeline
    with exit_on_bad_exceptions():
        candidate = build(rules or [], builtin, settings)
    tune_garbage_collector(settings.worker.gc_young_threshold)
    dead_letters, times = DeadLetters(), NeighbourTimes(settings.detection.max_future_seconds)
    with bytes_progress(console, inputs, "backtest", passes=2 if baseline else 1) as advance:
        batches = history_batches(inputs, settings, dead_letters, labels, advance, times)
        result, seen = run_backtest(batches, candidate, labels)
        output = report(result, labels, seen, dead_letters, times)
        if baseline:
            with exit_on_bad_exceptions():
                base_pipeline = build(baseline, False, settings)
            batches = history_batches(inputs, settings, DeadLetters(), None, advance)
            base_result, _ = run_backtest(batches, base_pipeline, labels)
            output["diff"] = diff(base_result, result, labels=labels)
    if out is not None:
        out.write_text(json.dumps(output, indent=2) + "\n")
    _print(output)
    _check_labels(output.get("labels"))


def _rules_pipeline(directories: list[Path], builtin: bool, settings: Settings) -> Pipeline:
    """The signature tier alone, with the configured alert exceptions, alert policy and judged texts."""
    ruleset = _candidate_rules(directories, builtin)
    redactor = Redactor(settings.detection.redaction_key.get_secret_value().encode("utf-8"))
    signatures = SignatureDetector(ruleset, judge_system_messages=settings.detection.judge_system_messages)
    grouper, exceptions = build_grouper(settings), build_exceptions(settings)
    return Pipeline([signatures], redactor, grouper, exceptions, build_history(settings))


def _engine_pipeline(directories: list[Path], builtin: bool, settings: Settings) -> PartitionedPipeline:
    """The engine replay runs; its signature tier runs the candidate rules (``--rules``, plus the built-in pack with
    ``--builtin``) when there are some, else the configured rules, so the report is about the rules passed."""
    if not directories and not builtin:
        return build_engine(settings)
    _candidate_rules(directories, builtin)  # reported and checked here, where the engine's log may not show
    return build_engine(settings, rule_dirs=_candidate_dirs(directories, builtin))


def _candidate_dirs(directories: list[Path], builtin: bool) -> list[Path]:
    return [*(default_directories(None, builtin=True) if builtin else []), *directories]


def _candidate_rules(directories: list[Path], builtin: bool) -> RuleSet:
    ruleset = RuleSet.load(_candidate_dirs(directories, builtin))
    for error in ruleset.errors:
        console.print(Text.assemble(("rule not loaded: ", "yellow"), terminal_safe(error)))
    if not ruleset.rules:
        raise typer.BadParameter("no rules loaded", param_hint="--rules")
    return ruleset


def _check_labels(labels: dict[str, int] | None) -> None:
    """Warn about labels that name no event of the input; end with exit code 1 when none does."""
    if labels is None:
        return
    unmatched = labels["given"] - labels["joined"]
    if labels["joined"] == 0:
        problem = f"none of the {labels['given']} labels names an event of the input" if labels["given"] else "no label"
        console.print(
            Text.assemble(
                ("error: ", "red"),
                f"{problem}, so recall, precision and the false-positive rate mean nothing: labels map event ids "
                "(the records' request ids) to categories",
            )
        )
        raise typer.Exit(1)
    if unmatched:
        console.print(
            Text.assemble(
                ("warning: ", "yellow"),
                f"{unmatched} of {labels['given']} labels name no event of the input "
                f"({labels['in_dead_letters']} found in dead letters, counted as missed if attacks; "
                f"{labels['not_found']} found nowhere)",
            )
        )


def _true_positives(rule: dict[str, Any]) -> str:
    """TP: labelled attacks of any category (a detection of an attack is right), with how many were of another
    category than the rule's: ``5 (2 other)``."""
    if rule["true_positives"] is None:
        return "-"
    other = f" ({rule['off_category']} other)" if rule["off_category"] else ""
    return f"{rule['true_positives']}{other}"


def _print(output: dict[str, Any]) -> None:
    """The report on stdout: per-rule table, dead letters, recall, suppressions and the diff."""
    table = Table(title=Text(f"Backtest: {output['events']} events, {output['events_caught']} caught"))
    for column in ("rule", "category", "events", "TP", "FP", "precision"):
        table.add_column(column)
    for rule in output["rules"]:
        precision = rule["precision"]
        cells = (
            rule["name"][:RULE_NAME_CHARS],
            rule["category"],
            rule["events"],
            _true_positives(rule),
            rule["false_positives"] if rule["false_positives"] is not None else "-",
            f"{precision:.2f}" if precision is not None else "-",
        )
        table.add_row(*(Text(terminal_safe(cell)) for cell in cells))
    stdout.print(table)
    dead = output["dead_letters"]
    if dead["count"]:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in dead["by_reason"].items())
        attacks = f"; {dead['labelled_attacks']} labelled attacks among them" if dead["labelled_attacks"] else ""
        stdout.print(
            Text(terminal_safe(f"Dead letters (records that are no event): {dead['count']} ({reasons}){attacks}"))
        )
    if output["event_times"]["not_believed"]:
        stdout.print(
            f"Event times not believed (far ahead of the records around them): {output['event_times']['not_believed']}"
        )
    if "recall" in output:
        recall = ", ".join(f"{k}: {v:.2f}" for k, v in output["recall"].items() if v is not None)
        stdout.print(Text(terminal_safe(f"Recall by labelled category: {recall or '- (no labelled attack)'}")))
        if output["false_positive_rate"] is not None:
            stdout.print(f"False-positive rate on benign events: {output['false_positive_rate']:.4f}")
    if output["suppressed_alerts"]:
        stdout.print(f"{output['alerts']} alerts; {output['suppressed_alerts']} more suppressed by exceptions")
    for exception_id, counts in output.get("suppressed_by_exception", {}).items():
        hidden = f"{counts['events_hidden']} caught by no other rule"
        if counts["attacks_hidden"] is not None:
            hidden += f" ({counts['attacks_hidden']} labelled attacks hidden, of {counts['attacks_suppressed']})"
        stdout.print(
            Text(terminal_safe(f"Exception {exception_id} suppressed {counts['events_suppressed']} events, {hidden}"))
        )
    if "diff" in output:
        d = output["diff"]
        gained, lost = (
            f" (attacks {d[name + '_attacks']}, benign {d[name + '_benign']})" if d["lost_attacks"] is not None else ""
            for name in ("newly_caught", "lost")
        )
        stdout.print(f"Against the baseline: {d['newly_caught']} events newly caught{gained}, {d['lost']} lost{lost}")
        for label, key in (("newly caught", "newly_caught_examples"), ("lost", "lost_examples")):
            for example in d[key]:
                text = repr(example["text"][:EXAMPLE_CHARS])
                stdout.print(Text(terminal_safe(f"  {label}: {example['event_id']}: {text}")))
