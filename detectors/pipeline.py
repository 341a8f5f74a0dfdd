"""The detection pipeline: events in, enriched event documents and alert documents out.

The same object runs in the Faust workers, in embedded replay and in backtests. It never raises on a bad
event: a detector that fails on a batch is retried event by event, and the failing event is still emitted,
marked with the error, so no data is lost.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from detectors.alerting import AlertGrouper
from detectors.base import LEVELS, Detection, Detector, Evidence, Findings, SensitiveValue
from detectors.documents import event_document, event_document_id, iso_time
from detectors.event import Event
from detectors.exceptions import AlertException, ExceptionList
from detectors.history import KEY_PURPOSE, HistoryLedger
from detectors.redact import Redactor

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BatchResult:
    """What one batch produced. Shadow alerts stay out of the queue: they come from rules in ``status: test`` and
    from detections an alert exception suppresses. ``suppressed`` pairs each suppressed detection (listed in
    ``detections`` too, unless it is an entity-risk alert the alerting stage raised) with its exception."""

    events: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    shadow_alerts: list[dict[str, Any]] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)
    suppressed: list[tuple[Detection, AlertException]] = field(default_factory=list)

    def extend(self, other: BatchResult) -> None:
        """Append what ``other`` produced (e.g. another partition's or chunk's result)."""
        self.events.extend(other.events)
        self.alerts.extend(other.alerts)
        self.shadow_alerts.extend(other.shadow_alerts)
        self.detections.extend(other.detections)
        self.suppressed.extend(other.suppressed)

    def suppressed_counts(self) -> Counter[tuple[str, str]]:
        """Suppressed detections per ``(exception id, rule id)``."""
        return Counter((exception.id, detection.rule.id) for detection, exception in self.suppressed)


class Pipeline:
    """Runs ``detectors`` in order over each batch; later detectors see earlier ones' findings.

    Detections then go through the alert exceptions and the alert grouper (alert hygiene), which keeps state
    across batches too.
    """

    def __init__(
        self,
        detectors: Sequence[Detector],
        redactor: Redactor,
        grouper: AlertGrouper | None = None,
        exceptions: ExceptionList | None = None,
        history: HistoryLedger | None = None,
    ) -> None:
        self.detectors = list(detectors)
        self.redactor = redactor
        self.grouper = grouper or AlertGrouper(redactor)
        self.exceptions = exceptions if exceptions is not None else ExceptionList()
        self.latest_event_time: float | None = None  # the newest time a record gave (not assumed), in the state
        self.history = history if history is not None else HistoryLedger(key=redactor.derive_key(KEY_PURPOSE))

    def process(self, events: Sequence[Event]) -> BatchResult:
        events, turns = self.history.judge(self._with_event_times(events))
        findings = [Findings() for _ in events]
        detections: list[Detection] = []
        runs = distinct_id_runs(events)
        for detector in self.detectors:
            detections.extend(self.run_detector(detector, events, findings, runs))
        result = self.render(events, findings, detections)
        self.history.commit(turns)  # only once the batch went through: a retry judges it the same way
        return result

    def _with_event_times(self, events: Sequence[Event]) -> list[Event]:
        """``events``, each whose time the normaliser assumed (the record had none, or one far in the future) at
        the newest time a record of this pipeline gave so far.

        An assumed time is the wall clock at ingestion: in a replayed day or a backlog it lies far ahead of the
        records around it, and every event-time tier (windows, baselines, correlations, chains) would take it as
        the present and treat all the records that follow as late. Before any record gave a time it stays as is.
        """
        out = []
        for event in events:
            if not event.timestamp_assumed:
                if self.latest_event_time is None or event.timestamp > self.latest_event_time:
                    self.latest_event_time = event.timestamp
                out.append(event)
            elif self.latest_event_time is not None:
                out.append(msgspec.structs.replace(event, timestamp=self.latest_event_time))
            else:
                out.append(event)
        return out

    def run_detector(
        self, detector: Detector, events: list[Event], findings: list[Findings], runs: Sequence[slice]
    ) -> list[Detection]:
        """One tier over the batch; what it raised is recorded on the findings of the event that triggered it.

        The trigger is the last event a detection lists: the event itself for per-event tiers, the arriving event
        for correlations and chains. The other listed events are not marked, since which of them are still in
        the batch depends on batching, and an event's document must not.

        A detection names its events by id, and a client may reuse a request id, so a tier that marks events is run
        over ``runs`` (:func:`distinct_id_runs`, one run unless an id repeats), in order: within a run an id names
        exactly one event, and a run is just a smaller batch, which every tier handles.
        """
        if not detector.marks_events:
            return self._run(detector, events, findings)
        raised: list[Detection] = []
        for run in runs:
            run_raised = self._run(detector, events[run], findings[run])
            index = {events[position].id: position for position in range(run.start, run.stop)}
            for detection in run_raised:
                position = index.get(detection.event_ids[-1]) if detection.event_ids else None
                if position is not None:
                    findings[position].rule_ids.append(detection.rule.id)
                    findings[position].categories.add(detection.rule.category)
            raised.extend(run_raised)
        return raised

    def render(self, events: Sequence[Event], findings: Sequence[Findings], detections: list[Detection]) -> BatchResult:
        """Build the output documents; every document is scrubbed of the batch's sensitive values.

        Alerts of ``status: test`` rules and of detections an exception suppresses go to the shadow alerts. The
        result's ``detections`` are those the tiers raised; the alerts are made after :func:`fold_same_findings`.
        """
        result = BatchResult(detections=detections)
        sensitive_by_event: dict[str, list[SensitiveValue]] = {}
        for event, found in zip(events, findings, strict=True):
            sensitive_by_event.setdefault(event.id, []).extend(found.sensitive)
        for event, found in zip(events, findings, strict=True):
            result.events.append(self._document(event, found))
        grouped = self.grouper.alerts(
            in_arrival_order(fold_same_findings(detections), events),
            sensitive_by_event,
            self.exceptions.match,
            result.suppressed,
        )
        for _detection, document in grouped:
            target = result.shadow_alerts if document["abusewatch"]["shadow"] else result.alerts
            target.append(document)
        return result

    def _document(self, event: Event, found: Findings) -> dict[str, Any]:
        """The enriched event; if rendering fails, a minimal document that says why (the event is never lost)."""
        try:
            return event_document(event, found, self.redactor)
        except Exception as error:
            log.exception("cannot render event %s", event.id)
            minimal = {
                "@timestamp": iso_time(event.timestamp) if math.isfinite(event.timestamp) else None,
                "event": {"id": event.id, "kind": "event", "dataset": f"abusewatch.{event.dataset}"},
                "abusewatch": {"errors": [f"render: {type(error).__name__}: {error}"[:500]]},
            }
            minimal = self.redactor.scrub(minimal, found.sensitive)
            minimal["event"]["hash"] = self._document_id(event)  # after scrubbing, as in event_document
            return minimal

    def _document_id(self, event: Event) -> str:
        """The event's document id; the event id itself if even that cannot be computed (a later record reusing the
        id may then share the document)."""
        try:
            return event_document_id(event, self.redactor)
        except Exception:
            log.exception("cannot compute the document id of event %s", event.id)
            return event.id

    def flush(self, until: float | None = None) -> BatchResult:
        """End of input: alerts from what detectors still hold (e.g. open windows); no event documents."""
        detections: list[Detection] = []
        for detector in self.detectors:
            try:
                detections.extend(detector.flush(until))
            except Exception:
                log.exception("detector %s failed to flush", detector.name)
        return self.render([], [], detections)

    def state(self) -> dict[str, Any]:
        """Everything stateful, for checkpoints: each detector's state and the alert groups."""
        return {
            "detectors": {detector.name: detector.state() for detector in self.detectors},
            "alerting": self.grouper.state(),
            "latest_event_time": self.latest_event_time,
            "history": self.history.state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        for detector in self.detectors:
            detector.load_state(state.get("detectors", {}).get(detector.name, {}))
        self.grouper.load_state(state.get("alerting", {}))
        latest = state.get("latest_event_time")
        self.latest_event_time = float(latest) if latest is not None else None
        self.history.load_state(state.get("history", []))

    def fresh(self) -> Pipeline:
        """The same detectors, configuration and redactor with no state: one pipeline per identity partition.

        Stateless tiers (compiled rule packs, models) are shared, not copied; see :meth:`Detector.fresh`.
        """
        return Pipeline(
            [detector.fresh() for detector in self.detectors],
            self.redactor,
            self.grouper.fresh(),
            self.exceptions,
            self.history.fresh(),
        )

    def _run(self, detector: Detector, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        try:
            return detector.detect(events, findings)
        except Exception:
            log.exception("detector %s failed on a batch of %d; isolating", detector.name, len(events))
        detections: list[Detection] = []
        for event, found in zip(events, findings, strict=True):
            try:
                detections.extend(detector.detect([event], [found]))
            except Exception as error:
                log.exception("detector %s failed on event %s", detector.name, event.id)
                found.fields.setdefault("abusewatch.errors", []).append(
                    f"{detector.name}: {type(error).__name__}: {error}"[:500]
                )
        return detections


def fold_same_findings(detections: Sequence[Detection]) -> list[Detection]:
    """``detections``, each whose rule ``folds_into`` a rule that fired on the same event folded into that rule's
    detection: its evidence added, the higher level and score kept, its rule id in ``also_matched``.

    One finding seen by two tiers (a key in a response: the exfiltration tier's validated check and the signature
    pack's portable format rule) is then one alert, not two of one category, and adds to the identity's risk score
    once. The same event is the one that raised both (the last event each lists). A shadow (``status: test``)
    detection is not folded: it is measured in the shadow alerts as before. A detection whose rule folds into
    others is never a target itself, so folds do not chain.
    """
    targets: dict[tuple[str, str], int] = {}
    for index, detection in enumerate(detections):
        if detection.event_ids and not detection.rule.folds_into:
            targets.setdefault((detection.event_ids[-1], detection.rule.id), index)
    merged = list(detections)
    folded: set[int] = set()
    for index, detection in enumerate(detections):
        if not detection.rule.folds_into or detection.rule.status == "test" or not detection.event_ids:
            continue
        keys = ((detection.event_ids[-1], rule_id) for rule_id in detection.rule.folds_into)
        target = next((targets[key] for key in keys if key in targets), None)
        if target is not None:
            merged[target] = _merged(merged[target], detection)
            folded.add(index)
    return [detection for index, detection in enumerate(merged) if index not in folded]


def _merged(target: Detection, other: Detection) -> Detection:
    """``target`` carrying ``other`` as the same finding; ``other``'s evidence only where it points elsewhere."""
    spans = {_span(evidence) for evidence in target.evidence}
    level = max(target.rule.level, other.rule.level, key=LEVELS.index)
    return msgspec.structs.replace(
        target,
        rule=msgspec.structs.replace(target.rule, level=level),
        evidence=[*target.evidence, *(evidence for evidence in other.evidence if _span(evidence) not in spans)],
        score=max(target.score, other.score),
        also_matched=[*target.also_matched, other.rule.id],
    )


def _span(evidence: Evidence) -> tuple[str, int | None, int | None]:
    return evidence.field, evidence.start, evidence.end


def in_arrival_order(detections: Sequence[Detection], events: Sequence[Event]) -> list[Detection]:
    """``detections`` in the order of the events that raised them (``Detection.raised_by``, else the last event
    listed: see :meth:`Pipeline.run_detector`), then by time. The order is then the same however the events were
    cut into batches, so alert groups count and risk scores add up the same way; sorting by event time instead
    would let a late event's alert overtake others only in a batch that happened to hold both. Detections raised by
    no event of the batch (a window closed by a flush) follow, by time."""
    position = {event.id: index for index, event in enumerate(events)}
    after = len(events)

    def key(detection: Detection) -> tuple[int, float]:
        trigger = detection.raised_by or (detection.event_ids[-1] if detection.event_ids else None)
        return position.get(trigger, after) if trigger is not None else after, detection.timestamp

    return sorted(detections, key=key)


def distinct_id_runs(events: Sequence[Event]) -> list[slice]:
    """``events`` cut into the fewest consecutive runs in which no event id repeats."""
    runs: list[slice] = []
    start = 0
    seen: set[str] = set()
    for position, event in enumerate(events):
        if event.id in seen:
            runs.append(slice(start, position))
            start, seen = position, set()
        seen.add(event.id)
    if start < len(events):
        runs.append(slice(start, len(events)))
    return runs
