"""Amazon Bedrock model invocation logs (CloudWatch Logs or S3 delivery), ``schemaType: ModelInvocationLog``.

Follows the record in the Bedrock user guide ("Monitor model invocation using CloudWatch Logs and Amazon S3",
``schemaVersion`` 1.0): ``timestamp``, ``accountId``, ``identity.arn``, ``region``, ``requestId``, ``operation``
(InvokeModel | InvokeModelWithResponseStream | Converse | ConverseStream), ``modelId``, ``requestMetadata``,
``input.{inputBodyJson, inputTokenCount, cacheReadInputTokenCount, cacheWriteInputTokenCount, inputBodyS3Path}``,
``output.{outputBodyJson, outputTokenCount}``. ``inputTokenCount`` leaves out the prompt-cache reads and writes, as do
the bodies' ``usage.input_tokens`` (Anthropic) and ``usage.inputTokens`` (Converse): the event's input tokens add them.
Its cache reads are ``cacheReadInputTokenCount``, or the body's ``cache_read_input_tokens`` / ``cacheReadInputTokens``.

Bodies are those of the Bedrock runtime API reference: Anthropic Messages (``system``, ``messages`` with
``text``/``tool_use``/``tool_result`` blocks, ``tools``), Claude text completions (``prompt``/``completion``),
Amazon Titan (``inputText``/``results[].outputText``), Amazon Nova and Converse (``system[].text``,
``messages[].content[]`` with ``text``/``toolUse``/``toolResult``/``document``/``searchResult``, ``toolConfig``,
``inferenceConfig``, ``output.message``), Meta Llama (``prompt``/``generation``), Mistral (``outputs[].text``),
Cohere (``message``/``text``) and OpenAI-format models (OpenAI gpt-oss, AI21 Jamba: Chat Completions ``messages``
with string content, ``tool_calls`` and ``role: tool``, and a chat.completion ``choices[].message`` response;
DeepSeek: ``prompt`` and ``choices[].text``). Messages are read as :class:`~detectors.normalise.chat.Conversation`
reads them; document blocks in the request's new turn are retrieved documents. Reasoning is not the completion,
whatever the shape (``thinking`` blocks, Converse ``reasoningContent``: not read): gpt-oss's, which InvokeModel
puts ahead of a reply's text as ``<reasoning>...</reasoning>``, is taken out of it (:func:`without_reasoning`). A
streamed output is logged as a list of chunk objects (Anthropic ``content_block_delta`` events, and
``content_block_start`` events that carry a server-run tool's result whole, Converse/Nova ``contentBlockDelta``
events, Titan/Llama/Mistral text chunks, ``chat.completion.chunk`` objects of OpenAI-format models, possibly wrapped
as ``{"chunk": {"bytes": base64}}``); it is reassembled before parsing.

Guardrail verdicts come from ``amazon-bedrock-guardrailAction`` / ``amazon-bedrock-trace`` (InvokeModel) and from
``stopReason: guardrail_intervened`` / ``trace.guardrail`` (Converse). Identity: ``identity.arn`` is the IAM
principal AWS authenticated, so it is the credential (``api_key_hash``: its key hash, which per-key state and key
exceptions follow whatever the caller says) and the user unless ``requestMetadata.user_id`` names one.
``requestMetadata`` is whatever the Converse caller passes; its ``user_id``, ``session_id``, ``user_agent`` and
``service`` are read as the client-asserted values they are, and its ``client_ip`` is not read at all: ``source.ip``
can back an alert exception (with ``trust_forwarded_ip``, see ``detectors.exceptions.FORWARDED_FIELDS``), and AWS
logs no caller address here. A record whose input body is only in S3 (``inputBodyS3Path``) or absent is
``content_redacted``.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from detectors.event import Event, GuardrailVerdict, Identity, Message, RetrievedDocument
from detectors.normalise.blocks import SERVER_RESULT_BLOCK_TYPES, blocks
from detectors.normalise.chat import CACHE_USAGE_KEYS, Conversation, Tokens, choices_output, usage_tokens
from detectors.normalise.errors import NormaliseError
from detectors.normalise.fields import (
    MAX_ID_CHARS,
    TextLimit,
    as_dict,
    as_int,
    as_items,
    as_str,
    as_timestamp,
    content_text,
    count_max,
    count_share,
    count_sum,
    dicts,
    dig,
    event_id,
    first,
    first_count,
    guardrail_hits,
    hash_key,
    parse_json,
    request_params,
    tool_definitions,
)
from detectors.normalise.openai import merge_chunks

NAME = "bedrock"
SCHEMA_TYPE = "ModelInvocationLog"
_PARAM_ALIASES = {
    "maxTokens": "max_tokens",
    "max_new_tokens": "max_tokens",
    "maxTokenCount": "max_tokens",
    "max_gen_len": "max_tokens",
    "max_tokens_to_sample": "max_tokens",
    "topP": "top_p",
    "topK": "top_k",
}
# The invocation log's own counts: inputTokenCount leaves out the prompt-cache reads and writes logged beside it.
_LOGGED_INPUT_COUNTS = ("inputTokenCount", "cacheReadInputTokenCount", "cacheWriteInputTokenCount")
# Converse TokenUsage (and ConverseStream metadata.usage): inputTokens leaves out the cache reads and writes too.
_CONVERSE_CACHE_KEYS = ("cacheReadInputTokens", "cacheWriteInputTokens")


def detect(record: dict[str, Any]) -> bool:
    return record.get("schemaType") == SCHEMA_TYPE


def normalise(record: dict[str, Any], clip: TextLimit, now: float) -> list[Event]:
    log_input = as_dict(record.get("input"))
    log_output = as_dict(record.get("output"))
    if not log_input and not log_output and not record.get("errorCode"):
        raise NormaliseError(f"malformed:{NAME}", "invocation log has no input, no output and no error code")
    request = _body(log_input.get("inputBodyJson"))
    raw_output = _body(log_output.get("outputBodyJson"))
    response = reassemble(raw_output) if isinstance(raw_output, list) else as_dict(raw_output)
    request = as_dict(request)
    system, messages, documents = request_conversation(request, clip)
    output, stop_reason, tokens = response_output(response, clip)
    input_tokens = count_max(logged_input_tokens(log_input), tokens.input)
    # the log's and the body's cache reads count the same tokens as well: the larger, as for the input
    cache_read = count_max(as_int(log_input.get("cacheReadInputTokenCount")), tokens.cache_read)
    metadata = as_dict(record.get("requestMetadata"))  # caller-chosen (see the module docstring)
    principal = as_str(dig(record, "identity", "arn"))
    operation = as_str(record.get("operation"), 64) or ""
    error_code = first(record.get("errorCode"), dig(record, "error", "code"), log_output.get("errorCode"), limit=128)
    params = {**request, **as_dict(request.get("inferenceConfig")), **as_dict(request.get("textGenerationConfig"))}
    if "Stream" in operation:
        params["stream"] = True
    timestamp = as_timestamp(record.get("timestamp"))
    return [
        Event(
            id=event_id(record.get("requestId"), NAME, record),
            timestamp=timestamp or now,
            timestamp_assumed=not timestamp,
            dataset=NAME,
            provider="aws.bedrock",
            operation="chat" if "messages" in request or operation.startswith("Converse") else "text_completion",
            request_model=as_str(record.get("modelId")),
            response_model=first(response.get("model"), record.get("modelId")),
            finish_reasons=[stop_reason] if stop_reason else [],
            input_tokens=input_tokens,
            cache_read_tokens=count_share(cache_read, input_tokens),
            output_tokens=as_int(log_output.get("outputTokenCount")) or tokens.output,
            system_instructions=clip(system),
            input_messages=messages,
            output_messages=output,
            tool_definitions=tool_definitions(request.get("tools") or dig(request, "toolConfig", "tools")),
            retrieved_documents=documents,
            request_params=request_params(params, _PARAM_ALIASES),
            identity=Identity(
                user_id=first(metadata.get("user_id"), principal),
                api_key_hash=hash_key(principal),
                organization_id=as_str(record.get("accountId"), 64),
                user_agent=as_str(metadata.get("user_agent")),
                session_id=as_str(metadata.get("session_id"), MAX_ID_CHARS),
            ),
            service_name=as_str(metadata.get("service")),
            outcome="failure" if error_code else ("success" if response else "unknown"),
            error_code=error_code,
            guardrails=guardrails(response, stop_reason),
            content_redacted=not request,
            truncated=clip.truncated,
        )
    ]


def _body(body: Any) -> Any:
    """A body logged as JSON, or (some SDK paths) as a JSON string."""
    return parse_json(body) if isinstance(body, str) else body


def request_conversation(
    request: dict[str, Any], clip: TextLimit
) -> tuple[str, list[Message], list[RetrievedDocument]]:
    """System text, input messages and retrieved documents (document blocks of the new turn) of any supported
    request body. ``system`` / ``developer`` messages (OpenAI-format models) are system text."""
    conversation = Conversation(clip)
    conversation.system.append(content_text(request.get("system")) or content_text(request.get("preamble")))
    for raw in dicts(request.get("chat_history")):  # Cohere
        role = "assistant" if as_str(raw.get("role")) in ("CHATBOT", "assistant") else "user"
        conversation.messages.append(Message(role=role, content=clip(content_text(raw.get("message")))))
    conversation.add_items(dicts(request.get("messages")))
    for key in ("prompt", "inputText", "message"):
        if isinstance(request.get(key), str):
            conversation.messages.append(Message(role="user", content=clip(request[key])))
    documents = conversation.take_new_documents()
    return conversation.system_text, conversation.messages, documents


def logged_input_tokens(log_input: dict[str, Any]) -> int | None:
    """All input tokens the invocation log counts, cached or not. The response body's usage counts them again; the
    event takes the larger of the two, as either may lack the cache counts."""
    return count_sum(*(as_int(log_input.get(key)) for key in _LOGGED_INPUT_COUNTS))


def response_output(response: dict[str, Any], clip: TextLimit) -> tuple[list[Message], str | None, Tokens]:
    """Output messages, stop reason and token counts of any supported response body; input counts the prompt-cache
    reads and writes (Anthropic ``cache_*_input_tokens``, Converse ``cache*InputTokens``), and the reads are kept
    apart too (``cache_read_input_tokens``, ``cacheReadInputTokens``)."""
    usage = as_dict(response.get("usage"))
    uncached = first_count(
        usage.get("input_tokens"),
        usage.get("inputTokens"),
        response.get("prompt_token_count"),
        response.get("inputTextTokenCount"),
    )
    cached = (as_int(usage.get(key)) for key in (*CACHE_USAGE_KEYS, *_CONVERSE_CACHE_KEYS))
    tokens = Tokens(
        count_sum(uncached, *cached),
        first_count(usage.get("output_tokens"), usage.get("outputTokens"), response.get("generation_token_count")),
        first_count(usage.get("cache_read_input_tokens"), usage.get("cacheReadInputTokens")),
    )
    reason = first(response.get("stop_reason"), response.get("stopReason"), response.get("finish_reason"), limit=64)
    if "choices" in response:  # OpenAI-format models: a chat.completion (DeepSeek: choices[].text)
        completion = choices_output(without_reasoning(response), clip)
        return completion.messages, reason or next(iter(completion.finish_reasons), None), usage_tokens(usage)
    if "content" in response or "output" in response:
        content = response["content"] if "content" in response else dig(response, "output", "message", "content")
        reply = blocks(content, clip)
        messages = [Message(role="assistant", content=reply.inline, tool_calls=reply.calls)]
        return (messages if reply.inline or reply.calls else []), reason, tokens
    pieces: list[str] = []
    for item in dicts(response.get("results")) + dicts(response.get("outputs")):  # Titan, Mistral
        pieces.append(content_text(item.get("outputText", item.get("text"))))
        reason = reason or first(item.get("completionReason"), item.get("stop_reason"), limit=64)
    for key in ("completion", "generation", "text"):  # Claude v2, Llama, Cohere
        if isinstance(response.get(key), str):
            pieces.append(response[key])
    text = "".join(pieces)
    return ([Message(role="assistant", content=clip(text))] if text else []), reason, tokens


_REASONING = re.compile(r"\s*<reasoning>.*?</reasoning>\s*", re.DOTALL)


def without_reasoning(response: dict[str, Any]) -> dict[str, Any]:
    """A chat.completion of an OpenAI-format model with the reasoning Bedrock puts ahead of each reply's text (gpt-oss
    on InvokeModel: ``<reasoning>...</reasoning>`` then the answer) taken out.

    Reasoning is not read in any other shape: a client seldom shows it to the user, and the system prompt it quotes
    there is no leak. Only one leading block is taken, so a tag the model writes later in its reply stays text."""
    return {**response, "choices": [_answer(choice) for choice in as_items(response.get("choices"))]}


def _answer(choice: Any) -> Any:
    message = as_dict(as_dict(choice).get("message"))
    content = message.get("content")
    reasoning = _REASONING.match(content) if isinstance(content, str) else None
    if reasoning is None:
        return choice
    return {**choice, "message": {**message, "content": content[reasoning.end() :]}}


class _Stream:
    """Accumulates streamed chunks of any supported shape into one non-streamed body: Anthropic-shaped, or a
    chat.completion for OpenAI-format models' ``chat.completion.chunk`` objects (:func:`merge_chunks`)."""

    def __init__(self) -> None:
        self.blocks: dict[int, dict[str, Any]] = {}
        self.text: list[str] = []
        self.body: dict[str, Any] = {}
        self.usage: dict[str, Any] = {}
        self.chat: list[dict[str, Any]] = []

    def block(self, index: Any) -> dict[str, Any]:
        return self.blocks.setdefault(
            as_int(index) or 0, {"text": [], "input": [], "name": None, "id": None, "result": None}
        )

    def add(self, chunk: dict[str, Any]) -> None:
        for key in ("amazon-bedrock-guardrailAction", "amazon-bedrock-trace", "model"):
            if key in chunk:
                self.body[key] = chunk[key]
        kind = chunk.get("type")
        if "choices" in chunk:
            self.chat.append(chunk)
        elif kind == "message_start":
            message = as_dict(chunk.get("message"))
            self.body["model"] = message.get("model")
            self.usage.update(as_dict(message.get("usage")))
        elif kind == "content_block_start":
            start = as_dict(chunk.get("content_block"))
            block = self.block(chunk.get("index"))
            block.update(name=start.get("name"), id=start.get("id"))
            if start.get("type") in SERVER_RESULT_BLOCK_TYPES:  # sent whole, no deltas follow
                block["result"] = start
            if isinstance(start.get("text"), str):
                block["text"].append(start["text"])
        elif kind == "content_block_delta":
            delta = as_dict(chunk.get("delta"))
            block = self.block(chunk.get("index"))
            _extend(block, delta.get("text"), delta.get("partial_json"))
        elif kind == "message_delta":
            self.body["stop_reason"] = as_dict(chunk.get("delta")).get("stop_reason")
            self.usage.update(as_dict(chunk.get("usage")))
        else:
            self.add_converse(chunk)

    def add_converse(self, chunk: dict[str, Any]) -> None:
        """Converse / Nova stream events, and Titan / Llama / Mistral / Claude v2 text chunks."""
        start = as_dict(dig(chunk, "contentBlockStart", "start", "toolUse"))
        if start:
            block = self.block(dig(chunk, "contentBlockStart", "contentBlockIndex"))
            block.update(name=start.get("name"), id=start.get("toolUseId"))
        delta = as_dict(dig(chunk, "contentBlockDelta", "delta"))
        if delta:
            block = self.block(dig(chunk, "contentBlockDelta", "contentBlockIndex"))
            _extend(block, delta.get("text"), as_dict(delta.get("toolUse")).get("input"))
        stop = as_dict(chunk.get("messageStop"))
        if stop:
            self.body["stop_reason"] = stop.get("stopReason")
        metadata = as_dict(chunk.get("metadata"))
        self.usage.update(as_dict(metadata.get("usage")))
        if "trace" in metadata:
            self.body["trace"] = metadata["trace"]
        for item in as_items(chunk.get("outputs")):
            self.text.append(content_text(as_dict(item).get("text")))
        for key in ("outputText", "generation", "completion"):
            if isinstance(chunk.get(key), str):
                self.text.append(chunk[key])
        reason = first(chunk.get("completionReason"), chunk.get("stop_reason"), chunk.get("stopReason"), limit=64)
        if reason:
            self.body["stop_reason"] = reason

    def result(self) -> dict[str, Any]:
        if self.chat:
            return {**self.body, **merge_chunks(self.chat)}
        content: list[dict[str, Any]] = []
        if self.text:
            content.append({"type": "text", "text": "".join(self.text)})
        for _, block in sorted(self.blocks.items()):
            if block["result"] is not None:
                content.append(block["result"])
            elif block["name"]:
                content.append(
                    {"type": "tool_use", "id": block["id"], "name": block["name"], "input": "".join(block["input"])}
                )
            elif block["text"]:
                content.append({"type": "text", "text": "".join(block["text"])})
        return {**self.body, "content": content, "usage": self.usage}


