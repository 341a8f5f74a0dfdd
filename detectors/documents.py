"""Render events and detections as the ECS documents that are written (files, Kafka, Elasticsearch).

Both renderers scrub sensitive values last, so nothing raw escapes whatever a detector put in a snippet. Each
document carries its deterministic id in ``event.id`` (alerts) or ``event.hash`` (enriched events), which the stream
writes as its Elasticsearch ``_id``.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime
from typing import Any

from detectors.base import SEVERITY, Detection, Findings, SensitiveValue
from detectors.event import Event, Identity, Message
from detectors.redact import Redactor
from detectors.redelivery import content_digest

ATLAS = "MITRE ATLAS"
ALERT_DATASET = "abusewatch.alerts"
EVENT_DATASET_PREFIX = "abusewatch."


def iso_time(epoch_seconds: float) -> str:
    """ECS ``@timestamp``: ISO 8601 UTC with milliseconds."""
    return datetime.fromtimestamp(epoch_seconds, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_id(rule_id: str, group_key: str) -> str:
    """Deterministic alert id: the same rule on the same group always yields the same id (no replay dupes)."""
    return hashlib.sha256(f"{rule_id}\x1f{group_key}".encode()).hexdigest()[:32]


def event_document_id(event: Event, redactor: Redactor) -> str:
    """The enriched event's document id (``event.hash``, the ``_id`` in Elasticsearch): a hash of the whole event but a
    time the normaliser assumed, what a true redelivery shares with it (``detectors.redelivery``). A redelivered record,
    in the stream or in a replay, gets the same id, so writing it again overwrites or meets its own document; another
    record under the same ``event.id`` (a client-chosen request id reused for an attack) gets a document of its own.

    The content is hashed raw, so the hash is keyed (:func:`_event_id_key`): with a plain hash, anyone reading the
    index could test guesses of a masked value (a card or social security number has few enough candidates to try
    them all) against the id. 128 bits: two of the billions of events an index may hold share an id with odds below
    2**-60.
    """
    return content_digest(event, digest_size=16, key=_event_id_key(redactor)).hex()


@functools.lru_cache(maxsize=8)
def _event_id_key(redactor: Redactor) -> bytes:
    """The key of event document ids, derived from the redaction key; computed once per redactor."""
    return redactor.derive_key("event document id")


def identity_fields(identity: Identity) -> dict[str, Any]:
    """ECS identity fields; unknown parts are left out."""
    doc: dict[str, Any] = {}
    if identity.user_id:
        doc["user"] = {"id": identity.user_id}
    if identity.organization_id:
        doc["organization"] = {"id": identity.organization_id}
    if identity.source_ip:
        doc["source"] = {"ip": identity.source_ip}
    if identity.user_agent:
        doc["user_agent"] = {"original": identity.user_agent}
    if identity.session_id:
        doc["session"] = {"id": identity.session_id}
    extra = {
        key: value for key, value in (("api_key_hash", identity.api_key_hash), ("team_id", identity.team_id)) if value
    }
    extra["identity_key"] = identity.key()
    doc["abusewatch"] = extra
    return doc


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    rendered = []
    for message in messages:
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.name:
            item["name"] = message.name
        if message.tool_call_id:
            item["tool_call_id"] = message.tool_call_id
        if message.tool_calls:
            item["tool_calls"] = [
                {"id": call.id, "name": call.name, "arguments": call.arguments} for call in message.tool_calls
            ]
        rendered.append(item)
    return rendered


def _duration_ns(milliseconds: float | None) -> int | None:
    """ECS ``event.duration`` in nanoseconds; absurd values (negative, infinite, past a signed long) are dropped."""
    if milliseconds is None or not 0 <= milliseconds < 9.2e12:  # 9.2e12 ms * 1e6 stays under 2**63 ns
        return None
    return int(milliseconds * 1_000_000)


def _set_dotted(doc: dict[str, Any], dotted: str, value: Any) -> None:
    node = doc
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def event_document(event: Event, findings: Findings, redactor: Redactor) -> dict[str, Any]:
    """The enriched event as indexed: ECS + OpenTelemetry GenAI fields, detector findings, redacted; its
    ``event.hash`` is its document id (:func:`event_document_id`)."""
    gen_ai: dict[str, Any] = {
        "provider": {"name": event.provider},
        "operation": {"name": event.operation},
        "request": {"model": event.request_model, **event.request_params},
        "response": {"model": event.response_model, "finish_reasons": event.finish_reasons},
        "usage": {
            "input_tokens": event.input_tokens,
            "output_tokens": event.output_tokens,
            "cache_read": {"input_tokens": event.cache_read_tokens},
        },
        "system_instructions": event.system_instructions,
        "input": {"messages": _messages(event.input_messages)},
        "output": {"messages": _messages(event.output_messages)},
        "prompt": "\n".join(m.content for m in event.new_input() if m.role == "user"),
        "completion": "\n".join(m.content for m in event.output_messages),
    }
    calls = event.output_tool_calls()
    if event.tool_definitions or calls:
        gen_ai["tool"] = {
            "definitions": [{"name": t.name, "description": t.description} for t in event.tool_definitions],
            "call": [{"id": c.id, "name": c.name, "arguments": c.arguments, "result": c.result} for c in calls],
        }
    if event.retrieved_documents:
        gen_ai["retrieval"] = {
            "documents": [{"id": d.id, "source": d.source, "content": d.content} for d in event.retrieved_documents]
        }
    if event.guardrails:
        gen_ai["guardrails"] = [
            {"source": g.source, "action": g.action, "categories": g.categories, "detail": g.detail}
            for g in event.guardrails
        ]
    doc: dict[str, Any] = {
        "@timestamp": iso_time(event.timestamp),
        "event": {
            "id": event.id,
            "kind": "event",
            "category": ["web"],
            "type": ["access"],
            "dataset": EVENT_DATASET_PREFIX + event.dataset,
            "outcome": event.outcome,
        },
        "gen_ai": gen_ai,
        **identity_fields(event.identity),
    }
    duration = _duration_ns(event.duration_ms)
    if duration is not None:
        doc["event"]["duration"] = duration
    if event.service_name:
        doc["service"] = {"name": event.service_name}
    if event.error_code:
        doc["error"] = {"code": event.error_code}
    doc["abusewatch"].update(
        {
            "content_redacted": event.content_redacted,
            "truncated": event.truncated,
            "rule_ids": sorted(set(findings.rule_ids)),
        }
    )
    for dotted, value in findings.fields.items():
        _set_dotted(doc, dotted, value)
    doc = redactor.scrub(doc, findings.sensitive)
    doc["event"]["hash"] = event_document_id(event, redactor)  # after scrubbing, which must not touch it
    return doc


def alert_document(
    detection: Detection, redactor: Redactor, sensitive: list[SensitiveValue], *, count: int = 1
) -> dict[str, Any]:
    """The alert as indexed: ECS ``event.kind: alert`` that Elastic Security lists as an external alert."""
    rule = detection.rule
    severity = SEVERITY[rule.level]
    group_key = detection.group_key or ",".join(sorted(detection.event_ids))
    doc: dict[str, Any] = {
        "@timestamp": iso_time(detection.timestamp),
        "message": detection.message,
        "event": {
            "id": alert_id(rule.id, group_key),
            "kind": "alert",
            "category": ["intrusion_detection"],
            "type": ["indicator"],
            "dataset": ALERT_DATASET,
            "severity": severity,
            "risk_score": round(severity * max(0.0, min(1.0, detection.score)), 2),
        },
        "rule": {
            "id": rule.id,
            "name": rule.name,
            "category": rule.category,
            "description": rule.description,
            "ruleset": rule.ruleset,
        },
        **identity_fields(detection.identity),
        "related": {
            "user": sorted({u for u in [detection.identity.user_id, *detection.related_users] if u}),
            "ip": sorted({i for i in [detection.identity.source_ip, *detection.related_ips] if i}),
        },
    }
    if rule.atlas:
        doc["threat"] = {
            "framework": ATLAS,
            "technique": {"id": list(rule.atlas), "name": [atlas_name(t) for t in rule.atlas]},
        }
    doc["abusewatch"].update(
        {
            "event_ids": sorted(detection.event_ids),
            "owasp_llm": list(rule.owasp),
            "level": rule.level,
            "score": round(detection.score, 4),
            "status": "open",
            "shadow": rule.status == "test",
            "count": count,
            "first_seen": iso_time(detection.timestamp),
            "last_seen": iso_time(detection.timestamp),
            "evidence": [
                {
                    "field": e.field,
                    "snippet": e.snippet,
                    "start": e.start,
                    "end": e.end,
                    "transforms": list(e.transforms),
                    "detail": e.detail,
                }
                for e in detection.evidence
            ],
        }
    )
    if detection.explanation:
        doc["abusewatch"]["explanation"] = detection.explanation
    if detection.also_matched:
        doc["abusewatch"]["also_matched"] = list(detection.also_matched)
    return redactor.scrub(doc, sensitive)


def supersedes(candidate: dict[str, Any], stored: dict[str, Any]) -> bool:
    """Whether a re-rendered alert replaces the stored version of the same id.

    It does unless it counts fewer detections: an alert only grows within its window, so a smaller count means a
    late detection re-opened a group the grouper had already forgotten, and the grown alert must stay (see
    docs/alert-hygiene.md, "Late detections"). Replay applies this rule to its output, the Elasticsearch sink to
    the stored alert (``app.sinks.elasticsearch.ElasticsearchSink``), which may lack a count if someone else
    wrote it: then the rendering replaces it.
    """
    stored_count = stored.get("abusewatch", {}).get("count")
    return not isinstance(stored_count, int) or int(candidate["abusewatch"]["count"]) >= stored_count


# Names of the MITRE ATLAS techniques the product maps to (ATLAS v4/v5 ids).
ATLAS_TECHNIQUES: dict[str, str] = {
    "AML.T0051": "LLM Prompt Injection",
    "AML.T0051.000": "LLM Prompt Injection: Direct",
    "AML.T0051.001": "LLM Prompt Injection: Indirect",
    "AML.T0054": "LLM Jailbreak",
    "AML.T0056": "Extract LLM System Prompt",
    "AML.T0057": "LLM Data Leakage",
    "AML.T0024": "Exfiltration via AI Inference API",
    "AML.T0024.000": "Exfiltration via AI Inference API: Infer Training Data Membership",
    "AML.T0024.001": "Exfiltration via AI Inference API: Invert AI Model",
    "AML.T0024.002": "Exfiltration via AI Inference API: Extract AI Model",
    "AML.T0040": "AI Model Inference API Access",
    "AML.T0043": "Craft Adversarial Data",
    "AML.T0050": "Command and Scripting Interpreter",
    "AML.T0069": "Discover LLM System Information",
    "AML.T0072": "Reverse Shell",
    "AML.T0029": "Denial of AI Service",
    "AML.T0034": "Cost Harvesting",
    "AML.T0053": "LLM Plugin Compromise",
    "AML.T0055": "Unsecured Credentials",
    "AML.T0068": "LLM Prompt Obfuscation",
    "AML.T0077": "LLM Response Rendering",
    "AML.T0086": "Exfiltration via AI Agent Tool Invocation",
}


def atlas_name(technique_id: str) -> str:
    return ATLAS_TECHNIQUES.get(technique_id.upper(), technique_id.upper())
