"""OpenTelemetry traces in the OTLP/JSON encoding, read with the GenAI semantic conventions.

Follows the OTLP protobuf JSON mapping (``ExportTraceServiceRequest``: ``resourceSpans[].resource.attributes``,
``scopeSpans[].spans[]`` with ``traceId``, ``spanId``, ``startTimeUnixNano``, ``endTimeUnixNano``, ``status``,
``events``, ``attributes`` as ``{key, value: AnyValue}`` lists, 64-bit ints as strings) and the GenAI semantic
conventions (v1.37+): ``gen_ai.operation.name``, ``gen_ai.provider.name`` (older ``gen_ai.system``),
``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.response.finish_reasons``,
``gen_ai.usage.input_tokens`` / ``output_tokens`` (input at least the prompt-cache counts
``gen_ai.usage.cache_read.input_tokens`` / ``cache_creation.input_tokens``, or OpenLLMetry's
``cache_read_input_tokens`` / ``cache_creation_input_tokens``; the reads are the event's cache reads),
``gen_ai.request.*`` parameters, ``gen_ai.conversation.id``, ``gen_ai.tool.definitions`` and the opt-in content
``gen_ai.system_instructions``, ``gen_ai.input.messages``, ``gen_ai.output.messages`` (JSON strings of
``{role, parts: [{type: text|tool_call|tool_call_response}]}``);
``execute_tool`` spans (``gen_ai.tool.name``, ``gen_ai.tool.call.id`` / ``arguments`` / ``result``), with the
content also read from a ``gen_ai.client.inference.operation.details`` span event. Older instrumentations are read
too: ``gen_ai.content.prompt`` / ``gen_ai.content.completion`` span events and OpenLLMetry's flattened
``gen_ai.prompt.N.role|content|tool_call_id`` / ``gen_ai.completion.N.*`` attributes
(with ``.tool_calls.M.id|name|arguments``).

One export holds many spans, so this format yields one event per GenAI span (a span with any ``gen_ai.*``
attribute); other spans (HTTP, DB...) are skipped, and an export without GenAI spans yields no events (one whose
entries are not objects is malformed, not empty). Attributes written as a plain map are read too. Content
is opt-in in OTel: a span without any of it normalises with ``content_redacted``. Content sent only as OTLP *log
records* (the per-message events ``gen_ai.user.message``, ``gen_ai.choice``... of conventions up to v1.36, which
instrumentations emit through the logs signal) is not in a trace export and is not read. Convention: retrieved documents
in ``gen_ai.retrieval.documents`` (JSON array of strings or ``{id, source, content}``). Identity: ``user.id`` /
``enduser.id``, ``client.address``, ``user_agent.original``, ``session.id`` / ``gen_ai.conversation.id``,
``organization.id``, and ``service.name`` from the resource.
"""

from __future__ import annotations

from typing import Any

from detectors.event import Event, Identity, Message, ToolCall
from detectors.normalise.chat import Conversation
from detectors.normalise.errors import NormaliseError
from detectors.normalise.fields import (
    MAX_ID_CHARS,
    TextLimit,
    as_dict,
    as_float,
    as_int,
    as_items,
    as_str,
    as_timestamp,
    content_text,
    count_max,
    count_share,
    count_sum,
    dicts,
    event_id,
    first,
    first_count,
    json_text,
    parse_json,
    request_params,
    retrieved_documents,
    strings,
    tool_definitions,
)

NAME = "otel"
_MAX_VALUE_DEPTH = 32
_ERROR_CODES = (2, "2", "STATUS_CODE_ERROR")
_PARAM_ALIASES = {"choice.count": "n"}
_REQUEST_PREFIX = "gen_ai.request."
_MAX_INDEX_DIGITS = 6
_ANY_VALUE_KEYS = frozenset(
    ("stringValue", "boolValue", "intValue", "doubleValue", "arrayValue", "kvlistValue", "bytesValue")
)  # message and tool-call indexes of flattened OpenLLMetry attributes
# Prompt-cache token counts: the conventions' name, then OpenLLMetry's for the same count (one of each kind is read).
_CACHE_READ_ATTRIBUTES = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
_CACHE_ATTRIBUTES = (
    _CACHE_READ_ATTRIBUTES,
    ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens"),
)


def detect(record: dict[str, Any]) -> bool:
    return isinstance(record.get("resourceSpans"), list)


