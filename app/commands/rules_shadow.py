"""``abusewatch rules shadow``: per rule, what it wrote to the shadow alerts: the evidence to promote (or drop) a rule
in ``test`` status, and what alert exceptions hide.

Adds ``shadow`` to the ``rules`` group that :mod:`app.commands.rules` registers (modules register in alphabetical
order, so it exists by the time this one runs). Identity keys and exception ids are shown terminal-safe: a user id is
the client's choice.
"""

from __future__ import annotations

import time

import typer
from rich.table import Table
from rich.text import Text

from app import triage
from app.commands.alerts import (
    elasticsearch_session,
    err,
    older_alerts,
    older_alerts_note,
    out,
    print_json,
    since_seconds_option,
)
from app.commands.rules import add_rules_command
from app.terminal import clipped, terminal_safe

IDENTITY_WIDTH = 48
EXCEPTION_WIDTH = 48


def register(cli: typer.Typer) -> None:
    add_rules_command(cli, "shadow", rule_shadow_command)


def _minute(timestamp: str | None) -> str:
    """``2026-11-23T02:00:00.000Z`` -> ``2026-11-23 02:00`` (UTC)."""
    return "-" if timestamp is None else timestamp[:16].replace("T", " ")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _counts(counts: list[tuple[str, int]], width: int, other: int = 0) -> str:
    """``key (n), key (n)``, each key clipped and terminal-safe; ``other`` alerts of unlisted keys at the end."""
    parts = [f"{clipped(key, width)} ({count})" for key, count in counts]
    if other:
        parts.append(f"others ({other})")
    return ", ".join(parts) or "-"


def rule_shadow_command(
    since: str = typer.Option("7d", "--since", help="Alerts newer than this, e.g. 7d, 36h."),
    rule_id: str | None = typer.Option(None, "--rule", help="Only this rule id."),
    as_json: bool = typer.Option(False, "--json", help="JSON array, one object per rule."),
) -> None:
    """Per rule with shadow alerts: how many and why (rule in test, or which exception), distinct identities, users,
    API keys and source IPs, alerts per day, first and last seen, top identities, and its alerts in the queue.

    One aggregation over the shadow alerts and the alerts indices; a missing index counts as empty. An empty window
    says how many older shadow alerts there are: --since counts in event time, and replayed history keeps its own.
    """
    since_seconds = since_seconds_option(since)
    with elasticsearch_session() as (client, settings):
        shadow_index, alerts_index = settings.shadow_alerts_index, settings.alerts_index
        response = client.search(
            index=f"{shadow_index},{alerts_index}",
            ignore_unavailable=True,
            **triage.shadow_request(since_seconds, shadow_index, alerts_index, rule_id),
        )
        stats = triage.shadow_stats(response, since_seconds)
        older = None if stats or since_seconds is None else older_alerts(client, shadow_index, since_seconds, rule_id)
    note = older_alerts_note(older, since, "shadow alerts", time.time()) if older else None
    if as_json:
        print_json([row.as_dict() for row in stats])
        if note:
            err.print(Text(note))  # not in the JSON on stdout
        return
    table = Table(title=Text(f"Shadow alerts per rule, last {since} ({shadow_index}; queue: {alerts_index})"))
    table.add_column("rule", overflow="fold")  # whole, to pass to --rule
    for column in ("shadow", "test", "exception", "identities", "users", "keys", "IPs", "/day", "peak", "queue"):
        table.add_column(column, justify="right", no_wrap=True)
    details = Table(title=Text("Seen, top identities and exceptions"))
    for column in ("rule", "name", "first seen", "last seen", "top identities", "exceptions", "related users"):
        details.add_column(column, justify="right" if column == "related users" else "left", overflow="fold")
    for row in stats:
        cells = (
            row.rule_id,
            row.shadow_alerts,
            row.in_test,
            row.suppressed,
            row.identities,
            row.users,
            row.api_keys,
            row.source_ips,
            _rate(row.alerts_per_day),
            row.peak_day,
            row.queue_alerts,
        )
        table.add_row(*(Text(terminal_safe(cell)) for cell in cells))
        details.add_row(
            Text(terminal_safe(row.rule_id)),
            Text(terminal_safe(row.rule_name)),
            Text(_minute(row.first_seen)),
            Text(_minute(row.last_seen)),
            Text(_counts(row.top_identities, IDENTITY_WIDTH)),
            Text(_counts(list(row.exceptions.items()), EXCEPTION_WIDTH, row.other_exceptions)),
            Text(str(row.related_users)),
        )
    out.print(table)
    if stats:
        out.print(details)
    in_queue = [terminal_safe(row.rule_id) for row in stats if row.queue_alerts]
    out.print(
        Text(
            f"{len(stats)} rules, {sum(row.shadow_alerts for row in stats)} shadow alerts "
            f"({sum(row.in_test for row in stats)} of rules in test, "
            f"{sum(row.suppressed for row in stats)} suppressed by exceptions); "
            f"also in the queue: {', '.join(in_queue) or 'none'}"
        )
    )
    if note:
        out.print(Text(note))
