"""``abusewatch backtest``: run a rule set over labelled history before shipping it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from app.backtest import LabelsError, diff, load_labels, report, run_backtest
from app.commands.exceptions import exit_on_bad_exceptions
from app.engine import build_exceptions, build_pipeline
from app.replay import decoded_lines
from app.settings import Settings, load_settings
from detectors.event import Event
from detectors.pipeline import Pipeline
from detectors.redact import Redactor
from detectors.signatures.detector import SignatureDetector
from detectors.signatures.ruleset import RuleSet, default_directories

console = Console(stderr=True)


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
        help="Run the whole engine (all tiers), not only rules; with --rules / --builtin its signature tier runs "
        "those rules instead of the configured ones.",
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the report as JSON."),
) -> None:
    """Replay INPUT through a rule set; report per-rule precision, recall per category, volume and a diff."""
    settings = load_settings()
    try:
        labels = load_labels(labels_path) if labels_path else None
    except LabelsError as error:
        raise typer.BadParameter(str(error), param_hint="--labels") from None
    with exit_on_bad_exceptions():
        if engine:
            candidate = _engine_pipeline(rules or [], builtin, settings)
        else:
            candidate = _rules_pipeline(rules or [], builtin, settings)
    result, seen = run_backtest(_batches(inputs, settings), candidate, labels)
    output = report(result, labels, seen)
    if baseline:
        with exit_on_bad_exceptions():
            base_pipeline = _rules_pipeline(baseline, False, settings)
        base_result, _ = run_backtest(_batches(inputs, settings), base_pipeline, labels)
        output["diff"] = diff(base_result, result)
    _print(output)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(output, indent=2) + "\n")


def _rules_pipeline(directories: list[Path], builtin: bool, settings: Settings) -> Pipeline:
    ruleset = _candidate_rules(directories, builtin)
    redactor = Redactor(settings.detection.redaction_key.get_secret_value().encode("utf-8"))
    return Pipeline([SignatureDetector(ruleset)], redactor, exceptions=build_exceptions(settings))


def _engine_pipeline(directories: list[Path], builtin: bool, settings: Settings) -> Pipeline:
    """Every tier; the signature tier runs the candidate rules (``--rules``, plus the built-in pack with
    ``--builtin``) when there are some, else the configured rules, so the report is about the rules passed."""
    if not directories and not builtin:
        return build_pipeline(settings)
    _candidate_rules(directories, builtin)  # reported and checked here, where the engine's log may not show
    return build_pipeline(settings, rule_dirs=_candidate_dirs(directories, builtin))


def _candidate_dirs(directories: list[Path], builtin: bool) -> list[Path]:
    return [*(default_directories(None, builtin=True) if builtin else []), *directories]


def _candidate_rules(directories: list[Path], builtin: bool) -> RuleSet:
    ruleset = RuleSet.load(_candidate_dirs(directories, builtin))
    for error in ruleset.errors:
        console.print(f"[yellow]rule not loaded:[/yellow] {error}")
    if not ruleset.rules:
        raise typer.BadParameter("no rules loaded", param_hint="--rules")
    return ruleset


def _batches(inputs: list[str], settings: Settings) -> Iterator[list[Event]]:
    size = settings.detection.batch_size
    batch: list[Event] = []
    for events, _letters, _size in decoded_lines(
        inputs, max_bytes=settings.detection.max_record_bytes, max_text_chars=settings.detection.max_text_chars
    ):
        batch.extend(events)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _print(output: dict) -> None:
    table = Table(title=f"Backtest: {output['events']} events, {output['events_caught']} caught")
    for column in ("rule", "category", "events", "TP", "FP", "precision"):
        table.add_column(column)
    for rule in output["rules"]:
        precision = rule["precision"]
        table.add_row(
            rule["name"][:60],
            rule["category"],
            str(rule["events"]),
            str(rule["true_positives"] if rule["true_positives"] is not None else "-"),
            str(rule["false_positives"] if rule["false_positives"] is not None else "-"),
            f"{precision:.2f}" if precision is not None else "-",
        )
    console.print(table)
    if "recall" in output:
        recall = ", ".join(f"{k}: {v:.2f}" for k, v in output["recall"].items() if v is not None)
        console.print(f"Recall by labelled category: {recall}")
        if output["false_positive_rate"] is not None:
            console.print(f"False-positive rate on benign events: {output['false_positive_rate']:.4f}")
    if output["suppressed_alerts"]:
        console.print(f"{output['alerts']} alerts; {output['suppressed_alerts']} more suppressed by exceptions")
    for exception_id, counts in output.get("suppressed_by_exception", {}).items():
        hidden = f"{counts['events_hidden']} caught by no other rule"
        if counts["attacks_hidden"] is not None:
            hidden += f" ({counts['attacks_hidden']} labelled attacks hidden, of {counts['attacks_suppressed']})"
        console.print(f"Exception {exception_id} suppressed {counts['events_suppressed']} events, {hidden}")
    if "diff" in output:
        d = output["diff"]
        console.print(f"Against the baseline: {d['newly_caught']} events newly caught, {d['lost']} lost")
        for label, key in (("newly caught", "newly_caught_examples"), ("lost", "lost_examples")):
            for example in d[key]:
                console.print(f"  {label}: {example['event_id']}: {example['text'][:100]!r}")
