"""Wire formats of the stream's own topics.

The internal topic carries msgpack-encoded lists of :class:`~detectors.event.Event`: one message per target
partition per ingest batch (Faust's cost is per message), split so no message exceeds the size limit. Output
topics carry one JSON document per message.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import orjson

from detectors.campaigns import CampaignCandidate
from detectors.event import Event

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[Event])
_candidates = msgspec.msgpack.Decoder(list[CampaignCandidate])


def encode_events(events: list[Event], max_bytes: int) -> Iterator[bytes]:
    """Messages holding ``events`` in order, each at most about ``max_bytes`` (an event larger goes alone)."""
    chunk: list[msgspec.Raw] = []
    size = 0
    for event in events:
        encoded = msgspec.Raw(_encoder.encode(event))
        if chunk and size + len(encoded) > max_bytes:
            yield _encoder.encode(chunk)
            chunk, size = [], 0
        chunk.append(encoded)
        size += len(encoded)
    if chunk:
        yield _encoder.encode(chunk)


def decode_events(payload: bytes) -> list[Event]:
    """The events of one internal message; raises ``msgspec.DecodeError`` (a ``ValueError``) on bad input."""
    return _decoder.decode(payload)


def encode_candidates(candidates: list[CampaignCandidate]) -> bytes:
    """One campaign-topic message: the candidates of one signature partition from one batch (a few KB)."""
    return _encoder.encode(candidates)


def decode_candidates(payload: bytes) -> list[CampaignCandidate]:
    """Raises ``msgspec.DecodeError`` (a ``ValueError``) on bad input."""
    return _candidates.decode(payload)


def encode_document(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document)


def decode_document(payload: bytes) -> dict[str, Any]:
    """A JSON object from an output topic; raises ``ValueError`` if it is not one."""
    document = orjson.loads(payload)
    if not isinstance(document, dict):
        raise ValueError(f"expected a JSON object, got {type(document).__name__}")
    return document
