"""Content blocks of the Anthropic Messages API and the Bedrock Converse API, shared by the formats that log them.

Anthropic (``{"type": "text"|"tool_use"|"tool_result", ...}``, Messages API reference) and Converse
(``{"text"}``, ``{"toolUse": {toolUseId, name, input}}``, ``{"toolResult": {toolUseId, content}}``, Bedrock
runtime API reference) carry text, tool calls and tool results in one ``content`` list. Other blocks are read by
:func:`~detectors.normalise.fields.content_text`: Converse ``guardContent`` and Anthropic ``document`` blocks with
a text source are text like any other.
"""

from __future__ import annotations

from typing import Any

from detectors.event import Message, ToolCall
from detectors.normalise.fields import (
    MAX_ID_CHARS,
    TextLimit,
    as_dict,
    as_items,
    as_str,
    content_text,
    first,
    json_text,
)

TOOL_BLOCK_TYPES = ("tool_use", "tool_result")


def has_tool_blocks(content: Any) -> bool:
    """Whether a content list holds Anthropic or Converse tool blocks (so it needs :func:`blocks`)."""
    return isinstance(content, list) and any(
        isinstance(block, dict)
        and (block.get("type") in TOOL_BLOCK_TYPES or "toolUse" in block or "toolResult" in block)
        for block in content
    )


def blocks(content: Any, clip: TextLimit) -> tuple[str, list[ToolCall], list[Message]]:
    """Text, tool calls and tool results of an Anthropic or Converse content list (or a plain string)."""
    if not isinstance(content, list):
        return clip(content_text(content)), [], []
    texts: list[str] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    for block in content:
        if not isinstance(block, dict):
            texts.append(content_text(block))
            continue
        kind = block.get("type")
        use = block if kind == "tool_use" else as_dict(block.get("toolUse"))
        result = block if kind == "tool_result" else as_dict(block.get("toolResult"))
        if use and as_str(use.get("name")):
            calls.append(
                ToolCall(
                    name=as_str(use.get("name")) or "",
                    arguments=clip(json_text(use.get("input"))),
                    id=first(use.get("id"), use.get("toolUseId"), limit=MAX_ID_CHARS),
                )
            )
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
        else:
            texts.append(content_text([block]))
    return clip("\n".join(text for text in texts if text)), calls, results
