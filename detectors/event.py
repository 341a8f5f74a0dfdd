"""The canonical LLM event that every detector reads.

One request/response exchange with an LLM, whatever gateway logged it. Field names follow ECS and the
OpenTelemetry GenAI semantic conventions; :func:`detectors.documents.event_document` renders the nested ECS
document that is indexed. Normalisers (``detectors.normalise``) build it from the source formats.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Literal

import msgspec

GuardrailAction = Literal["blocked", "flagged", "passed"]
Outcome = Literal["success", "failure", "unknown"]
ANONYMOUS = "anonymous"  # the identity key of an event that names no user, key, IP or session


class ToolCall(msgspec.Struct, kw_only=True):
    """A tool (function) call the model asked for; ``result`` when the log holds what the tool returned."""

    name: str
    arguments: str = ""
    id: str | None = None
    result: str | None = None


class Message(msgspec.Struct, kw_only=True):
    """One chat message. ``role`` is system | user | assistant | tool (| developer)."""

    role: str
    content: str = ""
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCall] = []


class ToolDefinition(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""


class RetrievedDocument(msgspec.Struct, kw_only=True):
    """A document that retrieval (RAG) put into the model's context: a vector for indirect injection."""

    content: str
    id: str | None = None
    source: str | None = None


class GuardrailVerdict(msgspec.Struct, kw_only=True):
    """A verdict an upstream guardrail already attached to the record, kept as a signal."""

    source: str
    action: GuardrailAction
    categories: list[str] = []
    detail: str | None = None


class Identity(msgspec.Struct, kw_only=True):
    """Who sent the request. Any field may be unknown."""

    user_id: str | None = None
    api_key_hash: str | None = None
    organization_id: str | None = None
    team_id: str | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    session_id: str | None = None

    def key(self) -> str:
        """The stable partitioning key: the most specific identity that is known."""
        for prefix, value in (
            ("user", self.user_id),
            ("key", self.api_key_hash),
            ("ip", self.source_ip),
            ("session", self.session_id),
        ):
            if value:
                return f"{prefix}:{value}"
        return ANONYMOUS


