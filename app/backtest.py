"""Backtesting: what a rule set would have alerted on, scored against labels, and how two rule sets differ.

A detection engineer runs a candidate rule set over labelled history before shipping it: per rule, true and false
positives and precision; per category, recall; alert volume per day; and, against a baseline rule set, the events
newly caught and the events lost, with examples. Labels name the attack events (event id -> category); every other
event counts as benign. Detections that an alert exception suppresses never reach the queue, so they count per
exception instead of as caught, and their alerts apart from the alerts: per exception, the events it suppressed
and those it hides (caught by no other, unsuppressed detection), each with how many are labelled attacks.

A labelled attack that never became an event (its record is a dead letter) is an attack missed: the report counts
the labels that name an event of the input, those found in a dead-lettered record and those found nowhere.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, KeysView, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from app.neighbour_times import NeighbourTimes
from app.replay import decoded_lines
from app.settings import Settings
from detectors.documents import iso_time
from detectors.event import Event
from detectors.normalise import DeadLetter
from detectors.normalise.decode import BOM
from detectors.partitioned import PartitionedPipeline
from detectors.pipeline import BatchResult, Pipeline

BENIGN = "benign"
CATEGORY_KEYS = ("category", "expected_category", "label")  # where a label object holds its category
LINE_SUFFIXES = (".jsonl", ".ndjson")


class LabelsError(ValueError):
    """A labels file that cannot be read; the message names the file and, for JSONL, the line."""


def load_labels(path: Path) -> dict[str, str]:
    """Event id -> category (or ``benign``) from a JSON object or JSONL with ``event_id`` and ``category``.

    Values may be a category string or an object with ``category`` / ``expected_category`` / ``label``; ``null``,
    ``false`` and ``""`` mean benign, and any other value is an error. A ``.jsonl`` / ``.ndjson`` file is read as
    lines; another file as one JSON document when it is one (an object of labels, or a single row, which has an
    ``event_id``), else as lines. The simulator's labels (``abusewatch simulate --labels-out``: attacking identity
    -> attack, under ``attackers``) label identities, not events, and are refused. A byte-order mark leading the
    file or a line (files of Windows tools joined with ``cat``) is dropped. Raises :class:`LabelsError`.
    """
    try:
        text = path.read_text(encoding="utf-8").lstrip(BOM).strip()
    except (OSError, UnicodeDecodeError) as error:
        raise LabelsError(f"{path}: cannot read the labels: {error}") from None
    document = None if path.suffix.lower() in LINE_SUFFIXES else _json_document(text)
    if isinstance(document, dict) and isinstance(document.get("attackers"), dict):
        raise LabelsError(
            f"{path}: this is the simulator's labels file (`abusewatch simulate --labels-out`): it labels attacking "
            "identities, not events, and backtest scores events (event id -> category)"
        )
    rows = [document] if isinstance(document, dict) and "event_id" in document else None
    if isinstance(document, dict) and rows is None:
        raw = document.get("events", document)
        if not isinstance(raw, dict):
            raise LabelsError(f"{path}: 'events' must map event ids to categories")
        items: Iterable[tuple[Any, Any]] = raw.items()
    else:
        rows = rows or _json_lines(path, text)
        items = [(row["event_id"], row) for row in rows]
    return {str(event_id): _category(path, str(event_id), value) for event_id, value in items}


def _category(path: Path, event_id: str, value: Any) -> str:
    """One label's category: a string, or a label object's; ``null``, ``false`` and ``""`` are benign."""
    if isinstance(value, dict):
        present = [key for key in CATEGORY_KEYS if key in value]
        if not present:
            raise LabelsError(f"{path}: the label of {event_id!r} has no {' / '.join(CATEGORY_KEYS)}")
        value = next((value[key] for key in present if not _blank(value[key])), None)
    if _blank(value):
        return BENIGN
    if isinstance(value, str):
        return value
    raise LabelsError(
        f"{path}: the label of {event_id!r} is {value!r}: give a category (a string), or null / false for benign"
    )


def _blank(value: Any) -> bool:
    return value is None or value is False or (isinstance(value, str) and not value.strip())


def _json_document(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None  # not one document: lines


def _json_lines(path: Path, text: str) -> list[dict[str, Any]]:
    rows = []
    for number, text_line in enumerate(text.splitlines(), 1):
        line = text_line.lstrip(BOM)
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
class DeadLetters:
    """Records of the input that did not become events, and the labelled event ids found among their values."""

    count: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    labelled: set[str] = field(default_factory=set)

    def add(self, letter: DeadLetter, labels: Mapping[str, str] | None) -> None:
        self.count += 1
        self.by_reason[letter.reason] += 1
        raw = letter.raw_text()
        if labels and raw:
            self.labelled.update(labels.keys() & _values(raw))


def history_batches(
    inputs: list[str],
    settings: Settings,
    dead_letters: DeadLetters,
    labels: Mapping[str, str] | None = None,
    on_progress: Callable[[int], None] | None = None,
    times: NeighbourTimes | None = None,
) -> Iterator[list[Event]]:
    """Batches of ``detection.batch_size`` events from ``inputs``, decoded as replay decodes them; their dead
    letters go to ``dead_letters``, with the ids of ``labels`` that their records hold. ``on_progress`` gets the
    bytes of each record read. ``times`` judges the event times as replay does (its counts are the report's
    ``event_times``); without it, a judge of its own."""
    detection = settings.detection
    batch: list[Event] = []
    for events, letters, size in decoded_lines(
        inputs,
        max_bytes=detection.max_record_bytes,
        max_text_chars=detection.max_text_chars,
        keep_raw=bool(labels),  # to find labelled ids in the records that did not decode
        times=times if times is not None else NeighbourTimes(detection.max_future_seconds),
    ):
        for letter in letters:
            dead_letters.add(letter, labels)
        batch.extend(events)
        if len(batch) >= detection.batch_size:
            yield batch
            batch = []
        if on_progress is not None:
            on_progress(size)
    if batch:
        yield batch


def _values(raw: str) -> set[str]:
    """The string and integer values of a dead-lettered record; of a record that is not JSON (or was cut), every
    double-quoted string."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return set(raw.split('"')[1::2])
    values: set[str] = set()
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            values.add(node)
        elif isinstance(node, int) and not isinstance(node, bool):
            values.add(str(node))
    return values


