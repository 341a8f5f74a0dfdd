"""Raw payloads to records and dead letters: batches, NDJSON, bad bytes, limits."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pytest

from detectors.normalise import DeadLetter, decode_payload, normalise_payload
from detectors.normalise.decode import RAW_LIMIT_BYTES

FIXTURES = Path(__file__).parent / "fixtures" / "formats"
LIMIT = 1 << 20


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def test_one_object() -> None:
    records, letters = decode_payload(b'{"a": 1}', "f.jsonl:1", max_bytes=LIMIT)
    assert records == [{"a": 1}] and letters == []


def test_array_batch_keeps_good_elements_and_dead_letters_the_rest() -> None:
    records, letters = decode_payload('[{"a": 1}, 7, {"b": 2}, null]', "kafka:t/0/5", max_bytes=LIMIT)
    assert records == [{"a": 1}, {"b": 2}]
    assert [(d.reason, d.origin) for d in letters] == [
        ("not_an_object", "kafka:t/0/5[1]"),
        ("not_an_object", "kafka:t/0/5[3]"),
    ]
    assert "number" in letters[0].detail and "null" in letters[1].detail


def test_ndjson_bad_line_loses_only_itself() -> None:
    payload = b'{"a": 1}\n{"b": \n\n{"c": 3}\n'
    records, letters = decode_payload(payload, "file.jsonl", max_bytes=LIMIT)
    assert records == [{"a": 1}, {"c": 3}]
    assert [(d.reason, d.origin) for d in letters] == [("invalid_json", "file.jsonl[1]")]


def test_broken_pretty_printed_json_is_one_dead_letter() -> None:
    _, letters = decode_payload(b'{\n  "a": 1,\n  "b": \n}', "x", max_bytes=LIMIT)
    assert [d.reason for d in letters] == ["invalid_json"]


def test_oversized_is_not_decoded() -> None:
    payload = b'{"a": "' + b"x" * 100 + b'"}'
    records, letters = decode_payload(payload, "x", max_bytes=50)
    assert records == []
    (letter,) = letters
    assert (letter.reason, letter.size, letter.raw) == ("oversized", len(payload), None)


def test_invalid_utf8() -> None:
    _, letters = decode_payload(b'{"a": "\xff\xfe"}', "x", max_bytes=LIMIT)
    assert [d.reason for d in letters] == ["invalid_utf8"]


def test_lone_surrogate_string_payload() -> None:
    _, letters = decode_payload('{"a": "\ud800"}', "x", max_bytes=LIMIT)
    assert [d.reason for d in letters] == ["invalid_utf8"]


def test_too_deep() -> None:
    payload = "[" * 2000 + "]" * 2000
    _, letters = decode_payload(payload, "x", max_bytes=LIMIT)
    assert [d.reason for d in letters] == ["too_deep"]


@pytest.mark.parametrize("payload", [b"", b"   \n ", b"\xef\xbb\xbf"])
def test_empty(payload: bytes) -> None:
    _, letters = decode_payload(payload, "x", max_bytes=LIMIT)
    assert [d.reason for d in letters] == ["empty"]


def test_scalar_payload_is_not_an_object() -> None:
    _, letters = decode_payload(b'"just a string"', "x", max_bytes=LIMIT)
    assert [d.reason for d in letters] == ["not_an_object"]


def test_raw_kept_only_when_asked_and_capped() -> None:
    payload = b"not json " * 20000
    _, without = decode_payload(payload, "x", max_bytes=1 << 30)
    _, kept = decode_payload(payload, "x", max_bytes=1 << 30, keep_raw=True)
    assert without[0].raw is None
    assert kept[0].raw is not None and len(kept[0].raw) == RAW_LIMIT_BYTES
    assert payload.decode().startswith(kept[0].raw)


def test_normalise_payload_mixes_events_and_dead_letters_with_origins() -> None:
    batch = [fixture("litellm/text_completion.json"), {"unknown": True}, fixture("otel/export_multi_span.json")]
    events, letters = normalise_payload(orjson.dumps(batch), "kafka:llm-logs-raw/2/99", max_bytes=LIMIT)
    assert [e.dataset for e in events] == ["litellm", "otel", "otel", "otel"]
    (letter,) = letters
    assert isinstance(letter, DeadLetter)
    assert (letter.reason, letter.origin, letter.format) == ("unknown_format", "kafka:llm-logs-raw/2/99[1]", None)
    assert letter.size == len(orjson.dumps({"unknown": True}))


def test_normalise_payload_malformed_record_names_its_format() -> None:
    record = {"schemaType": "ModelInvocationLog", "schemaVersion": "1.0", "requestId": "r1"}
    events, letters = normalise_payload(orjson.dumps(record), "s3://b/k.json.gz:3", max_bytes=LIMIT, keep_raw=True)
    assert events == []
    (letter,) = letters
    assert (letter.reason, letter.format, letter.origin) == ("malformed:bedrock", "bedrock", "s3://b/k.json.gz:3")
    assert json.loads(letter.raw) == record


def test_empty_otel_export_is_not_an_error() -> None:
    events, letters = normalise_payload(b'{"resourceSpans": []}', "o", max_bytes=LIMIT)
    assert events == [] and letters == []


def test_gzip_payload_is_inflated() -> None:
    records, letters = decode_payload(gzip.compress(b'{"a": 1}\n{"b": 2}\n'), "s3://logs/x.json.gz", max_bytes=LIMIT)
    assert records == [{"a": 1}, {"b": 2}] and letters == []


def test_gzip_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b" " * (50 * 1024 * 1024))
    assert len(bomb) < LIMIT
    _, letters = decode_payload(bomb, "x", max_bytes=LIMIT)
    assert [d.reason for d in letters] == ["oversized"]


def test_broken_gzip() -> None:
    _, letters = decode_payload(b"\x1f\x8b\x08\x00garbage", "x", max_bytes=LIMIT)
    assert [d.reason for d in letters] == ["invalid_gzip"]


def test_cloudwatch_subscription_envelope_unwraps_bedrock_records() -> None:
    bedrock = fixture("bedrock/titan_text.json")
    envelope = {
        "messageType": "DATA_MESSAGE",
        "owner": "111122223333",
        "logGroup": "/aws/bedrock/modelinvocations",
        "logStream": "aws/bedrock/modelinvocations",
        "subscriptionFilters": ["to-kafka"],
        "logEvents": [
            {"id": "1", "timestamp": 1768482000000, "message": json.dumps(bedrock)},
            {"id": "2", "timestamp": 1768482000001, "message": "not json"},
        ],
    }
    events, letters = normalise_payload(gzip.compress(orjson.dumps(envelope)), "kinesis:0", max_bytes=LIMIT)
    assert [e.id for e in events] == [bedrock["requestId"]]
    assert [(d.reason, d.origin) for d in letters] == [("invalid_json", "kinesis:0[1]")]
    control = {"messageType": "CONTROL_MESSAGE", "logEvents": [{"id": "", "timestamp": 0, "message": "CWL CONTROL"}]}
    assert normalise_payload(orjson.dumps(control), "k", max_bytes=LIMIT) == ([], [])


def test_concatenated_gzip_members_are_all_read() -> None:
    payload = gzip.compress(b'{"a": 1}\n') + gzip.compress(b'{"b": 2}\n')
    records, letters = decode_payload(payload, "x", max_bytes=LIMIT)
    assert records == [{"a": 1}, {"b": 2}] and letters == []


def test_truncated_gzip() -> None:
    _, letters = decode_payload(gzip.compress(b'{"a": 1}')[:-6], "x", max_bytes=LIMIT)
    assert [d.reason for d in letters] == ["invalid_gzip"]


def test_ndjson_whose_first_line_is_broken_keeps_the_good_lines() -> None:
    good = b'{"id": "a", "messages": []}'
    records, letters = decode_payload(b"not json\n" + good + b"\n" + good.replace(b'"a"', b'"b"'), "o", max_bytes=10**6)
    assert [record["id"] for record in records] == ["a", "b"]
    assert [(letter.reason, letter.origin) for letter in letters] == [("invalid_json", "o[0]")]
