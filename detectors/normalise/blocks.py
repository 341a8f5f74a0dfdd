"""Content blocks of the Anthropic Messages API and the Bedrock Converse API, shared by the formats that log them.

Anthropic (``{"type": "text"|"tool_use"|"tool_result", ...}``, Messages API reference) and Converse
(``{"text"}``, ``{"toolUse": {toolUseId, name, input}}``, ``{"toolResult": {toolUseId, content}}``, Bedrock
runtime API reference) carry text, tool calls and tool results in one ``content`` list. Anthropic's server-run
tools are calls with their results in the same list: ``server_tool_use`` / ``mcp_tool_use`` (MCP connector) are
tool calls, their ``input`` the arguments (code execution: the ``code``, the bash ``command``, the text editor's
``path`` and ``file_text``), and ``mcp_tool_result``, ``web_fetch_tool_result`` and the code execution results
(``code_execution_tool_result``, ``bash_code_execution_tool_result``, ``text_editor_code_execution_tool_result``:
what the run printed or the file it viewed, see :func:`_result_text`) are the result of the call they name by
``tool_use_id``, judged as tool results like OpenAI's ``mcp_call`` (``web_search_tool_result`` holds only
encrypted content and yields no text). Document blocks (Anthropic ``document`` / ``search_result``, Converse
``document`` / ``searchResult``, see :func:`~detectors.normalise.fields.document_block`) are documents handed to
the model, kept apart from the message's own text (:class:`Blocks`). Other blocks are read by
:func:`~detectors.normalise.fields.content_text`: Converse ``guardContent`` is text like any other.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from detectors.event import Message, RetrievedDocument, ToolCall, stateless_start
from detectors.normalise.fields import (
    MAX_ID_CHARS,
    TextLimit,
    as_dict,
    as_items,
    as_str,
    content_text,
    document_block,
    first,
    json_text,
)

CALL_BLOCK_TYPES = ("tool_use", "server_tool_use", "mcp_tool_use")
SERVER_RESULT_BLOCK_TYPES = (
    "mcp_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
)
_BLOCK_TYPES = (*CALL_BLOCK_TYPES, *SERVER_RESULT_BLOCK_TYPES, "tool_result", "document", "search_result")
_BLOCK_KEYS = ("toolUse", "toolResult", "document", "searchResult")


class Blocks(NamedTuple):
    """What a content list holds. ``text`` is the message's own text; ``inline`` the same with the documents' text
    in place, as the message reads when it is history (see :func:`new_turn_documents`)."""

    text: str
    calls: list[ToolCall]
    results: list[Message]
    documents: list[RetrievedDocument]
    inline: str


def needs_blocks(content: Any) -> bool:
    """Whether a content list holds tool, server-tool or document blocks (so it needs :func:`blocks`)."""
    return isinstance(content, list) and any(
        isinstance(block, dict) and (block.get("type") in _BLOCK_TYPES or any(key in block for key in _BLOCK_KEYS))
        for block in content
    )


def blocks(content: Any, clip: TextLimit) -> Blocks:
    """Text, tool calls, tool results and documents of an Anthropic or Converse content list (or a plain string)."""
    if not isinstance(content, list):
        text = clip(content_text(content))
        return Blocks(text, [], [], [], text)
    texts: list[tuple[str, bool]] = []  # (text, from a document block), in order
    calls: list[ToolCall] = []
    by_id: dict[str, ToolCall] = {}  # server-run calls' results find their call here
    results: list[Message] = []
    documents: list[RetrievedDocument] = []
    for block in content:
        if not isinstance(block, dict):
            texts.append((content_text(block), False))
            continue
        kind = block.get("type")
        use = block if kind in CALL_BLOCK_TYPES else as_dict(block.get("toolUse"))
        result = block if kind == "tool_result" else as_dict(block.get("toolResult"))
        if use and as_str(use.get("name")):
            call = ToolCall(
                name=as_str(use.get("name")) or "",
                arguments=clip(json_text(use.get("input"))),
                id=first(use.get("id"), use.get("toolUseId"), limit=MAX_ID_CHARS),
            )
            calls.append(call)
            if call.id:
                by_id.setdefault(call.id, call)
        elif kind in SERVER_RESULT_BLOCK_TYPES:
            _server_result(block, calls, by_id, clip)
        elif result:
            result_content = result.get("content")
            text = content_text(result_content) or json_text(
                [item.get("json") for item in as_items(result_content) if isinstance(item, dict) and "json" in item]
                or None
            )
            results.append(
                Message(
                    role="tool",
                    content=clip(text),
                    tool_call_id=first(result.get("tool_use_id"), result.get("toolUseId"), limit=MAX_ID_CHARS),
                )
            )
        elif (document := document_block(block)) is not None:
            if document.text:
                documents.append(RetrievedDocument(content=clip(document.text), source=document.source))
                texts.append((document.text, True))
        else:
            texts.append((content_text([block]), False))
    own = clip("\n".join(text for text, from_document in texts if text and not from_document))
    inline = clip("\n".join(text for text, _ in texts if text)) if documents else own
    return Blocks(own, calls, results, documents, inline)


def _server_result(block: dict[str, Any], calls: list[ToolCall], by_id: dict[str, ToolCall], clip: TextLimit) -> None:
    """A server-run tool's result as the result of its call (earlier in the same content, by ``tool_use_id``); a
    result whose call the log lacks becomes a call of its own, named by the block type (``mcp``, ``web_fetch``,
    ``bash_code_execution``...)."""
    call_id = first(block.get("tool_use_id"), limit=MAX_ID_CHARS)
    call = by_id.get(call_id) if call_id is not None else None
    if call is None:
        call = ToolCall(name=str(block["type"]).removesuffix("_tool_result"), id=call_id)
        calls.append(call)
    call.result = clip(_result_text(block.get("content"))) or None


def _result_text(content: Any) -> str:
    """The text of a server-run tool's result ``content``: a code execution's ``stdout`` and ``stderr``, the file a
    text editor ``view`` returned (``content``) and the diff ``lines`` of a ``str_replace``; else its content blocks'
    text (MCP, web fetch). Return codes, file ids and error codes carry no text; an ``encrypted_stdout`` cannot be
    read."""
    result = as_dict(content)
    lines = [line for line in as_items(result.get("lines")) if isinstance(line, str)]
    printed = [result.get("stdout"), result.get("stderr"), result.get("content"), *lines]
    return "\n".join(text for text in printed if isinstance(text, str) and text) or content_text(content)


def new_turn_documents(messages: list[Message], placed: list[tuple[Message, Blocks]]) -> list[RetrievedDocument]:
    """The documents of ``placed`` messages in the request's new turn, taken out of those messages' text.

    ``placed`` pairs messages of ``messages`` that hold document blocks (their ``content`` is the ``inline``
    reading) with what :func:`blocks` read. The new turn is what :meth:`Event.new_input` judges when the session
    says nothing more: a client resends earlier turns, documents and all, every turn, and those stay the history
    text they were (judged again only when the session never showed them), so one poisoned document alerts on the
    turn that handed it over, not on every later turn.
    """
    start = stateless_start(messages)
    new = {id(message) for message in messages[start:]}
    documents: list[RetrievedDocument] = []
    for message, read in placed:
        if id(message) in new:
            message.content = read.text
            documents += read.documents
    return documents
