"""Bulk writes to Elasticsearch that never lose and never duplicate a document.

Every document has a deterministic ``_id``, so a redelivered event or dead letter is recognised as already stored
(``op_type: create``, on data streams and plain indices alike: a 409 means the document is already in, and the first
rendering stays; see :func:`app.sinks.es_setup.op_types`). Alerts are created, then updated in place by
re-renderings of their group, but never by one that counts fewer detections than the stored alert (see
``ElasticsearchSink._bulk``); an analyst's verdict on an alert survives every update. An alert's ``_id`` is its id,
a dead letter's too; an enriched event's is its ``event.hash``, a keyed hash of its ``event.id`` and content
(``detectors.documents.event_document_id``), so a redelivered record meets its own document while another record
under a reused ``event.id`` gets its own.

:meth:`ElasticsearchSink.write` returns only once Elasticsearch has acknowledged every document or rejected it for
good: throttling (429), server errors and lost connections are retried with exponential backoff for as long as it
takes, which blocks the calling agent, pauses consumption and keeps memory bounded. So are refusals an operator
fixes and the document does not cause: authentication or authorisation (401, 403: a key that lost its role), a
write block (``cluster_block_exception``: disk watermark, read-only index) and a missing index or data stream
(``index_not_found_exception``); a document dead-lettered for them would be lost to the index for good. Permanent
rejections (mapping conflict, too large) come back as :class:`Rejection` for the dead-letter path while the rest of
the batch lands.
"""

from __future__ import annotations

import asyncio
import copy
import enum
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from elastic_transport import ApiError, TransportError
from elasticsearch import AsyncElasticsearch

from app.settings import ElasticsearchSettings
from detectors.documents import supersedes

log = logging.getLogger(__name__)

# Set by analysts on an alert (app/triage.py); a re-write of a growing alert must leave them alone.
STATUS_FIELD = "abusewatch.status"
TRIAGE_FIELD = "abusewatch.triage"
TRIAGE_FIELDS = (STATUS_FIELD, TRIAGE_FIELD)

OpType = str  # "index", "create", or "update" (alerts: created, then updated in place, see ElasticsearchSink._bulk)
_RETRY_STATUSES = frozenset({401, 403, 408, 429, 500, 502, 503, 504})
# refusals of the cluster's state or set-up, not of the document, whatever their status
_RETRY_ERROR_TYPES = frozenset({"security_exception", "cluster_block_exception", "index_not_found_exception"})


def client_options(es: ElasticsearchSettings, *, retries: bool = True) -> dict[str, Any]:
    """Keyword arguments for ``Elasticsearch`` / ``AsyncElasticsearch``. With ``retries`` the client retries
    429/5xx and timeouts itself, at once (``elasticsearch.max_retries`` times): right for a command's one request.
    The sink's client is made without: it backs off between rounds itself, and a throttled cluster must not get
    each bulk request again and again within milliseconds."""
    options: dict[str, Any] = {
        "hosts": [es.url],
        "request_timeout": es.request_timeout_s,
        "max_retries": es.max_retries if retries else 0,
        "retry_on_status": (429, 502, 503, 504) if retries else (),
        "retry_on_timeout": retries,
        "verify_certs": es.verify_certs,
    }
    if es.ca_certs:
        options["ca_certs"] = str(es.ca_certs)
    if es.api_key:
        options["api_key"] = es.api_key.get_secret_value()
    elif es.username:
        options["basic_auth"] = (es.username, es.password.get_secret_value() if es.password else "")
    return options


class Outcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # create on a data stream found the same _id: already stored
    RETRY = "retry"
    REJECTED = "rejected"


def reopen_reason(stored: dict[str, Any], alert: dict[str, Any]) -> str | None:
    """Why a triaged alert goes back to the analysts' queue, if it does: its severity rose since it was closed or
    acknowledged. An attacker who got one harmless probe closed must not carry on under that verdict for the rest
    of the window."""
    status = stored.get("abusewatch", {}).get("status")
    before, after = stored.get("event", {}).get("severity"), alert.get("event", {}).get("severity")
    if (
        status in ("acknowledged", "closed")
        and all(isinstance(s, int | float) for s in (before, after))
        and after > before
    ):
        return f"severity rose from {before} to {after} after the alert was {status}"
    return None


