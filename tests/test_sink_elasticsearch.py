"""The Elasticsearch sink's batching, error classification and retry loop, against a scripted bulk endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from elastic_transport import ApiResponseMeta, ConnectionError, HttpHeaders, NodeConfig
from elasticsearch import ApiError

from app.settings import ElasticsearchSettings
from app.sinks.elasticsearch import (
    Document,
    ElasticsearchSink,
    Outcome,
    chunks,
    classify,
    client_options,
    error_text,
    unique_documents,
)

Script = Callable[[str, str, dict[str, Any]], int]  # (op_type, _id, body) -> HTTP status of the item


class ScriptedBulk:
    """Answers ``bulk`` like Elasticsearch: per-item statuses from ``script``, or a whole-request error; ``mget``
    from what it stored, with a sequence number per write (a partial update merges its ``doc`` in)."""

    def __init__(
        self, script: Script, request_errors: list[Exception] | None = None, mget_errors: list[Exception] | None = None
    ) -> None:
        self.script = script
        self.request_errors = list(request_errors or [])
        self.mget_errors = list(mget_errors or [])
        self.requests: list[list[tuple[str, str, str, dict[str, Any]]]] = []
        self.headers: list[dict[str, Any]] = []
        self.stored: dict[tuple[str, str], dict[str, Any]] = {}
        self.seq_no: dict[tuple[str, str], int] = {}

    async def mget(self, *, docs: list[dict[str, Any]]) -> dict[str, Any]:
        if self.mget_errors:
            raise self.mget_errors.pop(0)
        found = []
        for doc in docs:
            key = (doc["_index"], doc["_id"])
            if key in self.stored:
                found.append(
                    {**doc, "found": True, "_seq_no": self.seq_no[key], "_primary_term": 1}
                    | {"_source": self.stored[key]}
                )
            else:
                found.append({"_index": doc["_index"], "_id": doc["_id"], "found": False})
        return {"docs": found}

    async def bulk(self, *, operations: list[bytes]) -> dict[str, Any]:
        if self.request_errors:
            raise self.request_errors.pop(0)
        request = []
        items = []
        for header, body in zip(operations[::2], operations[1::2], strict=True):
            ((op_type, meta),) = orjson.loads(header).items()
            document = orjson.loads(body)
            request.append((op_type, meta["_index"], meta["_id"], document))
            self.headers.append(meta)
            key = (meta["_index"], meta["_id"])
            status = self.script(op_type, meta["_id"], document)
            if "if_seq_no" in meta and meta["if_seq_no"] != self.seq_no.get(key):
                status = 409
            error = None if status < 300 else {"type": "test_error", "reason": f"status {status}"}
            if status < 300:
                self.stored[key] = (
                    merged(self.stored.get(key, {}), document["doc"]) if op_type == "update" else document
                )
                self.seq_no[key] = self.seq_no.get(key, -1) + 1
            items.append({op_type: {"_index": meta["_index"], "_id": meta["_id"], "status": status, "error": error}})
        self.requests.append(request)
        return {"errors": any(i for i in items), "items": items}


def merged(stored: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """What Elasticsearch stores after a partial update: objects merged key by key, everything else replaced."""
    out = dict(stored)
    for key, value in doc.items():
        both_objects = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merged(out[key], value) if both_objects else value
    return out


NODE = NodeConfig("http", "localhost", 9200)


def elasticsearch_meta(status: int) -> ApiResponseMeta:
    """Response metadata as Elasticsearch sends it (every answer carries its product header)."""
    return ApiResponseMeta(status, "1.1", HttpHeaders({"X-Elastic-Product": "Elasticsearch"}), 0.0, NODE)


def api_error(status: int) -> ApiError:
    meta = ApiResponseMeta(status, "1.1", HttpHeaders(), 0.0, NodeConfig("http", "localhost", 9200))
    return ApiError(f"HTTP {status}", meta, {"error": {"type": "test", "reason": "request failed"}})


def documents(count: int, index: str = "events") -> list[Document]:
    return [Document(index, f"id-{n}", {"event": {"id": f"id-{n}"}, "n": n}) for n in range(count)]


def make_sink(client: ScriptedBulk, op_type: str = "index", **options: Any) -> tuple[ElasticsearchSink, list[float]]:
    sleeps: list[float] = []

    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    sink = ElasticsearchSink(client, op_type_for=lambda index: op_type, sleep=record_sleep, **options)  # type: ignore[arg-type]
    return sink, sleeps


@pytest.mark.parametrize(
    ("status", "op_type", "outcome"),
    [
        (200, "index", Outcome.STORED),
        (201, "create", Outcome.STORED),
        (409, "create", Outcome.DUPLICATE),
        (409, "index", Outcome.RETRY),
        (429, "index", Outcome.RETRY),
        (503, "index", Outcome.RETRY),
        (500, "create", Outcome.RETRY),
        (400, "index", Outcome.REJECTED),
        (413, "index", Outcome.REJECTED),
        (404, "index", Outcome.REJECTED),
        (401, "update", Outcome.RETRY),  # refusals an operator fixes: the document is not at fault
        (403, "index", Outcome.RETRY),
    ],
)
def test_classify(status: int, op_type: str, outcome: Outcome) -> None:
    assert classify(status, op_type) is outcome


@pytest.mark.parametrize(
    ("status", "error_type", "outcome"),
    [
        (403, "security_exception", Outcome.RETRY),
        (403, "cluster_block_exception", Outcome.RETRY),
        (429, "cluster_block_exception", Outcome.RETRY),
        (404, "index_not_found_exception", Outcome.RETRY),
        (400, "mapper_parsing_exception", Outcome.REJECTED),
        (404, "document_missing_exception", Outcome.REJECTED),
    ],
)
def test_classify_by_error_type(status: int, error_type: str, outcome: Outcome) -> None:
    assert classify(status, "index", error_type) is outcome


def test_a_forbidden_write_is_retried_until_the_role_is_restored() -> None:
    """A 403 on a bulk item (the API key lost its role) must not dead-letter the document while offsets advance."""
    rounds = {"n": 0}

    def script(op: str, doc_id: str, body: dict[str, Any]) -> int:
        return 403 if rounds["n"] < 3 else 201

    client = ScriptedBulk(script)
    retried: list[str] = []

    def on_retry(count: int, reason: str) -> None:
        rounds["n"] += 1
        retried.append(reason)

    sink, sleeps = make_sink(client, op_type="update", initial_backoff_s=1.0, max_backoff_s=2.0)
    report = asyncio.run(sink.write(documents(2), on_retry=on_retry))
    assert report.stored == 2 and report.rejections == [] and report.retries == 3
    assert sleeps == [1.0, 2.0, 2.0]  # backs off: no spinning
    assert all(reason.startswith("HTTP 403") for reason in retried)


def test_chunks_respect_count_and_bytes() -> None:
    items = [(doc, b"x" * 100) for doc in documents(10)]
    assert [len(c) for c in chunks(items, max_docs=4, max_bytes=10_000)] == [4, 4, 2]
    assert [len(c) for c in chunks(items, max_docs=100, max_bytes=250)] == [2, 2, 2, 2, 2]
    big = [(documents(1)[0], b"x" * 1000)]
    assert [len(c) for c in chunks(big, max_docs=10, max_bytes=10)] == [1]


def test_unique_documents_keeps_the_last_copy_per_index_and_id() -> None:
    first, second = Document("a", "1", {"v": 1}), Document("a", "1", {"v": 2})
    other = Document("b", "1", {"v": 3})
    assert unique_documents([first, other, second]) == [second, other]


def test_all_stored_in_bulk_requests_of_the_configured_size() -> None:
    client = ScriptedBulk(lambda op, doc_id, body: 201)
    sink, sleeps = make_sink(client, max_docs=3)
    report = asyncio.run(sink.write(documents(7)))
    assert (report.stored, report.duplicates, report.retries, report.rejections) == (7, 0, 0, [])
    assert [len(r) for r in client.requests] == [3, 3, 1]
    assert {op for request in client.requests for op, *_ in request} == {"index"}
    assert sleeps == []


def test_throttled_documents_are_retried_until_acknowledged_with_growing_backoff() -> None:
    attempts: dict[str, int] = {}

    def script(op: str, doc_id: str, body: dict[str, Any]) -> int:
        attempts[doc_id] = attempts.get(doc_id, 0) + 1
        return 429 if doc_id == "id-1" and attempts[doc_id] <= 3 else 201

    client = ScriptedBulk(script)
    sink, sleeps = make_sink(client, initial_backoff_s=0.5, max_backoff_s=1.5)
    report = asyncio.run(sink.write(documents(3)))
    assert report.stored == 3 and report.retries == 3 and not report.rejections
    assert sleeps == [0.5, 1.0, 1.5]
    assert [len(r) for r in client.requests] == [3, 1, 1, 1]  # only the throttled one is resent
    assert set(client.stored) == {("events", f"id-{n}") for n in range(3)}


def test_connection_errors_retry_the_whole_batch() -> None:
    down = ConnectionError("connection refused")
    client = ScriptedBulk(lambda op, doc_id, body: 201, request_errors=[down, down, api_error(503)])
    retried: list[tuple[int, str]] = []
    sink, _ = make_sink(client)
    report = asyncio.run(sink.write(documents(4), on_retry=lambda count, reason: retried.append((count, reason))))
    assert report.stored == 4 and report.retries == 3
    assert [count for count, _ in retried] == [4, 4, 4]
    assert "ConnectionError" in retried[0][1] and "503" in retried[2][1]


def test_permanent_rejections_are_reported_while_the_rest_lands() -> None:
    client = ScriptedBulk(lambda op, doc_id, body: 400 if body["n"] % 3 == 0 else 201)
    sink, sleeps = make_sink(client)
    report = asyncio.run(sink.write(documents(7)))
    assert report.stored == 4
    assert sorted(r.document.id for r in report.rejections) == ["id-0", "id-3", "id-6"]
    assert all(r.status == 400 and "test_error" in r.error for r in report.rejections)
    assert sleeps == []


def test_data_stream_duplicates_count_as_already_stored() -> None:
    client = ScriptedBulk(lambda op, doc_id, body: 409 if op == "create" and doc_id == "id-0" else 201)
    sink, _ = make_sink(client, op_type="create")
    report = asyncio.run(sink.write(documents(2)))
    assert (report.stored, report.duplicates, report.rejections) == (1, 1, [])


def test_request_too_large_is_split_and_a_lone_oversized_document_rejected() -> None:
    class TooLarge(ScriptedBulk):
        async def bulk(self, *, operations: list[bytes]) -> dict[str, Any]:
            if len(operations) > 2 or any(b"huge" in op for op in operations):
                raise api_error(413)
            return await super().bulk(operations=operations)

    client = TooLarge(lambda op, doc_id, body: 201)
    docs = [*documents(3), Document("events", "big", {"n": -1, "blob": "huge"})]
    sink, sleeps = make_sink(client, max_docs=10)
    report = asyncio.run(sink.write(docs))
    assert report.stored == 3
    assert [(r.document.id, r.status) for r in report.rejections] == [("big", 413)]
    assert sleeps == [] and report.retries == 0  # split at once, not after a backoff per halving
    assert sink.max_docs == 10  # the next batches go out whole again (it once stayed at one document per request)


def test_a_request_refused_for_one_document_rejects_that_one_only() -> None:
    """Elasticsearch refuses a whole bulk request (400) for a document it cannot parse, such as an ``_id`` over 512
    bytes: that document is found by halving and rejected; the rest land and nothing is retried for ever."""

    class LongIdRefused(ScriptedBulk):
        async def bulk(self, *, operations: list[bytes]) -> dict[str, Any]:
            if any(len(orjson.loads(op).get("index", {}).get("_id", "")) > 512 for op in operations[::2]):
                body = {"error": {"type": "action_request_validation_exception", "reason": "id is too long"}}
                raise ApiError("HTTP 400", elasticsearch_meta(400), body)
            return await super().bulk(operations=operations)

    client = LongIdRefused(lambda op, doc_id, body: 201)
    long_id = "x" * 600
    docs = [*documents(5), Document("events", long_id, {"n": -1}), *documents(5, index="other")]
    sink, sleeps = make_sink(client)
    report = asyncio.run(sink.write(docs))
    assert report.stored == 10 and sleeps == []
    assert [(r.document.id, r.status) for r in report.rejections] == [(long_id, 400)]
    assert "action_request_validation_exception" in report.rejections[0].error


def test_a_request_refused_for_the_clusters_state_is_retried_not_rejected() -> None:
    blocked = ApiError(
        "HTTP 400", elasticsearch_meta(400), {"error": {"type": "cluster_block_exception", "reason": "read-only"}}
    )
    client = ScriptedBulk(lambda op, doc_id, body: 201, request_errors=[blocked])
    sink, sleeps = make_sink(client)
    report = asyncio.run(sink.write(documents(3)))
    assert report.stored == 3 and report.rejections == [] and len(sleeps) == 1


@pytest.mark.parametrize("answer", ["proxy", "every document"])
def test_a_400_that_is_not_about_one_document_is_retried_not_rejected(answer: str) -> None:
    """An ingress or firewall before Elasticsearch answers 400 with its own page: no document is at fault. And should
    Elasticsearch refuse every document of a request alone, the fault is the request's. Either way the batch waits
    and is retried (it once was split down and every document dead-lettered, its offsets acknowledged)."""
    if answer == "proxy":
        refused = ApiError(
            "HTTP 400", ApiResponseMeta(400, "1.1", HttpHeaders(), 0.0, NODE), "<html>Bad Request</html>"
        )
    else:
        refused = ApiError("HTTP 400", elasticsearch_meta(400), {"error": {"type": "illegal_argument_exception"}})

    class Refusing(ScriptedBulk):
        refusals = 0

        async def bulk(self, *, operations: list[bytes]) -> dict[str, Any]:
            if self.refusals < 14:  # two rounds: a request of 4 and its halves down to single documents, 7 each
                self.refusals += 1
                raise refused
            return await super().bulk(operations=operations)

    client = Refusing(lambda op, doc_id, body: 201)
    retried: list[str] = []
    sink, sleeps = make_sink(client)
    report = asyncio.run(sink.write(documents(4), on_retry=lambda count, reason: retried.append(reason)))
    assert report.rejections == [] and report.stored == 4
    assert sleeps and retried, "the batch waited and was retried"


def test_the_sinks_client_leaves_retries_to_the_sink() -> None:
    """The client's own retries are immediate: against a throttling cluster they multiplied each bulk request."""
    settings = ElasticsearchSettings()
    sink_options = client_options(settings, retries=False)
    assert (sink_options["max_retries"], sink_options["retry_on_status"], sink_options["retry_on_timeout"]) == (
        0,
        (),
        False,
    )
    assert client_options(settings)["max_retries"] == settings.max_retries


