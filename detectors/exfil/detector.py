"""The exfiltration and leakage tier: one detector that scans each event once and runs the checks over it.

Checks share the scan (one Hyperscan pass per text for every secret, PII and URL anchor), the registry and the
conversation index, which is why they are parts of one detector rather than detectors of their own.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Sequence
from typing import Any

from detectors.base import Detection, Detector, Findings, SensitiveValue
from detectors.event import Event
from detectors.exfil.canaries import CanaryCheck
from detectors.exfil.candidates import CandidateScanner, reader_view
from detectors.exfil.config import ExfilConfig
from detectors.exfil.context import EventContext, ScanCache, build_context
from detectors.exfil.flows import ConversationIndex, FlowTracer
from detectors.exfil.leakage import LeakLedger, SystemPromptLeakCheck
from detectors.exfil.masking import Masker
from detectors.exfil.memory import SessionMemory
from detectors.exfil.pii import PiiExposureCheck, pii_specs
from detectors.exfil.registry import AppRegistry
from detectors.exfil.secrets import SecretExposureCheck, secret_specs
from detectors.exfil.tools import ToolExfilCheck
from detectors.exfil.urls import UrlExfilCheck, url_specs


@functools.cache
def candidate_scanner(
    generic_min_entropy: float,
    generic_min_length: int,
    max_candidates: int,
    max_anchors: int = ExfilConfig.model_fields["max_anchors_per_pattern"].default,
) -> CandidateScanner:
    """The scanner for every secret, PII and URL anchor; compiled once per process (it takes about a second).

    ``max_candidates`` bounds the validated values per pattern, ``max_anchors`` the raw anchor matches."""
    return CandidateScanner(
        [*secret_specs(generic_min_entropy, generic_min_length), *pii_specs(), *url_specs()],
        max_values_per_pattern=max_candidates,
        max_anchors_per_pattern=max_anchors,
    )


class ExfilDetector(Detector):
    """Secrets, PII, system-prompt leakage, canaries, URL/markdown and tool-call exfiltration."""

    name = "exfil"

    def __init__(self, config: ExfilConfig | None = None) -> None:
        self.config = config = config or ExfilConfig()
        self.registry = AppRegistry(
            config.registry_path,
            check_interval_s=config.registry_check_interval_s,
            default_allowed_domains=config.default_allowed_domains,
        )
        self.scanner = candidate_scanner(
            config.generic_secret_min_entropy,
            config.generic_secret_min_length,
            config.max_candidates_per_pattern,
            config.max_anchors_per_pattern,
        )
        tracer = FlowTracer(
            self.scanner,
            self.registry,
            min_chars=config.flow_min_chars,
            shingle_words=config.flow_shingle_words,
            min_share=config.flow_min_share,
        )
        self.memory = SessionMemory(
            config.memory_key.get_secret_value().encode("utf-8"),
            ttl_s=config.memory_ttl_s,
            max_sessions=config.memory_max_sessions,
        )
        self.leaks = LeakLedger(
            config.memory_key.get_secret_value().encode("utf-8"),
            ttl_s=config.memory_ttl_s,
            max_sessions=config.memory_max_sessions,
        )
        self.scan_cache = ScanCache(self.scanner)  # shared by fresh() clones: a memo of the shared scanner
        self._expired_at = float("-inf")  # the quarter-ttl step of event time state was last scanned at
        self._newest = float("-inf")  # the newest event time seen
        self.secrets = SecretExposureCheck()
        self.pii = PiiExposureCheck()
        self.leakage = SystemPromptLeakCheck(
            shingle_words=config.leak_shingle_words,
            min_share=config.leak_min_share,
            min_words=config.leak_min_words,
            across_turns_min_share=config.leak_across_turns_min_share,
            across_turns_status=config.leak_across_turns_status,
        )
        self.canaries = CanaryCheck(self.registry)
        self.urls = UrlExfilCheck(tracer, min_length=config.carrier_min_length, min_entropy=config.carrier_min_entropy)
        self.tools = ToolExfilCheck(
            tracer, egress_words=config.egress_tool_words, sink_domains=config.exfil_sink_domains
        )

    def detect(self, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        self.registry.refresh()
        detections: list[Detection] = []
        for event, found in zip(events, findings, strict=True):
            self._expire(event.timestamp)
            detections.extend(self.detect_event(event, found))
        return detections

    def _expire(self, timestamp: float) -> None:
        """Forget the session memory and leak records ``memory_ttl_s`` older than the newest event time, scanning
        them when that time crosses a quarter-ttl step. Judged before each event, not once a batch on the batch's
        newest time, so what an event finds does not depend on how the stream was cut into batches."""
        if not math.isfinite(timestamp):
            return
        self._newest = max(self._newest, timestamp)
        step = max(self.config.memory_ttl_s / 4, 1.0)
        newest = math.floor(self._newest / step) * step
        if newest > self._expired_at:
            self._expired_at = newest
            self.memory.expire(newest)
            self.leaks.expire(newest)

    def detect_event(self, event: Event, findings: Findings) -> list[Detection]:
        session = event.identity.session_id or event.identity.key()
        context = build_context(
            event,
            self.registry.profile(event.service_name),
            self.scanner,
            self.config.max_scan_chars,
            lambda key: self._earlier(session, key, event.timestamp),
            self.scan_cache,
        )
        sensitive = self._sensitive(context)
        findings.sensitive.extend(sensitive)
        masker = Masker((item.kind, item.value) for item in sensitive)
        index: list[ConversationIndex] = []  # built on first need, shared by the URL and tool checks
        detections = [
            *self.secrets.run(context, findings, masker),
            *self.pii.run(context, findings, masker),
            *self.leakage.run(context, findings, masker, self.leaks, session),
            *self.canaries.run(context, findings, masker),
            *self.urls.run(context, findings, masker, index),
            *self.tools.run(context, findings, masker, index),
        ]
        if detections:
            findings.rule_ids.extend(detection.rule.id for detection in detections)
        for segment, hit in context.hits(side="input"):
            if hit.family != "url":
                self.memory.remember(session, f"{hit.family}:{hit.kind}:{hit.key}", segment.field, event.timestamp)
        return detections

    def _earlier(self, session: str, key: str, now: float) -> str | None:
        return self.memory.recall(session, key, now)

    def state(self) -> dict[str, Any]:
        """Fingerprints (keyed hashes) of the values each session showed the model, and which positions of its
        system prompt its responses reproduced; never the values or the text."""
        return {"memory": self.memory.state(), "leaks": self.leaks.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.memory.load_state(state.get("memory", {}))
        self.leaks.load_state(state.get("leaks", {}))

    def fresh(self) -> ExfilDetector:
        """Shares the compiled scanners and checks; the session memory and leak ledger are the clone's own."""
        clone = copy.copy(self)
        clone.memory = copy.copy(self.memory)
        clone.memory.load_state({})
        clone.leaks = copy.copy(self.leaks)
        clone.leaks.load_state({})
        clone._expired_at = clone._newest = float("-inf")
        return clone

    def _sensitive(self, context: EventContext) -> list[SensitiveValue]:
        """The values handed to the redactor, per the configuration."""
        config = self.config
        values: dict[tuple[str, str], str] = {}
        for _segment, hit in context.hits():
            secret = hit.family == "secret" and config.redact_secrets
            if secret or (hit.family == "pii" and self._redacts_pii(hit.kind)):
                values[(hit.kind, hit.value)] = hit.key
                if (view := reader_view(hit.value)) is not None:  # written with invisible characters or escapes:
                    values[(hit.kind, view[0])] = hit.key  # the form as read may appear elsewhere, unflagged
        return [SensitiveValue(kind=kind, value=value, key=key) for (kind, value), key in values.items()]

    def _redacts_pii(self, kind: str) -> bool:
        config = self.config
        if not config.redact_pii or (config.pii_kinds and kind not in config.pii_kinds):
            return False
        return kind != "ip_address" or config.redact_ip_addresses


def build_exfil_detectors(config: ExfilConfig | None = None) -> list[Detector]:
    """The exfiltration tier as the pipeline runs it; ``config`` defaults to the tuned thresholds."""
    return [ExfilDetector(config)]
