"""OpenAI-shaped conversations, shared by the OpenAI and LiteLLM formats (LiteLLM logs OpenAI shapes).

Follows the public OpenAI API reference: Chat Completions messages (``role``, ``content`` as a string or a list
of parts, ``tool_calls[].function.{name, arguments}`` and custom tools' ``tool_calls[].custom.{name, input}``,
``tool_call_id``, legacy ``function_call``) and chat.completion ``choices[].message`` (an audio reply's
``audio.transcript`` is its text); Responses API ``input`` /
``output`` items (``message``, ``function_call`` / ``custom_tool_call`` and their ``*_output``, ``mcp_call`` with
the remote MCP server's ``output`` as the call's result, ``file_search_call.results[].text`` as retrieved
documents), ``instructions`` and the ``prompt`` template's ``variables`` (user text).

A ``file_search_call`` in a response's output is what this turn retrieved: its results are the event's retrieved
documents, judged as such. Stateless clients resend it in later requests' ``input``; there it is history, read as
an assistant ``file_search`` call with the results as its result (like a resent ``mcp_call``), so one poisoned
document alerts on the turn that retrieved it, not on every later turn.

Gateways that proxy the Anthropic Messages API log its shapes (content blocks, ``type: message`` responses);
those are read with :mod:`detectors.normalise.blocks`. Its document blocks in the request's new turn are
retrieved documents for the formats that take them (:meth:`Conversation.take_new_documents`).

Convention: ``system`` and ``developer`` messages are moved out of the message list into
``Event.system_instructions`` (joined by blank lines), which is where detectors read system text.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from detectors.event import SYSTEM_ROLES, Message, RetrievedDocument, ToolCall
from detectors.normalise.blocks import Blocks, blocks, needs_blocks, new_turn_documents
from detectors.normalise.fields import (
    MAX_ID_CHARS,
    TextLimit,
    as_dict,
    as_int,
    as_items,
    as_str,
    content_text,
    count_max,
    count_sum,
    first,
    first_count,
    json_text,
    retrieved_documents,
)

CALL_ITEMS = ("function_call", "custom_tool_call")
CALL_OUTPUT_ITEMS = ("function_call_output", "custom_tool_call_output")


class Completion(NamedTuple):
    """What a response holds: output messages, finish reasons and documents a built-in search tool retrieved."""

    messages: list[Message]
    finish_reasons: list[str]
    documents: list[RetrievedDocument]


class Conversation:
    """Messages, system text and retrieved documents accumulated from chat messages and Responses items, in order.

    ``output``: the items are a response's output (what this turn did), not a request's input (the client's
    history and new turn); only output ``file_search_call`` results are retrieved documents.
    """

    def __init__(self, clip: TextLimit, *, output: bool = False) -> None:
        self.clip = clip
        self.output = output
        self.system: list[str] = []
        self.messages: list[Message] = []
        self.documents: list[RetrievedDocument] = []
        self._placed: list[tuple[Message, Blocks]] = []  # messages holding document blocks, read inline

    @property
    def system_text(self) -> str:
        return self.clip("\n\n".join(text for text in self.system if text))

    def add_items(self, items: Any) -> None:
        """Chat messages or Responses items; a bare string is one user message."""
        if isinstance(items, str):
            self.messages.append(Message(role="user", content=self.clip(items)))
            return
        for item in as_items(items):
            if isinstance(item, str):
                self.messages.append(Message(role="user", content=self.clip(item)))
            elif isinstance(item, dict):
                self.add_item(item)

    def add_prompt_template(self, prompt: dict[str, Any]) -> None:
        """A Responses ``prompt`` (``{id, version, variables}``): the stored template is not logged, its variables
        are what the caller filled in, so they are one user message (added after the ``input`` items: this
        request's own text, which :meth:`Event.new_input` keeps)."""
        texts = [content_text(value) for value in as_dict(prompt.get("variables")).values()]
        text = "\n".join(text for text in texts if text)
        if text:
            self.messages.append(Message(role="user", content=self.clip(text)))

    def add_item(self, item: dict[str, Any]) -> None:
        kind = item.get("type")
        if kind in CALL_ITEMS:
            self._assistant_call(tool_call(item))
        elif kind in CALL_OUTPUT_ITEMS:
            call_id = as_str(item.get("call_id"), MAX_ID_CHARS)
            self.messages.append(
                Message(role="tool", content=self.clip(output_text(item.get("output"))), tool_call_id=call_id)
            )
        elif kind == "mcp_call":  # run by OpenAI on a remote MCP server: the call and its result in one item
            call = tool_call(item)
            if call is not None and item.get("output") is not None:
                call.result = output_text(item["output"])
            self._assistant_call(call)
        elif kind == "file_search_call" and self.output:
            self.documents.extend(retrieved_documents(item.get("results"), self.clip))
        elif kind == "file_search_call":
            self._assistant_call(self._file_search_call(item))
        elif kind in (None, "message"):
            self._message(item)
        # reasoning, web_search_call, image_generation_call...: no text a detector should read

    def take_new_documents(self) -> list[RetrievedDocument]:
        """Documents handed to the model as content blocks in the request's new turn (Anthropic ``document`` /
        ``search_result``), taken out of their messages' text: retrieved content, not the user's words. Until a
        format calls this, they stay in the text of their messages; in history turns they always do (see
        :func:`~detectors.normalise.blocks.new_turn_documents`)."""
        documents = new_turn_documents(self.messages, self._placed)
        self._placed = []
        return documents

    def _message(self, item: dict[str, Any]) -> None:
        role = (as_str(item.get("role"), 32) or "user").lower()
        if needs_blocks(item.get("content")):  # Anthropic- or Converse-shaped messages logged by a gateway
            read = blocks(item["content"], self.clip)
            self.messages.extend(read.results)
            if read.inline or read.calls or not read.results:
                message = Message(role=role, content=read.inline, tool_calls=read.calls)
                self.messages.append(message)
                if read.documents:
                    self._placed.append((message, read))
            return
        content = content_text(item.get("content"))
        if not content and isinstance(item.get("refusal"), str):
            content = item["refusal"]
        transcript = as_dict(item.get("audio")).get("transcript")
        if not content and isinstance(transcript, str):  # an audio reply: its text is the transcript
            content = transcript
        if role in SYSTEM_ROLES:
            self.system.append(content)
            return
        calls = [call for call in (tool_call(raw) for raw in as_items(item.get("tool_calls"))) if call]
        legacy = tool_call(item.get("function_call"))
        if legacy:
            calls.append(legacy)
        self.messages.append(
            Message(
                role="tool" if role == "function" else role,
                content=self.clip(content),
                name=as_str(item.get("name")),
                tool_call_id=as_str(item.get("tool_call_id"), MAX_ID_CHARS),
                tool_calls=[self._clip_call(call) for call in calls],
            )
        )

    def _assistant_call(self, call: ToolCall | None) -> None:
        """Responses ``function_call`` items: consecutive calls share one assistant message."""
        if call is None:
            return
        call = self._clip_call(call)
        last = self.messages[-1] if self.messages else None
        if last is not None and last.role == "assistant" and not last.content and last.tool_calls:
            last.tool_calls.append(call)
        else:
            self.messages.append(Message(role="assistant", tool_calls=[call]))

    def _file_search_call(self, item: dict[str, Any]) -> ToolCall:
        """A resent ``file_search_call``: its queries as the arguments, its results' texts as the result."""
        documents = retrieved_documents(item.get("results"), self.clip)
        return ToolCall(
            name="file_search",
            arguments=json_text(item.get("queries")),
            id=as_str(item.get("id"), MAX_ID_CHARS),
            result="\n\n".join(document.content for document in documents if document.content) or None,
        )

    def _clip_call(self, call: ToolCall) -> ToolCall:
        call.arguments = self.clip(call.arguments)
        if call.result is not None:
            call.result = self.clip(call.result)
        return call


def tool_call(raw: Any) -> ToolCall | None:
    """A Chat ``tool_calls[]`` entry (``function`` or ``custom``), a legacy ``function_call`` or a Responses
    ``function_call`` / ``custom_tool_call`` / ``mcp_call`` item; a custom tool's free-form ``input`` is its
    arguments."""
    if not isinstance(raw, dict):
        return None
    function = as_dict(raw.get("function")) or as_dict(raw.get("custom")) or raw
    name = as_str(function.get("name"))
    if not name:
        return None
    call_id = as_str(raw.get("call_id"), MAX_ID_CHARS) or as_str(raw.get("id"), MAX_ID_CHARS)
    arguments = function.get("arguments") if "arguments" in function else function.get("input")
    return ToolCall(name=name, arguments=json_text(arguments), id=call_id)


def output_text(output: Any) -> str:
    """A tool output: a string, a list of content parts (their text) or any JSON value (as compact JSON)."""
    if isinstance(output, list):
        return content_text(output) or json_text(output)
    return json_text(output)


def choices_output(response: dict[str, Any], clip: TextLimit) -> Completion:
    """Output messages and finish reasons of a chat.completion (``choices[].message``; an audio reply's text is
    its ``message.audio.transcript``) or a legacy text completion (``choices[].text``, also DeepSeek's on
    Bedrock)."""
    conversation = Conversation(clip, output=True)
    reasons: list[str] = []
    for choice in as_items(response.get("choices")):
        if not isinstance(choice, dict):
            continue
        reason = first(choice.get("finish_reason"), choice.get("stop_reason"), limit=64)  # stop_reason: DeepSeek
        if reason:
            reasons.append(reason)
        message = choice.get("message")
        if isinstance(message, dict):
            conversation.add_item({**message, "role": message.get("role") or "assistant"})
        elif isinstance(choice.get("text"), str):
            conversation.messages.append(Message(role="assistant", content=clip(choice["text"])))
    return Completion(conversation.messages, reasons, conversation.documents)


def responses_output(response: dict[str, Any], clip: TextLimit) -> Completion:
    """Output messages, finish reasons and retrieved documents of a Responses API ``response`` object (``output``
    items)."""
    conversation = Conversation(clip, output=True)
    conversation.add_items(response.get("output"))
    if not any(m.content or m.tool_calls for m in conversation.messages) and isinstance(
        response.get("output_text"), str
    ):
        conversation.messages = [Message(role="assistant", content=clip(response["output_text"]))]
    reason = as_str(as_dict(response.get("incomplete_details")).get("reason"), 64) or as_str(response.get("status"), 64)
    return Completion(conversation.messages, [reason] if reason else [], conversation.documents)


def completion_output(response: Any, clip: TextLimit) -> Completion:
    """Output of either API, told apart by shape; a bare string is the completion text."""
    if isinstance(response, str):
        return Completion([Message(role="assistant", content=clip(response))], [], [])
    if not response:
        return Completion([], [], [])
    response = as_dict(response)
    if "output" in response or response.get("object") == "response":
        return responses_output(response, clip)
    if response.get("type") == "message" and isinstance(response.get("content"), list):  # Anthropic Messages API
        reply = blocks(response["content"], clip)
        reason = as_str(response.get("stop_reason"), 64)
        message = Message(role="assistant", content=reply.inline, tool_calls=reply.calls)
        return Completion([message], [reason] if reason else [], [])
    return choices_output(response, clip)


# Anthropic Messages usage counts the tokens written to and read from the prompt cache apart from its input_tokens,
# which leaves both out: they are added. OpenAI's prompt_tokens and Responses input_tokens hold the cached tokens
# already (prompt_tokens_details / input_tokens_details.cached_tokens are their share, not added). LiteLLM's usage
# keeps these two keys beside its prompt_tokens, which holds them in most versions and only the reads in some: the
# prompt_tokens are taken as at least their sum.
CACHE_USAGE_KEYS = ("cache_creation_input_tokens", "cache_read_input_tokens")


class Tokens(NamedTuple):
    """Token counts of an exchange: ``input`` is every input token the provider processed, prompt-cache writes and
    reads included; ``cache_read`` the tokens of it read from the prompt cache, as the log says (not yet held to
    at most ``input``: see :func:`~detectors.normalise.fields.count_share`)."""

    input: int | None
    output: int | None
    cache_read: int | None


def usage_tokens(usage: Any) -> Tokens:
    """Token counts from Chat (``prompt_tokens``), Responses or Anthropic Messages (``input_tokens``) usage. Input
    is every input token the provider processed, prompt-cache writes and reads included (see
    :data:`CACHE_USAGE_KEYS`); cache reads are :func:`cache_reads`."""
    usage = as_dict(usage)
    cached = count_sum(*(as_int(usage.get(key)) for key in CACHE_USAGE_KEYS))
    output = as_int(usage.get("completion_tokens", usage.get("output_tokens")))
    if "prompt_tokens" in usage:
        return Tokens(count_max(as_int(usage["prompt_tokens"]), cached), output, cache_reads(usage))
    return Tokens(count_sum(as_int(usage.get("input_tokens")), cached), output, cache_reads(usage))


def cache_reads(usage: dict[str, Any]) -> int | None:
    """Tokens read from the prompt cache: Anthropic's ``cache_read_input_tokens`` (which LiteLLM's usage keeps too),
    else OpenAI's ``prompt_tokens_details.cached_tokens`` (Chat) or ``input_tokens_details.cached_tokens``
    (Responses). LiteLLM sets ``cached_tokens`` to the Anthropic count as well: one count of the same tokens, read
    once, never added."""
    return first_count(
        usage.get("cache_read_input_tokens"),
        as_dict(usage.get("prompt_tokens_details")).get("cached_tokens"),
        as_dict(usage.get("input_tokens_details")).get("cached_tokens"),
    )
