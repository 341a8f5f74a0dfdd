"""The detection pipeline: events in, enriched event documents and alert documents out.

The same object runs in the Faust workers, in embedded replay and in backtests. It never raises on a bad
event: a detector that fails on a batch is retried event by event, and the failing event is still emitted,
marked with the error, so no data is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from detectors.base import Detection, Detector, Findings, SensitiveValue
from detectors.documents import alert_document, event_document
from detectors.event import Event
from detectors.redact import Redactor

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BatchResult:
    """What one batch produced. Shadow alerts come from rules in ``status: test`` and stay out of the queue."""

    events: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    shadow_alerts: list[dict[str, Any]] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)


class Pipeline:
    """Runs ``detectors`` in order over each batch; later detectors see earlier ones' findings."""

    def __init__(self, detectors: Sequence[Detector], redactor: Redactor) -> None:
        self.detectors = list(detectors)
        self.redactor = redactor

    def process(self, events: Sequence[Event]) -> BatchResult:
        findings = [Findings() for _ in events]
        detections: list[Detection] = []
        for detector in self.detectors:
            detections.extend(self._run(detector, events, findings))
        return self.render(events, findings, detections)

    def render(self, events: Sequence[Event], findings: Sequence[Findings], detections: list[Detection]) -> BatchResult:
        """Build the output documents; every document is scrubbed of the batch's sensitive values."""
        result = BatchResult(detections=detections)
        sensitive_by_event: dict[str, list[SensitiveValue]] = {}
        for event, found in zip(events, findings, strict=True):
            sensitive_by_event.setdefault(event.id, []).extend(found.sensitive)
        for event, found in zip(events, findings, strict=True):
            result.events.append(event_document(event, found, self.redactor))
        for detection in detections:
            sensitive = [value for event_id in detection.event_ids for value in sensitive_by_event.get(event_id, ())]
            document = alert_document(detection, self.redactor, sensitive)
            target = result.shadow_alerts if detection.rule.status == "test" else result.alerts
            target.append(document)
        return result

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
