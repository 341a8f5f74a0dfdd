"""Raw payloads to records and dead letters: batches, NDJSON, bad bytes, limits."""

from __future__ import annotations

import base64
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


def test_lone_surrogate_escape_is_read_as_a_replacement_character() -> None:
    """Python's json.dumps writes a lone surrogate as ``\\ud800``, which orjson refuses: the record is still read."""
    payload = json.dumps({"prompt": "ignore previous instructions \ud800", "\udc00key": ["\ud83d\ude00", "ok"]})
    records, letters = decode_payload(payload.encode(), "x", max_bytes=LIMIT)
    assert letters == []
    assert records == [{"prompt": "ignore previous instructions \ufffd", "\ufffdkey": ["\U0001f600", "ok"]}]


def test_one_lone_surrogate_in_a_batch_loses_no_record() -> None:
    batch = [{"id": index, "text": "fine"} for index in range(50)] + [{"id": 50, "text": "bad \udc00"}]
    records, letters = decode_payload(json.dumps(batch).encode(), "x", max_bytes=LIMIT)
    assert letters == []
    assert [record["id"] for record in records] == list(range(51))
    assert records[-1]["text"] == "bad \ufffd"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ('{"a": "\\ud800", "b": NaN}', "invalid_json"),
        ('{"a": "\\ud800", "b": 1e400}', "invalid_json"),
        ('{"a": "\\ud800", "b": ' + "[" * 5000 + "]" * 5000 + "}", "too_deep"),
        ('{"a": "\\ud800", "b": }', "invalid_json"),
    ],
    ids=["nan", "infinite-number", "deep", "broken"],
)
def test_surrogate_fallback_refuses_what_orjson_refuses(payload: str, reason: str) -> None:
    records, letters = decode_payload(payload.encode(), "x", max_bytes=LIMIT)
    assert records == []
    assert [letter.reason for letter in letters] == [reason]


def test_surrogate_fallback_reads_wide_integers_as_orjson_does() -> None:
    payload = '{"a": "\\ud800", "small": 7, "wide": ' + "9" * 25 + "}"
    ((record,), letters) = decode_payload(payload.encode(), "x", max_bytes=LIMIT)
    assert letters == [] and record["small"] == 7 and record["wide"] == pytest.approx(1e25)
    assert isinstance(record["small"], int) and isinstance(record["wide"], float)


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
def test_ndjson_lines_end_at_newline_only(separator: str) -> None:
    lines = [json.dumps({"id": rid, "text": f"a{separator}b"}, ensure_ascii=False) for rid in ("a", "b", "c")]
    records, letters = decode_payload("\n".join(lines).encode(), "x", max_bytes=LIMIT)
    assert letters == []
    assert [record["text"] for record in records] == [f"a{separator}b"] * 3


def test_ndjson_crlf_lines() -> None:
    records, letters = decode_payload(b'{"a": 1}\r\n{"b": 2}\r\n', "x", max_bytes=LIMIT)
    assert records == [{"a": 1}, {"b": 2}] and letters == []


@pytest.mark.parametrize("separator", ["\r", "\r\n", "\n"], ids=["cr", "crlf", "lf"])
def test_ndjson_lines_may_end_in_a_lone_cr(separator: str) -> None:
    """Classic-Mac exports end lines in CR only; JSON has no raw CR inside a string, so it can only be a break."""
    payload = separator.join(['{"a": 1}', '{"b": 2}', '{"c": ', '{"d": "x\\ry"}']).encode()
    records, letters = decode_payload(payload, "f:1", max_bytes=LIMIT)
    assert records == [{"a": 1}, {"b": 2}, {"d": "x\ry"}]
    assert [(letter.reason, letter.origin) for letter in letters] == [("invalid_json", "f:1[2]")]


def test_an_oversized_cr_only_payload_says_how_to_read_it() -> None:
    records, letters = decode_payload(b'{"a": 1}\r' * 20, "f:1", max_bytes=100)
    assert records == [] and [letter.reason for letter in letters] == ["oversized"]
    assert "CR only" in letters[0].detail
    _, (lf_letter,) = decode_payload(b'{"a": 1}\n' * 20, "f:1", max_bytes=100)
    assert "CR" not in lf_letter.detail


def test_ndjson_whose_first_line_is_too_deep_keeps_the_good_lines() -> None:
    deep = b'{"id": "deep", "x": ' + b"[" * 1100 + b"]" * 1100 + b"}"
    records, letters = decode_payload(deep + b'\n{"id": "a"}\n{"id": "b"}', "o", max_bytes=LIMIT)
    assert [record["id"] for record in records] == ["a", "b"]
    assert [(letter.reason, letter.origin) for letter in letters] == [("too_deep", "o[0]")]


