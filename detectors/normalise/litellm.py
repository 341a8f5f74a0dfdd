"""LiteLLM proxy logs: the ``StandardLoggingPayload`` that LiteLLM hands to every logging integration.

Follows ``StandardLoggingPayload`` in ``litellm/types/utils.py`` (LiteLLM docs, "StandardLoggingPayload"):
``id``, ``call_type``, ``stream``, ``status`` (success | failure), ``startTime`` / ``endTime`` /
``completionStartTime`` (epoch seconds), ``model``, ``model_group``, ``custom_llm_provider``, ``api_base``,
``metadata`` (``StandardLoggingMetadata``: ``user_api_key_hash``, ``user_api_key_alias``, ``user_api_key_org_id``,
``user_api_key_team_id``, ``user_api_key_user_id``, ``user_api_key_end_user_id``, ``requester_ip_address``,
``requester_metadata``, ``spend_logs_metadata``, ``vector_store_request_metadata``), ``end_user``, ``messages``
(list, str or dict), ``response`` (ModelResponse dict, Responses object or str), ``prompt_tokens`` (with the
prompt-cache tokens: at least the ``cache_creation_input_tokens`` / ``cache_read_input_tokens`` of the response's
usage, see :data:`~detectors.normalise.chat.CACHE_USAGE_KEYS`; the cache reads are that usage's
``cache_read_input_tokens``, else its ``prompt_tokens_details.cached_tokens``), ``completion_tokens``, ``error_str``,
``error_information`` (``error_code``, ``error_class``), ``model_parameters``, ``hidden_params``,
``guardrail_information`` (dict or list of ``StandardLoggingGuardrailInformation``).

Conventions: retrieved documents come from LiteLLM's ``metadata.vector_store_request_metadata[]
.vector_store_search_response.data[]``, or from ``retrieved_documents`` that the application put in its request
``metadata`` (logged as ``metadata.requester_metadata``); the session id from ``session_id`` there (or in
``metadata``/``spend_logs_metadata``). Messages equal to LiteLLM's placeholder ``"redacted-by-litellm"`` (set by
``turn_off_message_logging``) mark the event ``content_redacted``. So does a pass-through reply LiteLLM logged
unread, ``{"response": text}`` (:func:`unread_pass_through`), whose outcome is ``unknown``: its request is judged.
"""

from __future__ import annotations

from typing import Any

from detectors.event import Event, GuardrailVerdict, Identity, Outcome, RetrievedDocument
from detectors.normalise.chat import Conversation, completion_output, usage_tokens
from detectors.normalise.errors import NormaliseError
from detectors.normalise.fields import (
    MAX_ID_CHARS,
    TextLimit,
    as_bool,
    as_dict,
    as_int,
    as_items,
    as_str,
    as_timestamp,
    content_text,
    count_max,
    count_share,
    dicts,
    event_id,
    first,
    guardrail_flags,
    guardrail_hits,
    key_hash,
    request_params,
    retrieved_documents,
    tool_definitions,
)

NAME = "litellm"
REDACTED = "redacted-by-litellm"
_HINTS = ("startTime", "response_cost", "model_parameters", "hidden_params", "custom_llm_provider")
_OPERATIONS = {
    "completion": "chat",
    "acompletion": "chat",
    "text_completion": "text_completion",
    "atext_completion": "text_completion",
    "embedding": "embeddings",
    "aembedding": "embeddings",
    "responses": "chat",
    "aresponses": "chat",
    "anthropic_messages": "chat",
}
# guardrail_status values: "success" passed, "guardrail_intervened" blocked; failures/not_run carry no verdict.
_GUARDRAIL_ACTIONS = {"success": "passed", "guardrail_intervened": "blocked", "blocked": "blocked"}


def detect(record: dict[str, Any]) -> bool:
    return "call_type" in record and any(hint in record for hint in _HINTS)


