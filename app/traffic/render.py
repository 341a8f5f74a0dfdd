"""Events back to source log records: the inverse of :mod:`detectors.normalise`, one renderer per format.

Used to write the bundled samples, by the traffic simulator and by benchmarks. ``normalise(render(event))``
gives back every field the format carries (tests/test_traffic_render.py checks it); what a format cannot
carry is left out (e.g. Bedrock logs no retrieved documents, and its credential is the IAM principal).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from detectors.event import Event, GuardrailVerdict, Message, ToolCall
from detectors.normalise import normalise_many
from detectors.normalise.bedrock import SCHEMA_TYPE
from detectors.normalise.litellm import REDACTED

Record = dict[str, Any]


def _arguments(arguments: str) -> Any:
    """Tool arguments as the JSON object formats expect; a string that is not JSON stays a string."""
    try:
        return orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        return arguments


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _drop_none(mapping: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if value is not None}


# --- OpenAI-shaped (OpenAI envelope and LiteLLM) ---------------------------------------------------------------


def _chat_call(call: ToolCall) -> Record:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def _chat_message(message: Message) -> Record:
    item: Record = {"role": message.role, "content": message.content}
    if message.tool_calls:
        item["content"] = message.content or None
        item["tool_calls"] = [_chat_call(call) for call in message.tool_calls]
    if message.tool_call_id:
        item["tool_call_id"] = message.tool_call_id
    if message.name:
        item["name"] = message.name
    return item


def chat_messages(event: Event) -> list[Record]:
    """The request's ``messages``: the system instructions first, as a system message."""
    system = [{"role": "system", "content": event.system_instructions}] if event.system_instructions else []
    return system + [_chat_message(message) for message in event.input_messages]


def chat_completion(event: Event) -> Record:
    """A chat.completion response: one choice per output message."""
    reasons = event.finish_reasons
    return {
        "id": f"chatcmpl-{event.id}",
        "object": "chat.completion",
        "created": int(event.timestamp),
        "model": event.response_model,
        "choices": [
            {
                "index": index,
                "message": _chat_message(message),
                "finish_reason": reasons[min(index, len(reasons) - 1)] if reasons else None,
            }
            for index, message in enumerate(event.output_messages)
        ],
        "usage": _drop_none({"prompt_tokens": event.input_tokens, "completion_tokens": event.output_tokens}),
    }


def _documents(event: Event) -> list[Record]:
    return [_drop_none({"id": d.id, "source": d.source, "content": d.content}) for d in event.retrieved_documents]


def _chat_tools(event: Event) -> list[Record]:
    return [
        {"type": "function", "function": {"name": tool.name, "description": tool.description}}
        for tool in event.tool_definitions
    ]


def render_openai(event: Event) -> Record:
    """The OpenAI request/response envelope documented in :mod:`detectors.normalise.openai`."""
    request: Record = {"model": event.request_model, "messages": chat_messages(event), **event.request_params}
    if event.tool_definitions:
        request["tools"] = _chat_tools(event)
    if event.content_redacted:
        del request["messages"]
    identity = event.identity
    record: Record = {
        "request_id": event.id,
        "timestamp": event.timestamp,
        "duration_ms": event.duration_ms,
        "service": event.service_name,
        "user": identity.user_id,
        "api_key_hash": identity.api_key_hash,
        "organization": identity.organization_id,
        "project": identity.team_id,
        "client_ip": identity.source_ip,
        "user_agent": identity.user_agent,
        "session_id": identity.session_id,
        "request": request,
        "response": chat_completion(event) if event.outcome != "unknown" else None,
    }
    if event.retrieved_documents:
        record["retrieved_documents"] = _documents(event)
    if event.outcome == "failure":
        record["error"] = {"type": "api_error", "code": event.error_code, "message": "request failed"}
    moderation = [g for g in event.guardrails if g.source == "openai.moderation"]
    if moderation:
        record["moderation"] = {
            "results": [
                {"flagged": g.action != "passed", "categories": dict.fromkeys(g.categories, True)} for g in moderation
            ]
        }
    return _drop_none(record)


