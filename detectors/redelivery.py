"""What tells a redelivered record from another record under the same id: the whole event, but an assumed time.

An event's id is often the record's own request id, which a client can sometimes choose, so the id alone does not
identify an event: a benign request followed by an attack under the same id are two events, and so are two requests
that differ only in a part a rule or model reads (user agent, service, conversation history, tool definitions,
request parameters) or only in their time (the same attempt repeated). A true redelivery (a shipper's retry, a
replayed file) normalises to the same event, except when the record carries no time: then the normaliser stamps it
with the time of ingestion (``Event.timestamp_assumed``), which the hash leaves out. The stream's memory of
processed events (``app.stream.dedupe``) and the enriched event's document id (``detectors.documents``) both hash
the event that way, through :func:`content_digest`.
"""

from __future__ import annotations

import hashlib

import msgspec

from detectors.event import Event

_ENCODER = msgspec.msgpack.Encoder()  # fields in declaration order: the same event always encodes the same


def content_digest(event: Event, *, digest_size: int, key: bytes = b"") -> bytes:
    """BLAKE2b (keyed with ``key`` if given) of the event's MessagePack encoding, with its timestamp left out when
    the normaliser assumed it (``Event.timestamp_assumed``): two events share it only if they are equal but for
    assumed timestamps (or by a collision of the digest).

    ``Event.judged_span``, ``Event.system_shown`` and ``Event.tools_shown`` are left out as well: the pipeline sets
    them from what the session showed before, which a redelivery after a restart may not know. Leaving the fields
    out of the map encodes every event exactly as before they existed, so checkpoints and document ids stay valid.
    ``Event.cache_read_tokens`` is left out when unknown, for the same reason: an event without it hashes as it did
    before the field existed.
    """
    fields = msgspec.structs.asdict(event)
    del fields["judged_span"], fields["system_shown"], fields["tools_shown"]
    if event.cache_read_tokens is None:
        del fields["cache_read_tokens"]
    if event.timestamp_assumed:
        fields["timestamp"] = 0.0
    return hashlib.blake2b(_ENCODER.encode(fields), digest_size=digest_size, key=key).digest()
