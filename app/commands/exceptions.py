"""``abusewatch exceptions``: check, list and draft alert exceptions (detectors/exceptions.py), and see what each
reaches in Elasticsearch (``reach``, app/reach.py).

``check`` is meant for the CI of the repository that holds the exceptions: it fails on any invalid entry, says how
many known rules each entry covers, and warns of exceptions that have expired or soon will, that expire more than
``--max-days`` ahead, that cover critical rules or every rule, and of rule selectors that match no rule the product
knows (``--strict`` fails on those warnings too, except the expiring-soon and critical-rule ones, which ask for a
look rather than a change). Values in exceptions are often copied from alerts (user ids, user agents), which
attackers control, so everything is printed without Rich markup and with control characters made visible.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import typer
import yaml
from elasticsearch import NotFoundError
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from app import reach
from app.commands.alerts import elasticsearch_session, since_seconds_option
from app.settings import load_settings
from app.terminal import terminal_safe
from app.triage import TriageError, current_user, parse_duration
from detectors.exceptions import (
    AlertException,
    ExceptionEntry,
    ExceptionList,
    ExceptionsError,
    KnownRules,
    RuleScope,
    describe,
    load_exceptions,
)

exceptions_cli = typer.Typer(
    help="Alert exceptions: check, list, draft them, and see what they reach.", no_args_is_help=True
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

SOON_DAYS = 7
MAX_DAYS = 365  # an exception is reviewed at least once a year
CRITICAL = "critical"
SHOWN_RULES = 3  # rules named in a warning; the rest are counted
_SLUG = re.compile(r"[^a-z0-9]+")


def register(cli: typer.Typer) -> None:
    cli.add_typer(exceptions_cli, name="exceptions")


def _now() -> datetime:
    return datetime.now(tz=UTC)


def _today() -> date:
    return _now().date()


@contextmanager
def exit_on_bad_exceptions() -> Iterator[None]:
    """Around anything that loads alert exceptions in a command: an invalid file ends the command with exit code 1
    and every error listed on stderr (file-controlled text, so without markup and terminal-safe), no traceback."""
    try:
        yield
    except ExceptionsError as error:
        for problem in error.errors:
            err.print(Text(f"error: {terminal_safe(problem)}"))
        err.print(Text(f"{len(error.errors)} problem(s): no exception was loaded"))
        raise typer.Exit(1) from None


def _load(path: Path) -> ExceptionList:
    """The exceptions under ``path``; invalid ones end the command (see :func:`exit_on_bad_exceptions`)."""
    with exit_on_bad_exceptions():
        return load_exceptions(path)


def status_of(exception: AlertException, today: date, soon_days: int = SOON_DAYS) -> str:
    """``expired``, ``expires in N days`` (within ``soon_days``) or ``active``."""
    days = (exception.entry.expires - today).days
    if days <= 0:
        return "expired"
    return f"expires in {days} days" if days <= soon_days else "active"


@exceptions_cli.command("check")
def check_command(
    path: Path = typer.Argument(..., help="An exceptions YAML file or a directory of them."),
    within: int = typer.Option(SOON_DAYS, "--within", min=0, help="Warn of exceptions expiring within DAYS."),
    max_days: int = typer.Option(
        MAX_DAYS, "--max-days", min=1, help="Warn of exceptions expiring more than DAYS ahead (--strict fails)."
    ),
    rules_dir: Path | None = typer.Option(
        None, "--rules-dir", help="Rules on top of the built-in pack (default: the detection.rules_dir setting)."
    ),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="Also fail (exit 1) when an exception has expired, expires more than --max-days ahead, covers every "
        "rule without all_rules, names no known rule, or none is found.",
    ),
) -> None:
    """Validate PATH (exit 1 listing every error); list the entries with the number of known rules each covers, and
    warn of expired, expiring and long-lived ones, of those covering critical rules or every rule, and of rule ids,
    globs or categories that match no rule the product knows."""
    exceptions = _load(path)
    today = _today()
    if not exceptions.exceptions:  # a path typo or a wrong suffix would otherwise pass as "all valid"
        out.print(Text(f"warning: no exception found in {terminal_safe(path)} (files: *.yml, *.yaml)"))
        if strict:
            raise typer.Exit(1)
        return
    known, rules, rule_errors = _known_rules(rules_dir)
    long_lived: list[AlertException] = []  # expiring more than max_days ahead
    covering_all: list[AlertException] = []  # every known rule, without all_rules
    covering_critical: list[AlertException] = []
    for exception in exceptions.exceptions:
        status = status_of(exception, today, within)
        covered = exception.covered(rules)
        coverage = f"covers {len(covered)} of {len(rules)} known rules"
        line = f"{exception.id}: {status} ({exception.entry.expires}), {exception.source}; {coverage}"
        out.print(Text(("" if status == "active" else "warning: ") + terminal_safe(line)))
        where = f"{exception.source}: {exception.id}"
        if (exception.entry.expires - today).days > max_days:
            long_lived.append(exception)
            _warn(f"{where}: expires {exception.entry.expires}, more than {max_days} days ahead (--max-days)")
        if len(covered) == len(rules) and not exception.entry.all_rules:
            covering_all.append(exception)
            _warn(f"{where}: covers every known rule: say so with rules: ['*'] and all_rules: true")
        if critical := [f"{rule.name} ({rule.id})" for rule in covered if rule.level == CRITICAL]:
            covering_critical.append(exception)
            _warn(f"{where}: covers {len(critical)} critical rule(s): {_some(critical)}")
    unknown = exceptions.unknown_rule_warnings(known)
    for warning in unknown:
        _warn(warning)
    if unknown and rule_errors:
        out.print(
            Text(
                f"note: {len(rule_errors)} rule file(s) did not load, so their rules count as unknown "
                "(see abusewatch rules lint)"
            )
        )
    expired = exceptions.expired(today)
    out.print(
        Text(
            f"{len(exceptions)} exceptions valid; {len(expired)} expired, "
            f"{len(exceptions.expiring(today, within))} expiring within {within} days, "
            f"{len(long_lived)} expiring more than {max_days} days ahead, "
            f"{len(covering_critical)} covering critical rules, {len(covering_all)} covering every rule, "
            f"{len(unknown)} rule selectors matching no known rule"
        )
    )
    if strict and (expired or long_lived or covering_all or unknown):
        raise typer.Exit(1)


def _warn(message: str) -> None:
    out.print(Text(f"warning: {terminal_safe(message)}"))


def _some(names: list[str]) -> str:
    """The first :data:`SHOWN_RULES` of ``names`` and how many more there are."""
    more = len(names) - SHOWN_RULES
    return ", ".join(names[:SHOWN_RULES]) + (f" and {more} more" if more > 0 else "")


def _known_rules(rules_dir: Path | None) -> tuple[KnownRules, list[RuleScope], list[str]]:
    """The rules the workers would run (the built-in detectors' rules, the entity-risk alerts, and the signature and
    correlation rules of the settings, or of ``rules_dir``), loaded once: as :class:`KnownRules` for the selector
    warnings, each with its category and level, and the errors of the rule files that did not load."""
    from app.engine import _correlation_dirs, _rule_dirs  # the detectors load only when a command needs them
    from detectors.alerting import RISK_RULE_NAMES
    from detectors.catalogue import BUILTIN_RULES, catalogue
    from detectors.correlation import load_correlations
    from detectors.signatures.ruleset import RuleSet

    settings = load_settings()
    if rules_dir is not None:
        settings.detection = settings.detection.model_copy(update={"rules_dir": rules_dir})
    ruleset = RuleSet.load(_rule_dirs(settings))
    correlations, correlation_errors = load_correlations(_correlation_dirs(settings))
    rules = [
        *(RuleScope(rule.id, rule.name, rule.category, rule.level) for rule in BUILTIN_RULES),
        *(RuleScope(rule.id, rule.title, rule.category, rule.level) for rule in ruleset.rules),
        *(RuleScope(c.info.id, c.info.name, c.info.category, c.info.level) for c in correlations),
        *(RuleScope(rule_id, name, "", "high") for rule_id, name in RISK_RULE_NAMES.items()),  # as alerting raises them
    ]
    errors = [*(str(error) for error in ruleset.errors), *correlation_errors]
    return catalogue(ruleset.rules, correlations), rules, errors


@exceptions_cli.command("list")
def list_command(
    path: Path = typer.Argument(..., help="An exceptions YAML file or a directory of them."),
    as_json: bool = typer.Option(False, "--json", help="JSON array of the entries, with status and source file."),
) -> None:
    """List the exceptions under PATH as a table."""
    exceptions = _load(path)
    today = _today()
    if as_json:
        rows = [
            {
                **exception.entry.model_dump(mode="json"),
                "status": status_of(exception, today),
                "source": exception.source,
            }
            for exception in exceptions.exceptions
        ]
        out.print(Text(json.dumps(rows, indent=2, ensure_ascii=True)))
        return
    table = Table(title=Text(f"{len(exceptions)} alert exceptions in {terminal_safe(path)}"))
    for column in ("id", "rules", "match", "expires", "status", "author", "reason"):
        table.add_column(column)
    for exception in exceptions.exceptions:
        entry = exception.entry
        row = (
            entry.id,
            "all rules" if entry.all_rules else ", ".join([*entry.rules, *(f"category {c}" for c in entry.categories)]),
            "; ".join(f"{key} in {', '.join(values)}" for key, values in entry.match.items()),
            entry.expires,
            status_of(exception, today),
            entry.author or "",
            entry.reason,
        )
        table.add_row(*(Text(terminal_safe(value)) for value in row))
    out.print(table)


@exceptions_cli.command("reach")
def reach_command(
    path: Path = typer.Argument(..., help="Exceptions file or directory (as for check)."),
    since: str = typer.Option("30d", "--since", help="Events and alerts newer than this, e.g. 30d, 12w."),
    as_json: bool = typer.Option(False, "--json", help="JSON array, one object per entry."),
) -> None:
    """Per entry, the identities whose recent events its conditions match, and the alerts of its rules they raised
    (in the queue or already suppressed), from Elasticsearch. Warns of an entry that reaches more than one identity:
    drafted from one customer's alert, it would also hide the others' attacks."""
    exceptions = _load(path)
    since_seconds = since_seconds_option(since)
    with elasticsearch_session() as (client, es):
        try:
            found = [
                reach.measure(
                    client,
                    exception,
                    events_index=es.events_index,
                    alert_indices=f"{es.alerts_index},{es.shadow_alerts_index}",
                    since_seconds=since_seconds,
                )
                for exception in exceptions.exceptions
            ]
        except NotFoundError as error:
            raise TriageError(
                f"no events index {es.events_index}: check elasticsearch.events_index (ABW_ELASTICSEARCH__EVENTS_INDEX)"
            ) from error
    if as_json:
        out.print(Text(json.dumps([item.as_dict() for item in found], indent=2, ensure_ascii=True)))
        return
    for item in found:
        for line in _reach_lines(item, since):
            out.print(Text(terminal_safe(line)))


def _reach_lines(item: reach.Reach, since: str) -> list[str]:
    """One entry's reach in words, and a warning when it reaches more than one identity."""
    named = ", ".join(f"{key} ({count})" for key, count in item.top_event_identities)
    more = item.event_identities - len(item.top_event_identities)
    alerts = ", ".join(f"{key} ({count})" for key, count in item.alerts.most_common())
    lines = [
        f"{item.exception.id} ({item.exception.source}), last {since}:",
        f"  events: {item.events} from {item.event_identities} identities"
        + (f": {named}" if named else "")
        + (f" and {more} more" if more > 0 else ""),
        f"  alerts of its rules: {sum(item.alerts.values())}" + (f": {alerts}" if alerts else ""),
    ]
    if item.event_identities > 1:
        lines.append(
            f"warning: {item.exception.id} reaches {item.event_identities} identities: if it was meant for one, add "
            "a condition that names it (user.id, a narrower network)"
        )
    return lines