def _litellm_guardrail(verdict: GuardrailVerdict) -> Record:
    return {
        "guardrail_name": verdict.source.removeprefix("litellm:"),
        "guardrail_mode": "pre_call",
        "guardrail_status": "guardrail_intervened" if verdict.action == "blocked" else "success",
        "guardrail_response": verdict.detail,
        "masked_entity_count": dict.fromkeys(verdict.categories, 1),
    }


def render_litellm(event: Event) -> Record:
    """A LiteLLM ``StandardLoggingPayload`` (see :mod:`detectors.normalise.litellm`)."""
    identity = event.identity
    end = None if event.duration_ms is None else event.timestamp + event.duration_ms / 1000.0
    params: Record = {key: value for key, value in event.request_params.items() if key != "stream"}
    if event.tool_definitions:
        params["tools"] = _chat_tools(event)
    requester = _drop_none(
        {
            "session_id": identity.session_id,
            "service": event.service_name,
            "retrieved_documents": _documents(event) or None,
        }
    )
    return {
        "id": event.id,
        "trace_id": event.id,
        "call_type": "acompletion",
        "stream": bool(event.request_params.get("stream", False)),
        "response_cost": 0.0,
        "status": {"success": "success", "failure": "failure"}.get(event.outcome, "unknown"),
        "custom_llm_provider": event.provider,
        "startTime": event.timestamp,
        "endTime": end,
        "completionStartTime": end,
        "model": event.response_model,
        "model_group": event.request_model,
        "api_base": None,
        "end_user": identity.user_id,
        "requester_ip_address": identity.source_ip,
        "metadata": _drop_none(
            {
                "user_api_key_hash": identity.api_key_hash,
                "user_api_key_org_id": identity.organization_id,
                "user_api_key_team_id": identity.team_id,
                "user_api_key_end_user_id": identity.user_id,
                "requester_ip_address": identity.source_ip,
                "user_agent": identity.user_agent,
                "requester_metadata": requester,
            }
        ),
        "messages": REDACTED if event.content_redacted else chat_messages(event),
        "response": REDACTED if event.content_redacted else chat_completion(event),
        "prompt_tokens": event.input_tokens,
        "completion_tokens": event.output_tokens,
        "total_tokens": (event.input_tokens or 0) + (event.output_tokens or 0),
        "error_str": "request failed" if event.outcome == "failure" else None,
        "error_information": {"error_code": event.error_code} if event.error_code else None,
        "model_parameters": params,
        "hidden_params": {},
        "guardrail_information": [_litellm_guardrail(g) for g in event.guardrails if g.source.startswith("litellm:")]
        or None,
    }


# --- Bedrock ----------------------------------------------------------------------------------------------------


def _converse_content(message: Message) -> list[Record]:
    content: list[Record] = [{"text": message.content}] if message.content or not message.tool_calls else []
    for call in message.tool_calls:
        content.append(
            {"toolUse": _drop_none({"toolUseId": call.id, "name": call.name, "input": _arguments(call.arguments)})}
        )
    return content


def _converse_messages(messages: Iterable[Message]) -> list[Record]:
    rendered: list[Record] = []
    for message in messages:
        if message.role == "tool":
            result = _drop_none({"toolUseId": message.tool_call_id, "content": [{"text": message.content}]})
            rendered.append({"role": "user", "content": [{"toolResult": result}]})
        else:
            rendered.append({"role": message.role, "content": _converse_content(message)})
    return rendered


