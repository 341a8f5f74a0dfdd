"""OpenAI request/response pairs, as an application or gateway logs them (OpenAI itself keeps no such log).

Envelope (our convention; every key but ``request`` is optional)::

    {
      "request_id": "req_...",            # else response.id, else a hash of the record
      "timestamp": 1768435200.5,          # epoch s/ms or ISO 8601; else response.created / created_at
      "duration_ms": 812.0,
      "request":  {...},                  # a Chat Completions or Responses API request body, as sent
      "response": {...},                  # chat.completion, a Responses object, or a streamed one as its list of
                                          # chat.completion.chunk objects or of Responses stream events
      "error":    {"type": ..., "code": ..., "message": ...},   # the OpenAI error object of a failed call
      "moderation": {"results": [{"flagged": true, "categories": {"violence": true}}]},
      "metadata": {"user_id": ..., "session_id": ...},   # the app's own; wins over the client's request.metadata
      "user": "u-123",                    # else metadata.user_id, request.user / .safety_identifier / .metadata
      "api_key_hash": "...",              # or "api_key": a raw key, which is hashed here and never kept
      "organization": "org-...", "project": "proj-...",
      "client_ip": "203.0.113.7", "user_agent": "...", "session_id": "...",   # else metadata / conversation id
      "service": "support-bot",
      "retrieved_documents": [{"id": ..., "source": ..., "content": ...}]     # or "context": [...] (RAG)
    }

Request and response bodies follow the public OpenAI API reference (see :mod:`detectors.normalise.chat`). A streamed
response is reassembled (:func:`merge_stream`); a list of anything else is no reply (outcome ``unknown``,
``content_redacted``), and the request is judged all the same. Gateways proxying the Anthropic Messages API log its
content blocks: document blocks in the request's new turn are retrieved documents.
A ``finish_reason`` of ``content_filter`` and a flagged moderation result become guardrail verdicts.
"""

from __future__ import annotations

from typing import Any

from detectors.event import Event, GuardrailVerdict, Identity
from detectors.normalise.chat import Conversation, completion_output, usage_tokens
from detectors.normalise.fields import (
    MAX_ID_CHARS,
    TextLimit,
    as_dict,
    as_float,
    as_int,
    as_items,
    as_str,
    as_timestamp,
    count_share,
    dicts,
    dig,
    event_id,
    first,
    hash_key,
    json_text,
    key_hash,
    request_params,
    retrieved_documents,
    tool_definitions,
)

NAME = "openai"
_REQUEST_KEYS = ("messages", "input", "prompt")


def detect(record: dict[str, Any]) -> bool:
    request = record.get("request")
    return isinstance(request, dict) and any(key in request for key in (*_REQUEST_KEYS, "model"))


def normalise(record: dict[str, Any], clip: TextLimit, now: float) -> list[Event]:
    request = as_dict(record.get("request"))
    raw_response = record.get("response")
    streamed = isinstance(raw_response, list) and bool(raw_response)
    response = merge_stream(raw_response) if streamed else as_dict(raw_response)
    unreadable = streamed and not response  # a stream of a shape not read: the request is judged all the same
    conversation = Conversation(clip)
    if isinstance(request.get("instructions"), str):
        conversation.system.append(request["instructions"])
    has_content = False
    template = request.get("prompt") if isinstance(request.get("prompt"), dict) else None
    for key in _REQUEST_KEYS:
        if request.get(key) is not None:
            has_content = True
            if template is not None and key == "prompt":
                conversation.add_prompt_template(template)
            else:
                conversation.add_items(request[key])
    completion = completion_output(response, clip)
    tokens = usage_tokens(response.get("usage"))
    raw_error = record.get("error")
    error = {"message": raw_error} if isinstance(raw_error, str) and raw_error else as_dict(raw_error)
    error = error or as_dict(response.get("error"))
    outcome = "failure" if error else ("success" if response else "unknown")
    # the envelope is the app's own (what it authenticated); the request body, metadata included, is the client's
    metadata = {**as_dict(request.get("metadata")), **as_dict(record.get("metadata"))}
    app_user = as_dict(record.get("metadata")).get("user_id")
    conversation_ref = request.get("conversation")
    timestamp = (
        as_timestamp(record.get("timestamp"))
        or as_timestamp(response.get("created"))
        or as_timestamp(response.get("created_at"))
    )
    return [
        Event(
            id=event_id(first(record.get("request_id"), response.get("id"), limit=MAX_ID_CHARS * 4), NAME, record),
            timestamp=timestamp or now,
            timestamp_assumed=not timestamp,
            dataset=NAME,
            provider="openai",
            operation="text_completion" if _legacy_completion(request) else "chat",
            request_model=as_str(request.get("model")),
            response_model=as_str(response.get("model")),
            finish_reasons=completion.finish_reasons,
            input_tokens=tokens.input,
            cache_read_tokens=count_share(tokens.cache_read, tokens.input),
            output_tokens=tokens.output,
            system_instructions=conversation.system_text,
            input_messages=conversation.messages,
            output_messages=completion.messages,
            tool_definitions=tool_definitions(request.get("tools")),
            retrieved_documents=retrieved_documents(record.get("retrieved_documents", record.get("context")), clip)
            + conversation.take_new_documents()
            + completion.documents,
            request_params=request_params(request),
            identity=Identity(
                user_id=first(
                    record.get("user"),
                    app_user,
                    request.get("user"),
                    request.get("safety_identifier"),
                    metadata.get("user_id"),
                ),
                api_key_hash=key_hash(record.get("api_key_hash")) or hash_key(record.get("api_key")),
                organization_id=as_str(record.get("organization")),
                team_id=as_str(record.get("project")),
                source_ip=as_str(record.get("client_ip"), 64),
                user_agent=as_str(record.get("user_agent")),
                session_id=first(
                    record.get("session_id"),
                    metadata.get("session_id"),
                    as_dict(conversation_ref).get("id"),
                    conversation_ref,
                    limit=MAX_ID_CHARS,
                ),
            ),
            service_name=as_str(record.get("service")),
            duration_ms=as_float(record.get("duration_ms")),
            outcome=outcome,
            error_code=first(error.get("code"), error.get("type"), limit=128),
            guardrails=guardrails(record, completion.finish_reasons),
            content_redacted=not has_content or unreadable,
            truncated=clip.truncated,
        )
    ]


