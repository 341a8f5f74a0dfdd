"""Dead-letter documents: what could not be processed or stored, with the reason, as indexed and produced.

Every dead letter becomes one ECS document (``event.kind: pipeline_error``) whether it came from the normaliser
(undecodable or invalid records), from the stream itself (a corrupt internal message, a normaliser crash) or from
Elasticsearch rejecting a document (mapping conflict, too large).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import msgspec
import orjson

from detectors.documents import iso_time
from detectors.normalise.decode import readable_bytes

DATASET = "abusewatch.dead_letter"
_MAX_DETAIL_CHARS = 2000
RAW_BODY_LIMIT_BYTES = 1024 * 1024  # a rejected document's body kept in its dead letter, at most


def dead_letter_document(letter: Any, *, stage: str) -> dict[str, Any]:
    """The document for ``letter`` (a normaliser ``DeadLetter`` struct or a mapping with the same fields)."""
    fields = msgspec.to_builtins(letter) if isinstance(letter, msgspec.Struct) else dict(letter)
    timestamp = fields.get("timestamp")
    if not isinstance(timestamp, int | float) or isinstance(timestamp, bool):
        timestamp = time.time()
    detail = fields.get("detail")
    document = {
        **fields,
        "detail": str(detail)[:_MAX_DETAIL_CHARS] if detail is not None else None,
        "@timestamp": iso_time(timestamp),
        "event": {"kind": "pipeline_error", "dataset": DATASET, "id": dead_letter_id(fields)},
        "abusewatch": {"stage": stage},
    }
    document.pop("timestamp", None)
    return document


def dead_letter_id(fields: dict[str, Any]) -> str:
    """Deterministic id: the same failure of the same record is stored once, however often it is redelivered."""
    key = orjson.dumps([fields.get("reason"), fields.get("origin"), fields.get("detail"), fields.get("size")])
    return hashlib.sha256(key).hexdigest()[:32]


def failure(
    reason: str, detail: str, origin: str, *, size: int = 0, raw: bytes | None = None, raw_limit: int | None = None
) -> dict[str, Any]:
    """A dead letter raised by the stream itself (same fields as the normaliser's ``DeadLetter``); ``raw`` past
    ``raw_limit`` bytes is cut (:func:`cut_raw`)."""
    text, encoding = cut_raw(raw, raw_limit) if raw is not None else (None, None)
    return {
        "reason": reason,
        "detail": detail,
        "origin": origin,
        "size": size,
        "format": None,
        "raw": text,
        "raw_encoding": encoding,
        "timestamp": time.time(),
    }


def cut_raw(raw: bytes, limit: int | None) -> tuple[str, str | None]:
    """``raw`` for a dead letter (:func:`~detectors.normalise.decode.readable_bytes`: text, or base64 when it is not
    UTF-8) and its encoding, cut at ``limit`` bytes (never inside a character); cut text ends with a marker naming
    both sizes."""
    if limit is None or len(raw) <= limit:
        return readable_bytes(raw)
    text, encoding = readable_bytes(raw[: max(0, limit)], cut=True)
    if encoding is not None:  # base64 stays decodable: the letter's ``size`` tells what was cut
        return text, encoding
    return f"{text}... [cut: {len(text.encode())} of {len(raw)} bytes kept]", None