class Event(msgspec.Struct, kw_only=True):
    """One LLM exchange, normalised. ``timestamp`` is event time in epoch seconds (UTC)."""

    id: str
    timestamp: float
    dataset: str
    provider: str | None = None
    operation: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    finish_reasons: list[str] = []
    input_tokens: int | None = None  # every input token processed: uncached, written to and read from the prompt cache
    # the share of input_tokens read from the prompt cache (priced at about a tenth of an input token), at most
    # input_tokens; None when the log does not say. Left out of the content digest when None (detectors.redelivery).
    cache_read_tokens: int | None = None
    output_tokens: int | None = None
    system_instructions: str = ""
    input_messages: list[Message] = []
    output_messages: list[Message] = []
    tool_definitions: list[ToolDefinition] = []
    retrieved_documents: list[RetrievedDocument] = []
    request_params: dict[str, float | int | bool | str] = {}
    identity: Identity = msgspec.field(default_factory=Identity)
    service_name: str | None = None
    duration_ms: float | None = None
    outcome: Outcome = "unknown"
    error_code: str | None = None
    guardrails: list[GuardrailVerdict] = []
    content_redacted: bool = False
    truncated: bool = False
    # the record had no usable time (none, or one not believed): ``timestamp`` is when it was normalised, or in replay
    # for a time not believed, the newest time believed of the records before it (app.neighbour_times)
    timestamp_assumed: bool = False
    judged_span: tuple[int, int] | None = None  # input messages to judge, when the session's history says so
    system_shown: bool = False  # the session showed these system instructions before (see system_texts)
    tools_shown: bool = False  # the session showed these tool definitions before (see new_tool_definitions)

    def new_input(self) -> list[Message]:
        """Input messages that are new in this request, which every tier judges.

        Chat clients resend the whole history each turn; detectors that scan only the new part alert once per
        attack instead of once per later turn. New are the messages after the last assistant turn, and any
        assistant turns the request ends with: a "prefill" the client wrote to steer the reply. The pipeline's
        history ledger (:class:`detectors.history.HistoryLedger`) sets ``judged_span`` when the session says
        otherwise: history turns it never showed are judged too (a fabricated history), and a trailing assistant
        turn it showed as a reply is not (a "continue" request resending a reply cut short).
        """
        start, end = self.judged_bounds()
        return self.input_messages[start:end]

    def judged_bounds(self) -> tuple[int, int]:
        """``(start, end)`` of :meth:`new_input` in ``input_messages``."""
        count = len(self.input_messages)
        if self.judged_span is None:
            return self.stateless_start(), count
        start, end = self.judged_span
        end = min(max(end, 0), count)
        return min(max(start, 0), end), end

    def stateless_start(self) -> int:
        """Index of the first message after the last assistant turn that precedes the request's own turns."""
        return stateless_start(self.input_messages)

    def trailing_assistant_start(self) -> int:
        """Index of the first of the assistant turns the input ends with (its length when it ends otherwise)."""
        return trailing_assistant_start(self.input_messages)

    def system_texts(self) -> list[str]:
        """The client-written system text to judge as the client's own words, when detection judges system messages
        (``detection.judge_system_messages``: behind a multi-tenant gateway each key holder writes its own).

        The system instructions, unless the session already showed them (``system_shown``, set by the history
        ledger: a client resends them every turn, and they are judged once), and the system and developer messages
        of :meth:`new_input` (normalisers move most of those into the instructions).
        """
        texts = [self.system_instructions] if self.system_instructions and not self.system_shown else []
        texts += [m.content for m in self.new_input() if m.role in SYSTEM_ROLES and m.content]
        return texts

    def new_tool_definitions(self) -> list[ToolDefinition]:
        """The tool definitions to judge: all of them, unless the session already showed this exact set
        (``tools_shown``, set by the history ledger). Descriptions are written by whoever serves the tool (an MCP
        server, a plugin), so they are a way in for indirect injection ("tool poisoning"); a client resends them
        every turn, and a changed set (a server that rewrote a description mid-session) is judged again."""
        return [] if self.tools_shown else self.tool_definitions

    def output_tool_calls(self) -> list[ToolCall]:
        return [call for message in self.output_messages for call in message.tool_calls]

    def texts(self) -> Iterator[tuple[str, str]]:
        """Every scannable text as ``(field, text)``; ``field`` names the detection field (see FIELDS)."""
        if self.system_instructions:
            yield SYSTEM, self.system_instructions
        for message in self.new_input():
            if message.role in ("user", "assistant") and message.content:  # judged assistant turns: client-written
                yield PROMPT, message.content
            elif message.role == "tool" and message.content:
                yield TOOL_RESULT, message.content
            for call in message.tool_calls:  # tool calls and results the client sent, never shown by its session
                if call.arguments:
                    yield TOOL_ARGUMENTS, call.arguments
                if call.result:
                    yield TOOL_RESULT, call.result
        for doc in self.retrieved_documents:
            if doc.content:
                yield DOCUMENT, doc.content
        for tool in self.new_tool_definitions():
            if tool.description:
                yield TOOL_DEFINITION, tool.description
        for message in self.output_messages:
            if message.content:
                yield COMPLETION, message.content
            for call in message.tool_calls:
                yield TOOL_NAME, call.name
                if call.arguments:
                    yield TOOL_ARGUMENTS, call.arguments
                if call.result:
                    yield TOOL_RESULT, call.result


# Detection fields: the names rules use (Sigma `fields`, product `llm`) and the ECS paths they are indexed at.
SYSTEM = "gen_ai.system_instructions"
PROMPT = "gen_ai.prompt"
COMPLETION = "gen_ai.completion"
TOOL_NAME = "gen_ai.tool.call.name"
TOOL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_RESULT = "gen_ai.tool.call.result"
DOCUMENT = "gen_ai.retrieval.documents.content"
TOOL_DEFINITION = "gen_ai.tool.definitions.description"
TEXT_FIELDS = (SYSTEM, PROMPT, COMPLETION, TOOL_NAME, TOOL_ARGUMENTS, TOOL_RESULT, DOCUMENT, TOOL_DEFINITION)
SYSTEM_ROLES = ("system", "developer")


def stateless_start(messages: Sequence[Message]) -> int:
    """Index of the first of ``messages`` after the last assistant turn that precedes the request's own turns: where
    a request's new turn starts when nothing more is known of its session (see :meth:`Event.new_input`)."""
    end = trailing_assistant_start(messages)
    for index in range(end - 1, -1, -1):
        if messages[index].role == "assistant":
            return index + 1
    return 0


def trailing_assistant_start(messages: Sequence[Message]) -> int:
    """Index of the first of the assistant turns ``messages`` end with (their length when they end otherwise)."""
    end = len(messages)
    while end and messages[end - 1].role == "assistant":
        end -= 1
    return end


def stable_event_id(*parts: str | float | None) -> str:
    """A deterministic id for records that carry no request id: the same record always gets the same id."""
    digest = hashlib.sha256("\x1f".join("" if p is None else str(p) for p in parts).encode("utf-8"))
    return digest.hexdigest()[:32]
