"""Raw payloads (one Kafka message value, one file line) to JSON objects, and dead letters for what is not.

A payload may hold one JSON object, a JSON array of objects (log shippers batch), NDJSON (one object per
line) or a CloudWatch Logs subscription envelope, any of them gzip-compressed (inflated only up to the size
limit). Everything that cannot become an object becomes a :class:`DeadLetter` with a machine-readable reason;
one bad element of a batch never loses the good ones, and an empty batch (``[]``, a CloudWatch envelope without
log events) is an ``empty`` dead letter, never silence. Element origins are ``<origin>[<index>]``.

NDJSON lines end at ``\n`` only (a trailing ``\r`` is dropped): U+2028, U+2029 and U+0085 are legal raw inside
JSON strings, and ``abusewatch replay`` splits files the same way. A byte-order mark (U+FEFF) leading a payload or
an NDJSON line is dropped: Windows tools start UTF-8 files with one, and files joined with ``cat`` carry it to the
start of a later line (a BOM anywhere else is kept). A lone UTF-16 surrogate escape (``"\ud800"``, which Python's
``json.dumps`` writes for such a string) is read as U+FFFD instead of failing the record.
"""

from __future__ import annotations

import base64
import codecs
import json
import math
import re
import time
import zlib
from typing import Any, AnyStr

import msgspec
import orjson

RAW_LIMIT_BYTES = 64 * 1024  # a dead letter keeps at most this much of the raw payload
GZIP_MAGIC = b"\x1f\x8b"
CLOUDWATCH_MESSAGE_TYPES = ("DATA_MESSAGE", "CONTROL_MESSAGE")
MAX_DEPTH = 1024  # orjson's nesting limit; the standard-library fallback keeps to it too
_SURROGATES = ("\ud800", "\udfff")
BOM = "\ufeff"
_BOM_BYTES = BOM.encode()
# NDJSON lines end in LF, CRLF or a lone CR (classic Mac); JSON holds no raw CR in a string, so a lone one is a break
_LINE_BREAK = re.compile("\r\n|\r|\n")


class DeadLetter(msgspec.Struct, kw_only=True):
    """Input that could not become an event, kept for the dead-letter topic/index with the reason why.

    ``reason``: ``invalid_utf8``, ``invalid_json``, ``invalid_gzip``, ``too_deep``, ``oversized``, ``empty``,
    ``not_an_object``, ``unknown_format``, ``malformed:<format>``... ``raw`` is kept only when asked (it may hold
    sensitive data).
    """

    reason: str
    detail: str
    origin: str
    size: int
    format: str | None = None
    raw: str | None = None
    raw_encoding: str | None = None  # "base64": ``raw`` holds bytes that are not UTF-8, as they came
    timestamp: float = msgspec.field(default_factory=time.time)

    def raw_text(self) -> str | None:
        """The kept raw record as text (bytes kept in base64 are read as UTF-8, U+FFFD where they are not)."""
        if self.raw is None or self.raw_encoding != "base64":
            return self.raw
        return base64.b64decode(self.raw).decode("utf-8", "replace")