def test_redelivered_batch_overwrites_instead_of_duplicating() -> None:
    client = ScriptedBulk(lambda op, doc_id, body: 200)
    sink, _ = make_sink(client)
    asyncio.run(sink.write(documents(5)))
    asyncio.run(sink.write(documents(5)))
    assert len(client.stored) == 5


def alert(count: int, message: str = "") -> Document:
    return Document(
        "alerts", "a1", {"event": {"id": "a1"}, "message": message, "abusewatch": {"status": "open", "count": count}}
    )


def test_an_alert_is_created_whole_then_updated_without_the_analysts_fields_under_its_sequence_number() -> None:
    client = ScriptedBulk(lambda op, doc_id, body: 200)
    sink, _ = make_sink(client, op_type="update")
    asyncio.run(sink.write([alert(3)]))
    asyncio.run(sink.write([alert(5)]))
    (created,), (updated,) = client.requests
    assert created == ("create", "alerts", "a1", alert(3).body)
    assert updated[:3] == ("update", "alerts", "a1")
    assert updated[3] == {"doc": {"event": {"id": "a1"}, "message": "", "abusewatch": {"count": 5}}}  # no status
    assert client.headers[1]["if_seq_no"] == 0 and client.headers[1]["if_primary_term"] == 1


def test_a_rendering_that_counts_fewer_detections_is_not_written() -> None:
    """A late detection re-opens a forgotten group with a count of one; the grown alert stays."""
    client = ScriptedBulk(lambda op, doc_id, body: 200)
    sink, _ = make_sink(client, op_type="update")
    asyncio.run(sink.write([alert(5, "grown")]))
    report = asyncio.run(sink.write([alert(1, "late")]))
    assert (report.stored, report.kept_larger, report.retries) == (0, 1, 0)
    assert len(client.requests) == 1
    assert client.stored["alerts", "a1"]["message"] == "grown"
    report = asyncio.run(sink.write([alert(5, "again")]))  # the same count: a re-rendering of the same group
    assert (report.stored, report.kept_larger) == (1, 0)
    assert client.stored["alerts", "a1"]["message"] == "again"


