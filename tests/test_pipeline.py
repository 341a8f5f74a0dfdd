"""The pipeline: detectors in order, documents rendered and redacted, failures isolated, shadow alerts apart."""

from collections.abc import Sequence

from detectors.base import Detection, Detector, Evidence, Findings, RuleInfo, SensitiveValue
from detectors.documents import event_document_id
from detectors.event import Event, Identity, Message
from detectors.pipeline import Pipeline
from detectors.redact import Redactor

KEY = "AKIAQWERTYUIOPASDFGH"


def event(event_id: str, text: str) -> Event:
    return Event(
        id=event_id,
        timestamp=1_700_000_000.0,
        dataset="test",
        input_messages=[Message(role="user", content=text)],
        identity=Identity(user_id="alice", source_ip="203.0.113.7"),
    )


def rule(status: str = "stable") -> RuleInfo:
    return RuleInfo(
        id="r-key",
        name="AWS key in prompt",
        category="secret_exposure",
        level="high",
        atlas=("AML.T0057",),
        owasp=("LLM02:2025",),
        status=status,
    )


class KeyFinder(Detector):
    """Flags prompts holding KEY; marks it sensitive."""

    name = "key-finder"

    def __init__(self, status: str = "stable") -> None:
        self.status = status

    def detect(self, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        detections = []
        for item, found in zip(events, findings, strict=True):
            text = item.input_messages[0].content
            if "boom" in text:
                raise RuntimeError("detector bug")
            if KEY in text:
                found.sensitive.append(SensitiveValue(kind="aws_access_key", value=KEY))
                detections.append(
                    Detection(
                        rule=rule(self.status),
                        event_ids=[item.id],
                        timestamp=item.timestamp,
                        identity=item.identity,
                        message=f"AWS key pasted by {item.identity.user_id}",
                        evidence=[Evidence(field="gen_ai.prompt", snippet=text[:60])],
                    )
                )
        return detections


class SeesEarlierFindings(Detector):
    name = "second"

    def detect(self, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        for found in findings:
            found.fields["test.saw_rules"] = list(found.rule_ids)
            found.fields["test.saw_categories"] = sorted(found.categories)
        return []


def test_alert_document_carries_ecs_fields_and_no_raw_secret():
    result = Pipeline([KeyFinder()], Redactor(b"k")).process([event("e1", f"my key is {KEY}")])
    assert len(result.alerts) == 1
    alert = result.alerts[0]
    assert alert["event"]["kind"] == "alert"
    assert len(alert["event"]["id"]) == 32
    assert alert["event"]["severity"] == 73
    assert alert["rule"]["category"] == "secret_exposure"
    assert alert["threat"]["technique"]["id"] == ["AML.T0057"]
    assert alert["user"]["id"] == "alice" and alert["source"]["ip"] == "203.0.113.7"
    assert alert["abusewatch"]["event_ids"] == ["e1"]
    assert alert["abusewatch"]["owasp_llm"] == ["LLM02:2025"]
    assert KEY not in str(result.alerts) and KEY not in str(result.events)
    assert "[REDACTED:aws_access_key:" in alert["abusewatch"]["evidence"][0]["snippet"]


def test_later_detectors_see_earlier_findings():
    result = Pipeline([KeyFinder(), SeesEarlierFindings()], Redactor(b"k")).process([event("e1", KEY)])
    assert result.events[0]["test"]["saw_rules"] == ["r-key"]
    assert result.events[0]["test"]["saw_categories"] == ["secret_exposure"]
    assert result.events[0]["abusewatch"]["rule_ids"] == ["r-key"]


def test_a_failing_event_is_isolated_and_still_emitted():
    events = [event("ok", KEY), event("bad", "boom"), event("fine", "hello")]
    result = Pipeline([KeyFinder()], Redactor(b"k")).process(events)
    assert [doc["event"]["id"] for doc in result.events] == ["ok", "bad", "fine"]
    assert len(result.alerts) == 1
    errors = result.events[1]["abusewatch"]["errors"]
    assert errors and "detector bug" in errors[0]
    assert "errors" not in result.events[0]["abusewatch"]


def test_test_status_rules_alert_in_shadow_mode():
    result = Pipeline([KeyFinder(status="test")], Redactor(b"k")).process([event("e1", KEY)])
    assert result.alerts == []
    assert len(result.shadow_alerts) == 1 and result.shadow_alerts[0]["abusewatch"]["shadow"] is True


def test_same_input_gives_same_alert_ids():
    first = Pipeline([KeyFinder()], Redactor(b"k")).process([event("e1", KEY)])
    second = Pipeline([KeyFinder()], Redactor(b"k")).process([event("e1", KEY)])
    assert first.alerts == second.alerts


class Windowed(Detector):
    """Holds its verdict until the end of the input, like a detector with an open window."""

    name = "windowed"

    def __init__(self) -> None:
        self.pending: list[Event] = []

    def detect(self, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        self.pending.extend(events)
        return []

    def flush(self, until: float | None = None) -> list[Detection]:
        held, self.pending = self.pending, []
        return [
            Detection(rule=rule(), event_ids=[e.id], timestamp=e.timestamp, identity=e.identity, message="late")
            for e in held
        ]


def test_flush_raises_what_detectors_still_hold():
    pipeline = Pipeline([Windowed()], Redactor(b"k"))
    assert pipeline.process([event("e1", "hello")]).alerts == []
    flushed = pipeline.flush()
    assert flushed.events == [] and len(flushed.alerts) == 1
    assert flushed.alerts[0]["abusewatch"]["event_ids"] == ["e1"]
    assert pipeline.flush().alerts == []


def test_an_event_that_cannot_be_rendered_still_leaves_a_document():
    broken = event("odd", "hello")
    broken.timestamp = float("inf")  # iso_time cannot render this
    result = Pipeline([KeyFinder()], Redactor(b"k")).process([event("ok", "hi"), broken])
    assert [doc["event"]["id"] for doc in result.events] == ["ok", "odd"]
    assert "render" in result.events[1]["abusewatch"]["errors"][0]
    # it still has the document id the stream writes it under, the same as a rendered copy would have
    assert result.events[1]["event"]["hash"] == event_document_id(broken, Redactor(b"k"))
