"""Sigma correlation rules: event_count, value_count, temporal_ordered; loading errors; state."""

from collections.abc import Sequence

import pytest
import yaml

from detectors.base import Detection, Detector, Findings, RuleInfo
from detectors.catalogue import known_rules
from detectors.correlation import (
    BUILTIN_DIR,
    CorrelationDetector,
    CorrelationError,
    CorrelationWatcher,
    load_correlations,
    parse_correlation,
)
from detectors.event import Event, Identity
from detectors.pipeline import Pipeline
from detectors.redact import Redactor
from detectors.signatures.ruleset import ReloadOutcome


def event(n: int, user: str, ip: str = "198.51.100.9", session: str | None = None, model: str = "m") -> Event:
    return Event(
        id=f"e{n}",
        timestamp=1_700_000_000.0 + n * 10,
        dataset="test",
        request_model=model,
        identity=Identity(user_id=user, source_ip=ip, session_id=session),
    )


class Marks(Detector):
    """Raises a detection of the given category (and rule id) for chosen events."""

    name = "marks"

    def __init__(self, marks: dict[str, tuple[str, str]]):
        self.marks = marks

    def detect(self, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        out = []
        for event in events:
            if event.id in self.marks:
                rule_id, category = self.marks[event.id]
                out.append(
                    Detection(
                        rule=RuleInfo(id=rule_id, name=rule_id, category=category, level="medium"),
                        event_ids=[event.id],
                        timestamp=event.timestamp,
                        identity=event.identity,
                        message="m",
                    )
                )
        return out


def fired(marks: dict, events: list[Event], correlations=None, aliases=None) -> list[str]:
    rules, errors = load_correlations([BUILTIN_DIR])
    assert errors == []
    detector = CorrelationDetector(correlations or rules, aliases)
    result = Pipeline([Marks(marks), detector], Redactor(b"k")).process(events)
    marked = {rule_id for rule_id, _ in marks.values()}
    return sorted({d.rule.name for d in result.detections if d.rule.id not in marked})


def test_builtin_correlations_load():
    rules, errors = load_correlations([BUILTIN_DIR])
    assert errors == [] and len(rules) >= 4


def test_event_count_fires_at_the_fifth_attempt_in_the_window():
    events = [event(i, "mallory") for i in range(5)]
    marks = {e.id: ("r-inj", "prompt_injection") for e in events}
    assert fired(marks, events) == ["Repeated prompt injection attempts by one identity"]
    assert fired(dict(list(marks.items())[:4]), events) == []


def test_event_count_ignores_attempts_outside_the_timespan():
    events = [
        Event(id=f"e{i}", timestamp=1_700_000_000.0 + i * 300, dataset="t", identity=Identity(user_id="m"))
        for i in range(5)
    ]
    marks = {e.id: ("r-inj", "jailbreak") for e in events}
    assert fired(marks, events) == []


def test_value_count_counts_distinct_users_behind_one_ip():
    events = [event(i, f"user{i}") for i in range(4)]
    marks = {e.id: ("r-jb", "jailbreak") for e in events}
    assert fired(marks, events) == ["Injection attempts from many users behind one IP"]
    same_user = [event(i, "user0") for i in range(4)]
    assert "Injection attempts from many users behind one IP" not in fired(marks, same_user)


def test_temporal_ordered_needs_the_order():
    secret, exfil = event(1, "u", session="s"), event(2, "u", session="s")
    in_order = {secret.id: ("r-secret", "secret_exposure"), exfil.id: ("r-exfil", "data_exfiltration")}
    assert fired(in_order, [secret, exfil]) == ["Secret exposed then exfiltrated in one session"]
    reversed_order = {secret.id: ("r-exfil", "data_exfiltration"), exfil.id: ("r-secret", "secret_exposure")}
    assert fired(reversed_order, [secret, exfil]) == []


def test_a_session_correlation_never_joins_two_users_who_send_the_same_session_id():
    alice, bob = event(1, "alice", session="default"), event(2, "bob", session="default")
    marks = {alice.id: ("r-secret", "secret_exposure"), bob.id: ("r-exfil", "data_exfiltration")}
    assert fired(marks, [alice, bob]) == []  # a session id is the client's: "default" is two sessions here
    leak, tools = event(3, "alice", session="default"), event(4, "bob", session="default")
    marks = {leak.id: ("r-leak", "system_prompt_leak"), tools.id: ("r-tool", "tool_abuse")}
    assert fired(marks, [leak, tools]) == []


def test_groups_whose_values_hold_the_separator_get_alerts_of_their_own():
    """identity_key "user:alice" with session "s1|z", and a client-chosen user id "alice|s1" with session "z": two
    groups, two alerts (a joined key would fold the attacker's alert into the victim's)."""
    victim = [event(1, "alice", session="s1|z"), event(2, "alice", session="s1|z")]
    attacker = [event(3, "alice|s1", session="z"), event(4, "alice|s1", session="z")]
    marks = {}
    for secret, exfil in (victim, attacker):
        marks |= {secret.id: ("r-secret", "secret_exposure"), exfil.id: ("r-exfil", "data_exfiltration")}
    rules, _ = load_correlations([BUILTIN_DIR])
    result = Pipeline([Marks(marks), CorrelationDetector(rules)], Redactor(b"k")).process([*victim, *attacker])
    alerts = [a for a in result.alerts if a["rule"]["name"] == "Secret exposed then exfiltrated in one session"]
    assert len(alerts) == 2 and len({a["event"]["id"] for a in alerts}) == 2
    assert sorted(a["user"]["id"] for a in alerts) == ["alice", "alice|s1"]


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_an_attempt_that_arrives_late_is_judged_with_the_attempts_of_its_own_time(batch_size):
    """Five attempts over 640 s never make five in the 600 s window, however the late one (t = 0, arriving after
    t = 60) and the others are cut into batches; five within 550 s do, whatever the order."""
    spread = [event(n, "mallory") for n in (6, 0, 30, 45, 64)]  # timestamps n * 10 s
    inside = [event(n, "mallory") for n in (6, 0, 30, 45, 55)]
    marks = {e.id: ("r-inj", "prompt_injection") for e in spread + inside}
    rules, _ = load_correlations([BUILTIN_DIR])

    def alerts(events: list[Event]) -> list[str]:
        pipeline = Pipeline([Marks(marks), CorrelationDetector(rules)], Redactor(b"k"))
        names = []
        for start in range(0, len(events), batch_size):
            names += [d.rule.name for d in pipeline.process(events[start : start + batch_size]).detections]
        return [name for name in names if name.startswith("Repeated")]

    assert alerts(spread) == []
    assert alerts(inside) == ["Repeated prompt injection attempts by one identity"]


def test_references_by_rule_name_resolve_through_aliases():
    document = yaml.safe_load(
        """
title: Two overrides
id: 6b0d7c3e-8a51-4f0e-9d6b-0c1e2a3b4c59
correlation: {type: event_count, rules: [override_rule], group-by: [user.id], timespan: 1m, condition: {gte: 2}}
level: low
abusewatch: {category: prompt_injection}
"""
    )
    rule = parse_correlation(document, "inline")
    events = [event(1, "u"), event(2, "u")]
    marks = {e.id: ("uuid-of-override", "prompt_injection") for e in events}
    assert fired(marks, events, [rule], {"override_rule": "uuid-of-override"}) == ["Two overrides"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"abusewatch": {"category": "nonsense"}}, "abusewatch.category"),
        ({"correlation": {"type": "event_count", "rules": ["x"], "condition": {"gte": 1}}}, "timespan"),
    ],
)
def test_bad_correlations_are_rejected_with_the_rule_named(change, message):
    document = {
        "title": "Broken",
        "id": "6b0d7c3e-8a51-4f0e-9d6b-0c1e2a3b4c60",
        "correlation": {"type": "event_count", "rules": ["x"], "timespan": "1m", "condition": {"gte": 1}},
        "level": "low",
        "abusewatch": {"category": "jailbreak"},
    } | change
    with pytest.raises(CorrelationError, match=message) as error:
        parse_correlation(document, "rules/broken.yml")
    assert "rules/broken.yml" in str(error.value) and "Broken" in str(error.value)