def test_a_triaged_alert_whose_severity_rises_goes_back_to_the_queue_with_its_verdict() -> None:
    """An attacker who got one harmless probe closed must not carry on under that verdict (review 9G #1)."""
    client = ScriptedBulk(lambda op, doc_id, body: 200)
    sink, _ = make_sink(client, op_type="update")

    def rendering(count: int, severity: int) -> Document:
        body = alert(count).body | {"event": {"id": "a1", "severity": severity}}
        body["abusewatch"]["last_seen"] = f"2026-01-15T10:0{count}:00Z"
        return Document("alerts", "a1", body)

    def close(status: str) -> None:  # what `abusewatch alerts close` writes, with its new sequence number
        client.stored["alerts", "a1"]["abusewatch"] |= {"status": status, "triage": {"reason": "false_positive"}}
        client.seq_no["alerts", "a1"] += 1

    asyncio.run(sink.write([rendering(1, 47)]))
    close("closed")
    asyncio.run(sink.write([rendering(2, 47)]))  # grew, same severity: the verdict stands
    assert "status" not in client.requests[-1][0][3]["doc"]["abusewatch"]
    asyncio.run(sink.write([rendering(5, 73)]))  # its severity rose: back in the queue
    reopened = client.requests[-1][0][3]["doc"]["abusewatch"]
    assert reopened["status"] == "open"
    assert reopened["triage"] == {
        "reopened_because": "severity rose from 47 to 73 after the alert was closed",
        "reopened_at": "2026-01-15T10:05:00Z",
    }
    client.stored["alerts", "a1"]["abusewatch"]["status"] = "open"
    asyncio.run(sink.write([rendering(6, 99)]))  # open already: nothing to re-open
    assert "status" not in client.requests[-1][0][3]["doc"]["abusewatch"]


