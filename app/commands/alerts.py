"""``abusewatch alerts``: triage from the terminal — list, show, acknowledge and close alerts in Elasticsearch.

Thin over :mod:`app.triage`. Alert text (messages, evidence, prompts) is attacker-controlled, so it is printed
without Rich markup and with terminal control characters made visible.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import typer
from elastic_transport import ApiError, TransportError
from elasticsearch import Elasticsearch
from rich.console import Console
from rich.table import Table
from rich.text import Text

from app import triage
from app.settings import ElasticsearchSettings, load_settings
from app.terminal import clipped, terminal_safe
from detectors.documents import iso_time

alerts_cli = typer.Typer(help="Triage alerts in Elasticsearch: list, show, ack, close.", no_args_is_help=True)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

MESSAGE_WIDTH = 100
RULE_WIDTH = 60
PROMPT_WIDTH = 120
EVENT_ID_WIDTH = 80
ALERT_ID_WIDTH = 32  # detectors.documents.alert_id: 32 hex characters


def register(cli: typer.Typer) -> None:
    cli.add_typer(alerts_cli, name="alerts")


def _get(doc: dict[str, Any], dotted: str, default: Any = "") -> Any:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


@contextmanager
def elasticsearch_session() -> Iterator[tuple[Elasticsearch, ElasticsearchSettings]]:
    """A client from the settings; triage refusals and Elasticsearch failures end the command with exit code 1."""
    settings = load_settings().elasticsearch
    client = triage.connect(settings)
    try:
        yield client, settings
    except triage.TriageError as error:
        err.print(Text(f"error: {error}"))
        raise typer.Exit(1) from None
    except (ApiError, TransportError) as error:
        err.print(Text(f"elasticsearch at {settings.url}: {error}"))
        raise typer.Exit(1) from None
    finally:
        client.close()


def print_json(value: Any) -> None:
    """``value`` as indented, ASCII-escaped JSON on the command's output (attacker text cannot drive a terminal)."""
    out.print(Text(json.dumps(value, indent=2, ensure_ascii=True, default=str)))


def _option_in(choices: tuple[str, ...], name: str) -> Callable[[str | None], str | None]:
    def check(value: str | None) -> str | None:
        if value is not None and value not in choices:
            raise typer.BadParameter(f"choose one of {', '.join(choices)}", param_hint=name)
        return value

    return check


def since_seconds_option(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return triage.parse_duration(value)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--since") from None


@dataclass(frozen=True, slots=True)
class OlderAlerts:
    """Alerts older than a ``--since`` window that held none: how many, and the newest one's epoch seconds."""

    count: int
    newest: float | None


def older_alerts(client: Elasticsearch, index: str, since_seconds: int, rule_id: str | None = None) -> OlderAlerts:
    """The alerts of ``index`` (of ``rule_id`` when given) older than the window (:func:`triage.older_request`):
    asked only when the window was empty, so the usual run costs nothing more."""
    response = client.search(index=index, ignore_unavailable=True, **triage.older_request(since_seconds, rule_id))
    newest = response.get("aggregations", {}).get("newest", {}).get("value")
    count = int(response.get("hits", {}).get("total", {}).get("value", 0))
    return OlderAlerts(count, None if newest is None else float(newest) / 1000)


def older_alerts_note(older: OlderAlerts, since: str, noun: str, now: float) -> str | None:
    """One line for an empty window when older alerts exist: ``--since`` counts in event time (``@timestamp``), so
    replayed or historical traffic lands before it and a bare "0 rules" reads as a broken pipeline. None if none."""
    if not older.count:
        return None
    newest, reach = "unknown", ""
    if older.newest is not None:
        newest = iso_time(older.newest)[:16].replace("T", " ") + " UTC"
        reach = f"; --since {math.ceil((now - older.newest) / 86400) + 1}d reaches the newest"
    return (
        f"{older.count} older {noun} outside --since {since} (newest: {newest}): --since counts in event time "
        f"(@timestamp), which replayed or historical traffic keeps{reach}"
    )


@alerts_cli.command("list")
def list_alerts(
    status: str | None = typer.Option(
        None, "--status", help="open, acknowledged or closed.", callback=_option_in(triage.STATUSES, "--status")
    ),
    severity_min: int | None = typer.Option(None, "--severity-min", min=0, max=100, help="Lowest event.severity."),
    rule_id: str | None = typer.Option(None, "--rule", help="Only this rule id."),
    user_id: str | None = typer.Option(None, "--user", help="Only this user.id."),
    since: str | None = typer.Option(None, "--since", help="Only alerts newer than this, e.g. 24h, 7d."),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="JSON array of alert documents (with their id)."),
) -> None:
    """List alerts, newest first."""
    query = triage.list_query(
        status=status,  # type: ignore[arg-type]
        severity_min=severity_min,
        rule_id=rule_id,
        user_id=user_id,
        since_seconds=since_seconds_option(since),
    )
    with elasticsearch_session() as (client, settings):
        hits = triage.search_alerts(client, settings.alerts_index, query, limit)
    if as_json:
        print_json([{"id": hit["_id"], **hit["_source"]} for hit in hits])
        return
    table = Table(title=f"{len(hits)} alerts in {settings.alerts_index}")
    table.add_column("id", no_wrap=True, min_width=ALERT_ID_WIDTH)  # whole, to copy into show / ack / close
    for column in ("time", "severity", "rule", "identity", "count", "status", "message"):
        fold = "fold" if column in ("time", "identity") else "ellipsis"
        table.add_column(column, justify="right" if column in ("severity", "count") else "left", overflow=fold)
    for hit in hits:
        doc = hit["_source"]
        row = (
            hit["_id"],
            _get(doc, "@timestamp"),
            _get(doc, "event.severity"),
            clipped(_get(doc, "rule.name") or _get(doc, "rule.id"), RULE_WIDTH),
            _get(doc, "abusewatch.identity_key"),
            _get(doc, "abusewatch.count"),
            _status(doc),
            clipped(_get(doc, "message"), MESSAGE_WIDTH),
        )
        table.add_row(*(Text(terminal_safe(value)) for value in row))
    out.print(table)