def preserving_update(alert: dict[str, Any], reopen_because: str | None = None) -> dict[str, Any]:
    """Bulk ``update`` body that re-writes a stored alert without touching its triage state.

    Every field but :data:`TRIAGE_FIELDS` is merged in (``doc``), so ``abusewatch.status`` and ``abusewatch.triage``
    set by an analyst survive the group growing, unless ``reopen_because`` (:func:`reopen_reason`): then the status
    is ``open`` again and the triage section says why and from when (the alert's last event time), keeping the
    verdict. The sink sends it only when the rendering supersedes the stored version, guarded by that version's
    sequence number (see :class:`ElasticsearchSink`).
    """
    doc = copy.deepcopy(alert)
    section = doc.get("abusewatch", {})
    for dotted in TRIAGE_FIELDS:
        section.pop(dotted.split(".", 1)[1], None)
    if reopen_because is not None:
        section["status"] = "open"
        section["triage"] = {"reopened_because": reopen_because, "reopened_at": section.get("last_seen")}
    return {"doc": doc}


def classify(status: int, op_type: OpType, error_type: str = "") -> Outcome:
    """What a bulk item's HTTP status (and error type) means for that document."""
    if 200 <= status < 300:
        return Outcome.STORED
    if status == 409 and op_type == "create":
        return Outcome.DUPLICATE
    if status in _RETRY_STATUSES or status == 409:  # 409 on index or update: a concurrent write, read and try again
        return Outcome.RETRY
    if error_type in _RETRY_ERROR_TYPES:
        return Outcome.RETRY
    return Outcome.REJECTED


@dataclass(frozen=True, slots=True)
class Document:
    """One document to write: target index (or data stream), deterministic id and body."""

    index: str
    id: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejection:
    """A document Elasticsearch refused for good, with its status and error."""

    document: Document
    status: int
    error: str


# what the sink reads of a stored alert before it updates it: for supersedes() and reopen_reason()
_STORED_FIELDS = ["abusewatch.count", "abusewatch.status", "event.severity"]


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """What a guarded alert update needs to know of the stored alert."""

    seq_no: int
    primary_term: int
    body: dict[str, Any]


@dataclass(slots=True)
class WriteReport:
    stored: int = 0
    duplicates: int = 0
    kept_larger: int = 0  # alert renderings not written: the stored version counts more detections
    retries: int = 0
    rejections: list[Rejection] = field(default_factory=list)


