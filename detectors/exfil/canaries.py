"""Canary tokens: unique strings planted in system prompts or documents that must never come back out.

A canary in the response proves the system prompt leaked; in a tool call's arguments it proves data is leaving
through the agent. Both are critical: canaries have no false positives by construction. A canary is looked for in
every view the signature tier scans (:func:`detectors.signatures.textnorm.text_views`: folded case, look-alikes and
invisible characters, spaced letters, base64 / hex / URL / escape decodings) and with whitespace and markdown marks
taken out (``**ABW-CAN**ARY``, a token broken over two lines), so a model told to disguise it still gives it away.
Canaries hidden in URLs (encoded) are also caught by the URL check, which decodes.

A live canary is a secret too: whoever reads it in the alerts or events index can recognise (or plant) it. Every
canary the check finds, as written, goes to the redactor (kind ``canary``, the registered token as its key, so all
its forms share one mask): the leaked one in a response or tool call, and one that merely sits in an input, the
system prompt it was planted in above all, which every event of the application carries.
"""

from __future__ import annotations

import re2

from detectors.base import Detection, Evidence, Findings, RuleInfo, SensitiveValue
from detectors.event import COMPLETION, TOOL_ARGUMENTS
from detectors.exfil.context import EventContext
from detectors.exfil.masking import Masker
from detectors.exfil.registry import AppRegistry
from detectors.signatures.textnorm import View, text_views

# whitespace and markdown marks, taken out of a text to find a canary broken over lines or emphasised in part
_DROPPED = dict.fromkeys(map(ord, " \t\n\r\x0b\x0c\u00a0\u2028\u2029*`"))
_DROPPED_ASCII = bytes(code for code in _DROPPED if code < 128)
# dashes and hyphens that look like ``-`` (non-breaking, en, em, minus, full-width ...), read as it
_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"), "-")
_DROPPED_AND_DASHES = _DROPPED | _DASHES
_ENCODED_RUN = re2.compile(r"[A-Za-z0-9+/_\-]{16,}|%[0-9A-Fa-f]{2}|\\[ux][0-9A-Fa-f]{2}")  # base64, hex, URL, escapes
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

_RULES = {COMPLETION: CANARY_IN_RESPONSE, TOOL_ARGUMENTS: CANARY_IN_TOOL_CALL}  # the outputs a canary leaks through


class CanaryCheck:
    def __init__(self, registry: AppRegistry) -> None:
        self.registry = registry

    def run(self, context: EventContext, findings: Findings, masker: Masker) -> list[Detection]:
        """Alerts on canaries in the outputs; every canary found, in any text, goes to ``findings.sensitive``."""
        if not self.registry.has_canaries():
            return []
        leaks = [
            (s, hit) for s in context.segments if s.side == "output" and s.field in _RULES for hit in self.hits(s.text)
        ]
        written = {segment.text[start:end]: canary for segment, (canary, start, end) in leaks}
        # the inputs as written (no folds or decodings), in one Hyperscan pass: no canary holds the NUL joining them
        inputs = "\x00".join(segment.text for segment in context.segments if segment.side == "input")
        written.update((inputs[start:end], canary) for canary, start, end in self.registry.canary_hits(inputs))
        findings.sensitive.extend(SensitiveValue(kind="canary", value=value, key=key) for value, key in written.items())
        detections = []
        for field, rule in _RULES.items():
            evidence = [
                Evidence(
                    field=field,
                    snippet=masker.snippet(segment.text, start, end, label="canary"),
                    start=start,
                    end=end,
                    detail=f"canary token in {field}",
                )
                for segment, (_canary, start, end) in leaks
                if segment.field == field
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

    def hits(self, text: str) -> list[tuple[str, int, int]]:
        """Registered canaries in ``text`` in any of its views, as ``(token, start, end)`` with spans of ``text``."""
        found = self.registry.canary_hits(text)
        if found:
            return found
        hits: set[tuple[str, int, int]] = set()
        # the folds and decodings cost: only for a text they can change (plain ASCII without an encoded run is
        # read as written, with whitespace and marks taken out)
        views = text_views(text)[0] if not text.isascii() or _ENCODED_RUN.search(text) else [View(text, text)]
        for view in views:
            hits.update(
                (canary, *(view.origin or view.source_span(start, end)))
                for canary, start, end in self.registry.canary_hits(view.text)
            )
            kept_hits = self.registry.canary_hits(_without_dropped(view.text))
            if kept_hits:  # where the kept characters were: worked out only for a text that holds a canary
                kept = [index for index, char in enumerate(view.text) if ord(char) not in _DROPPED]
                hits.update(
                    (canary, *(view.origin or view.source_span(kept[start], kept[end - 1] + 1)))
                    for canary, start, end in kept_hits
                )
        return sorted(hits, key=lambda hit: hit[1:])


def _without_dropped(text: str) -> str:
    """``text`` without the :data:`_DROPPED` characters, its :data:`_DASHES` read as ``-`` (bytes.translate for
    ASCII text: many times faster)."""
    if text.isascii():
        return text.encode("ascii").translate(None, _DROPPED_ASCII).decode("ascii")
    return text.translate(_DROPPED_AND_DASHES)