def correlation_document(title: str = "Twice", **changes) -> dict:
    return {
        "title": title,
        "id": "6b0d7c3e-8a51-4f0e-9d6b-0c1e2a3b4c61",
        "correlation": {"type": "event_count", "rules": ["x"], "timespan": "1m", "condition": {"gte": 1}},
        "level": "low",
        "abusewatch": {"category": "jailbreak"},
    } | changes


def test_a_correlation_id_used_twice_in_one_directory_is_an_error_and_yaml_files_load_too(tmp_path):
    (tmp_path / "a.yml").write_text(yaml.safe_dump(correlation_document()), encoding="utf-8")
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(correlation_document("Again")), encoding="utf-8")
    rules, errors = load_correlations([tmp_path])
    assert [rule.info.name for rule in rules] == ["Twice"]  # windows are kept by rule id: one rule per id
    assert len(errors) == 1 and "b.yaml" in errors[0] and "already used by" in errors[0] and "a.yml" in errors[0]


@pytest.mark.parametrize("order", ["later_dir_sorts_last", "later_dir_sorts_first"])
def test_a_correlation_of_a_later_directory_overrides_an_earlier_ones_with_the_same_id(tmp_path, caplog, order):
    first, later = (
        (tmp_path / "a", tmp_path / "z") if order == "later_dir_sorts_last" else (tmp_path / "z", tmp_path / "a")
    )
    first.mkdir()
    later.mkdir()
    (first / "builtin.yml").write_text(yaml.safe_dump(correlation_document("Built-in")), encoding="utf-8")
    tuned = correlation_document("Tuned", correlation={"type": "event_count", "rules": ["x"], "timespan": "1m"})
    tuned["correlation"]["condition"] = {"gte": 9}
    (later / "tuned.yml").write_text(yaml.safe_dump(tuned), encoding="utf-8")
    with caplog.at_level("WARNING", logger="detectors.signatures.ruleset"):
        rules, errors = load_correlations([first, later])
    assert errors == []
    assert [(rule.info.name, rule.threshold) for rule in rules] == [("Tuned", 9)]
    (warning,) = [record.getMessage() for record in caplog.records if "overrides" in record.getMessage()]
    assert str(later / "tuned.yml") in warning and str(first / "builtin.yml") in warning