def chunks(
    lines: Sequence[tuple[Document, bytes]], max_docs: int, max_bytes: int
) -> Iterator[list[tuple[Document, bytes]]]:
    """Split serialized documents into bulk requests of at most ``max_docs`` and about ``max_bytes``.

    A single document larger than ``max_bytes`` goes alone (Elasticsearch then accepts or rejects it).
    """
    chunk: list[tuple[Document, bytes]] = []
    size = 0
    for item in lines:
        item_size = len(item[1])
        if chunk and (len(chunk) >= max_docs or size + item_size > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += item_size
    if chunk:
        yield chunk


def unique_documents(documents: Sequence[Document]) -> list[Document]:
    """One document per (index, id), the last one winning, as Elasticsearch itself would keep."""
    return list({(doc.index, doc.id): doc for doc in documents}.values())


class ElasticsearchSink:
    """Writes batches of documents; see the module docstring for the guarantees.

    ``op_type_for(index)`` chooses ``index`` or ``create`` per target.
    """

    def __init__(
        self,
        client: AsyncElasticsearch,
        *,
        op_type_for: Callable[[str], OpType],
        max_docs: int = 2000,
        max_bytes: int = 10 * 1024 * 1024,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.op_type_for = op_type_for
        self.max_docs = max_docs
        self.max_bytes = max_bytes
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep

    async def write(
        self, documents: Sequence[Document], on_retry: Callable[[int, str], None] | None = None
    ) -> WriteReport:
        """Write ``documents``; returns once each is stored or permanently rejected. ``on_retry(count, reason)``
        observes each round that leaves documents to retry (the worker shows why on ``/health``)."""
        report = WriteReport()
        pending = [(doc, self._serialize(doc)) for doc in unique_documents(documents)]
        backoff = self.initial_backoff_s
        while pending:
            retry: list[tuple[Document, bytes]] = []
            reason = ""
            for chunk in chunks(pending, self.max_docs, self.max_bytes):
                before = len(report.rejections)
                failed, reason_now = await self._bulk_or_bisect(chunk, report)
                refused = report.rejections[before:]
                if len(chunk) > 1 and len(refused) == len(chunk) and all(r.status == 400 for r in refused):
                    # every document refused alone: the fault is the requests' (a setting, something in between)
                    del report.rejections[before:]
                    failed, reason_now = chunk, f"every document refused alone: {refused[0].error}"
                retry.extend(failed)
                reason = reason_now or reason
            if not retry:
                break
            report.retries += 1
            if on_retry is not None:
                on_retry(len(retry), reason)
            log.warning(
                "elasticsearch: %d documents not acknowledged (%s); retrying in %.1fs", len(retry), reason, backoff
            )
            await self._sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)
            pending = retry
        return report

    def _serialize(self, doc: Document) -> bytes:
        if self.op_type_for(doc.index) == "update":
            return orjson.dumps(preserving_update(doc.body))
        return orjson.dumps(doc.body)

    async def _stored_alerts(self, docs: list[Document]) -> tuple[dict[tuple[str, str], StoredVersion | None], str]:
        """The stored version of each alert that exists (``None`` for those that do not yet).

        An alert the read could not answer for is left out, and the reason (the first item error, e.g. a key
        without the ``read`` privilege on the alerts index) is returned beside; the caller retries it.
        """
        if not docs:
            return {}, ""
        response = await self.client.mget(
            docs=[{"_index": doc.index, "_id": doc.id, "_source": _STORED_FIELDS} for doc in docs]
        )
        stored: dict[tuple[str, str], StoredVersion | None] = {}
        reason = ""
        for doc, found in zip(docs, response["docs"], strict=True):
            error = found.get("error")
            if error is not None and not (isinstance(error, dict) and error.get("type") == "index_not_found_exception"):
                reason = reason or f"reading the stored alert: {error_text(error)}"
                continue
            if found.get("found"):
                stored[doc.index, doc.id] = StoredVersion(found["_seq_no"], found["_primary_term"], found["_source"])
            else:
                stored[doc.index, doc.id] = None
        return stored, reason

    async def _bulk(
        self, chunk: list[tuple[Document, bytes]], report: WriteReport
    ) -> tuple[list[tuple[Document, bytes]], str]:
        """One bulk request for ``chunk``; returns the documents to retry and why.

        Alerts are written so that none ever shrinks (:func:`detectors.documents.supersedes`): an alert not stored
        yet is created whole; a stored one is updated only if the rendering supersedes it, and only if it is still
        the version read (``if_seq_no``), so a concurrent write (another worker during a rebalance, an analyst's
        verdict) makes a 409 that is read again in the next round.
        """
        alerts = [doc for doc, _ in chunk if self.op_type_for(doc.index) == "update"]
        stored, read_error = await self._stored_alerts(alerts)
        sent: list[tuple[Document, bytes]] = []
        failed: list[tuple[Document, bytes]] = []
        operations: list[bytes] = []
        for doc, body in chunk:
            target: dict[str, Any] = {"_index": doc.index, "_id": doc.id}
            action, payload = self.op_type_for(doc.index), body
            if action == "update":
                if (doc.index, doc.id) not in stored:
                    failed.append((doc, body))
                    continue
                version = stored[doc.index, doc.id]
                if version is None:
                    action, payload = "create", orjson.dumps(doc.body)
                elif not supersedes(doc.body, version.body):
                    report.kept_larger += 1
                    continue
                else:
                    target |= {"if_seq_no": version.seq_no, "if_primary_term": version.primary_term}
                    if (reason := reopen_reason(version.body, doc.body)) is not None:
                        payload = orjson.dumps(preserving_update(doc.body, reason))
            operations += [orjson.dumps({action: target}), payload]
            sent.append((doc, body))
        reason = read_error if failed else ""
        if not sent:
            return failed, reason
        response = await self.client.bulk(operations=operations)
        for (doc, body), item in zip(sent, response["items"], strict=True):
            result = next(iter(item.values()))
            status = int(result.get("status", 500))
            error = result.get("error")
            op_type = self.op_type_for(doc.index)  # an alert's create is still an alert write: a 409 is read again
            outcome = classify(status, op_type, str(error.get("type", "")) if isinstance(error, dict) else "")
            if outcome is Outcome.STORED:
                report.stored += 1
            elif outcome is Outcome.DUPLICATE:
                report.duplicates += 1
            elif outcome is Outcome.RETRY:
                failed.append((doc, body))
                reason = f"HTTP {status}: {error_text(error)}"
            else:
                report.rejections.append(Rejection(doc, status, error_text(error)))
        return failed, reason

    async def _bulk_or_bisect(
        self, chunk: list[tuple[Document, bytes]], report: WriteReport
    ) -> tuple[list[tuple[Document, bytes]], str]:
        """:meth:`_bulk`, and where Elasticsearch refuses the whole request for what it holds
        (:func:`refuses_the_request`: too large, or a document it cannot parse, such as an over-long ``_id``), the two
        halves at once, down to the one document it refuses, which is rejected. Nothing is then retried for ever over
        one document, and the next batches go out at the configured size again."""
        try:
            return await self._bulk(chunk, report)
        except (ApiError, TransportError) as error:
            if not (isinstance(error, ApiError) and refuses_the_request(error)):
                return chunk, _describe(error)
            if len(chunk) == 1:
                report.rejections.append(Rejection(chunk[0][0], error.status_code, _describe(error)))
                return [], ""
            middle = len(chunk) // 2
            first, first_reason = await self._bulk_or_bisect(chunk[:middle], report)
            second, second_reason = await self._bulk_or_bisect(chunk[middle:], report)
            return first + second, first_reason or second_reason


def refuses_the_request(error: ApiError) -> bool:
    """A whole bulk request refused for its content: 413 (too large, from Elasticsearch or a proxy before it), or a
    400 that Elasticsearch itself gave (its ``X-Elastic-Product`` header and error body) for a document it cannot
    take, such as an ``_id`` over 512 bytes. A 400 from anything else (an ingress, a firewall) and a refusal of the
    cluster's state are retried."""
    if error.status_code == 413:
        return True
    if error.status_code != 400 or error.meta.headers.get("x-elastic-product") != "Elasticsearch":
        return False
    body = error.body if isinstance(error.body, dict) else {}
    cause = body.get("error")
    return isinstance(cause, dict) and bool(cause.get("type")) and cause["type"] not in _RETRY_ERROR_TYPES


def error_text(error: Any) -> str:
    """``type: reason`` of a bulk item error (with its cause), short enough for a dead letter.

    Elasticsearch quotes the offending value in its reasons; that quote is cut out, so a long value cannot push
    the cause itself out of the dead letter (and the value stays in the record, not in the reason).
    """
    if isinstance(error, dict):
        text = f"{error.get('type', 'error')}: {_without_value(str(error.get('reason', '')))}"
        cause = error.get("caused_by")
        if isinstance(cause, dict):
            text += f" (caused by {cause.get('type', '')}: {_without_value(str(cause.get('reason', '')))})"
        return text[:2000]
    return str(error)[:2000]


_VALUE_QUOTES = (
    ("Preview of field's value:", None),  # mapper_parsing_exception: the value ends the reason
    ("The prefix of the first immense term is:", ", original message:"),  # immense term: the value is inside
)


def _without_value(reason: str) -> str:
    for marker, resume in _VALUE_QUOTES:
        start = reason.find(marker)
        if start < 0:
            continue
        end = reason.find(resume, start) if resume else -1
        reason = reason[:start] + "[value omitted]" + (reason[end:] if end >= 0 else "")
    return reason


def _describe(error: Exception) -> str:
    if isinstance(error, ApiError):
        body = error.body.get("error") if isinstance(error.body, dict) else error.body
        return f"HTTP {error.status_code}: {error_text(body)}"
    return f"{type(error).__name__}: {error}"[:500]