def _bedrock_guardrail(verdicts: list[GuardrailVerdict]) -> Record:
    """Converse ``trace.guardrail`` for a ``bedrock.guardrail`` verdict: each category a content filter."""
    filters = [{"type": category, "confidence": "HIGH", "action": "BLOCKED"} for category in verdicts[0].categories]
    if verdicts[0].action == "flagged":
        filters = [{**item, "action": "NONE"} for item in filters]
    return {"guardrail": {"inputAssessment": {"gr-samples": {"contentPolicy": {"filters": filters}}}}}


def bedrock_principal(event: Event) -> str:
    """The caller's IAM identity, which AWS logs for every call: the user id when it is an ARN, else an assumed
    role of the application, its session named after the caller's credential (or address) when no user is known,
    so that callers apart stay apart (``requestMetadata``, where the user goes, is the caller's word)."""
    identity = event.identity
    user = identity.user_id or ""
    if user.startswith("arn:"):
        return user
    account = identity.organization_id or "000000000000"
    session = "gateway" if user else (identity.api_key_hash or identity.source_ip or "gateway")
    return f"arn:aws:sts::{account}:assumed-role/{event.service_name or 'bedrock-invoker'}-role/{session}"


def render_bedrock(event: Event) -> Record:
    """A Bedrock model invocation log of a ``Converse`` call (``ConverseStream`` when the event streamed)."""
    inference = _drop_none(
        {
            "maxTokens": event.request_params.get("max_tokens"),
            "temperature": event.request_params.get("temperature"),
            "topP": event.request_params.get("top_p"),
        }
    )
    body: Record = {"messages": _converse_messages(event.input_messages)}
    if event.system_instructions:
        body["system"] = [{"text": event.system_instructions}]
    if inference:
        body["inferenceConfig"] = inference
    if event.tool_definitions:
        body["toolConfig"] = {
            "tools": [{"toolSpec": {"name": t.name, "description": t.description}} for t in event.tool_definitions]
        }
    output: Record = _drop_none(
        {
            "output": {
                "message": {
                    "role": "assistant",
                    "content": [c for m in event.output_messages for c in _converse_content(m)],
                }
            },
            "stopReason": event.finish_reasons[0] if event.finish_reasons else None,
            "usage": _drop_none({"inputTokens": event.input_tokens, "outputTokens": event.output_tokens}),
        }
    )
    verdicts = [g for g in event.guardrails if g.source == "bedrock.guardrail"]
    if verdicts:
        output["trace"] = _bedrock_guardrail(verdicts)
        if verdicts[0].action == "blocked":
            output["stopReason"] = "guardrail_intervened"
    identity = event.identity
    log_input: Record = {"inputContentType": "application/json", "inputTokenCount": event.input_tokens}
    if event.content_redacted:
        log_input["inputBodyS3Path"] = f"s3://model-invocation-logs/{event.id}_input.json"
    else:
        log_input["inputBodyJson"] = body
    record: Record = {
        "schemaType": SCHEMA_TYPE,
        "schemaVersion": "1.0",
        "timestamp": _iso(event.timestamp),
        "accountId": identity.organization_id,
        "identity": {"arn": bedrock_principal(event)},
        "region": "us-east-1",
        "requestId": event.id,
        "operation": "ConverseStream" if event.request_params.get("stream") else "Converse",
        "modelId": event.request_model,
        "requestMetadata": _drop_none(
            {
                "user_id": identity.user_id,
                "session_id": identity.session_id,
                "client_ip": identity.source_ip,
                "user_agent": identity.user_agent,
                "service": event.service_name,
            }
        )
        or None,
        "input": _drop_none(log_input),
        "output": _drop_none(
            {"outputContentType": "application/json", "outputBodyJson": output, "outputTokenCount": event.output_tokens}
        ),
        "errorCode": event.error_code if event.outcome == "failure" else None,
    }
    return _drop_none(record)


# --- OpenTelemetry ----------------------------------------------------------------------------------------------


def _any_value(value: Any) -> Record:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_any_value(item) for item in value]}}
    return {"stringValue": str(value)}