@pytest.mark.parametrize(
    ("payload", "origin"),
    [
        (b"[]", "o"),
        (b'{"a": 1}\n[]\n', "o[1]"),
        (b'{"messageType": "DATA_MESSAGE", "logGroup": "g", "logStream": "s", "logEvents": []}', "o"),
        (b'{"messageType": "DATA_MESSAGE", "logEvents": [{"id": "1", "timestamp": 1, "message": "[]"}]}', "o[0]"),
    ],
    ids=["array", "ndjson-line", "cloudwatch-without-events", "cloudwatch-event-of-empty-array"],
)
def test_empty_batch_is_an_empty_dead_letter(payload: bytes, origin: str) -> None:
    _, letters = decode_payload(payload, "o", max_bytes=LIMIT)
    assert [(letter.reason, letter.origin) for letter in letters] == [("empty", origin)]
    assert letters[0].detail


BOM = "\ufeff".encode()


def test_a_byte_order_mark_leading_any_ndjson_line_is_dropped_and_one_inside_a_value_kept() -> None:
    """Files of a Windows tool joined with ``cat`` and sent as one NDJSON message (``abusewatch produce
    --batch-records``): every file's first line starts with a BOM, an empty file saved with one adds another."""
    payload = b"\r\n".join(
        [
            BOM + b'{"id": "a"}',
            b'{"id": "b", "text": "' + BOM + b'kept"}',
            BOM + BOM + b'{"id": "c"}',
            BOM,
            b"",
        ]
    )
    records, letters = decode_payload(payload, "o", max_bytes=LIMIT)
    assert records == [{"id": "a"}, {"id": "b", "text": "\ufeffkept"}, {"id": "c"}]
    assert letters == []


def test_ndjson_whose_first_line_is_broken_keeps_its_bom_led_lines() -> None:
    records, letters = decode_payload(
        b'{"id": \n' + BOM + b'{"id": "a"}\n' + BOM + b'{"id": "b"}', "o", max_bytes=LIMIT
    )
    assert [record["id"] for record in records] == ["a", "b"]
    assert [(letter.reason, letter.origin) for letter in letters] == [("invalid_json", "o[0]")]


@pytest.mark.parametrize(
    "payload",
    [BOM + BOM + b'{"id": "a"}', b"\n" + BOM + b'{"id": "a"}\n', BOM + b"\r\n" + BOM + b'{"id": "a"}'],
    ids=["two-boms", "blank-line-then-bom", "bom-only-line-then-bom"],
)
def test_a_record_led_by_byte_order_marks_and_blank_lines_decodes(payload: bytes) -> None:
    assert decode_payload(payload, "o", max_bytes=LIMIT) == ([{"id": "a"}], [])


def test_a_cloudwatch_log_event_message_led_by_a_byte_order_mark_decodes() -> None:
    """The CloudWatch agent ships the first line of a log file written with a BOM as it is."""
    envelope = {
        "messageType": "DATA_MESSAGE",
        "logEvents": [{"id": "1", "timestamp": 1, "message": '\ufeff{"id": "a"}'}],
    }
    assert decode_payload(orjson.dumps(envelope), "o", max_bytes=LIMIT) == ([{"id": "a"}], [])


def test_raw_bytes_that_are_not_utf8_are_kept_as_they_came() -> None:
    payload = b'{"prompt": "caf\xe9 \xff\xfe"}'  # Latin-1 and stray bytes: what made the record undecodable
    _, (letter,) = decode_payload(payload, "x", max_bytes=LIMIT, keep_raw=True)
    assert letter.reason == "invalid_utf8" and letter.raw_encoding == "base64"
    assert base64.b64decode(letter.raw) == payload


def test_a_character_cut_by_the_raw_limit_leaves_the_rest_readable() -> None:
    payload = ("x" * (RAW_LIMIT_BYTES - 1) + "é and more").encode()  # é straddles the limit
    _, (letter,) = decode_payload(payload, "x", max_bytes=1 << 30, keep_raw=True)
    assert letter.raw_encoding is None and letter.raw == "x" * (RAW_LIMIT_BYTES - 1)


def test_a_lone_surrogate_from_a_lenient_reader_is_kept_exactly() -> None:
    payload = '{"prompt": "half \ud800 a pair"}'
    _, (letter,) = decode_payload(payload, "x", max_bytes=LIMIT, keep_raw=True)
    assert letter.raw_encoding == "base64"
    assert base64.b64decode(letter.raw).decode("utf-8", "surrogatepass") == payload


def test_a_record_ending_in_half_a_character_keeps_that_half() -> None:
    payload = b'{"prompt": "caf\xc3'  # the last byte starts a character that never comes
    _, (letter,) = decode_payload(payload, "x", max_bytes=LIMIT, keep_raw=True)
    assert (letter.raw_encoding, base64.b64decode(letter.raw)) == ("base64", payload)