def _extend(block: dict[str, Any], text: Any, tool_input: Any) -> None:
    """Append a delta's text and partial tool-input JSON to its content block."""
    if isinstance(text, str):
        block["text"].append(text)
    if isinstance(tool_input, str):
        block["input"].append(tool_input)


def reassemble(chunks: list[Any]) -> dict[str, Any]:
    """A streamed output (list of chunk objects) as one body with ``content`` blocks, ``stop_reason`` and ``usage``."""
    stream = _Stream()
    for chunk in chunks:
        unwrapped = _unwrap(chunk)
        if isinstance(unwrapped, dict):
            stream.add(unwrapped)
    return stream.result()


def _unwrap(chunk: Any) -> Any:
    """``{"chunk": {"bytes": base64-of-JSON}}`` (the raw event-stream payload) to the JSON object it carries."""
    data = dig(chunk, "chunk", "bytes") if isinstance(chunk, dict) and "chunk" in chunk else None
    if data is None and isinstance(chunk, dict) and isinstance(chunk.get("bytes"), str):
        data = chunk["bytes"]
    if not isinstance(data, str):
        return chunk
    try:
        return parse_json(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        return None


def guardrails(response: dict[str, Any], stop_reason: str | None) -> list[GuardrailVerdict]:
    """One verdict for a Bedrock Guardrails trace: blocked if it intervened and blocked, flagged if it intervened
    only by masking or detected without acting, passed otherwise. ``categories`` names the policies that hit."""
    action = as_str(response.get("amazon-bedrock-guardrailAction"), 32)
    trace = as_dict(dig(response, "amazon-bedrock-trace", "guardrail")) or as_dict(dig(response, "trace", "guardrail"))
    intervened = action == "INTERVENED" or stop_reason == "guardrail_intervened"
    if action is None and not trace and not intervened:
        return []
    hits = guardrail_hits(trace)
    blocked = any(value == "BLOCKED" for value in hits.values())
    verdict = ("blocked" if blocked or not hits else "flagged") if intervened else ("flagged" if hits else "passed")
    ids = sorted({str(key) for part in (trace.get("input"), trace.get("inputAssessment")) for key in as_dict(part)})
    return [
        GuardrailVerdict(
            source="bedrock.guardrail",
            action=verdict,
            categories=sorted(hits),
            detail=("guardrail " + ",".join(ids)) if ids else None,
        )
    ]
