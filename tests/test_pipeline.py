"""The pipeline: detectors in order, documents rendered and redacted, failures isolated, shadow alerts apart."""

from collections.abc import Sequence

import pytest

from detectors.anomaly import AnomalyDetector
from detectors.base import Detection, Detector, Evidence, Findings, RuleInfo, SensitiveValue
from detectors.documents import event_document_id
from detectors.event import Event, Identity, Message
from detectors.pipeline import Pipeline, distinct_id_runs
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


class CountsMarkedEvents(Detector):
    """A stateful tier that counts the events earlier tiers marked, like a correlation rule counting verdicts."""

    name = "counter"

    def __init__(self) -> None:
        self.marked: list[str] = []

    def detect(self, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        self.marked.extend(
            item.input_messages[0].content for item, found in zip(events, findings, strict=True) if found.rule_ids
        )
        return []


@pytest.mark.parametrize("attack_first", [True, False])
def test_a_reused_event_id_in_one_batch_marks_only_the_event_that_raised(attack_first):
    attack, benign = event("req-42", f"my key is {KEY}"), event("req-42", "what is the capital of France?")
    batch = [attack, benign] if attack_first else [benign, attack]
    counter = CountsMarkedEvents()
    result = Pipeline([KeyFinder(), SeesEarlierFindings(), counter], Redactor(b"k")).process(batch)
    documents = {doc["gen_ai"]["input"]["messages"][0]["content"]: doc for doc in result.events}
    assert documents["what is the capital of France?"]["abusewatch"].get("rule_ids", []) == []
    assert documents["what is the capital of France?"]["test"]["saw_rules"] == []
    attack_document = next(doc for text, doc in documents.items() if text != "what is the capital of France?")
    assert attack_document["abusewatch"]["rule_ids"] == ["r-key"]
    assert attack_document["test"]["saw_rules"] == ["r-key"]
    assert counter.marked == [f"my key is {KEY}"]


class SeesBatches(Detector):
    """Records the batches it is given."""

    name = "sees-batches"

    def __init__(self, marks_events: bool) -> None:
        self.marks_events = marks_events  # type: ignore[misc]
        self.batches: list[list[str]] = []

    def detect(self, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        self.batches.append([item.input_messages[0].content for item in events])
        return []


def test_a_batch_that_reuses_an_id_reaches_tiers_that_mark_events_in_order_in_runs_without_a_repeated_id():
    batch = [event("a", "1"), event("b", "2"), event("a", "3"), event("c", "4"), event("a", "5"), event("d", "6")]
    marking, windowing = SeesBatches(marks_events=True), SeesBatches(marks_events=False)
    result = Pipeline([marking, windowing], Redactor(b"k")).process(batch)
    assert marking.batches == [["1", "2"], ["3", "4"], ["5", "6"]]
    assert windowing.batches == [["1", "2", "3", "4", "5", "6"]]  # it marks nothing, so it sees the batch whole
    assert [doc["gen_ai"]["input"]["messages"][0]["content"] for doc in result.events] == ["1", "2", "3", "4", "5", "6"]


@pytest.mark.parametrize(
    ("ids", "runs"),
    [
        ("", []),
        ("abc", ["abc"]),
        ("aa", ["a", "a"]),
        ("abab", ["ab", "ab"]),
        ("abcb", ["abc", "b"]),
        ("aaab", ["a", "a", "ab"]),
    ],
)
def test_distinct_id_runs_are_the_fewest_consecutive_runs_without_a_repeated_id(ids, runs):
    events = [event(event_id, "x") for event_id in ids]
    assert ["".join(item.id for item in events[run]) for run in distinct_id_runs(events)] == runs


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


def timed(event_id: str, timestamp: float, *, assumed: bool = False, user: str = "u") -> Event:
    return Event(
        id=event_id,
        timestamp=timestamp,
        timestamp_assumed=assumed,
        dataset="t",
        input_messages=[Message(role="user", content=f"Describe catalogue item {event_id} in full")],
        identity=Identity(user_id=user, api_key_hash=f"k-{user}", source_ip="203.0.113.9"),
    )


class Clock(Detector):
    """Records the times it is shown."""

    name = "clock"

    def __init__(self) -> None:
        self.seen: list[float] = []

    def detect(self, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        self.seen += [event.timestamp for event in events]
        return []


def test_an_assumed_time_is_the_newest_time_a_record_gave_and_survives_a_checkpoint() -> None:
    clock = Clock()
    pipeline = Pipeline([clock], Redactor(b"k"))
    wall_clock = 1_900_000_000.0  # what the normaliser stamped on a record without a time, long after the day
    pipeline.process([timed("a0", wall_clock, assumed=True)])  # no record gave a time yet: kept as it is
    day = 1_700_000_000.0
    pipeline.process([timed("a1", day), timed("a2", day + 50), timed("a3", wall_clock, assumed=True)])
    restored = Pipeline([clock], Redactor(b"k"))
    restored.load_state(pipeline.state())
    result = restored.process([timed("a4", wall_clock + 5, assumed=True), timed("a5", day + 20)])
    assert clock.seen == [wall_clock, day, day + 50, day + 50, day + 50, day + 20]
    assert result.events[0]["@timestamp"].startswith("2023-11-14T22:14:10")  # day + 50, not the wall clock


def test_a_record_without_a_time_in_a_replayed_day_does_not_blind_the_anomaly_tier() -> None:
    start = 1_767_225_600.0
    background = [timed(f"b{n}", start + 60.0 * n, user=f"b{n % 5}") for n in range(60)]
    scraper = [timed(f"s{n}", start + 3600 + 5.0 * n, user="scraper") for n in range(110)]
    untimed = timed("x", 2_000_000_000.0, assumed=True, user="no-clock")  # stamped with the wall clock

    def alerts(events: list[Event]) -> list[tuple[str, str]]:
        pipeline = Pipeline([AnomalyDetector()], Redactor(b"k"))
        result = pipeline.process(events)
        documents = result.alerts + pipeline.flush().alerts
        return sorted((doc["rule"]["id"], doc["user"]["id"]) for doc in documents if "anomaly" in doc["rule"]["id"])

    reference = alerts(background + scraper)
    assert reference  # the scraper is caught ...
    assert alerts([*background[:30], untimed, *background[30:], *scraper]) == reference  # ... with the record too
