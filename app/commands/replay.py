"""``abusewatch replay`` and ``abusewatch demo``: the pipeline over files, in-process.

The summary (and the demo's top alerts) goes to stdout, for a file or a pipe; progress, warnings and errors to stderr.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

from app.commands.exceptions import exit_on_bad_exceptions
from app.engine import build_engine
from app.files import ensure_readable, ensure_writable
from app.gc_policy import tune_garbage_collector
from app.replay import STDIN, ReplaySummary, merge_by_time, replay
from app.report import render_report
from app.settings import PACKAGE_ROOT, Settings, load_settings, redaction_key_problem
from detectors.normalise.decode import GZIP_MAGIC

SAMPLES_DIR = PACKAGE_ROOT / "samples"
DEMO_OUTPUTS = (
    "samples.jsonl",
    "alerts.jsonl",
    "shadow_alerts.jsonl",
    "events.jsonl",
    "dead_letters.jsonl",
    "summary.json",
    "report.html",
)
console = Console(stderr=True)  # progress, warnings, errors
stdout = Console()  # the summary and top alerts the user asked for: stdout, for a file or a pipe


def warn_if_masks_unsafe(settings: Settings, console: Console) -> None:
    """One warning line when the redaction key is too weak for outputs of real logs (the worker refuses to start)."""
    if problem := redaction_key_problem(settings):
        console.print(
            Text.assemble(("warning: ", "yellow"), f"the outputs' masks are not safe to share: {problem}"),
            soft_wrap=True,
        )


def register(cli: typer.Typer) -> None:
    cli.command("replay")(replay_command)
    cli.command("demo")(demo_command)


def replay_command(
    files: list[str] = typer.Argument(..., help="JSONL files in any supported format; '-' reads stdin."),
    alerts_out: Path = typer.Option(..., "--alerts-out", help="Where alerts go (JSONL)."),
    events_out: Path | None = typer.Option(None, "--events-out", help="Enriched events (JSONL)."),
    dead_letter_out: Path | None = typer.Option(None, "--dead-letter-out", help="Dead letters with reasons."),
    shadow_alerts_out: Path | None = typer.Option(
        None, "--shadow-alerts-out", help="Alerts of status:test rules and suppressed ones."
    ),
    summary_out: Path | None = typer.Option(None, "--summary-out", help="The summary as JSON."),
    report: Path | None = typer.Option(None, "--report", help="A self-contained HTML report."),
    flush: bool = typer.Option(
        True, "--flush/--no-flush", help="Close open detection windows at the end (--no-flush: as a live stream)."
    ),
    partitions: int | None = typer.Option(
        None, "--partitions", min=1, help="Identity partitions, each with its own state (default: kafka.partitions)."
    ),
    config: Path | None = typer.Option(None, "--config", help="Settings file (YAML)."),
) -> None:
    """Run the full detection pipeline over FILES and write alerts, enriched events and dead letters.

    State is kept per identity partition as the stream keeps it, so with the stream's partition count the
    output is what the stream writes for the same records.
    """
    ensure_readable(files, "FILES")
    warn_if_masks_unsafe(load_settings(config), console)  # real logs, maybe shared: say so (demo's are made up)
    ensure_writable(alerts_out, events_out, dead_letter_out, shadow_alerts_out, summary_out, report)
    summary = _run(
        files, alerts_out, events_out, dead_letter_out, shadow_alerts_out, config, flush=flush, partitions=partitions
    )
    _print_summary(summary)
    if summary_out is not None:
        summary_out.write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    if report is not None:
        _write_report(report, alerts_out, summary)


def demo_command(
    out: Path = typer.Option(Path("out/demo"), "--out", help="Folder for alerts, events, dead letters, report."),
) -> None:
    """Replay the bundled sample traffic (every supported format) and show the alerts: no services needed."""
    files = sorted(str(path) for path in SAMPLES_DIR.glob("*.jsonl"))
    if not files:
        raise typer.Exit(code=_fail(f"no sample traffic found in {SAMPLES_DIR}"))
    detection = load_settings().detection
    ensure_writable(*(out / name for name in DEMO_OUTPUTS))
    console.print(f"Replaying {len(files)} bundled sample files from {SAMPLES_DIR}, merged by event time ...")
    merged = merge_by_time(
        files, out / "samples.jsonl", max_bytes=detection.max_record_bytes, max_text_chars=detection.max_text_chars
    )
    summary = _run(
        [str(merged)],
        out / "alerts.jsonl",
        out / "events.jsonl",
        out / "dead_letters.jsonl",
        out / "shadow_alerts.jsonl",
        None,
    )
    (out / "summary.json").write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    _write_report(out / "report.html", out / "alerts.jsonl", summary)
    _print_summary(summary)
    _print_alerts(out / "alerts.jsonl")
    stdout.print(f"\nOutputs in {out}/: {', '.join(DEMO_OUTPUTS[1:])} (and samples.jsonl, the input as replayed)")


def _run(
    files: list[str],
    alerts_out: Path,
    events_out: Path | None,
    dead_letter_out: Path | None,
    shadow_alerts_out: Path | None,
    config: Path | None,
    *,
    flush: bool = True,
    partitions: int | None = None,
) -> ReplaySummary:
    settings = load_settings(config)
    with exit_on_bad_exceptions():
        pipeline = build_engine(settings, partitions=partitions)  # loads the exceptions, checked against its rules
    tune_garbage_collector(settings.worker.gc_young_threshold)
    detection = settings.detection
    options = {
        "alerts_out": alerts_out,
        "events_out": events_out,
        "dead_letter_out": dead_letter_out,
        "shadow_alerts_out": shadow_alerts_out,
        "batch_size": detection.batch_size,
        "max_bytes": detection.max_record_bytes,
        "max_text_chars": detection.max_text_chars,
        "keep_raw": detection.keep_raw_dead_letters,
        "flush": flush,
        "dedupe_capacity": settings.worker.dedupe_capacity,
        "max_future_s": detection.max_future_seconds,
    }
    with bytes_progress(console, files, "replay") as advance:
        return replay(files, pipeline, on_progress=advance, **options)


@contextmanager
def bytes_progress(console: Console, inputs: list[str], label: str, passes: int = 1) -> Iterator[Callable[[int], None]]:
    """Progress over the bytes of ``passes`` reads of ``inputs``, yielding what advances it by a number of bytes: a
    bar on a terminal, else (a log, a pipe, CI) a :class:`ProgressLines` line every 15 seconds; from stdin or a gzip
    file, whose inflated size is unknown, lines of what was read."""
    total = None if STDIN in inputs or any(map(_compressed, inputs)) else passes * sum(map(os.path.getsize, inputs))
    if not console.is_terminal or total is None:
        yield ProgressLines(console, label, total)
        return
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda size: progress.advance(task, size)


def _compressed(name: str) -> bool:
    with open(name, "rb") as handle:
        return handle.read(len(GZIP_MAGIC)) == GZIP_MAGIC


class ProgressLines:
    """Progress as one plain line every ``interval`` seconds of ``clock``, where a bar cannot be drawn: read, of how
    much, how fast and how long is left (``replay: 12.0 of 40.0 MB (30 %), 1.2 MB/s, about 23 s left``)."""

    def __init__(
        self,
        console: Console,
        label: str,
        total: int | None,
        interval: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console, self.label, self.total, self.interval, self.clock = console, label, total, interval, clock
        self.done = 0
        self.started = self.last = clock()

    def __call__(self, size: int) -> None:
        self.done += size
        now = self.clock()
        if now - self.last < self.interval:
            return
        self.last = now
        rate = self.done / max(now - self.started, 1e-9)
        line = f"{self.label}: {self.done / 1e6:,.1f}"
        if self.total:
            line += f" of {self.total / 1e6:,.1f} MB ({100 * self.done / self.total:.0f} %)"
        else:
            line += " MB"
        line += f", {rate / 1e6:,.1f} MB/s"
        if self.total and self.total > self.done:
            line += f", about {(self.total - self.done) / rate:,.0f} s left"
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)


def _print_summary(summary: ReplaySummary) -> None:
    """The replay's figures, alerts by rule and severity, dead letters by reason (stdout)."""
    table = Table(title="Replay summary", show_header=False)
    for label, value in (
        ("records read", summary.records),
        ("events", summary.events),
        ("duplicates dropped (records delivered twice)", summary.duplicates),
        ("event times not believed (too far ahead)", summary.times_not_believed),
        ("event times missing (stamped at ingestion)", summary.times_missing),
        ("alerts", summary.alerts),
        ("shadow alerts (status: test rules, exceptions)", summary.shadow_alerts),
        ("detections suppressed by exceptions", summary.suppressed_by_exception.total()),
        ("dead letters", summary.dead_letters),
        ("seconds", f"{summary.seconds:.2f}"),
        ("events/s", f"{summary.events_per_second:,.0f}"),
    ):
        table.add_row(label, str(value))
    stdout.print(table)
    if summary.alerts_by_rule:
        rules = Table(title="Alerts by rule")
        rules.add_column("rule")
        rules.add_column("alerts", justify="right")
        for rule, count in summary.alerts_by_rule.most_common():
            rules.add_row(rule, str(count))
        stdout.print(rules)
    if summary.alerts_by_severity:
        stdout.print(
            "Alerts by severity: "
            + ", ".join(f"{severity}: {count}" for severity, count in sorted(summary.alerts_by_severity.items()))
        )
    if summary.dead_letters_by_reason:
        stdout.print(
            "Dead letters by reason: "
            + ", ".join(f"{reason}: {count}" for reason, count in summary.dead_letters_by_reason.most_common())
        )


def _read_alerts(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _write_report(report: Path, alerts_out: Path, summary: ReplaySummary) -> None:
    report.write_text(render_report(_read_alerts(alerts_out), summary), encoding="utf-8")


def _print_alerts(path: Path, limit: int = 15) -> None:
    """The ``limit`` most severe alerts of ``path`` (the earliest first among equals), on stdout."""
    alerts = _read_alerts(path)
    alerts.sort(key=lambda a: (-a["event"]["severity"], a["@timestamp"]))
    table = Table(title=f"Top alerts ({min(limit, len(alerts))} of {len(alerts)})")
    for column in ("severity", "category", "rule", "identity", "message"):
        table.add_column(column, overflow="fold")
    for alert in alerts[:limit]:
        table.add_row(
            str(alert["event"]["severity"]),
            alert["rule"]["category"],
            alert["rule"]["name"],
            alert["abusewatch"].get("identity_key", ""),
            alert["message"][:100],
        )
    stdout.print(table)


def _fail(message: str) -> int:
    console.print(f"[red]error:[/red] {message}")
    return 2