def test_an_alert_changed_since_it_was_read_is_read_again() -> None:
    """An analyst's verdict (or another worker) writes between the read and the guarded update: 409, read again."""
    client = ScriptedBulk(lambda op, doc_id, body: 200)
    sink, sleeps = make_sink(client, op_type="update")
    asyncio.run(sink.write([alert(3)]))
    original_mget = client.mget

    async def mget_then_concurrent_write(*, docs: list[dict[str, Any]]) -> dict[str, Any]:
        response = await original_mget(docs=docs)
        if len(client.requests) == 1:  # only before the first guarded update
            client.seq_no["alerts", "a1"] += 1
        return response

    client.mget = mget_then_concurrent_write  # type: ignore[method-assign]
    report = asyncio.run(sink.write([alert(4)]))
    assert (report.stored, report.retries) == (1, 1) and len(sleeps) == 1
    assert [request[0][0] for request in client.requests] == ["create", "update", "update"]
    assert client.stored["alerts", "a1"]["abusewatch"]["count"] == 4


def test_an_unreadable_alert_is_retried_not_overwritten() -> None:
    client = ScriptedBulk(lambda op, doc_id, body: 200, mget_errors=[ConnectionError("reset")])
    sink, sleeps = make_sink(client, op_type="update")
    report = asyncio.run(sink.write([alert(2)]))
    assert (report.stored, report.retries, len(sleeps)) == (1, 1, 1)
    assert [request[0][0] for request in client.requests] == ["create"]