def raw_excerpt(data: bytes | str) -> tuple[str, str | None]:
    """The first 64 KiB of a payload for ``DeadLetter.raw``, and its ``raw_encoding``."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return readable_bytes(data[:RAW_LIMIT_BYTES], cut=len(data) > RAW_LIMIT_BYTES)


def readable_bytes(raw: bytes, *, cut: bool = False) -> tuple[str, str | None]:
    """``raw`` as text when it is UTF-8, else as base64 (``"base64"``): the bytes that made a record undecodable are
    what its reader needs to see, not U+FFFD in their place. Where ``raw`` was ``cut`` from a longer payload, a
    character the cut split is left out."""
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(raw, final=not cut), None
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def dead_letter(
    reason: str, detail: str, origin: str, data: bytes | str, *, keep_raw: bool, fmt: str | None = None
) -> DeadLetter:
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "replace"))
    raw, encoding = raw_excerpt(data) if keep_raw else (None, None)
    return DeadLetter(
        reason=reason, detail=detail, origin=origin, size=size, format=fmt, raw=raw, raw_encoding=encoding
    )


def decode_payload(
    payload: bytes | str, origin: str, *, max_bytes: int, keep_raw: bool = False
) -> tuple[list[dict[str, Any]], list[DeadLetter]]:
    """The JSON objects in ``payload`` and dead letters for the rest."""
    located, letters = decode_located(payload, origin, max_bytes=max_bytes, keep_raw=keep_raw)
    return [record for _, record in located], letters


def decode_located(
    payload: bytes | str, origin: str, *, max_bytes: int, keep_raw: bool = False
) -> tuple[list[tuple[str, dict[str, Any]]], list[DeadLetter]]:
    """Like :func:`decode_payload`, each object paired with its origin (``origin[index]`` inside a batch)."""
    if isinstance(payload, str):
        try:
            data = payload.encode("utf-8")
        except UnicodeEncodeError as error:  # lone surrogates from a lenient reader
            return [], [
                dead_letter("invalid_utf8", f"not encodable as UTF-8: {error}", origin, payload, keep_raw=keep_raw)
            ]
    else:
        data = bytes(payload)
    if len(data) > max_bytes:
        detail = f"{len(data)} bytes exceeds the limit of {max_bytes}"
        if b"\r" in data and b"\n" not in data:
            detail += " (lines end in CR only; files are read a line at a time, split at LF: tr '\\r' '\\n')"
        return [], [dead_letter("oversized", detail, origin, data, keep_raw=keep_raw)]
    if data.startswith(GZIP_MAGIC):
        data, problem = _gunzip(data, max_bytes)
        if problem:
            return [], [dead_letter(problem[0], problem[1], origin, data, keep_raw=keep_raw)]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return [], [dead_letter("invalid_utf8", f"not valid UTF-8: {error}", origin, data, keep_raw=keep_raw)]
    text = content(text)
    if not text:
        return [], [dead_letter("empty", "payload is empty or whitespace", origin, data, keep_raw=keep_raw)]
    records: list[tuple[str, dict[str, Any]]] = []
    letters: list[DeadLetter] = []
    try:
        parsed = load_json(text)
    except ValueError as error:
        lines = [line.lstrip(BOM) for line in _LINE_BREAK.split(text)]
        if len(lines) < 2 or not any(_is_json_object(line) for line in lines):
            letters.append(_json_dead_letter(error, origin, data, keep_raw=keep_raw))
        else:  # NDJSON: a bad line (too deep, broken, empty batch) costs only that line
            for index, line in enumerate(lines):
                if line.strip():
                    _decode_line(line, f"{origin}[{index}]", records, letters, keep_raw=keep_raw)
    else:
        _collect(parsed, origin, records, letters, keep_raw=keep_raw, data=data)
    return records, letters


def content(text: AnyStr) -> AnyStr:
    """``text`` (decoded, or UTF-8 bytes) without its surrounding whitespace and the byte-order marks that lead it
    (several when empty BOM-only files were joined on, or a blank line comes before one)."""
    mark = BOM if isinstance(text, str) else _BOM_BYTES
    text = text.strip()
    while text.startswith(mark):
        text = text[len(mark) :].lstrip()
    return text


def load_json(text: str) -> Any:
    """A JSON value, by orjson; a text orjson refuses only for a lone UTF-16 surrogate escape is read by the standard
    library (which keeps the lone surrogate) and each one becomes U+FFFD, so the record is judged rather than lost.
    Raises ``ValueError`` (a ``too_deep`` one mentions recursion) for what is not JSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        if "surrogate" not in str(error):
            raise
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_json_int)
        return _without_lone_surrogates(value, MAX_DEPTH)
    except RecursionError:
        raise ValueError("recursion limit exceeded: nested too deep") from None


def _reject_constant(name: str) -> Any:
    """``NaN``/``Infinity`` are not JSON (orjson refuses them; so does the fallback)."""
    raise ValueError(f"unexpected character: {name} is not JSON")


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise ValueError(f"number is infinity when parsed as double: {literal[:32]}")
    return number


def _json_int(literal: str) -> int | float:
    """Integers as orjson reads them: 64-bit ones exactly, wider ones as (finite) doubles."""
    if len(literal) <= 20:
        number = int(literal)
        if -(2**63) <= number < 2**64:
            return number
    return _finite_float(literal)


def _without_lone_surrogates(value: Any, depth: int) -> Any:
    """``value`` with every lone surrogate in its strings and keys replaced by U+FFFD (they cannot be encoded as
    UTF-8, so no sink could write them); nesting deeper than ``depth`` is refused."""
    if isinstance(value, str):
        return _text_without_lone_surrogates(value)
    if depth <= 0:
        raise RecursionError
    if isinstance(value, list):
        return [_without_lone_surrogates(item, depth - 1) for item in value]
    if isinstance(value, dict):
        return {
            _text_without_lone_surrogates(key): _without_lone_surrogates(item, depth - 1) for key, item in value.items()
        }
    return value


