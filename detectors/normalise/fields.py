"""Defensive readers for untrusted log fields: every reader returns the wanted type or ``None``/empty, never raises.

Source records come from many gateways and versions, and from attackers: a field may hold any JSON type. These
helpers coerce what has an obvious meaning (``"12"`` tokens, epoch milliseconds, a content list of parts) and drop
the rest, so format modules stay short and no ``TypeError`` escapes.
"""

from __future__ import annotations

import hashlib
import math
import string
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from detectors.event import RetrievedDocument, ToolDefinition, stable_event_id
from detectors.normalise.errors import NormaliseError

MAX_ID_CHARS = 256  # longer ids are hashed: an id is a key, not a payload
MAX_NAME_CHARS = 1024  # identity values, model names, tool names
KEY_DIGEST_MIN_HEX = 40
MAX_INT = 2**63 - 1  # Elasticsearch ``long``
MIN_EPOCH = 0.0
MAX_EPOCH = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the last second ``datetime`` can render
_HEX = frozenset(string.hexdigits)
_EPOCH_SCALES = ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3))  # epoch ns, µs, ms down to seconds
_NUMBER_CHARS = 32  # a longer numeric string is not a number anyone logged

# Request parameters that matter for model-extraction and abuse detection, under their OpenAI names.
REQUEST_PARAMS = (
    "temperature",
    "top_p",
    "top_k",
    "n",
    "logprobs",
    "top_logprobs",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "stream",
)


TRUNCATION_MARKER = "\n[...]\n"  # stands for the middle of a text cut by TextLimit


class TextLimit:
    """Cuts each text to ``max_chars`` and remembers that it did, for ``Event.truncated``.

    A longer text keeps its head and its tail (half each, :data:`TRUNCATION_MARKER` between them, ``max_chars`` in
    all): padding a prompt with a pasted document must not push the user's own instruction, which comes last, out
    of what detectors read. A limit too small to hold the marker keeps the head only.
    """

    __slots__ = ("max_chars", "truncated")

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max(0, max_chars)
        self.truncated = False

    def __call__(self, text: str) -> str:
        if len(text) <= self.max_chars:
            return text
        self.truncated = True
        room = self.max_chars - len(TRUNCATION_MARKER)
        if room < 2 * len(TRUNCATION_MARKER):
            return text[: self.max_chars]
        tail = room // 2
        return text[: room - tail] + TRUNCATION_MARKER + text[len(text) - tail :]


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_items(value: Any) -> list[Any]:
    """A list as is; a single object as a one-item list; anything else as empty."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    return []


def as_str(value: Any, limit: int = MAX_NAME_CHARS) -> str | None:
    """A non-empty string (numbers rendered), at most ``limit`` characters; ``None`` otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and (isinstance(value, int) or math.isfinite(value)):
        value = str(value)
    if isinstance(value, str) and value:
        return value[:limit]
    return None


def as_int(value: Any) -> int | None:
    """A non-negative integer that fits a ``long``: ints, integral floats and numeric strings."""
    number = as_float(value)
    if number is None or number < 0:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value <= MAX_INT else None
    return int(number) if number <= MAX_INT else None


def first_count(*values: Any) -> int | None:
    """The first value that reads as a count (:func:`as_int`)."""
    for value in values:
        count = as_int(value)
        if count is not None:
            return count
    return None


def count_sum(*counts: int | None) -> int | None:
    """The sum of the known counts, at most ``MAX_INT``; ``None`` if none is known."""
    known = [count for count in counts if count is not None]
    return min(sum(known), MAX_INT) if known else None


def count_max(*counts: int | None) -> int | None:
    """The largest of the known counts; ``None`` if none is known."""
    return max((count for count in counts if count is not None), default=None)


def count_share(part: int | None, total: int | None) -> int | None:
    """A count that is a share of ``total`` (the prompt-cache reads of the input tokens), at most ``total``: a log
    that says more is not believed past it. ``None`` if either is unknown."""
    return None if part is None or total is None else min(part, total)