def test_an_alert_the_key_may_not_read_is_retried_with_the_reason_named() -> None:
    """A key without the ``read`` privilege on the alerts index: every lookup is refused; the retry says why."""
    client = ScriptedBulk(lambda op, doc_id, body: 200)
    refusals = iter([True, False])

    async def mget(*, docs: list[dict[str, Any]]) -> dict[str, Any]:
        if next(refusals):
            error = {"type": "security_exception", "reason": "action [indices:data/read/mget[shard]] is unauthorized"}
            return {"docs": [{"_index": d["_index"], "_id": d["_id"], "error": error} for d in docs]}
        return {"docs": [{"_index": d["_index"], "_id": d["_id"], "found": False} for d in docs]}

    client.mget = mget  # type: ignore[method-assign]
    reasons: list[str] = []
    sink, _ = make_sink(client, op_type="update")
    report = asyncio.run(sink.write([alert(2)], on_retry=lambda count, reason: reasons.append(reason)))
    assert (report.stored, report.retries) == (1, 1)
    assert reasons == [
        "reading the stored alert: security_exception: action [indices:data/read/mget[shard]] is unauthorized"
    ]


@pytest.mark.parametrize(
    ("reason", "kept", "cut"),
    [
        (
            "failed to parse field [user.id] of type [long] in document with id 'e1'. Preview of field's value: '"
            + "x" * 5000
            + "'",
            "failed to parse field [user.id] of type [long]",
            "x" * 100,
        ),
        (
            'Document contains at least one immense term in field="gen_ai.prompt.lc" (whose UTF8 encoding is longer '
            "than the max length 32766), all of which were skipped. The prefix of the first immense term is: '[65, "
            + "65, " * 2000
            + "...]...', original message: bytes can be at most 32766 in length; got 40000",
            "bytes can be at most 32766 in length; got 40000",
            "65, 65, 65",
        ),
    ],
)
def test_rejection_reasons_keep_the_cause_and_drop_the_quoted_value(reason: str, kept: str, cut: str) -> None:
    text = error_text({"type": "document_parsing_exception", "reason": reason})
    assert kept in text
    assert cut not in text
    assert "[value omitted]" in text