def _attributes(values: dict[str, Any]) -> list[Record]:
    return [{"key": key, "value": _any_value(value)} for key, value in values.items() if value is not None]


def _genai_parts(message: Message) -> Record:
    if message.role == "tool":
        parts = [_drop_none({"type": "tool_call_response", "id": message.tool_call_id, "response": message.content})]
    else:
        parts = [{"type": "text", "content": message.content}] if message.content else []
        parts += [
            _drop_none({"type": "tool_call", "id": call.id, "name": call.name, "arguments": _arguments(call.arguments)})
            for call in message.tool_calls
        ]
    return {"role": message.role, "parts": parts}


def _json(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


def otel_span(event: Event) -> Record:
    """One GenAI client span with opt-in content recorded (unless the event is content-redacted)."""
    identity = event.identity
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": event.operation or "chat",
        "gen_ai.provider.name": event.provider,
        "gen_ai.request.model": event.request_model,
        "gen_ai.response.model": event.response_model,
        "gen_ai.response.finish_reasons": event.finish_reasons or None,
        "gen_ai.usage.input_tokens": event.input_tokens,
        "gen_ai.usage.output_tokens": event.output_tokens,
        **{f"gen_ai.request.{key}": value for key, value in event.request_params.items()},
        "user.id": identity.user_id,
        "organization.id": identity.organization_id,
        "client.address": identity.source_ip,
        "user_agent.original": identity.user_agent,
        "gen_ai.conversation.id": identity.session_id,
        "error.type": event.error_code if event.outcome == "failure" else None,
    }
    if event.tool_definitions:
        attrs["gen_ai.tool.definitions"] = _json(
            [{"type": "function", "name": t.name, "description": t.description} for t in event.tool_definitions]
        )
    if not event.content_redacted:
        if event.system_instructions:
            attrs["gen_ai.system_instructions"] = _json([{"type": "text", "content": event.system_instructions}])
        attrs["gen_ai.input.messages"] = _json([_genai_parts(m) for m in event.input_messages])
        attrs["gen_ai.output.messages"] = _json([_genai_parts(m) for m in event.output_messages])
        if event.retrieved_documents:
            attrs["gen_ai.retrieval.documents"] = _json(_documents(event))
    start = round(event.timestamp * 1e6) * 1000  # µs precision keeps the nanosecond string free of float noise
    trace_id, _, span_id = event.id.partition("-")
    span: Record = {
        "traceId": trace_id,
        "spanId": span_id or trace_id[:16],
        "name": f"{event.operation or 'chat'} {event.request_model or ''}".strip(),
        "kind": 3,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": None if event.duration_ms is None else str(start + round(event.duration_ms * 1e6)),
        "attributes": _attributes(attrs),
        "status": {"code": 2, "message": event.error_code or "error"} if event.outcome == "failure" else {"code": 1},
    }
    return _drop_none(span)


def render_otel(events: Iterable[Event]) -> Record:
    """One OTLP/JSON export: spans grouped into one ``resourceSpans`` entry per service."""
    by_service: dict[str | None, list[Record]] = {}
    for event in events:
        by_service.setdefault(event.service_name, []).append(otel_span(event))
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _attributes({"service.name": service})},
                "scopeSpans": [{"scope": {"name": "abusewatch.traffic", "version": "1"}, "spans": spans}],
            }
            for service, spans in by_service.items()
        ]
    }


RENDERERS: dict[str, Callable[[Event], Record]] = {
    "litellm": render_litellm,
    "openai": render_openai,
    "bedrock": render_bedrock,
    "otel": lambda event: render_otel([event]),
}


def round_trip(event: Event, fmt: str) -> list[Event]:
    """``event`` logged as a ``fmt`` record and normalised back: what the detectors see of it, under the identity
    they key it by (the normalisers hash API keys, Bedrock's credential is the IAM principal, OTel logs no key)."""
    return normalise_many(RENDERERS[fmt](event), received_at=event.timestamp)
