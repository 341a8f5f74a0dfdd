"""Tool-call exfiltration: an agent asked to send conversation data to an outside destination.

A tool call counts as egress when its name says so (send, email, post, webhook, upload, share, fetch ...). Its
destinations are the URLs and e-mail addresses in its arguments; a destination is external unless its domain is
on the application's allowlist. Egress to an external destination whose arguments carry data from the
conversation (secrets, PII the user did not type in, passages of tool results, documents or earlier turns, canary
tokens) is ``data_exfiltration``; egress to a known exfiltration sink or a bare IP address without identifiable
data is ``tool_abuse``. Data inside URLs is the URL check's job; this one looks at the other argument values.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Iterator
from typing import Any

import msgspec
import orjson

from detectors.base import Detection, Evidence, Findings, RuleInfo, SensitiveValue
from detectors.event import TOOL_ARGUMENTS, ToolCall
from detectors.exfil.context import EventContext, Segment
from detectors.exfil.flows import ConversationIndex, Flow, FlowTracer
from detectors.exfil.masking import Masker

EXFIL_RULE = RuleInfo(
    id="abw-exfil-tool-call",
    name="Data exfiltration through an agent tool call",
    category="data_exfiltration",
    level="high",
    description="The model called an egress tool (mail, HTTP, upload, share) towards an external destination with "
    "data from the conversation in its arguments.",
    atlas=("AML.T0086",),
    owasp=("LLM06:2025", "LLM02:2025"),
)
ODD_EGRESS_RULE = RuleInfo(
    id="abw-exfil-tool-odd-destination",
    name="Agent tool call to an exfiltration sink",
    category="tool_abuse",
    level="medium",
    description="The model called an egress tool towards a known request-capture service or a bare IP address.",
    atlas=("AML.T0086",),
    owasp=("LLM06:2025",),
)
_SPLIT = str.maketrans({ch: " " for ch in "_-./:"})


def name_words(name: str) -> set[str]:
    """``sendEmail`` / ``http.post`` / ``upload_file`` as lower-case words."""
    spaced = "".join(f" {ch}" if ch.isupper() else ch for ch in name)
    return set(spaced.translate(_SPLIT).lower().split())


def string_leaves(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """``(json path, string)`` for every string in parsed tool arguments."""
    if isinstance(node, str):
        yield path or "(arguments)", node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from string_leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for position, value in enumerate(node):
            yield from string_leaves(value, f"{path}[{position}]")


def parse_arguments(arguments: str) -> Any:
    try:
        return orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments


def host_is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class ToolExfilCheck:
    def __init__(self, tracer: FlowTracer, *, egress_words: tuple[str, ...], sink_domains: tuple[str, ...]) -> None:
        self.tracer = tracer
        self.egress_words = frozenset(egress_words)
        self.sink_domains = tuple(sink_domains)

    def run(
        self, context: EventContext, findings: Findings, masker: Masker, index: list[ConversationIndex]
    ) -> list[Detection]:
        calls = context.event.output_tool_calls()
        detections = []
        for segment in context.segments:
            if segment.field != TOOL_ARGUMENTS or segment.tool_call_index is None:
                continue
            call = calls[segment.tool_call_index]
            if not name_words(call.name) & self.egress_words:
                continue
            detection = self._check(context, findings, call, segment, masker, index)
            if detection is not None:
                detections.append(detection)
        return detections

    def _destinations(self, context: EventContext, segment: Segment) -> list[tuple[str, str]]:
        """``(what, domain)`` of every external destination named in the arguments."""
        found = []
        for hit in segment.hits:
            if hit.kind == "url":
                try:
                    host = (urllib.parse.urlsplit(hit.value).hostname or "").lower()
                except ValueError:
                    continue
                if host and not context.profile.domain_allowed(host):
                    found.append((hit.value, host))
            elif hit.kind == "email":
                domain = hit.key.rpartition("@")[2]
                if not context.profile.email_domain_allowed(domain):
                    found.append((hit.value, domain))
        return found

    def _check(
        self,
        context: EventContext,
        findings: Findings,
        call: ToolCall,
        segment: Segment,
        masker: Masker,
        index: list[ConversationIndex],
    ) -> Detection | None:
        destinations = self._destinations(context, segment)
        if not destinations:
            return None
        if not index:
            index.append(self.tracer.index(context, context.earlier))
        addresses = {value for value, _ in destinations}
        user_keys = context.user_keys()
        flows: list[tuple[str, Flow]] = []
        for path, value in string_leaves(parse_arguments(segment.text)):
            if value in addresses or "://" in value:
                continue
            traced = [f for f in self.tracer.trace(value, index[0]) if f.what != "pii" or f.key not in user_keys]
            if any(flow.transforms and flow.what != "conversation" for flow in traced):
                findings.sensitive.append(SensitiveValue(kind="encoded_data", value=value))
                masker = Masker([*masker.values, ("encoded_data", value)])
            flows += [(path, flow) for flow in traced]
        hosts = sorted({domain for _, domain in destinations})
        if flows:
            return self._exfil(context, call, segment, hosts, flows, masker)
        odd = [h for h in hosts if host_is_ip(h) or any(h == d or h.endswith("." + d) for d in self.sink_domains)]
        if odd:
            return Detection(
                rule=ODD_EGRESS_RULE,
                event_ids=[context.event.id],
                timestamp=context.event.timestamp,
                identity=context.event.identity,
                message=f"tool {call.name} sends to {', '.join(odd)}",
                score=0.6,
                evidence=[
                    Evidence(
                        field=TOOL_ARGUMENTS,
                        snippet=masker.mask(segment.text[:240]),
                        detail=f"egress tool {call.name} to {', '.join(odd)}",
                    )
                ],
            )
        return None

    @staticmethod
    def _exfil(
        context: EventContext,
        call: ToolCall,
        segment: Segment,
        hosts: list[str],
        flows: list[tuple[str, Flow]],
        masker: Masker,
    ) -> Detection:
        whats = {flow.what for _, flow in flows}
        level = "critical" if whats & {"secret", "canary"} else "high"
        evidence = [
            Evidence(
                field=TOOL_ARGUMENTS,
                snippet=masker.mask(segment.text[:240]),
                transforms=tuple(sorted({t for _, f in flows for t in f.transforms})),
                detail=f"egress tool {call.name} to {', '.join(hosts)}",
            )
        ]
        for path, flow in flows:
            transforms = f" ({'+'.join(flow.transforms)})" if flow.transforms else ""
            detail = f"{flow.what} ({flow.kind}) {flow.origin()}; sent in tool {call.name} argument {path}{transforms}"
            evidence.append(
                Evidence(
                    field=flow.source_field or TOOL_ARGUMENTS,
                    snippet=f"[{flow.kind}]",
                    transforms=flow.transforms,
                    detail=detail,
                )
            )
        return Detection(
            rule=msgspec.structs.replace(EXFIL_RULE, level=level),
            event_ids=[context.event.id],
            timestamp=context.event.timestamp,
            identity=context.event.identity,
            message=f"tool {call.name} sends {', '.join(sorted(whats))} to {', '.join(hosts)}",
            score=1.0 if level == "critical" else 0.85,
            evidence=evidence,
        )