def test_an_override_does_not_hold_back_a_reload_but_an_id_used_twice_in_one_directory_does(tmp_path):
    first, later = tmp_path / "builtin", tmp_path / "deployment"
    first.mkdir()
    later.mkdir()
    (first / "builtin.yml").write_text(yaml.safe_dump(correlation_document("Built-in")), encoding="utf-8")
    (later / "tuned.yml").write_text(yaml.safe_dump(correlation_document("Tuned")), encoding="utf-8")
    watcher = CorrelationWatcher([first, later])
    assert watcher.last_errors == [] and [rule.info.name for rule in watcher.current] == ["Tuned"]
    (later / "tuned_copy.yml").write_text(yaml.safe_dump(correlation_document("Copy")), encoding="utf-8")
    new = correlation_document("New", id="6b0d7c3e-8a51-4f0e-9d6b-0c1e2a3b4c62")
    (later / "new.yml").write_text(yaml.safe_dump(new), encoding="utf-8")
    assert watcher.maybe_reload() is ReloadOutcome.REJECTED  # a copy must not silently replace the running rule
    assert [rule.info.name for rule in watcher.current] == ["Tuned"]
    (error,) = watcher.last_errors
    assert "tuned_copy.yml" in error and "already used by" in error and "tuned.yml" in error
    (later / "tuned_copy.yml").unlink()
    assert watcher.maybe_reload() is ReloadOutcome.RELOADED
    assert sorted(rule.info.name for rule in watcher.current) == ["New", "Tuned"]


HOSTILE = {
    "correlation is a number": {"correlation": 5},
    "abusewatch is a string": {"abusewatch": "nope"},
    "id is a list": {"id": [1, 2]},
    "type is a number": {"correlation": {"type": 5, "rules": ["x"], "timespan": "1m", "condition": {"gte": 1}}},
    "rules is a number": {"correlation": {"type": "event_count", "rules": 5, "timespan": "1m"}},
    "timespan is a word": {"correlation": {"type": "event_count", "rules": ["x"], "timespan": "abc"}},
    "condition is a list": {"correlation": {"type": "event_count", "rules": ["x"], "timespan": "1m", "condition": [1]}},
    "group-by is a number": {
        "correlation": {"type": "event_count", "rules": ["x"], "group-by": 5, "timespan": "1m", "condition": {"gte": 1}}
    },
    "title is a mapping": {"title": {"a": 1}, "correlation": 5},
    "value_count field is a list": {
        "correlation": {"type": "value_count", "rules": ["x"], "timespan": "1m", "condition": {"field": ["a"]}}
    },
    "group-by lists a mapping": {
        "correlation": {"type": "event_count", "rules": ["x"], "group-by": [{"a": 1}], "timespan": "1m"}
    },
}