def _status(doc: dict[str, Any]) -> str:
    """The status column: ``open (reopened)`` for an alert the stream reopened after triage (its severity rose)."""
    status = str(_get(doc, triage.STATUS_FIELD))
    return f"{status} (reopened)" if status == "open" and _get(doc, "abusewatch.triage.reopened_because") else status


@alerts_cli.command("show")
def show_alert(
    alert_id: str = typer.Argument(..., help="The alert id (event.id)."),
    as_json: bool = typer.Option(False, "--json", help='{"alert": ..., "events": [...], "linked": [...]} as JSON.'),
) -> None:
    """The whole alert (evidence, event ids, triage) and the events it links to, nearest the alert in time."""
    with elasticsearch_session() as (client, settings):
        hit = triage.get_alert(client, settings.alerts_index, alert_id)
        event_ids = triage.alert_event_ids(hit["_source"])
        window = triage.alert_window(hit["_source"])
        linked = triage.linked_events(client, settings.events_index, event_ids, window)
    alert = {"id": hit["_id"], **hit["_source"]}
    if as_json:
        print_json(
            {
                "alert": alert,
                "events": [event_json(event) for event in triage.oldest_first(linked)],
                "linked": [
                    {"event_id": item.event_id, "documents": item.total, "shown": len(item.shown)} for item in linked
                ],
            }
        )
        return
    print_json(alert)
    out.print(linked_events_table(linked, len(event_ids), settings.events_index))


def event_json(hit: dict[str, Any]) -> dict[str, Any]:
    """An enriched event as ``show --json`` prints it: ``id`` is its ``event.id``, ``hash`` its document id."""
    return {"id": _get(hit["_source"], "event.id", None), "hash": hit["_id"], **hit["_source"]}


def linked_events_table(linked: list[triage.LinkedEvent], expected: int, index: str) -> Table:
    """The linked events, oldest first, titled with how many ids were found; a caption names every id with more
    documents than shown (a client reusing a request id), so a partial view never passes for the whole."""
    found = sum(1 for item in linked if item.total)
    title = f"Linked events: {found} of {expected} found in {index}"
    crowded = [item for item in linked if item.hidden]
    if crowded:
        shown, total = sum(len(item.shown) for item in linked), sum(item.total for item in linked)
        title += f" ({shown} of {total} documents shown)"
    notes = [
        f"{item.total} documents share event id {clipped(item.event_id, EVENT_ID_WIDTH)}; "
        f"showing the {len(item.shown)} nearest the alert"
        for item in crowded
    ]
    table = Table(title=Text(title), caption=Text("\n".join(notes)) if notes else None)
    for column in ("time", "event id", "model", "service", "rules", "prompt"):
        table.add_column(column)
    for event in triage.oldest_first(linked):
        doc = event["_source"]
        row = (
            _get(doc, "@timestamp"),
            _get(doc, "event.id"),
            _get(doc, "gen_ai.request.model"),
            _get(doc, "service.name"),
            ", ".join(_get(doc, "abusewatch.rule_ids", [])),
            clipped(_get(doc, "gen_ai.prompt"), PROMPT_WIDTH),
        )
        table.add_row(*(Text(terminal_safe(value)) for value in row))
    return table


@alerts_cli.command("ack")
def ack_alerts(
    alert_ids: list[str] = typer.Argument(..., help="Alert ids."),
    by: str | None = typer.Option(None, "--by", help="Analyst name (default: $USER)."),
) -> None:
    """Acknowledge alerts: someone is on it."""
    with elasticsearch_session() as (client, settings):
        triage.set_status(client, settings.alerts_index, alert_ids, "acknowledged", by=by or triage.current_user())
    out.print(Text(f"acknowledged {len(set(alert_ids))} alert(s)"))


@alerts_cli.command("close")
def close_alerts(
    alert_ids: list[str] = typer.Argument(..., help="Alert ids."),
    reason: str = typer.Option(
        ...,
        "--reason",
        help="true_positive, false_positive or benign_positive.",
        callback=_option_in(triage.REASONS, "--reason"),
    ),
    by: str | None = typer.Option(None, "--by", help="Analyst name (default: $USER)."),
    note: str | None = typer.Option(None, "--note", help="Why, for whoever tunes the rule."),
) -> None:
    """Close alerts with a verdict; the verdicts feed 'abusewatch rules stats'."""
    with elasticsearch_session() as (client, settings):
        changes = triage.set_status(
            client,
            settings.alerts_index,
            alert_ids,
            "closed",
            by=by or triage.current_user(),
            reason=reason,  # type: ignore[arg-type]
            note=note,
        )
    out.print(Text(f"closed {len(changes)} alert(s) as {reason}"))
    for change in changes:
        if change.replaced:
            out.print(Text(f"  {change.alert_id}: replaced the verdict it had ({change.replaced})"))