def _legacy_completion(request: dict[str, Any]) -> bool:
    """A legacy Completions request: a ``prompt`` string or list and no ``messages`` (a Responses ``prompt`` is a
    template reference, an object)."""
    return isinstance(request.get("prompt"), str | list) and "messages" not in request


def merge_stream(chunks: list[Any]) -> dict[str, Any]:
    """A streamed response logged as the list of what the stream sent, as one response object: Chat Completions
    chunks (:func:`merge_chunks`) or Responses API stream events (:func:`merge_response_events`).

    A list of neither (another provider's stream events, logged in this envelope by a gateway) gives ``{}``: the
    event then has no reply, outcome ``unknown`` and ``content_redacted`` (part of the record's content was not
    there to judge), and its request is still judged. Read as chunks it would have been a reply with no text that
    succeeded; refused, the request's attack would have gone unjudged."""
    events = dicts(chunks)
    if any("choices" in chunk for chunk in events):
        return merge_chunks(chunks)
    if any(isinstance(kind := event.get("type"), str) and kind.startswith(_EVENT_PREFIX) for event in events):
        return merge_response_events(events)
    return {}


_EVENT_PREFIX = "response."
_TERMINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")
_ITEM_EVENTS = ("response.output_item.added", "response.output_item.done")
_DELTA_EVENTS = (
    "response.output_text.delta",
    "response.refusal.delta",
    "response.function_call_arguments.delta",
    "response.custom_tool_call_input.delta",
)
_DONE_EVENTS = {  # event type: the key holding the finished text
    "response.output_text.done": "text",
    "response.refusal.done": "refusal",
    "response.function_call_arguments.done": "arguments",
    "response.custom_tool_call_input.done": "input",
}


def merge_response_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """A streamed Responses API call (its semantic stream events) as one Responses object.

    The terminal event's ``response`` (``response.completed`` / ``.incomplete`` / ``.failed``) holds the whole
    response; without it (a stream cut short, or logged without it) the output items are assembled from
    ``response.output_item.added`` / ``.done`` and the text, refusal and call-argument deltas (the ``.done`` event's
    text where logged), keyed by ``item_id``. An ``error`` event is the response's error."""
    response: dict[str, Any] = {}
    terminal = False
    items: dict[str, dict[str, Any]] = {}
    finished: set[str] = set()  # items whose output_item.done was logged: complete as they are
    pieces: dict[str, list[str]] = {}
    texts: dict[str, str] = {}
    for event in events:
        kind = event.get("type")
        if kind == "error":
            response["error"] = {"code": event.get("code"), "message": event.get("message")}
        elif isinstance(event.get("response"), dict):  # response.created / .in_progress / the terminal event
            response.update(event["response"])
            terminal = terminal or kind in _TERMINAL_EVENTS
        elif kind in _ITEM_EVENTS:
            item = as_dict(event.get("item"))
            key = _item_key(item.get("id"), event)
            if kind == "response.output_item.done":
                items[key] = item
                finished.add(key)
            elif key not in items:
                items[key] = item
        elif kind in _DELTA_EVENTS or kind in _DONE_EVENTS:
            key = _item_key(event.get("item_id"), event)
            items.setdefault(key, {"type": "message", "role": "assistant"})
            if kind in _DONE_EVENTS and isinstance(event.get(_DONE_EVENTS[kind]), str):
                texts[key] = event[_DONE_EVENTS[kind]]
            elif isinstance(event.get("delta"), str):
                pieces.setdefault(key, []).append(event["delta"])
    if terminal and as_items(response.get("output")):
        return response
    output = [
        item if key in finished else _streamed_item(item, texts.get(key, "".join(pieces.get(key, []))))
        for key, item in items.items()
    ]
    return {**response, "object": "response", "output": output}


