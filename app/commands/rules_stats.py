"""``abusewatch rules stats``: each rule's precision from the analysts' verdicts, flagging rules under the bar.

Adds ``stats`` to the ``rules`` group that :mod:`app.commands.rules` registers (modules register in alphabetical
order, so it exists by the time this one runs).
"""

from __future__ import annotations

import json
import time

import typer
from rich.table import Table
from rich.text import Text

from app import triage
from app.commands.alerts import elasticsearch_session, err, older_alerts, older_alerts_note, out, since_seconds_option
from app.commands.rules import add_rules_command

DEFAULT_MIN_PRECISION = 0.8


def register(cli: typer.Typer) -> None:
    add_rules_command(cli, "stats", rule_stats_command)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}s"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def rule_stats_command(
    since: str = typer.Option("30d", "--since", help="Alerts newer than this, e.g. 30d, 12w."),
    min_precision: float = typer.Option(
        DEFAULT_MIN_PRECISION, "--min-precision", min=0.0, max=1.0, help="Flag rules whose precision is under this."
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON array, one object per rule."),
) -> None:
    """Per rule: alerts, triaged share, TP / BP / FP, precision = (TP + BP) / (TP + BP + FP), median time to triage.

    Exits 0 even when rules are flagged; flagged rules are marked in the table and carry "flagged": true in JSON. An
    empty window says how many older alerts there are: --since counts in event time, and replayed history keeps its own.
    """
    since_seconds = since_seconds_option(since)
    with elasticsearch_session() as (client, settings):
        response = triage.search(client, settings.alerts_index, **triage.stats_request(since_seconds))
        stats = triage.rule_stats(response, min_precision)
        older = None if stats or since_seconds is None else older_alerts(client, settings.alerts_index, since_seconds)
    note = older_alerts_note(older, since, "alerts", time.time()) if older else None
    if as_json:
        out.print(Text(json.dumps([row.as_dict() for row in stats], indent=2)))
        if note:
            err.print(Text(note))  # not in the JSON on stdout
        return
    table = Table(title=f"Rule precision from verdicts, last {since} ({settings.alerts_index})")
    for column in ("rule", "name", "alerts", "triaged", "TP", "BP", "FP", "precision", "median to triage", "flag"):
        table.add_column(column, justify="left" if column in ("rule", "name", "flag") else "right")
    for row in stats:
        cells = (
            row.rule_id,
            row.rule_name,
            str(row.alerts),
            _share(row.triaged_share),
            str(row.true_positives),
            str(row.benign_positives),
            str(row.false_positives),
            _share(row.precision),
            _seconds(row.median_time_to_triage_seconds),
            f"under {min_precision:.0%}" if row.flagged else "",
        )
        table.add_row(*(Text(cell) for cell in cells))
    out.print(table)
    flagged = [row.rule_id for row in stats if row.flagged]
    overall = triage.overall_precision(stats)
    out.print(
        Text(
            f"{len(stats)} rules, overall precision {_share(overall)}, "
            f"{len(flagged)} under {min_precision:.0%}: {', '.join(flagged) or 'none'}"
        )
    )
    if note:
        out.print(Text(note))