@exceptions_cli.command("draft")
def draft_command(
    rules: list[str] = typer.Option(None, "--rule", help="Rule id or glob, e.g. abusewatch-anomaly-* (repeatable)."),
    categories: list[str] = typer.Option(None, "--category", help="Every rule of this category (repeatable)."),
    user: str | None = typer.Option(None, "--user", help="The user.id to except."),
    ip: str | None = typer.Option(None, "--ip", help="A source IP, or a network in CIDR form."),
    api_key_hash: str | None = typer.Option(None, "--api-key-hash", help="The abusewatch.api_key_hash to except."),
    trust_client_fields: bool = typer.Option(
        False, "--trust-client-fields", help="Allow --user alone (only if your gateway sets user.id itself)."
    ),
    trust_forwarded_ip: bool = typer.Option(
        False,
        "--trust-forwarded-ip",
        help="Allow --ip alone (only if the proxies in front overwrite X-Forwarded-For, which clients can set).",
    ),
    reason: str = typer.Option(..., "--reason", help="Why these detections are benign (ticket, approval)."),
    expires: str = typer.Option(
        "30d",
        "--expires",
        help="How long it holds at least (30d, 8w, 36h: to the next 00:00 UTC after that), or an ISO date.",
    ),
    author: str | None = typer.Option(None, "--author", help="Who asks for it (default: $USER)."),
) -> None:
    """Print a valid exception entry (YAML) to paste into the exceptions file; its id is derived from its scope."""
    now = _now()
    today = now.date()
    if not rules and not categories:
        raise typer.BadParameter("give --rule and/or --category", param_hint="--rule")
    match: dict[str, list[str]] = {}
    if user:
        match["user.id"] = [user]
    if api_key_hash:
        match["abusewatch.api_key_hash"] = [api_key_hash]
    if ip:
        match["source.ip|cidr" if "/" in ip else "source.ip"] = [ip]
    if not match:
        raise typer.BadParameter("give at least one of --user, --ip, --api-key-hash", param_hint="--user")
    raw: dict[str, Any] = {
        "id": draft_id(rules or [], categories or [], match),
        **({"rules": rules} if rules else {}),
        **({"categories": categories} if categories else {}),
        **({"trust_client_fields": True} if trust_client_fields else {}),
        **({"trust_forwarded_ip": True} if trust_forwarded_ip else {}),
        "match": match,
        "reason": reason,
        "author": author or current_user(),
        "created": today.isoformat(),
        "expires": _expiry(expires, now).isoformat(),
    }
    try:
        ExceptionEntry.model_validate(raw)
    except ValidationError as error:
        for problem in error.errors():
            err.print(Text(f"error: {terminal_safe(describe(problem))}"))
        raise typer.Exit(1) from None
    text = yaml.safe_dump([raw], sort_keys=False, allow_unicode=False, width=1000)
    out.print(
        Text(f"# alert exception drafted {today.isoformat()}: review, then add it to the exceptions file\n{text}")
    )


