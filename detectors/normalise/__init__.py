"""Source LLM log records to canonical :class:`~detectors.event.Event` objects.

Formats (``FORMATS``, tried in this order by :func:`detect_format`): ``bedrock`` (Bedrock model invocation logs),
``otel`` (OTLP/JSON traces with GenAI attributes), ``litellm`` (LiteLLM StandardLoggingPayload), ``openai``
(OpenAI request/response envelope). Each module's docstring names the public schema it follows.

* :func:`normalise_many` turns one record into its events: one for most formats, one per GenAI span of an OTLP
  export (possibly none). :func:`normalise` is the one-record-one-event form and rejects records that hold
  several events or none.
* :func:`normalise_payload` goes from a raw payload (Kafka message value, file line: one object, an array, NDJSON or
  a CloudWatch Logs subscription envelope, optionally gzip-compressed) to events and dead letters.

Nothing but :class:`NormaliseError` escapes the normalisers, whatever the types in a record; texts longer than
``max_text_chars`` are cut to their head and tail with a marker between (``Event.truncated``, see
:class:`~detectors.normalise.fields.TextLimit`); each text is cut on its own, and the payload size limit bounds how
many texts there are. A record without a usable timestamp gets the time it was normalised. ``Event.input_tokens``
is every input token the provider processed, prompt-cache writes and reads included, whichever way the vendor counts
them (apart from its input count, or within it); ``Event.cache_read_tokens`` is the share of them read from the
prompt cache, at most ``input_tokens``, when the record says.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec
import orjson

from detectors.event import Event
from detectors.normalise import bedrock, litellm, openai, otel
from detectors.normalise.decode import DeadLetter, dead_letter, decode_located, decode_payload
from detectors.normalise.errors import NormaliseError
from detectors.normalise.fields import TextLimit

# A record time further ahead of its reference clock than this is not believed. The stream's reference is the Kafka
# record's own timestamp (when the shipper produced it), so a backlog read hours later is judged against its own
# time; elsewhere it is the wall clock (replay passes infinity and judges times by the records around them instead,
# app.neighbour_times). Setting: detection.max_future_seconds.
DEFAULT_MAX_FUTURE_SECONDS = 900.0
_PLAUSIBLE_SINCE = 1_577_836_800.0  # 2020-01-01: an older reference clock is a broken producer, not a backlog

__all__ = [
    "DEFAULT_MAX_FUTURE_SECONDS",
    "FORMATS",
    "DeadLetter",
    "Format",
    "NormaliseError",
    "decode_payload",
    "detect_format",
    "normalise",
    "normalise_many",
    "normalise_payload",
]

DEFAULT_MAX_TEXT_CHARS = 262_144


class Format(NamedTuple):
    """A source format: ``detect`` says whether a record is in it, ``normalise`` builds its events."""

    name: str
    detect: Callable[[dict[str, Any]], bool]
    normalise: Callable[[dict[str, Any], TextLimit, float], list[Event]]


FORMATS: dict[str, Format] = {
    module.NAME: Format(module.NAME, module.detect, module.normalise) for module in (bedrock, otel, litellm, openai)
}


def detect_format(record: dict[str, Any]) -> str | None:
    """The name of the format ``record`` is in, or ``None``."""
    if not isinstance(record, dict):
        return None
    for fmt in FORMATS.values():
        if fmt.detect(record):
            return fmt.name
    return None


def normalise_many(
    record: dict[str, Any],
    *,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    received_at: float | None = None,
    max_future_s: float = DEFAULT_MAX_FUTURE_SECONDS,
) -> list[Event]:
    """All events in ``record``. Raises :class:`NormaliseError` for unknown formats and malformed records.

    ``received_at`` is when the record entered the log pipeline (the Kafka record's timestamp), the reference for
    assumed times and for times too far ahead (``max_future_s``); without it, the wall clock.
    """
    name = detect_format(record)
    if name is None:
        keys = ", ".join(sorted(str(key) for key in record)[:8]) if isinstance(record, dict) else type(record).__name__
        raise NormaliseError("unknown_format", f"no known format matches a record with keys: {keys}")
    now = reference_time(received_at)
    try:
        events = FORMATS[name].normalise(record, TextLimit(max_text_chars), now)
    except NormaliseError:
        raise
    except (RecursionError, MemoryError) as error:
        raise NormaliseError("too_deep", f"{name} record too deep or too large: {type(error).__name__}") from None
    except Exception as error:  # a reader missed a type: still a bad record, never a crash
        raise NormaliseError(f"malformed:{name}", f"unexpected {type(error).__name__}: {error}"[:500]) from None
    return [_time_checked(event, now, max_future_s) for event in events]


def reference_time(received_at: float | None) -> float:
    """The clock a record's time is judged against: ``received_at`` if it is plausible, else the wall clock.

    A Kafka timestamp is the producer's (CreateTime) or the broker's (LogAppendTime); one before 2020 (a producer
    writing seconds where Kafka wants milliseconds: 1970) or ahead of the wall clock (a producer's clock off) would
    re-stamp honest records or believe forged ones, so the wall clock stands in.
    """
    wall = time.time()
    if received_at is None or not _PLAUSIBLE_SINCE <= received_at <= wall:
        return wall
    return received_at


def _time_checked(event: Event, now: float, max_future_s: float) -> Event:
    """``event``, its time taken as assumed (ingestion time) if it lies more than ``max_future_s`` ahead of the
    reference clock: a record dated hours ahead is a broken clock or a forgery, and taken at its word it would move
    every event-time window of its partition into the future (every later record late, open alert groups and
    correlations forgotten)."""
    if event.timestamp > now + max_future_s:
        return msgspec.structs.replace(event, timestamp=now, timestamp_assumed=True)
    return event


def normalise(record: dict[str, Any], *, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS) -> Event:
    """The one event in ``record``; use :func:`normalise_many` for OTLP exports holding several spans."""
    events = normalise_many(record, max_text_chars=max_text_chars)
    if len(events) != 1:
        fmt = detect_format(record)
        raise NormaliseError(f"malformed:{fmt}", f"record holds {len(events)} events, expected exactly one")
    return events[0]


def normalise_payload(
    payload: bytes | str,
    origin: str,
    *,
    max_bytes: int,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    keep_raw: bool = False,
    received_at: float | None = None,
    max_future_s: float = DEFAULT_MAX_FUTURE_SECONDS,
) -> tuple[list[Event], list[DeadLetter]]:
    """Events from every record in ``payload``; dead letters for what cannot be decoded or normalised.

    ``received_at`` and ``max_future_s``: see :func:`normalise_many`.
    """
    records, letters = decode_located(payload, origin, max_bytes=max_bytes, keep_raw=keep_raw)
    events: list[Event] = []
    for where, record in records:
        try:
            events.extend(
                normalise_many(
                    record, max_text_chars=max_text_chars, received_at=received_at, max_future_s=max_future_s
                )
            )
        except NormaliseError as error:
            letters.append(
                dead_letter(
                    error.reason, error.detail, where, _encode(record), keep_raw=keep_raw, fmt=detect_format(record)
                )
            )
    return events, letters


def _encode(record: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return b""