@dataclass(slots=True)
class RuleStats:
    rule_id: str
    name: str
    category: str
    events: set[str] = field(default_factory=set)
    true_positives: int = 0  # labelled attacks it caught, of any category (a detection of an attack is right)
    false_positives: int = 0
    off_category: int = 0  # of its true positives, attacks labelled with another category than the rule's
    per_day: Counter[str] = field(default_factory=Counter)

    @property
    def precision(self) -> float | None:
        judged = self.true_positives + self.false_positives
        return self.true_positives / judged if judged else None


@dataclass(slots=True)
class BacktestResult:
    events: int = 0
    days: dict[str, str] = field(default_factory=dict)  # every event id seen -> its day
    rules: dict[str, RuleStats] = field(default_factory=dict)
    caught: set[str] = field(default_factory=set)
    caught_by_category: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    snippets: dict[str, str] = field(default_factory=dict)
    alert_ids: set[str] = field(default_factory=set)  # alerts the queue would get (and of rules in test)
    suppressed_alert_ids: set[str] = field(default_factory=set)
    suppressed: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # exception id -> event ids

    @property
    def alerts(self) -> int:
        return len(self.alert_ids)

    @property
    def suppressed_alerts(self) -> int:
        return len(self.suppressed_alert_ids)

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

    def false_positive_rate(self, labels: dict[str, str], event_ids: Iterable[str]) -> float | None:
        benign = [e for e in event_ids if labels.get(e, BENIGN) == BENIGN]
        return sum(1 for e in benign if e in self.caught) / len(benign) if benign else None


def run_backtest(
    batches: Iterable[list[Event]], pipeline: Pipeline | PartitionedPipeline, labels: Mapping[str, str] | None
) -> tuple[BacktestResult, KeysView[str]]:
    """Run ``pipeline`` over ``batches``, then close its open windows (``flush``) as replay does at the end of its
    input; returns the result and every event id seen. A detection counts every event it names, whichever batch
    the event came in: window tiers (anomaly, correlations, chains, campaigns) close after their events."""
    result = BacktestResult()
    for batch in batches:
        result.events += len(batch)
        for event in batch:
            result.days.setdefault(event.id, sys.intern(_day(event.timestamp)))
        _count(result, pipeline.process(batch))
    _count(result, pipeline.flush())
    if labels is not None:
        for stats in result.rules.values():
            attacks = [labels[e] for e in stats.events if labels.get(e, BENIGN) != BENIGN]
            stats.true_positives = len(attacks)
            stats.false_positives = len(stats.events) - stats.true_positives
            stats.off_category = sum(1 for category in attacks if category != stats.category)
    return result, result.days.keys()