def normalise(record: dict[str, Any], clip: TextLimit, now: float) -> list[Event]:
    """One event per GenAI span. An export without one yields nothing, unless entries of it are not objects: then
    it is broken, not free of GenAI spans, and is refused (a dead letter) rather than silently dropped."""
    events: list[Event] = []
    broken = 0  # resourceSpans, scopeSpans or spans entries that are not objects
    for resource_spans in as_items(record.get("resourceSpans")):
        if not isinstance(resource_spans, dict):
            broken += 1
            continue
        resource = attributes(as_dict(resource_spans.get("resource")).get("attributes"))
        for scope_spans in as_items(resource_spans.get("scopeSpans")):
            if not isinstance(scope_spans, dict):
                broken += 1
                continue
            for span in as_items(scope_spans.get("spans")):
                if not isinstance(span, dict):
                    broken += 1
                    continue
                attrs = {**details_event_attributes(span), **attributes(span.get("attributes"))}
                if any(key.startswith("gen_ai.") for key in attrs):
                    clip.truncated = False
                    events.append(span_event(span, attrs, resource, clip, now))
    if broken and not events:
        raise NormaliseError(
            f"malformed:{NAME}", f"{broken} resourceSpans, scopeSpans or spans entries are not objects"
        )
    return events


DETAILS_EVENT = "gen_ai.client.inference.operation.details"


def details_event_attributes(span: dict[str, Any]) -> dict[str, Any]:
    """The attributes of the span's ``gen_ai.client.inference.operation.details`` event (semantic conventions
    v1.37+): instrumentations that record content as that event, not on the span, put ``gen_ai.input.messages``,
    ``gen_ai.output.messages``, ``gen_ai.system_instructions`` there under the span's own names. The span's
    attributes win where both have one."""
    for event in dicts(span.get("events")):
        if event.get("name") == DETAILS_EVENT:
            return attributes(event.get("attributes"))
    return {}


def any_value(value: Any, depth: int = _MAX_VALUE_DEPTH) -> Any:
    """An OTLP ``AnyValue`` as a Python value (``intValue`` arrives as a string in OTLP/JSON)."""
    if not isinstance(value, dict) or depth <= 0:
        return None
    if "stringValue" in value:
        return value["stringValue"] if isinstance(value["stringValue"], str) else None
    if "boolValue" in value:
        return value["boolValue"] if isinstance(value["boolValue"], bool) else None
    if "intValue" in value:
        return _int_value(value["intValue"])
    if "doubleValue" in value:
        return as_float(value["doubleValue"])
    if "arrayValue" in value:
        return [any_value(item, depth - 1) for item in as_items(as_dict(value["arrayValue"]).get("values"))]
    if "kvlistValue" in value:
        return attributes(as_dict(value["kvlistValue"]).get("values"), depth - 1)
    if "bytesValue" in value:
        return as_str(value["bytesValue"], 1 << 20)
    return None


def _int_value(raw: Any) -> int | None:
    """An OTLP ``intValue``: a decimal string (64-bit ints do not fit JSON numbers) or a number."""
    if isinstance(raw, str) and len(raw) <= 21:
        try:
            return int(raw)
        except ValueError:
            pass
    number = as_float(raw)
    return int(number) if number is not None else None


def attributes(items: Any, depth: int = _MAX_VALUE_DEPTH) -> dict[str, Any]:
    """A ``[{key, value}]`` list as a dict; entries with a missing or non-string key are dropped.

    Some exporters write attributes as a plain map (``{"gen_ai.operation.name": "chat"}``) instead: read as well,
    each value an ``AnyValue`` or a plain JSON value."""
    if isinstance(items, dict) and not isinstance(items.get("key"), str):
        return {key: _map_value(value, depth) for key, value in items.items() if isinstance(key, str)}
    result: dict[str, Any] = {}
    for item in as_items(items):
        if isinstance(item, dict) and isinstance(item.get("key"), str):
            result[item["key"]] = any_value(item.get("value"), depth)
    return result


def _map_value(value: Any, depth: int) -> Any:
    """A value of a plain attribute map: an ``AnyValue`` object is unwrapped, anything else is taken as it is."""
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _ANY_VALUE_KEYS:
        return any_value(value, depth)
    return value


def _structured(value: Any) -> Any:
    """Content attributes are JSON strings, or already structured where the exporter supports it."""
    return parse_json(value) if isinstance(value, str) else value


