"""Property tests: whatever a record or payload holds, it ends as well-typed Events or as DeadLetters.

Records are the realistic fixtures with random parts replaced by random JSON (wrong types, NUL bytes, unicode
tag characters, huge numbers, NaN), plus random records that carry each format's detection keys. A
``NormaliseError`` is allowed; any other exception, or one that reached the safety net (detail "unexpected ..."),
fails the test.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import msgspec
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.base import Findings
from detectors.documents import event_document
from detectors.event import Event
from detectors.normalise import DeadLetter, NormaliseError, normalise_many, normalise_payload
from detectors.redact import Redactor

FIXTURES = Path(__file__).parent / "fixtures" / "formats"
RECORDS = {path.relative_to(FIXTURES).as_posix(): json.loads(path.read_text()) for path in FIXTURES.glob("*/*.json")}
REDACTOR = Redactor(b"property-test-key")
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _keys(node: Any, found: set[str]) -> set[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            found.add(key)
            _keys(value, found)
    elif isinstance(node, list):
        for value in node:
            _keys(value, found)
    return found


KEYS = sorted(set().union(*(_keys(record, set()) for record in RECORDS.values())))

nasty_text = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(["\x00", "\U000e0041", "\U000e0069", "\u202e", "\ufeff", "\n"]),
    ),
    max_size=24,
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    nasty_text,
    st.sampled_from(["", "0", "-1", "1e400", "NaN", "2026-01-15T10:00:00Z", "user", "assistant", "tool", "text"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), nasty_text), children, max_size=5),
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            paths.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            paths.extend(_paths(value, (*prefix, index)))
    return paths


def _replace(record: Any, path: tuple[Any, ...], value: Any) -> None:
    node = record
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value


@st.composite
def mutated_records(draw: st.DrawFn) -> dict[str, Any]:
    record = json.loads(json.dumps(RECORDS[draw(st.sampled_from(sorted(RECORDS)))]))
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        paths = _paths(record)
        if not paths:
            break
        _replace(record, draw(st.sampled_from(paths)), draw(json_values))
    return record


format_shaped = st.one_of(
    st.fixed_dictionaries({"schemaType": st.just("ModelInvocationLog")}, optional={k: json_values for k in KEYS[:40]}),
    st.fixed_dictionaries({"resourceSpans": st.lists(json_values, max_size=3)}),
    st.fixed_dictionaries(
        {"call_type": json_values, "startTime": json_values},
        optional={"messages": json_values, "response": json_values, "metadata": json_values, "status": json_values},
    ),
    st.fixed_dictionaries(
        {"request": st.dictionaries(st.sampled_from(["messages", "input", "prompt", "tools", "model"]), json_values)},
        optional={"response": json_values, "user": json_values, "error": json_values, "timestamp": json_values},
    ),
)


def assert_usable(event: Event) -> None:
    """Strictly typed (msgspec does not check on construction) and renderable as the indexed document."""
    assert msgspec.json.decode(msgspec.json.encode(event), type=Event, strict=True) == event
    orjson.dumps(event_document(event, Findings(), REDACTOR))


def check_record(record: dict[str, Any]) -> None:
    try:
        events = normalise_many(record, max_text_chars=64)
    except NormaliseError as error:
        assert not error.detail.startswith("unexpected"), error.detail
        return
    for event in events:
        assert_usable(event)


@PROPERTY_SETTINGS
@given(mutated_records())
def test_mutated_fixtures_become_events_or_normalise_errors(record: dict[str, Any]) -> None:
    check_record(record)


@PROPERTY_SETTINGS
@given(format_shaped)
def test_random_format_shaped_records_become_events_or_normalise_errors(record: dict[str, Any]) -> None:
    check_record(record)


@PROPERTY_SETTINGS
@given(
    st.one_of(
        st.binary(max_size=200),
        st.binary(max_size=200).map(lambda b: b"\x1f\x8b" + b),
        mutated_records().map(lambda r: json.dumps(r).encode()),
        mutated_records().map(lambda r: gzip.compress(json.dumps(r).encode())),
    )
)
def test_any_payload_ends_as_events_or_dead_letters(payload: bytes) -> None:
    events, letters = normalise_payload(payload, "prop", max_bytes=1 << 20, max_text_chars=64)
    for event in events:
        assert_usable(event)
    for letter in letters:
        assert isinstance(letter, DeadLetter)
        assert letter.reason and letter.origin.startswith("prop")
        assert not letter.detail.startswith("unexpected"), letter.detail
        msgspec.json.encode(letter)


@PROPERTY_SETTINGS
@given(st.integers(min_value=1, max_value=1500), st.sampled_from(["[", '{"a":', '{"messages":[']))
def test_deep_nesting_never_escapes(depth: int, opener: str) -> None:
    closer = {"[": "]", '{"a":': "}", '{"messages":[': "]}"}[opener]
    payload = '{"request": {"messages": ' + opener * depth + "1" + closer * depth + "}}"
    events, letters = normalise_payload(payload, "deep", max_bytes=1 << 20)
    assert len(events) + len(letters) == 1
    if letters:
        assert letters[0].reason in ("too_deep", "invalid_json")


def test_nul_bytes_and_tag_characters_are_kept_verbatim() -> None:
    text = "hello\x00world \U000e0049\U000e0047\U000e004e\U000e004f\U000e0052\U000e0045"
    events, letters = normalise_payload(
        orjson.dumps({"request": {"messages": [{"role": "user", "content": text}]}}), "o", max_bytes=1 << 20
    )
    assert letters == []
    assert events[0].input_messages[0].content == text
