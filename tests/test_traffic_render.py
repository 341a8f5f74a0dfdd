"""Renderers are the inverse of the normalisers: normalise(render(event)) gives back what the format carries."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.traffic.render import RENDERERS, bedrock_principal, render_otel
from detectors.event import Event, GuardrailVerdict, Identity, Message, RetrievedDocument, ToolCall, ToolDefinition
from detectors.normalise import detect_format, normalise, normalise_many
from detectors.normalise.fields import hash_key

# What each format cannot carry, reset to the normalised value before comparing.
NOT_CARRIED: dict[str, dict[str, Any]] = {
    "litellm": {},
    "openai": {},
    "bedrock": {"retrieved_documents": [], "duration_ms": None},
    "otel": {},
}
IDENTITY_NOT_CARRIED = {
    "litellm": {},
    "openai": {},
    "bedrock": {"team_id": None, "source_ip": None},  # requestMetadata.client_ip is the caller's word: not read
    "otel": {"api_key_hash": None, "team_id": None},
}

text = st.text(st.characters(codec="utf-8", exclude_characters="\r"), max_size=40)
word = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=16)
hex_id = st.text("0123456789abcdef", min_size=16, max_size=64)
maybe = st.one_of(st.none(), word)
arguments = st.dictionaries(word, st.one_of(st.integers(-1000, 1000), word, st.booleans()), max_size=3).map(
    lambda value: orjson.dumps(value).decode()
)
one_call = st.builds(ToolCall, name=word, arguments=arguments, id=maybe)
tool_calls = st.lists(one_call, max_size=2)
messages = st.lists(
    st.one_of(
        st.builds(Message, role=st.just("user"), content=text),
        st.builds(Message, role=st.just("assistant"), content=text, tool_calls=tool_calls),
        st.builds(Message, role=st.just("tool"), content=text, tool_call_id=maybe),
    ),
    max_size=4,
)
output = st.one_of(
    st.just([]),
    st.builds(Message, role=st.just("assistant"), content=text.map(lambda t: t or "ok"), tool_calls=tool_calls).map(
        lambda m: [m]
    ),
    st.builds(
        Message, role=st.just("assistant"), content=st.just(""), tool_calls=st.lists(one_call, min_size=1, max_size=2)
    ).map(lambda m: [m]),
)
identities = st.builds(
    Identity,
    user_id=maybe,
    api_key_hash=st.one_of(st.none(), st.text("0123456789abcdef", min_size=40, max_size=64)),
    organization_id=maybe,
    team_id=maybe,
    source_ip=st.one_of(st.none(), st.ip_addresses().map(str)),
    user_agent=maybe,
    session_id=maybe,
)
params = st.fixed_dictionaries(
    {},
    optional={
        "temperature": st.floats(0, 2, allow_nan=False),
        "top_p": st.floats(0, 1, allow_nan=False),
        "max_tokens": st.integers(1, 100_000),
        "stream": st.just(True),  # a false flag is dropped: only streaming is a signal
    },
)


@st.composite
def events(draw: st.DrawFn, fmt: str) -> Event:
    outputs = draw(output)
    outcome = draw(st.sampled_from(["success", "failure"]))
    model = draw(word)
    event_id = f"{draw(hex_id.map(lambda h: h[:32].ljust(32, '0')))}-{draw(hex_id.map(lambda h: h[:16]))}"
    return Event(
        id=event_id if fmt == "otel" else draw(word),
        timestamp=draw(st.integers(1_700_000_000_000, 1_790_000_000_000)) / 1000,  # the past: later is not believed
        dataset=fmt,
        provider={"bedrock": "aws.bedrock", "openai": "openai"}.get(fmt) or draw(word),
        operation="chat",
        request_model=model,
        response_model=model if fmt == "bedrock" else draw(word),
        finish_reasons=[draw(word)] if outputs else [],
        input_tokens=draw(st.one_of(st.none(), st.integers(0, 10**6))),
        output_tokens=draw(st.one_of(st.none(), st.integers(0, 10**6))),
        system_instructions=draw(text),
        input_messages=draw(messages),
        output_messages=outputs,
        tool_definitions=draw(st.lists(st.builds(ToolDefinition, name=word, description=text), max_size=2)),
        retrieved_documents=draw(
            st.lists(st.builds(RetrievedDocument, content=text, id=maybe, source=maybe), max_size=2)
        ),
        request_params=draw(params) if fmt != "bedrock" else {},
        identity=draw(identities),
        service_name=draw(maybe),
        duration_ms=draw(st.one_of(st.none(), st.integers(0, 100_000).map(float))) if fmt != "bedrock" else None,
        outcome=outcome,
        error_code=draw(word) if outcome == "failure" else None,
    )


def expected(event: Event, fmt: str) -> Event:
    identity = msgspec.structs.replace(event.identity, **IDENTITY_NOT_CARRIED[fmt])
    if fmt == "bedrock":  # the IAM principal is the credential, and the user when the caller names none
        principal = bedrock_principal(event)
        identity = msgspec.structs.replace(
            identity, user_id=identity.user_id or principal, api_key_hash=hash_key(principal)
        )
    return msgspec.structs.replace(event, identity=identity, **NOT_CARRIED[fmt])


def comparable(event: Event) -> Event:
    """Times travel as text or nanoseconds; compare them to the millisecond."""
    duration = None if event.duration_ms is None else round(event.duration_ms)
    return msgspec.structs.replace(event, timestamp=round(event.timestamp, 3), duration_ms=duration)


@pytest.mark.parametrize("fmt", sorted(RENDERERS))
def test_round_trip(fmt: str) -> None:
    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(events(fmt))
    def check(event: Event) -> None:
        record = orjson.loads(orjson.dumps(RENDERERS[fmt](event)))  # as it would travel
        assert detect_format(record) == fmt
        back = normalise(record)
        assert comparable(back) == comparable(expected(event, fmt))

    check()


def test_otel_export_groups_spans_by_service() -> None:
    base = Event(id="0" * 32 + "-" + "1" * 16, timestamp=1768471200.0, dataset="otel", service_name="a")
    spans = [
        base,
        msgspec.structs.replace(base, id="2" * 32 + "-" + "3" * 16, service_name="b"),
        msgspec.structs.replace(base, id="4" * 32 + "-" + "5" * 16),
    ]
    record = render_otel(spans)
    assert len(record["resourceSpans"]) == 2
    assert [e.id for e in normalise_many(record)] == [spans[0].id, spans[2].id, spans[1].id]


@pytest.mark.parametrize(
    ("fmt", "verdict"),
    [
        ("litellm", GuardrailVerdict(source="litellm:lakera", action="blocked", categories=[], detail=None)),
        ("litellm", GuardrailVerdict(source="litellm:presidio", action="flagged", categories=["EMAIL_ADDRESS"])),
        ("bedrock", GuardrailVerdict(source="bedrock.guardrail", action="blocked", categories=["PROMPT_ATTACK"])),
        ("openai", GuardrailVerdict(source="openai.moderation", action="flagged", categories=["violence"])),
    ],
)
def test_guardrail_verdicts_round_trip(fmt: str, verdict: GuardrailVerdict) -> None:
    event = Event(
        id="r1",
        timestamp=1768471200.0,
        dataset=fmt,
        input_messages=[Message(role="user", content="hi")],
        outcome="success",
        guardrails=[verdict],
    )
    (back,) = normalise(RENDERERS[fmt](event)).guardrails
    assert (back.source, back.action, back.categories) == (verdict.source, verdict.action, verdict.categories)


@pytest.mark.parametrize("fmt", sorted(RENDERERS))
def test_content_redacted_round_trips(fmt: str) -> None:
    event_id = "a" * 32 + "-" + "b" * 16
    event = Event(id=event_id, timestamp=1768471200.0, dataset=fmt, outcome="success", content_redacted=True)
    assert normalise(RENDERERS[fmt](event)).content_redacted