def as_float(value: Any) -> float | None:
    """A finite float from a number or numeric string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and len(value) <= _NUMBER_CHARS:
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int):
        return float(value) if abs(value) <= 1e300 else None
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def as_timestamp(value: Any) -> float | None:
    """Epoch seconds from epoch s/ms/µs/ns numbers or strings, or from an ISO 8601 string; ``None`` if unusable.

    The unit of a number is guessed from its size; an ISO date is in seconds already, so a forged far-future one
    (``9999-12-31``) stays in the future, where the time checks refuse it, instead of being rescaled to 1978."""
    number = as_float(value)
    if number is None:
        return _iso_timestamp(value)
    for threshold, divisor in _EPOCH_SCALES:
        if abs(number) >= threshold:
            number /= divisor
            break
    return number if MIN_EPOCH <= number <= MAX_EPOCH else None


def _iso_timestamp(value: Any) -> float | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    number = parsed.timestamp()
    return number if MIN_EPOCH <= number <= MAX_EPOCH else None


def scalar(value: Any) -> float | int | bool | str | None:
    """A request-parameter value: a bool, finite number or short string; containers are dropped."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -MAX_INT <= value <= MAX_INT else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value[:MAX_NAME_CHARS]
    return None


def request_params(
    source: dict[str, Any], aliases: dict[str, str] | None = None
) -> dict[str, float | int | bool | str]:
    """The :data:`REQUEST_PARAMS` found in ``source``; ``aliases`` maps other spellings to the OpenAI names."""
    params: dict[str, float | int | bool | str] = {}
    for key, raw in source.items():
        if not isinstance(key, str):
            continue
        name = aliases.get(key, key) if aliases else key
        if name in REQUEST_PARAMS and name not in params:
            value = scalar(raw)
            if value is not None:
                params[name] = value
    return params


def json_text(value: Any) -> str:
    """Tool arguments and results as a string: strings as they are, structures as compact JSON.

    orjson writes at most 254 levels; a deeper structure (the decoder reads up to 1,024) is written by
    :func:`_deep_json_text`, so nesting cannot hide a secret in a tool call from the detectors."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode("utf-8")
    except TypeError:  # too deep for orjson
        return _deep_json_text(value)


class _Literal(str):
    """Already-written JSON text on :func:`_deep_json_text`'s stack."""


def _deep_json_text(value: Any) -> str:
    """Compact JSON of any depth, written with an explicit stack instead of recursion; a value JSON cannot hold is
    written as its ``str``."""
    parts: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Literal):
            parts.append(item)
        elif isinstance(item, dict):
            entries: list[Any] = []
            for key, child in item.items():
                entries += [_Literal(","), _Literal(_scalar_json(str(key)) + ":"), child]
            stack += [_Literal("}"), *reversed(entries[1:]), _Literal("{")]
        elif isinstance(item, list | tuple):
            elements: list[Any] = []
            for child in item:
                elements += [_Literal(","), child]
            stack += [_Literal("]"), *reversed(elements[1:]), _Literal("[")]
        else:
            parts.append(_scalar_json(item))
    return "".join(parts)


def _scalar_json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError:
        return orjson.dumps(str(value)).decode("utf-8")


def parse_json(text: Any) -> Any:
    """A JSON value embedded as a string (OTel attributes, Bedrock stream bytes); ``None`` if it is not JSON."""
    if not isinstance(text, str | bytes):
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def content_text(content: Any) -> str:
    """Text of a message content: a string, or a list of parts whose text parts are joined with newlines.

    Understands OpenAI parts (``{"type": "text"|"input_text"|"output_text", "text": ...}``, ``refusal``),
    Anthropic/Converse blocks (``{"text": ...}``, Converse ``{"guardContent": {"text": {"text": ...}}}`` and
    ``{"citationsContent": {"content": [{"text": ...}]}}``, the document blocks of :func:`document_block`) and OTel
    GenAI parts (``{"type": "text", "content": ...}``). Images, audio and binary files carry no text and are skipped.
    A block of any other type is read by its ``text``, else by its ``content`` parts: a vendor's new block type that
    carries text (as ``search_result`` once was) is then judged where it sits instead of silently dropped. Parts
    nested deeper than :data:`MAX_PART_DEPTH` are not read.
    """
    return _content_text(content, 0)


MAX_PART_DEPTH = 16  # block in block: real shapes nest 3 deep (tool_result > search_result > text); a vendor API
# refuses deeper ones, so no model read what lies below; the cap keeps hostile nesting from exhausting the stack