def normalise(record: dict[str, Any], clip: TextLimit, now: float) -> list[Event]:
    if not any(key in record for key in ("messages", "response", "status")):
        raise NormaliseError(f"malformed:{NAME}", "payload has no messages, no response and no status")
    metadata = as_dict(record.get("metadata"))
    requester = as_dict(metadata.get("requester_metadata"))
    spend = as_dict(metadata.get("spend_logs_metadata"))
    params = as_dict(record.get("model_parameters"))
    messages = record.get("messages")
    redacted = messages is None or messages == REDACTED or record.get("response") == REDACTED
    conversation = Conversation(clip)
    if not redacted:
        conversation.system.append(content_text(params.get("system")))  # Anthropic /v1/messages passthrough
        conversation.add_items(messages)
    unread = unread_pass_through(record.get("response"))
    response = None if record.get("response") == REDACTED or unread else record.get("response")
    completion = completion_output(response, clip)
    tokens = usage_tokens(as_dict(response).get("usage"))
    input_tokens = count_max(as_int(record.get("prompt_tokens")), tokens.input)
    start = as_timestamp(record.get("startTime"))
    end = as_timestamp(record.get("endTime"))
    error = as_dict(record.get("error_information"))
    status = as_str(record.get("status"), 32)
    call_type = as_str(record.get("call_type"), 64)
    stream = as_bool(record.get("stream"))
    headers = as_dict(metadata.get("requester_custom_headers"))
    return [
        Event(
            id=event_id(record.get("id"), NAME, record),
            timestamp=start or end or now,
            timestamp_assumed=not (start or end),
            dataset=NAME,
            provider=as_str(record.get("custom_llm_provider")),
            operation=_OPERATIONS.get(call_type or "", call_type),
            request_model=first(record.get("model_group"), record.get("model")),
            response_model=first(as_dict(response).get("model"), record.get("model")),
            finish_reasons=completion.finish_reasons,
            input_tokens=input_tokens,
            cache_read_tokens=count_share(tokens.cache_read, input_tokens),
            output_tokens=as_int(record.get("completion_tokens")) or tokens.output,
            system_instructions=conversation.system_text,
            input_messages=conversation.messages,
            output_messages=completion.messages,
            tool_definitions=tool_definitions(params.get("tools")),
            retrieved_documents=vector_store_documents(metadata.get("vector_store_request_metadata"), clip)
            + retrieved_documents(requester.get("retrieved_documents", metadata.get("retrieved_documents")), clip)
            + completion.documents
            + conversation.take_new_documents(),
            request_params=request_params({**params, **({"stream": True} if stream else {})}),
            identity=Identity(
                user_id=first(record.get("end_user"), metadata.get("user_api_key_end_user_id"))
                or first(metadata.get("user_api_key_user_id")),
                api_key_hash=key_hash(metadata.get("user_api_key_hash")),
                organization_id=as_str(metadata.get("user_api_key_org_id")),
                team_id=first(metadata.get("user_api_key_team_id"), metadata.get("user_api_key_team_alias")),
                source_ip=first(record.get("requester_ip_address"), metadata.get("requester_ip_address"), limit=64),
                user_agent=first(metadata.get("user_agent"), headers.get("user-agent"), headers.get("User-Agent")),
                session_id=first(
                    requester.get("session_id"), metadata.get("session_id"), spend.get("session_id"), limit=MAX_ID_CHARS
                ),
            ),
            service_name=first(requester.get("service"), metadata.get("user_api_key_alias")),
            duration_ms=round((end - start) * 1000.0, 3)
            if start is not None and end is not None and end >= start
            else None,
            outcome=outcome(status, unread),
            error_code=first(error.get("error_code"), error.get("error_class"), limit=128),
            guardrails=guardrails(record.get("guardrail_information")),
            content_redacted=redacted or unread,
            truncated=clip.truncated,
        )
    ]


def outcome(status: str | None, unread: bool) -> Outcome:
    """The payload's ``status``; a success whose reply was not read (:func:`unread_pass_through`) is ``unknown``."""
    if status == "failure":
        return "failure"
    return "success" if status == "success" and not unread else "unknown"


def unread_pass_through(response: Any) -> bool:
    """Whether ``response`` is a ``StandardPassThroughResponseObject`` (``{"response": text}``): what LiteLLM logs
    for a pass-through call it has no reader for, a stream it could not parse (``"cannot parse chunks to standard
    response object. Chunks=[...]"``) or the raw body of a route without a logging handler. The text is not read as
    a reply: the event's reply is unknown (outcome ``unknown``, ``content_redacted``), its request judged all the
    same, as the OpenAI format does for a stream list it cannot read."""
    return isinstance(response, dict) and len(response) == 1 and isinstance(response.get("response"), str)


def vector_store_documents(requests: Any, clip: TextLimit) -> list[RetrievedDocument]:
    """Documents LiteLLM's vector-store integration retrieved: ``vector_store_search_response.data[]`` items with
    ``content: [{"type": "text", "text": ...}]``, ``file_id``, ``filename``."""
    documents: list[RetrievedDocument] = []
    for request in as_items(requests):
        for item in as_items(as_dict(as_dict(request).get("vector_store_search_response")).get("data")):
            documents.extend(retrieved_documents([item], clip))
    return documents


def _found(info: dict[str, Any]) -> str:
    """What a guardrail's response says it found, by name only: its policy entries (``type:action``) and the keys
    it set to true. Never its free text: responses quote what they matched (a Bedrock guardrail's ``match``, the
    masked ``outputs``), which is the content an operator who turned message logging off kept out of the logs."""
    response = info.get("guardrail_response")
    hits = [f"{label}:{action}" for label, action in sorted(guardrail_hits(response).items())]
    return ", ".join([*hits, *sorted(guardrail_flags(response))])[:500]


def guardrails(information: Any) -> list[GuardrailVerdict]:
    verdicts: list[GuardrailVerdict] = []
    for info in dicts(information):
        action = _GUARDRAIL_ACTIONS.get(as_str(info.get("guardrail_status"), 64) or "")
        masked = as_dict(info.get("masked_entity_count"))
        if action == "passed" and any(as_int(count) for count in masked.values()):
            action = "flagged"
        if action is None:
            continue
        mode = info.get("guardrail_mode")
        mode_text = ",".join(str(m) for m in mode) if isinstance(mode, list) else as_str(mode)
        detail = "; ".join(part for part in (f"mode={mode_text}" if mode_text else "", _found(info)) if part)
        verdicts.append(
            GuardrailVerdict(
                source="litellm:" + (as_str(info.get("guardrail_name")) or "guardrail"),
                action=action,
                categories=sorted(str(kind) for kind, count in masked.items() if as_int(count)),
                detail=detail or None,
            )
        )
    return verdicts