def _text_without_lone_surrogates(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        low, high = _SURROGATES
        return "".join("\ufffd" if low <= char <= high else char for char in text)
    return text


def _gunzip(data: bytes, max_bytes: int) -> tuple[bytes, tuple[str, str] | None]:
    """Inflate a gzip payload (S3 log objects, compressed shipper batches; several members are concatenated),
    never past ``max_bytes``: a small compressed payload can inflate to gigabytes."""
    inflated = bytearray()
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=31)
        try:
            inflated += inflater.decompress(rest, max_bytes + 1 - len(inflated))
        except zlib.error as error:
            return data, ("invalid_gzip", f"not a valid gzip stream: {error}")
        if len(inflated) > max_bytes or inflater.unconsumed_tail:
            return data, ("oversized", f"gzip payload inflates past the limit of {max_bytes} bytes")
        if not inflater.eof:
            return data, ("invalid_gzip", "gzip stream is truncated")
        rest = inflater.unused_data
    return bytes(inflated), None


def _is_json_object(line: str) -> bool:
    """NDJSON has whole JSON objects on its lines (a bad first line must not cost the good ones after it);
    the lines of broken pretty-printed JSON are fragments, never whole objects."""
    if not line.lstrip().startswith("{"):
        return False
    try:
        return isinstance(load_json(line), dict)
    except ValueError:
        return False


def _decode_line(
    line: str, origin: str, records: list[tuple[str, dict[str, Any]]], letters: list[DeadLetter], *, keep_raw: bool
) -> None:
    try:
        value = load_json(line)
    except ValueError as error:
        letters.append(_json_dead_letter(error, origin, line, keep_raw=keep_raw))
        return
    _collect(value, origin, records, letters, keep_raw=keep_raw, data=line)


def _collect(
    value: Any,
    origin: str,
    records: list[tuple[str, dict[str, Any]]],
    letters: list[DeadLetter],
    *,
    keep_raw: bool,
    data: bytes | str,
) -> None:
    """Objects are records; arrays are batches whose elements are checked one by one; a CloudWatch Logs
    subscription envelope is a batch of log events whose ``message`` strings are the records. ``data`` is the
    text ``value`` was read from, kept by the dead letter of an empty batch."""
    if isinstance(value, dict):
        if value.get("messageType") in CLOUDWATCH_MESSAGE_TYPES and isinstance(value.get("logEvents"), list):
            _collect_log_events(value, origin, records, letters, keep_raw=keep_raw, data=data)
        else:
            records.append((origin, value))
        return
    if value == []:
        letters.append(dead_letter("empty", "payload holds an empty batch", origin, data, keep_raw=keep_raw))
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, dict):
                records.append((f"{origin}[{index}]", item))
            else:
                letters.append(_not_an_object(item, f"{origin}[{index}]", keep_raw=keep_raw))
        return
    letters.append(_not_an_object(value, origin, keep_raw=keep_raw))


def _collect_log_events(
    envelope: dict[str, Any],
    origin: str,
    records: list[tuple[str, dict[str, Any]]],
    letters: list[DeadLetter],
    *,
    keep_raw: bool,
    data: bytes | str,
) -> None:
    """``{"messageType": "DATA_MESSAGE", "logGroup", "logStream", "logEvents": [{"id", "timestamp", "message"}]}``
    (CloudWatch Logs subscription filters, e.g. Bedrock invocation logs through Kinesis/Firehose); a
    ``CONTROL_MESSAGE`` carries no records, a ``DATA_MESSAGE`` without log events is an empty batch."""
    if envelope["messageType"] != "DATA_MESSAGE":
        return
    if not envelope["logEvents"]:
        detail = "CloudWatch Logs envelope holds no log events"
        letters.append(dead_letter("empty", detail, origin, data, keep_raw=keep_raw))
        return
    for index, log_event in enumerate(envelope["logEvents"]):
        message = log_event.get("message") if isinstance(log_event, dict) else None
        where = f"{origin}[{index}]"
        if not isinstance(message, str):
            letters.append(_not_an_object(message, where, keep_raw=keep_raw))
            continue
        _decode_line(message.lstrip(BOM), where, records, letters, keep_raw=keep_raw)


def _not_an_object(value: Any, origin: str, *, keep_raw: bool) -> DeadLetter:
    try:
        data = orjson.dumps(value)
    except TypeError:  # nested too deep to re-encode
        data = b""
    detail = f"expected a JSON object, got {_json_type(value)}"
    return dead_letter("not_an_object", detail, origin, data, keep_raw=keep_raw)


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _depth_error(error: ValueError) -> bool:
    return "depth" in str(error) or "recursion" in str(error).lower()


def _json_dead_letter(error: ValueError, origin: str, data: bytes | str, *, keep_raw: bool) -> DeadLetter:
    if _depth_error(error):
        return dead_letter(
            "too_deep", f"JSON nested deeper than the decoder allows: {error}", origin, data, keep_raw=keep_raw
        )
    return dead_letter("invalid_json", f"not valid JSON: {error}", origin, data, keep_raw=keep_raw)