def _content_text(content: Any, depth: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return "" if content is None or isinstance(content, bool) else (as_str(content) or "")
    if depth >= MAX_PART_DEPTH:
        return ""
    texts: list[str] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            text = _part_text(as_dict(part.get("guardContent")) or part, depth + 1)
            if text:
                texts.append(text)
    return "\n".join(texts)


def _part_text(part: dict[str, Any], depth: int) -> str | None:
    """The text of one content part (see :func:`content_text`)."""
    document = _document_block(part, depth)
    if document is not None:
        return document.text or None
    text = part.get("text")
    if isinstance(text, dict):  # Converse guardContent: {"text": {"text": ...}}
        text = text.get("text")
    if not isinstance(text, str) and part.get("type") in (None, "text"):
        text = part.get("content")
    if not isinstance(text, str):
        text = part.get("refusal")
    if not isinstance(text, str) and isinstance(part.get("citationsContent"), dict):  # Converse, citations on
        text = _content_text(part["citationsContent"].get("content"), depth) or None
    if not isinstance(text, str) and isinstance(part.get("type"), str) and isinstance(part.get("content"), list | dict):
        text = _content_text(part["content"], depth) or None  # a block type not known here (see content_text)
    return text if isinstance(text, str) else None


class DocumentBlock(NamedTuple):
    """A document handed to the model as a content block: its text (with the ``context`` the application gave it),
    and where it came from (its ``source``, else its ``title`` or ``name``)."""

    text: str
    source: str | None


def document_block(part: Any) -> DocumentBlock | None:
    """A document content block as a :class:`DocumentBlock`; ``None`` for any other block.

    Anthropic ``{"type": "document", "source": {"type": "text", "data": ...}}`` (or a ``content`` source of blocks;
    base64 PDF and URL sources carry no text here) and ``{"type": "search_result", "source", "title", "content":
    [text blocks]}``; Converse ``{"document": {"name", "source": {"text": ...} | {"content": [{"text": ...}]}}}``
    (``bytes`` and ``s3Location`` sources carry no text here) and ``{"searchResult": {"source", "title",
    "content": [{"text": ...}]}}``. A document's optional ``context`` (Anthropic and Converse: text the application
    hands over with the document, which the model reads but does not cite) is part of its text, ahead of the
    document's own, so a PDF or URL document with a context has that text.
    """
    return _document_block(part, 0) if isinstance(part, dict) else None


def _document_block(part: dict[str, Any], depth: int) -> DocumentBlock | None:
    kind = part.get("type")
    if kind == "document":
        body = part
        source = as_dict(part.get("source"))
        if source.get("type") == "text" and isinstance(source.get("data"), str):
            text = source["data"]
        else:
            text = _content_text(source.get("content"), depth) if source.get("type") == "content" else ""
    elif kind == "search_result":
        body, text = part, _content_text(part.get("content"), depth)
    elif isinstance(part.get("document"), dict):  # Converse DocumentBlock
        body = part["document"]
        source = as_dict(body.get("source"))
        text = source["text"] if isinstance(source.get("text"), str) else _content_text(source.get("content"), depth)
    elif isinstance(part.get("searchResult"), dict):  # Converse SearchResultBlock
        body = part["searchResult"]
        text = _content_text(body.get("content"), depth)
    else:
        return None
    context = body.get("context")
    if isinstance(context, str) and context:
        text = f"{context}\n{text}" if text else context
    return DocumentBlock(text, first(body.get("source"), body.get("title"), body.get("name")))


def tool_definitions(tools: Any) -> list[ToolDefinition]:
    """Tool definitions in the OpenAI Chat (``function: {...}``), OpenAI Responses / Anthropic / OTel (flat) and
    Bedrock Converse (``toolSpec: {...}``) shapes; a built-in tool with no name is named by its ``type``."""
    definitions: list[ToolDefinition] = []
    for tool in as_items(tools):
        if not isinstance(tool, dict):
            continue
        spec = tool.get("function") if isinstance(tool.get("function"), dict) else tool.get("toolSpec")
        spec = spec if isinstance(spec, dict) else tool
        name = as_str(spec.get("name")) or as_str(tool.get("type"))
        if name:
            definitions.append(ToolDefinition(name=name, description=as_str(spec.get("description"), 4096) or ""))
    return definitions


def key_hash(value: Any) -> str | None:
    """An API key's hash from a field that should hold one. A value that looks like a digest (40+ hex chars:
    SHA-1 or longer, as LiteLLM's SHA-256) is kept; anything else may be a raw key (some providers' keys are
    32 hex chars) and is replaced by :func:`hash_key`, so a raw key is never stored."""
    text = as_str(value, MAX_ID_CHARS * 4)
    if not text:
        return None
    if len(text) >= KEY_DIGEST_MIN_HEX and _HEX.issuperset(text):
        return text.lower()[:128]
    return hash_key(text)


def hash_key(value: Any) -> str | None:
    """The first 16 hex chars of the SHA-256 of a raw API key."""
    text = as_str(value, MAX_ID_CHARS * 4)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16] if text else None