def span_event(
    span: dict[str, Any], attrs: dict[str, Any], resource: dict[str, Any], clip: TextLimit, now: float
) -> Event:
    system = content_text(_parts_text(_structured(attrs.get("gen_ai.system_instructions"))))
    inputs = genai_messages(_structured(attrs.get("gen_ai.input.messages")), clip)
    outputs = genai_messages(_structured(attrs.get("gen_ai.output.messages")), clip)
    legacy_in, legacy_out = legacy_content(span, attrs, clip)
    system_parts = [system, *(m.content for m in inputs if m.role in ("system", "developer")), legacy_in.system_text]
    input_messages = [m for m in inputs if m.role not in ("system", "developer")] + legacy_in.messages
    output_messages = outputs + legacy_out.messages
    tool_name = as_str(attrs.get("gen_ai.tool.name"))
    if tool_name and not output_messages:
        output_messages = [Message(role="assistant", tool_calls=[_tool_call(tool_name, attrs, clip)])]
    has_content = any(
        key in attrs for key in ("gen_ai.system_instructions", "gen_ai.input.messages", "gen_ai.output.messages")
    ) or bool(legacy_in.messages or legacy_in.system or legacy_out.messages or "gen_ai.tool.call.arguments" in attrs)
    start = as_int(span.get("startTimeUnixNano"))
    end = as_int(span.get("endTimeUnixNano"))
    status = as_dict(span.get("status"))
    error_code = as_str(attrs.get("error.type"), 128)
    failed = error_code is not None or status.get("code") in _ERROR_CODES
    trace_id = as_str(span.get("traceId"), 64)
    span_id = as_str(span.get("spanId"), 32)
    finish = attrs.get("gen_ai.response.finish_reasons")
    params = {
        key.removeprefix(_REQUEST_PREFIX): value for key, value in attrs.items() if key.startswith(_REQUEST_PREFIX)
    }
    timestamp = as_timestamp(start) or as_timestamp(end)
    input_count = input_tokens(attrs)
    return Event(
        id=f"{trace_id}-{span_id}" if trace_id and span_id else event_id(span_id, NAME, span),
        timestamp=timestamp or now,
        timestamp_assumed=not timestamp,
        dataset=NAME,
        provider=first(attrs.get("gen_ai.provider.name"), attrs.get("gen_ai.system")),
        operation=as_str(attrs.get("gen_ai.operation.name"), 64),
        request_model=as_str(attrs.get("gen_ai.request.model")),
        response_model=as_str(attrs.get("gen_ai.response.model")),
        finish_reasons=strings(finish if isinstance(finish, list) else [finish]) if finish is not None else [],
        input_tokens=input_count,
        cache_read_tokens=count_share(first_count(*(attrs.get(name) for name in _CACHE_READ_ATTRIBUTES)), input_count),
        output_tokens=first_count(attrs.get("gen_ai.usage.output_tokens"), attrs.get("gen_ai.usage.completion_tokens")),
        system_instructions=clip("\n\n".join(part for part in system_parts if part)),
        input_messages=input_messages,
        output_messages=output_messages,
        tool_definitions=tool_definitions(_structured(attrs.get("gen_ai.tool.definitions"))),
        retrieved_documents=retrieved_documents(_structured(attrs.get("gen_ai.retrieval.documents")), clip),
        request_params=request_params(params, _PARAM_ALIASES),
        identity=Identity(
            user_id=first(attrs.get("user.id"), attrs.get("enduser.id")),
            organization_id=first(attrs.get("organization.id"), resource.get("organization.id")),
            source_ip=as_str(attrs.get("client.address"), 64),
            user_agent=as_str(attrs.get("user_agent.original")),
            session_id=first(attrs.get("session.id"), attrs.get("gen_ai.conversation.id"), limit=MAX_ID_CHARS),
        ),
        service_name=first(resource.get("service.name"), attrs.get("service.name")),
        duration_ms=round((end - start) / 1e6, 3) if start is not None and end is not None and end >= start else None,
        outcome="failure" if failed else "success",
        error_code=error_code or (first(status.get("message"), limit=128) if failed else None),
        content_redacted=not has_content,
        truncated=clip.truncated,
    )


def input_tokens(attrs: dict[str, Any]) -> int | None:
    """``gen_ai.usage.input_tokens`` (older ``prompt_tokens``), taken as at least the prompt-cache reads and writes
    the span reports beside it (:data:`_CACHE_ATTRIBUTES`): the conventions count those in the input tokens, but an
    instrumentation that passes on Anthropic's own ``input_tokens`` leaves them out."""
    total = first_count(attrs.get("gen_ai.usage.input_tokens"), attrs.get("gen_ai.usage.prompt_tokens"))
    cached = count_sum(*(first_count(*(attrs.get(name) for name in names)) for names in _CACHE_ATTRIBUTES))
    return count_max(total, cached)