def draft_id(rules: list[str], categories: list[str], match: dict[str, list[str]]) -> str:
    """A readable, deterministic id: the first rule (or category) and the start of the first value as a slug, plus a
    hash of the whole scope, so the same request always drafts the same id and different ones never collide. The
    rule leads and a value is cut at 16 characters: drafts for one 64-character key hash differ where they are read
    (``rules shadow`` and ``exceptions list`` cut long ids)."""
    scope = json.dumps({"rules": sorted(rules), "categories": sorted(categories), "match": match}, sort_keys=True)
    digest = hashlib.sha256(scope.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    rule = _slug([*rules, *categories][0].removeprefix("abusewatch-"))[:40].strip("-")
    value = _slug(next(iter(match.values()))[0])[:16].strip("-")
    slug = "-".join(part for part in (rule, value) if part)
    return f"{slug}-{digest}" if slug else f"exception-{digest}"


def _slug(text: str) -> str:
    return _SLUG.sub("-", text.lower()).strip("-")


def _expiry(text: str, now: datetime) -> date:
    """An ISO date, or for ``30d`` / ``8w`` / ``36h`` the first date not covered once that long has passed from
    ``now``: an entry stops applying as its ``expires`` date begins (00:00 UTC), so ``36h`` at 19:30 gives the date
    three days on, not two (which held 28.5 h). After today."""
    today = now.date()
    try:
        expires = date.fromisoformat(text)
    except ValueError:
        try:
            end = now + timedelta(seconds=parse_duration(text))
            expires = end.date() if end.time() == time(0) else end.date() + timedelta(days=1)
        except OverflowError:
            raise typer.BadParameter(f"{text!r} is beyond the year 9999", param_hint="--expires") from None
        except ValueError as error:
            raise typer.BadParameter(f"{error}, or an ISO date", param_hint="--expires") from None
    if expires <= today:
        raise typer.BadParameter(f"{expires} is not after today ({today}): it would be expired", param_hint="--expires")
    return expires
