"""Canary tokens: unique strings planted in system prompts or documents that must never come back out.

A canary in the response proves the system prompt leaked; in a tool call's arguments it proves data is leaving
through the agent. Both are critical: canaries have no false positives by construction. Canaries hidden in URLs
(encoded) are caught by the URL check, which decodes.
"""

from __future__ import annotations

from detectors.base import Detection, Evidence, RuleInfo
from detectors.event import COMPLETION, TOOL_ARGUMENTS
from detectors.exfil.context import EventContext
from detectors.exfil.masking import Masker
from detectors.exfil.registry import AppRegistry

CANARY_IN_RESPONSE = RuleInfo(
    id="abw-exfil-canary-response",
    name="Canary token in a response",
    category="system_prompt_leak",
    level="critical",
    description="A registered canary token, planted in the system prompt or protected data, appears in the response.",
    atlas=("AML.T0056",),
    owasp=("LLM07:2025",),
)
CANARY_IN_TOOL_CALL = RuleInfo(
    id="abw-exfil-canary-tool-call",
    name="Canary token sent out in a tool call",
    category="data_exfiltration",
    level="critical",
    description="A registered canary token appears in the arguments of a tool call the model made.",
    atlas=("AML.T0086", "AML.T0057"),
    owasp=("LLM02:2025", "LLM06:2025"),
)


class CanaryCheck:
    def __init__(self, registry: AppRegistry) -> None:
        self.registry = registry

    def run(self, context: EventContext, masker: Masker) -> list[Detection]:
        detections = []
        for field, rule in ((COMPLETION, CANARY_IN_RESPONSE), (TOOL_ARGUMENTS, CANARY_IN_TOOL_CALL)):
            evidence = [
                Evidence(
                    field=field,
                    snippet=masker.snippet(segment.text, start, end),
                    start=start,
                    end=end,
                    detail=f"canary token in {field}",
                )
                for segment in context.segments
                if segment.field == field and segment.side == "output"
                for _canary, start, end in self.registry.canary_hits(segment.text)
            ]
            if evidence:
                event = context.event
                detections.append(
                    Detection(
                        rule=rule,
                        event_ids=[event.id],
                        timestamp=event.timestamp,
                        identity=event.identity,
                        message=f"canary token in {field}",
                        evidence=evidence[:20],
                    )
                )
        return detections
