"""What tells a redelivered record from another record under the same id: its id *and* its content.

An event's id is often the record's own request id, which a client can sometimes choose, so the id alone does not
identify an event: a benign request followed by an attack under the same id are two events. What a true
redelivery (a shipper's retry, a replayed file) shares with the first delivery is the id, the texts
(``Event.texts()``), identity key, dataset, operation and models; not the timestamp, as a normaliser falls back to
the time of ingestion when a record has none. The stream's memory of processed events (``app.stream.dedupe``) and
the enriched event's document id (``detectors.documents``) both hash these parts, through :func:`content_digest`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from detectors.event import Event

_ABSENT = b"\xff" * 8  # an unknown part (None), which no length prefix can be mistaken for


def identifying_parts(event: Event) -> Iterator[str | None]:
    """What a redelivered record shares with the first delivery: its id and content, not its timestamp."""
    yield event.id
    yield event.dataset
    yield event.identity.key()
    yield event.operation
    yield event.request_model
    yield event.response_model
    for field, text in event.texts():
        yield field
        yield text


def content_digest(event: Event, *, digest_size: int, key: bytes = b"") -> bytes:
    """BLAKE2b (keyed with ``key`` if given) of :func:`identifying_parts`, each part length-prefixed so parts cannot
    run together: two events share it only if they share every part (or by a collision of the digest)."""
    digest = hashlib.blake2b(digest_size=digest_size, key=key)
    for part in identifying_parts(event):
        if part is None:
            digest.update(_ABSENT)
            continue
        encoded = part.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.digest()