def event_id(request_id: Any, fmt: str, record: dict[str, Any]) -> str:
    """The record's own request id, else a stable hash of its canonical JSON (same record, same id)."""
    text = as_str(request_id, MAX_ID_CHARS * 4)
    if text:
        return text if len(text) <= MAX_ID_CHARS else stable_event_id(fmt, text)
    try:
        canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=repr)
    except TypeError as error:
        raise NormaliseError("too_deep", f"record has no request id and cannot be hashed: {error}") from None
    return stable_event_id(fmt, canonical.decode("utf-8"))


def first(*values: Any, limit: int = MAX_NAME_CHARS) -> str | None:
    """The first value that reads as a non-empty string."""
    for value in values:
        text = as_str(value, limit)
        if text:
            return text
    return None


def strings(values: Iterable[Any]) -> list[str]:
    return [text for text in (as_str(value) for value in values) if text]


def dig(record: Any, *path: str) -> Any:
    """``record[a][b]...`` through dicts only; ``None`` where the path breaks."""
    for key in path:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def retrieved_documents(value: Any, clip: TextLimit) -> list[RetrievedDocument]:
    """Retrieved (RAG) documents: strings, or objects with ``content``/``text``/``page_content`` (string or parts),
    optional ``id`` and ``source``/``url``/``uri``/``filename`` (also under ``metadata``)."""
    documents: list[RetrievedDocument] = []
    for item in as_items(value):
        if isinstance(item, str):
            documents.append(RetrievedDocument(content=clip(item)))
            continue
        if not isinstance(item, dict):
            continue
        content = next((item[k] for k in ("content", "text", "page_content") if item.get(k) is not None), None)
        meta = as_dict(item.get("metadata"))
        documents.append(
            RetrievedDocument(
                content=clip(content_text(content)),
                id=first(item.get("id"), item.get("file_id"), item.get("document_id"), limit=MAX_ID_CHARS),
                source=first(
                    *(item.get(k) for k in ("source", "url", "uri", "filename")),
                    *(meta.get(k) for k in ("source", "url", "uri", "filename")),
                ),
            )
        )
    return documents


def dicts(value: Any) -> list[dict[str, Any]]:
    """The objects among :func:`as_items` of ``value``; other elements are ignored."""
    return [item for item in as_items(value) if isinstance(item, dict)]


GUARDRAIL_DEPTH = 8  # how deep policy entries are looked for in a guardrail's assessment


def guardrail_hits(node: Any, depth: int = GUARDRAIL_DEPTH) -> dict[str, str]:
    """Policy entries (``{"type"|"name": ..., "action": ...}``) anywhere in a guardrail's assessment, as
    label -> action (``BLOCKED`` wins over any other action of one label). Only those two fields are read: an
    assessment also quotes what it matched (``match``, ``text``), which is the content it was there to catch."""
    hits: dict[str, str] = {}
    _collect_hits(node, hits, depth)
    return hits


def _collect_hits(node: Any, hits: dict[str, str], depth: int) -> None:
    if depth <= 0:
        return
    if isinstance(node, dict):
        action = as_str(node.get("action"), 32)
        label = first(node.get("name"), node.get("type"), limit=128)
        if action and label:
            if hits.get(label) != "BLOCKED":
                hits[label] = action
            return
        for value in node.values():
            _collect_hits(value, hits, depth - 1)
    elif isinstance(node, list):
        for value in node:
            _collect_hits(value, hits, depth - 1)


def guardrail_flags(node: Any, depth: int = GUARDRAIL_DEPTH) -> set[str]:
    """Keys set to ``true`` anywhere in a guardrail's response (``{"flagged": true, "categories":
    {"prompt_injection": true}}``): names of what it found, never the content it found."""
    if depth <= 0:
        return set()
    if isinstance(node, dict):
        found = {str(key)[:64] for key, value in node.items() if value is True}
        for value in node.values():
            found |= guardrail_flags(value, depth - 1)
        return found
    if isinstance(node, list):
        return {flag for value in node for flag in guardrail_flags(value, depth - 1)}
    return set()