def _count(result: BacktestResult, output: BatchResult) -> None:
    """Add what one batch (or the final flush) produced to ``result``."""
    days = result.days
    for document in output.events:
        gen_ai = document.get("gen_ai", {})
        text = gen_ai.get("prompt") or gen_ai.get("completion") or ""
        result.snippets[document["event"]["id"]] = text[:160]
    for document in [*output.alerts, *output.shadow_alerts]:
        suppressed = "exception" in document.get("abusewatch", {})
        (result.suppressed_alert_ids if suppressed else result.alert_ids).add(document["event"]["id"])
    hidden = {id(detection) for detection, _exception in output.suppressed}
    for detection, exception in output.suppressed:
        result.suppressed[exception.id].update(e for e in detection.event_ids if e in days)
    for detection in output.detections:
        if id(detection) in hidden:
            continue
        rule = detection.rule
        stats = result.rules.setdefault(rule.id, RuleStats(rule.id, rule.name, rule.category))
        for event_id in detection.event_ids:
            day = days.get(event_id)
            if day is None:
                continue  # not an event of the input
            if event_id not in stats.events:
                stats.events.add(event_id)
                stats.per_day[day] += 1
            result.caught.add(event_id)
            result.caught_by_category[rule.category].add(event_id)


def diff(
    baseline: BacktestResult, candidate: BacktestResult, examples: int = 3, labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Events the candidate catches that the baseline did not, and the reverse, with examples; with ``labels``, each
    side split into labelled attacks and benign events (losing benign events is the point of tuning a rule, losing
    attacks is the cost)."""
    gained = sorted(candidate.caught - baseline.caught)
    lost = sorted(baseline.caught - candidate.caught)
    split: dict[str, int | None] = {}
    for name, events in (("newly_caught", gained), ("lost", lost)):
        attacks = sum(1 for e in events if labels.get(e, BENIGN) != BENIGN) if labels is not None else None
        split[f"{name}_attacks"] = attacks
        split[f"{name}_benign"] = None if attacks is None else len(events) - attacks
    return {
        "newly_caught": len(gained),
        "lost": len(lost),
        **split,
        "newly_caught_examples": [{"event_id": e, "text": candidate.snippets.get(e, "")} for e in gained[:examples]],
        "lost_examples": [{"event_id": e, "text": baseline.snippets.get(e, "")} for e in lost[:examples]],
        "rules_added": sorted(set(candidate.rules) - set(baseline.rules)),
        "rules_silent": sorted(set(baseline.rules) - set(candidate.rules)),
    }


def report(
    result: BacktestResult,
    labels: Mapping[str, str] | None,
    seen: Collection[str],
    dead_letters: DeadLetters | None = None,
    times: NeighbourTimes | None = None,
) -> dict[str, Any]:
    """The backtest as a JSON-able report. With ``dead_letters``, their counts; labelled attacks among them count
    as missed. With ``times``, how many event times were not believed or missing (``event_times``). With
    ``labels``, how many were given, name an event seen (``joined``), were found only in dead letters, and were
    found nowhere (``not_found``)."""
    rules = [
        {
            "rule_id": s.rule_id,
            "name": s.name,
            "category": s.category,
            "events": len(s.events),
            "true_positives": s.true_positives if labels is not None else None,
            "off_category": s.off_category if labels is not None else None,
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
    dead = {e for e in dead_letters.labelled if e not in seen} if dead_letters is not None and labels else set()
    if dead_letters is not None:
        out["dead_letters"] = {
            "count": dead_letters.count,
            "by_reason": dict(dead_letters.by_reason.most_common()),
            "labelled_attacks": sum(1 for e in dead if labels[e] != BENIGN) if labels is not None else None,
        }
    if times is not None:
        out["event_times"] = {"not_believed": times.not_believed, "missing": times.missing}
    if labels is not None:
        joined = sum(1 for e in labels if e in seen)
        out["labels"] = {
            "given": len(labels),
            "joined": joined,
            "in_dead_letters": len(dead),
            "not_found": len(labels) - joined - len(dead),
        }
        labelled = {e: labels.get(e, BENIGN) for e in seen}
        out["recall"] = result.recall({**labelled, **{e: labels[e] for e in dead}})  # dead letters: missed
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


def _suppression(suppressed: set[str], hidden: set[str], labels: Mapping[str, str] | None) -> dict[str, int | None]:
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