def _parts_text(parts: Any) -> Any:
    """System instructions are a list of parts; text parts carry ``content``."""
    return [part for part in as_items(parts) if not isinstance(part, dict) or part.get("type") in (None, "text")]


def _tool_call(name: str, attrs: dict[str, Any], clip: TextLimit) -> ToolCall:
    result = attrs.get("gen_ai.tool.call.result")
    return ToolCall(
        name=name,
        arguments=clip(json_text(attrs.get("gen_ai.tool.call.arguments"))),
        id=as_str(attrs.get("gen_ai.tool.call.id"), MAX_ID_CHARS),
        result=clip(json_text(result)) if result is not None else None,
    )


def genai_messages(messages: Any, clip: TextLimit) -> list[Message]:
    """GenAI ``{role, parts}`` messages; ``tool_call_response`` parts become ``tool`` messages."""
    result: list[Message] = []
    for message in as_items(messages):
        if not isinstance(message, dict):
            continue
        role = (as_str(message.get("role"), 32) or "user").lower()
        texts: list[str] = []
        calls: list[ToolCall] = []
        for part in as_items(message.get("parts")):
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind == "text" and isinstance(part.get("content"), str):
                texts.append(part["content"])
            elif kind == "tool_call" and as_str(part.get("name")):
                calls.append(
                    ToolCall(
                        name=as_str(part.get("name")) or "",
                        arguments=clip(json_text(part.get("arguments"))),
                        id=as_str(part.get("id"), MAX_ID_CHARS),
                    )
                )
            elif kind == "tool_call_response":
                result.append(
                    Message(
                        role="tool",
                        content=clip(json_text(part.get("response"))),
                        tool_call_id=as_str(part.get("id"), MAX_ID_CHARS),
                    )
                )
        if texts or calls or role != "tool":
            result.append(
                Message(role=role, content=clip("\n".join(texts)), name=as_str(message.get("name")), tool_calls=calls)
            )
    return result


def legacy_content(span: dict[str, Any], attrs: dict[str, Any], clip: TextLimit) -> tuple[Conversation, Conversation]:
    """Content in older shapes: ``gen_ai.content.prompt|completion`` events holding OpenAI-style message JSON, and
    OpenLLMetry's ``gen_ai.prompt.N.*`` / ``gen_ai.completion.N.*`` attributes."""
    inputs, outputs = Conversation(clip), Conversation(clip)
    for event in dicts(span.get("events")):
        event_attrs = attributes(event.get("attributes"))
        if event.get("name") == "gen_ai.content.prompt":
            inputs.add_items(_structured(event_attrs.get("gen_ai.prompt")))
        elif event.get("name") == "gen_ai.content.completion":
            completion = _structured(event_attrs.get("gen_ai.completion"))
            outputs.add_items([{"role": "assistant", **m} if isinstance(m, dict) else m for m in as_items(completion)])
    for prefix, conversation in (("gen_ai.prompt.", inputs), ("gen_ai.completion.", outputs)):
        flattened: dict[int, dict[str, Any]] = {}
        for key, value in attrs.items():
            if key.startswith(prefix):
                index, _, field = key[len(prefix) :].partition(".")
                if index.isdigit() and len(index) < _MAX_INDEX_DIGITS:
                    _set_flattened(flattened, int(index), field, value)
        conversation.add_items([_unflattened(item) for _, item in sorted(flattened.items())])
    return inputs, outputs


def _set_flattened(messages: dict[int, dict[str, Any]], index: int, field: str, value: Any) -> None:
    """One OpenLLMetry message attribute: ``role``, ``content``, ``tool_call_id`` or
    ``tool_calls.M.{id, name, arguments}``; other fields are ignored."""
    if field in ("role", "content", "tool_call_id"):
        messages.setdefault(index, {})[field] = value
        return
    if not field.startswith("tool_calls."):
        return
    call_index, _, call_field = field.removeprefix("tool_calls.").partition(".")
    if call_index.isdigit() and len(call_index) < _MAX_INDEX_DIGITS and call_field in ("id", "name", "arguments"):
        calls = messages.setdefault(index, {}).setdefault("tool_calls", {})
        calls.setdefault(int(call_index), {})[call_field] = value


def _unflattened(message: dict[str, Any]) -> dict[str, Any]:
    """A flattened message as the OpenAI-shaped message it was (``tool_calls`` as a list of ``function`` calls)."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    return {
        **message,
        "tool_calls": [
            {"id": call.get("id"), "function": {"name": call.get("name"), "arguments": call.get("arguments")}}
            for _, call in sorted(calls.items())
        ],
    }
