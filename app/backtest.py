"""Backtesting: what a rule set would have alerted on, scored against labels, and how two rule sets differ.

A detection engineer runs a candidate rule set over labelled history before shipping it: per rule, true and false
positives and precision; per category, recall; alert volume per day; and, against a baseline rule set, the events
newly caught and the events lost, with examples. Labels name the attack events (event id -> category); every other
event counts as benign. Detections that an alert exception suppresses never reach the queue, so they count per
exception instead of as caught, and their alerts apart from the alerts: per exception, the events it suppressed
and those it hides (caught by no other, unsuppressed detection), each with how many are labelled attacks.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectors.documents import iso_time
from detectors.event import Event
from detectors.pipeline import Pipeline

BENIGN = "benign"


class LabelsError(ValueError):
    """A labels file that cannot be read; the message names the file and, for JSONL, the line."""


LINE_SUFFIXES = (".jsonl", ".ndjson")


def load_labels(path: Path) -> dict[str, str]:
    """Event id -> category (or ``benign``) from a JSON object or JSONL with ``event_id`` and ``category``.

    Values may be a category string or an object with ``category`` / ``expected_category`` / ``label``. A
    ``.jsonl`` / ``.ndjson`` file is read as lines; another file as one JSON document when it is one (an object of
    labels, or a single row, which has an ``event_id``), else as lines. Raises :class:`LabelsError`.
    """
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise LabelsError(f"{path}: cannot read the labels: {error}") from None
    document = None if path.suffix.lower() in LINE_SUFFIXES else _json_document(text)
    rows = [document] if isinstance(document, dict) and "event_id" in document else None
    if isinstance(document, dict) and rows is None:
        raw = document.get("events", document)
        if not isinstance(raw, dict):
            raise LabelsError(f"{path}: 'events' must map event ids to categories")
        items: Iterable[tuple[str, Any]] = raw.items()
    else:
        rows = rows or _json_lines(path, text)
        items = [(row["event_id"], row) for row in rows]
    labels = {}
    for event_id, value in items:
        if isinstance(value, dict):
            category = value.get("category") or value.get("expected_category") or value.get("label") or BENIGN
        else:
            category = value
        labels[str(event_id)] = str(category)
    return labels


def _json_document(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None  # not one document: lines


def _json_lines(path: Path, text: str) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            raise LabelsError(f"{path}:{number}: not JSON: {error}") from None
        if not isinstance(row, dict) or "event_id" not in row:
            raise LabelsError(f"{path}:{number}: a labels line is an object with 'event_id' and 'category'")
        rows.append(row)
    return rows


@dataclass(slots=True)
class RuleStats:
    rule_id: str
    name: str
    category: str
    events: set[str] = field(default_factory=set)
    true_positives: int = 0
    false_positives: int = 0
    per_day: Counter[str] = field(default_factory=Counter)

    @property
    def precision(self) -> float | None:
        judged = self.true_positives + self.false_positives
        return self.true_positives / judged if judged else None


@dataclass(slots=True)
class BacktestResult:
    events: int = 0
    rules: dict[str, RuleStats] = field(default_factory=dict)
    caught: set[str] = field(default_factory=set)
    caught_by_category: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    snippets: dict[str, str] = field(default_factory=dict)
    alerts: int = 0  # alert documents the queue would get (and alerts of rules in test), suppressed ones apart
    suppressed_alerts: int = 0
    suppressed: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # exception id -> event ids

    def recall(self, labels: dict[str, str]) -> dict[str, float | None]:
        """Per labelled category: the share of its events that a rule of ANY category caught; plus ``all``."""
        by_category: dict[str, list[str]] = defaultdict(list)
        for event_id, category in labels.items():
            if category != BENIGN:
                by_category[category].append(event_id)
        recall: dict[str, float | None] = {
            category: sum(1 for e in ids if e in self.caught) / len(ids)
            for category, ids in sorted(by_category.items())
        }
        attacks = [e for ids in by_category.values() for e in ids]
        recall["all"] = sum(1 for e in attacks if e in self.caught) / len(attacks) if attacks else None
        return recall

    def false_positive_rate(self, labels: dict[str, str], event_ids: set[str]) -> float | None:
        benign = [e for e in event_ids if labels.get(e, BENIGN) == BENIGN]
        return sum(1 for e in benign if e in self.caught) / len(benign) if benign else None


def run_backtest(
    batches: Iterable[list[Event]], pipeline: Pipeline, labels: dict[str, str] | None
) -> tuple[BacktestResult, set[str]]:
    """Run ``pipeline`` over ``batches``; returns the result and every event id seen."""
    result = BacktestResult()
    seen: set[str] = set()
    alert_ids: set[str] = set()
    suppressed_alert_ids: set[str] = set()
    for batch in batches:
        output = pipeline.process(batch)
        result.events += len(batch)
        seen.update(event.id for event in batch)
        day_of = {event.id: _day(event.timestamp) for event in batch}
        for document in output.events:
            gen_ai = document.get("gen_ai", {})
            text = gen_ai.get("prompt") or gen_ai.get("completion") or ""
            result.snippets[document["event"]["id"]] = text[:160]
        for document in [*output.alerts, *output.shadow_alerts]:
            suppressed = "exception" in document.get("abusewatch", {})
            (suppressed_alert_ids if suppressed else alert_ids).add(document["event"]["id"])
        hidden = {id(detection) for detection, _exception in output.suppressed}
        for detection, exception in output.suppressed:
            result.suppressed[exception.id].update(e for e in detection.event_ids if e in day_of)
        for detection in output.detections:
            if id(detection) in hidden:
                continue
            rule = detection.rule
            stats = result.rules.setdefault(rule.id, RuleStats(rule.id, rule.name, rule.category))
            for event_id in detection.event_ids:
                if event_id not in day_of:
                    continue  # stateful detections may name events of earlier batches; counted there
                if event_id not in stats.events:
                    stats.events.add(event_id)
                    stats.per_day[day_of[event_id]] += 1
                result.caught.add(event_id)
                result.caught_by_category[rule.category].add(event_id)
    result.alerts = len(alert_ids)
    result.suppressed_alerts = len(suppressed_alert_ids)
    if labels is not None:
        for stats in result.rules.values():
            stats.true_positives = sum(1 for e in stats.events if labels.get(e, BENIGN) != BENIGN)
            stats.false_positives = len(stats.events) - stats.true_positives
    return result, seen


def diff(baseline: BacktestResult, candidate: BacktestResult, examples: int = 3) -> dict[str, Any]:
    """Events the candidate catches that the baseline did not, and the reverse, with examples."""
    gained = sorted(candidate.caught - baseline.caught)
    lost = sorted(baseline.caught - candidate.caught)
    return {
        "newly_caught": len(gained),
        "lost": len(lost),
        "newly_caught_examples": [{"event_id": e, "text": candidate.snippets.get(e, "")} for e in gained[:examples]],
        "lost_examples": [{"event_id": e, "text": baseline.snippets.get(e, "")} for e in lost[:examples]],
        "rules_added": sorted(set(candidate.rules) - set(baseline.rules)),
        "rules_silent": sorted(set(baseline.rules) - set(candidate.rules)),
    }


def report(result: BacktestResult, labels: dict[str, str] | None, seen: set[str]) -> dict[str, Any]:
    """The backtest as a JSON-able report."""
    rules = [
        {
            "rule_id": s.rule_id,
            "name": s.name,
            "category": s.category,
            "events": len(s.events),
            "true_positives": s.true_positives if labels is not None else None,
            "false_positives": s.false_positives if labels is not None else None,
            "precision": s.precision if labels is not None else None,
            "per_day": dict(sorted(s.per_day.items())),
        }
        for s in sorted(result.rules.values(), key=lambda s: (-len(s.events), s.name))
    ]
    out: dict[str, Any] = {
        "events": result.events,
        "events_caught": len(result.caught),
        "alerts": result.alerts,
        "suppressed_alerts": result.suppressed_alerts,
    }
    if labels is not None:
        labelled = {e: labels.get(e, BENIGN) for e in seen}
        out["recall"] = result.recall(labelled)
        out["false_positive_rate"] = result.false_positive_rate(labelled, seen)
        judged = sum(1 for e in result.caught if labelled.get(e, BENIGN) != BENIGN)
        out["precision"] = judged / len(result.caught) if result.caught else None
    out["rules"] = rules
    if result.suppressed:
        out["suppressed_by_exception"] = {
            exception_id: _suppression(events, events - result.caught, labels)
            for exception_id, events in sorted(result.suppressed.items())
        }
    return out


def _suppression(suppressed: set[str], hidden: set[str], labels: dict[str, str] | None) -> dict[str, int | None]:
    """What one exception kept from the queue: every event it suppressed, and those no other detection caught."""

    def attacks(events: set[str]) -> int | None:
        return sum(1 for e in events if labels.get(e, BENIGN) != BENIGN) if labels is not None else None

    return {
        "events_suppressed": len(suppressed),
        "events_hidden": len(hidden),
        "attacks_suppressed": attacks(suppressed),
        "attacks_hidden": attacks(hidden),
    }


def _day(epoch: float) -> str:
    return iso_time(epoch)[:10]
