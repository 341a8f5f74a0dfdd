"""The signature tier: Sigma rules over every text of each event, in one linear-time pass per field."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from detectors.base import Detection, Detector, Evidence, Findings, RuleInfo
from detectors.event import Event
from detectors.signatures.compiler import ItemMatch, MatchResult, RuleHit
from detectors.signatures.parse import SignatureRule
from detectors.signatures.ruleset import RuleSet, RuleSetWatcher

MATCHES_FIELD = "gen_ai.security.signature_matches"
TRUNCATED_FIELD = "gen_ai.security.signature_scan_truncated"


def rule_info(rule: SignatureRule) -> RuleInfo:
    """What alerts say about a signature rule."""
    return RuleInfo(
        id=rule.id,
        name=rule.title,
        category=rule.category,  # type: ignore[arg-type]  # checked against CATEGORIES at load
        level=rule.level,  # type: ignore[arg-type]  # checked against LEVELS at load
        description=rule.description,
        atlas=rule.atlas,
        owasp=rule.owasp,
        status=rule.status,
    )


def event_metadata(event: Event) -> Iterator[tuple[str, str]]:
    """The event's scalar attributes under the metadata field names rules use."""
    identity = event.identity
    for field_name, value in (
        ("gen_ai.request.model", event.request_model),
        ("gen_ai.provider.name", event.provider),
        ("service.name", event.service_name),
        ("user.id", identity.user_id),
        ("source.ip", identity.source_ip),
        ("user_agent.original", identity.user_agent),
    ):
        if value:
            yield field_name, value


class SignatureDetector(Detector):
    """One detection per (rule, event). Give it a :class:`RuleSetWatcher` to pick up rule changes."""

    name = "signatures"

    def __init__(self, rules: RuleSet | RuleSetWatcher) -> None:
        self.watcher = rules if isinstance(rules, RuleSetWatcher) else None
        self.ruleset = rules.current if isinstance(rules, RuleSetWatcher) else rules
        self._infos: dict[str, RuleInfo] = {}

    def maybe_reload(self) -> bool:
        """Swap in changed rules (from the worker's timer); the running set stays if the new one is broken."""
        if self.watcher is None or not self.watcher.maybe_reload():
            return False
        self.ruleset = self.watcher.current
        self._infos = {}
        return True

    def scan_text(self, field: str, text: str) -> MatchResult:
        """The rules one text of ``field`` matches on its own, with their evidence (rule tests, benchmarks, tools)."""
        return self.ruleset.compiled.match([(field, text)])

    def detect(self, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        compiled = self.ruleset.compiled  # one read: a reload mid-batch does not mix two sets
        detections: list[Detection] = []
        for event, found in zip(events, findings, strict=True):
            result = compiled.match([*event.texts(), *event_metadata(event)])
            if result.truncated:
                found.fields[TRUNCATED_FIELD] = True
            if not result.hits:
                continue
            found.fields[MATCHES_FIELD] = len(result.hits)
            for hit in result.hits:
                found.rule_ids.append(hit.rule.id)
                detections.append(self._detection(event, hit))
        return detections

    def _detection(self, event: Event, hit: RuleHit) -> Detection:
        info = self._infos.get(hit.rule.id)
        if info is None:
            info = self._infos[hit.rule.id] = rule_info(hit.rule)
        transforms = sorted({t for match in hit.evidence for t in match.transforms})
        message = hit.rule.title + (f" (after {', '.join(transforms)})" if transforms else "")
        return Detection(
            rule=info,
            event_ids=[event.id],
            timestamp=event.timestamp,
            identity=event.identity,
            message=message,
            evidence=[_evidence(match) for match in hit.evidence],
        )


def _evidence(match: ItemMatch) -> Evidence:
    detail = f"matched after {', '.join(match.transforms)}" if match.transforms else None
    return Evidence(
        field=match.field,
        snippet=match.snippet,
        start=match.start,
        end=match.end,
        transforms=match.transforms,
        detail=detail,
    )