def _item_key(item_id: Any, event: dict[str, Any]) -> str:
    """The output item a stream event belongs to: its id, or its place in the output when the id is missing."""
    return as_str(item_id, MAX_ID_CHARS) or f"#{as_int(event.get('output_index'))}"


def _streamed_item(item: dict[str, Any], text: str) -> dict[str, Any]:
    """An output item the stream began, with the text its deltas carried: a message's text, a function call's
    arguments or a custom tool call's input."""
    kind = item.get("type")
    if kind == "function_call":
        return {**item, "arguments": text}
    if kind == "custom_tool_call":
        return {**item, "input": text}
    return {**item, "content": [{"type": "output_text", "text": text}]} if text else item


def merge_chunks(chunks: list[Any]) -> dict[str, Any]:
    """A streamed Chat Completions response (``chat.completion.chunk`` list) reassembled into one chat.completion:
    ``delta.content`` (a text completion's or DeepSeek's ``choices[].text``) and an audio reply's
    ``delta.audio.transcript`` concatenated, ``delta.tool_calls`` merged by ``index``."""
    merged: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        if not isinstance(chunk, dict):
            continue
        for key in ("id", "model", "created", "usage"):
            if chunk.get(key) is not None:
                merged[key] = chunk[key]
        for raw in as_items(chunk.get("choices")):
            if not isinstance(raw, dict):
                continue
            choice = choices.setdefault(
                as_int(raw.get("index")) or 0, {"content": [], "transcript": [], "calls": {}, "reason": None}
            )
            delta = as_dict(raw.get("delta"))
            text = delta.get("content") if "delta" in raw else raw.get("text")
            if isinstance(text, str):
                choice["content"].append(text)
            transcript = as_dict(delta.get("audio")).get("transcript")
            if isinstance(transcript, str):
                choice["transcript"].append(transcript)
            for call in dicts(delta.get("tool_calls")):
                slot = choice["calls"].setdefault(as_int(call.get("index")) or 0, {"name": [], "arguments": []})
                function = as_dict(call.get("function"))
                slot["id"] = as_str(call.get("id"), MAX_ID_CHARS) or slot.get("id")
                if isinstance(function.get("name"), str):
                    slot["name"].append(function["name"])
                slot["arguments"].append(json_text(function.get("arguments")))
            choice["reason"] = raw.get("finish_reason") or raw.get("stop_reason") or choice["reason"]
    merged["choices"] = [
        {
            "index": index,
            "finish_reason": choice["reason"],
            "message": {
                "role": "assistant",
                "content": "".join(choice["content"]),
                **({"audio": {"transcript": "".join(choice["transcript"])}} if choice["transcript"] else {}),
                "tool_calls": [
                    {
                        "id": slot.get("id"),
                        "function": {"name": "".join(slot["name"]), "arguments": "".join(slot["arguments"])},
                    }
                    for _, slot in sorted(choice["calls"].items())
                ],
            },
        }
        for index, choice in sorted(choices.items())
    ]
    return merged


def guardrails(record: dict[str, Any], finish_reasons: list[str]) -> list[GuardrailVerdict]:
    verdicts: list[GuardrailVerdict] = []
    if "content_filter" in finish_reasons:
        verdicts.append(GuardrailVerdict(source="openai.content_filter", action="blocked"))
    for result in dicts(dig(record, "moderation", "results")):
        categories = sorted(str(name) for name, hit in as_dict(result.get("categories")).items() if hit is True)
        verdicts.append(
            GuardrailVerdict(
                source="openai.moderation",
                action="flagged" if result.get("flagged") is True else "passed",
                categories=categories,
            )
        )
    return verdicts