@pytest.mark.parametrize("change", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_malformed_correlation_file_is_an_error_of_that_file_and_the_others_load(tmp_path, change):
    (tmp_path / "bad.yml").write_text(yaml.safe_dump(correlation_document("Bad") | change), encoding="utf-8")
    good = correlation_document("Good", id="6b0d7c3e-8a51-4f0e-9d6b-0c1e2a3b4c63")
    (tmp_path / "good.yml").write_text(yaml.safe_dump(good), encoding="utf-8")
    rules, errors = load_correlations([tmp_path])
    assert [rule.info.name for rule in rules] == ["Good"]
    assert len(errors) == 1 and "bad.yml" in errors[0]
    watcher = CorrelationWatcher([tmp_path])  # what a worker builds at start-up
    assert [rule.info.name for rule in watcher.current] == ["Good"] and len(watcher.last_errors) == 1
    known, known_errors = known_rules([], [tmp_path])  # what `exceptions check` loads
    assert good["id"] in known.rule_ids and len(known_errors) == 1


def test_state_round_trip_continues_counting():
    rules, _ = load_correlations([BUILTIN_DIR])
    events = [event(i, "mallory") for i in range(5)]
    marks = Marks({e.id: ("r", "prompt_injection") for e in events})
    first = CorrelationDetector(rules)
    Pipeline([marks, first], Redactor(b"k")).process(events[:4])
    second = CorrelationDetector(rules)
    second.load_state(first.state())
    result = Pipeline([marks, second], Redactor(b"k")).process(events[4:])
    assert any(d.rule.name.startswith("Repeated prompt injection") for d in result.detections)


def test_a_lagging_identity_keeps_its_window_when_another_runs_ahead():
    rules, _ = load_correlations([BUILTIN_DIR])
    detector = CorrelationDetector(rules)
    slow = [event(i, "mallory") for i in range(5)]
    ahead = Event(id="ahead", timestamp=slow[0].timestamp + 1200, dataset="t", identity=Identity(user_id="eve"))
    marks = Marks({e.id: ("r", "prompt_injection") for e in [*slow, ahead]})
    pipeline = Pipeline([marks, detector], Redactor(b"k"))
    pipeline.process(slow[:4])
    pipeline.process([ahead])  # another partition's identity, 20 minutes ahead in event time
    result = pipeline.process(slow[4:])
    assert any(d.rule.name.startswith("Repeated prompt injection") for d in result.detections)


@pytest.mark.parametrize("batch_size", [1, 4, 100])
def test_groups_long_over_are_forgotten_whatever_the_batches(batch_size):
    """Memory stays bounded on event time: groups older than the longest timespan (and the lateness) go, a late
    hit older than that does not stay behind, and what is kept is the same however arrivals were batched."""
    rules, _ = load_correlations([BUILTIN_DIR])
    early = [event(i, f"user{i}") for i in range(20)]
    later = [
        Event(
            id=f"later{i}", timestamp=early[0].timestamp + 5 * 3600 + i, dataset="t", identity=Identity(user_id="eve")
        )
        for i in range(3)
    ]
    late = Event(id="late", timestamp=early[0].timestamp + 5, dataset="t", identity=Identity(user_id="straggler"))
    stream = [*early, *later, late]
    detector = CorrelationDetector(rules)
    pipeline = Pipeline([Marks({e.id: ("r", "prompt_injection") for e in stream}), detector], Redactor(b"k"))
    for start in range(0, len(stream), batch_size):
        pipeline.process(stream[start : start + batch_size])
    users = {group[0] for _, group, _ in detector.state()["groups"]}
    assert users == {"user:eve"}


def test_a_value_yaml_cannot_build_is_an_error_of_that_file_and_the_others_load(tmp_path):
    """``date: 2026-13-01`` makes PyYAML raise ValueError, not YAMLError: it must not stop a worker from starting."""
    bad = yaml.safe_dump(correlation_document("Bad")) + "date: 2026-13-01\n"
    (tmp_path / "bad.yml").write_text(bad, encoding="utf-8")
    good = correlation_document("Good", id="6b0d7c3e-8a51-4f0e-9d6b-0c1e2a3b4c63")
    (tmp_path / "good.yml").write_text(yaml.safe_dump(good), encoding="utf-8")
    watcher = CorrelationWatcher([tmp_path])
    assert [rule.info.name for rule in watcher.current] == ["Good"]
    (error,) = watcher.last_errors
    assert "bad.yml" in error and "month must be in 1..12" in error
