"""Alert exceptions: validation, matching, routing to the shadow alerts, settings wiring and the CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from app.backtest import BENIGN, load_labels, report, run_backtest
from app.cli import cli
from app.commands import exceptions as exceptions_command
from app.engine import build_exceptions, build_pipeline
from app.replay import ReplaySummary, decoded_lines
from app.report import render_report
from app.settings import Settings
from app.traffic.samples import SAMPLES_DIR, sample_files
from detectors.alerting import RISK_RULE_ID, AlertGrouper, AlertPolicy
from detectors.base import CATEGORIES, Detection, Detector, Findings, RuleInfo
from detectors.event import Event, Identity, Message
from detectors.exceptions import ExceptionsError, load_exceptions
from detectors.partitioned import PartitionedPipeline
from detectors.pipeline import Pipeline
from detectors.redact import Redactor
from detectors.signatures.detector import SignatureDetector
from detectors.signatures.ruleset import BUILTIN_RULES_DIR, RuleSet

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "exceptions" / "example.yml"
SAMPLES = [str(path) for path in sample_files().values()]
LABELS = SAMPLES_DIR / "labels.json"
T0 = datetime(2026, 11, 20, 12, tzinfo=UTC).timestamp()
KNOWN_RULE = "abusewatch-anomaly-scraping-volume"  # "r-volume" is no rule of the product: check warns of it
TODAY = date(2026, 11, 23)  # the commands' "today" in these tests: none may start failing on a later date
runner = CliRunner()


@pytest.fixture(autouse=True)
def pinned_today(monkeypatch):
    """``exceptions check`` and ``draft`` judge expiry against :data:`TODAY` (at noon), never the real clock."""
    monkeypatch.setattr("app.commands.exceptions._now", lambda: datetime.combine(TODAY, time(12), tzinfo=UTC))


def entry(**overrides) -> dict:
    """A valid exception entry, changed by ``overrides`` (a value of None removes the key). It trusts client-set
    fields and forwarded addresses, so matching tests can use any field alone; the default is tested on its own."""
    base = {
        "id": "qa-load-test",
        "rules": ["r-volume"],
        "trust_client_fields": True,
        "trust_forwarded_ip": True,
        "match": {"user.id": ["qa-bot"]},
        "reason": "QA load test, ticket QA-12",
        "author": "jdoe",
        "created": "2026-11-01",
        "expires": "2027-01-01",
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def write(path: Path, entries: list) -> Path:
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ExceptionsError) as raised:
        load_exceptions(path)
    return raised.value.errors


def detection(
    rule_id: str = "r-volume",
    *,
    category: str = "scraping",
    at: float = T0,
    level: str = "medium",
    event_id: str = "e1",
    **identity: str,
) -> Detection:
    return Detection(
        rule=RuleInfo(id=rule_id, name=f"Rule {rule_id}", category=category, level=level),  # type: ignore[arg-type]
        event_ids=[event_id],
        timestamp=at,
        identity=Identity(**identity),
        message=f"{rule_id} fired",
    )


# -- validation ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"match": {"user.name": ["x"]}}, "unknown field 'user.name'"),
        ({"match": {"user.id|contains": ["x"]}}, "unknown operator 'contains'"),
        ({"match": {"user.id|cidr": ["10.0.0.0/8"]}}, "cidr applies to source.ip only"),
        ({"match": {"source.ip|cidr": ["10.0.0.0/33"]}}, "bad CIDR"),
        ({"match": {"source.ip|cidr": ["10.0.0.5/24"]}}, "has host bits set"),
        ({"match": {"source.ip": ["10.0.0.0/8"]}}, "networks go under source.ip|cidr"),
        ({"match": {"user.id": []}}, "needs a list of non-empty text values"),
        ({"match": {"user.id": [True]}}, "'user.id': True is not text to YAML (true/yes, dates, null): quote it"),
        ({"trust_client_fields": None}, "user.id, session.id and user_agent.original are set by the client"),
        ({"trust_forwarded_ip": None, "match": {"source.ip": ["10.0.0.1"]}}, "source.ip may come from X-Forwarded-For"),
        ({"match": {"abusewatch.identity_key": ["anonymous"]}}, "'anonymous' is every event without an identity"),
        ({"match": {"source.ip|cidr": ["0.0.0.0/0"]}}, "0.0.0.0/0 is too wide (IPv4 networks need a prefix of at"),
        ({"match": {"source.ip|cidr": ["8.0.0.0/7"]}}, "too wide (IPv4 networks need a prefix of at least /8)"),
        ({"match": {"source.ip|cidr": ["::/0"]}}, "::/0 is too wide (IPv6 networks need a prefix of at least /32)"),
        ({"match": {"source.ip|cidr": ["::ffff:0.0.0.0/100"]}}, "too wide (IPv4 networks"),  # mapped: 0.0.0.0/4
        ({"match": {}}, "match: Dictionary should have at least 1 item"),
        ({"reason": None}, "reason: required"),
        ({"reason": "   "}, "must say why"),
        ({"expires": None}, "expires: required"),
        ({"expires": "31/12/2026"}, "must be an ISO date"),
        ({"expires": "2026-02-30"}, "must be an ISO date"),
        ({"expires": 20270101}, "expires: must be an ISO date (YYYY-MM-DD), not '20270101'"),
        ({"created": "2027-02-01"}, "created 2027-02-01 is after expires 2027-01-01"),
        ({"rules": ["*"]}, "mutes every rule: say so with all_rules: true"),
        ({"rules": ["r-volume", "*"], "all_rules": True}, "all_rules: true goes with rules: ['*'] only"),
        ({"rules": None, "categories": list(CATEGORIES)}, "categories: every category mutes every rule: say so with"),
        ({"categories": [*reversed(CATEGORIES), "jailbreak"]}, "every category mutes every rule"),
        ({"rules": None}, "name the rules it covers"),
        ({"rules": [" r-volume"]}, "rules: rule id ' r-volume' has leading or trailing spaces"),
        ({"categories": ["not-a-category"]}, "categories.0: Input should be 'prompt_injection'"),
        ({"id": "has space"}, "id: must be 1-128 letters"),
        ({"expiry": "2027-01-01"}, "expiry: Extra inputs are not permitted"),
    ],
)
def test_each_kind_of_mistake_is_named_with_its_file_and_entry(tmp_path, overrides, expected):
    path = write(tmp_path / "team.yml", [entry(id="good-one"), entry(**{"id": "bad-one", **overrides})])
    errors = errors_of(path)
    assert len(errors) >= 1
    bad = [error for error in errors if expected in error]
    assert bad, errors
    identity = "(id 'bad-one')" if "id" not in overrides else "entry 2"
    assert all(error.startswith(f"{path}: entry 2") and identity in error for error in bad)


def test_duplicate_ids_across_files_name_both_files(tmp_path):
    write(tmp_path / "a.yml", [entry()])
    write(tmp_path / "b.yaml", [entry(rules=["r-other"])])
    (tmp_path / "notes.txt").write_text("not an exceptions file")
    errors = errors_of(tmp_path)
    assert errors == [
        f"{tmp_path / 'b.yaml'}: entry 1 (id 'qa-load-test'): duplicate id (first defined in {tmp_path / 'a.yml'})"
    ]


def test_files_that_are_not_lists_of_mappings_are_errors(tmp_path):
    write(tmp_path / "a.yml", {"id": "x"})
    write(tmp_path / "b.yml", [entry(), "just a string"])
    (tmp_path / "c.yml").write_text("- id: [unclosed\n")
    errors = errors_of(tmp_path)
    assert errors[0] == f"{tmp_path / 'a.yml'}: must hold a YAML list of exceptions, not dict"
    assert errors[1] == f"{tmp_path / 'b.yml'}: entry 2: must be a mapping, not str"
    assert errors[2].startswith(f"{tmp_path / 'c.yml'}: cannot read:")
    assert len(errors) == 3


def test_a_missing_path_is_an_error_and_an_empty_file_holds_no_exceptions(tmp_path):
    assert errors_of(tmp_path / "nope.yml") == [f"{tmp_path / 'nope.yml'}: no such file or directory"]
    (tmp_path / "empty.yml").write_text("# nothing yet\n")
    assert len(load_exceptions(tmp_path / "empty.yml")) == 0


def test_the_example_file_is_valid():
    exceptions = load_exceptions(EXAMPLE)
    assert [e.id for e in exceptions.exceptions] == ["bulk-summariser-scraping", "redteam-jailbreak-suites"]
    assert all(e.reason for e in exceptions.exceptions)
    assert not any(e.entry.trust_client_fields for e in exceptions.exceptions)


def test_quoted_numeric_ids_and_single_values_are_read_as_lists_of_text(tmp_path):
    path = tmp_path / "e.yml"
    path.write_text("- {id: n, rules: [r-volume], match: {organization.id: '012345'}, reason: r, expires: 2027-01-01}")
    exceptions = load_exceptions(path)
    assert exceptions.exceptions[0].entry.match == {"organization.id": ["012345"]}
    assert exceptions.match(detection(organization_id="012345")) is not None
    assert exceptions.match(detection(organization_id="12345")) is None


@pytest.mark.parametrize(
    ("written", "read_as"), [("010", "8"), ("12345", "12345"), ("0x1F", "31"), ("1:30", "90"), ("1.50", "1.5")]
)
def test_unquoted_numbers_are_refused_with_the_quoted_form_to_write(tmp_path, written, read_as):
    path = tmp_path / "e.yml"
    path.write_text(f"- {{id: n, rules: [r], match: {{organization.id: [{written}]}}, reason: r, expires: 2027-01-01}}")
    (error,) = errors_of(path)
    assert error == (
        f"{path}: entry 1 (id 'n'): match: 'organization.id': {written} is a number to YAML ({read_as}), "
        f"not text: quote it: '{written}'"
    )


def test_duplicate_yaml_keys_are_errors_naming_the_key(tmp_path):
    path = tmp_path / "e.yml"
    path.write_text(
        "- id: e1\n  rules: [r]\n  match:\n    organization.id: [a]\n    organization.id: [b]\n"
        "  reason: r\n  expires: 2027-01-01\n"
    )
    assert errors_of(path) == [f"{path}: cannot read: duplicate key 'organization.id' on line 5"]
    path.write_text("- {id: e1, rules: [r], match: {organization.id: [a]}, reason: r, expires: 2027-01-01}\n")
    assert len(load_exceptions(path)) == 1


@pytest.mark.parametrize(
    "match",
    [
        {"abusewatch.api_key_hash": ["9f86d081"]},
        {"organization.id": ["org-1"]},
        {"abusewatch.team_id": ["team-1"]},
        {"abusewatch.identity_key": ["key:9f86d081", "key:0c7d65"]},
        {"user.id": ["redteam-svc"], "abusewatch.api_key_hash": ["9f86d081"]},
        {"source.ip|cidr": ["10.0.0.0/8"], "organization.id": ["org-1"]},
    ],
)
def test_a_server_derived_condition_is_enough_without_any_opt_in(tmp_path, match):
    assert len(loaded(tmp_path, entry(trust_client_fields=None, trust_forwarded_ip=None, match=match))) == 1


@pytest.mark.parametrize(
    "match",
    [
        {"user.id": ["redteam-svc"]},
        {"session.id": ["s1"], "user_agent.original": ["curl/8"]},
        {"abusewatch.identity_key": ["key:9f86d081", "user:redteam-svc"]},  # user: is the client's user.id
    ],
)
def test_client_asserted_fields_alone_need_the_explicit_opt_in(tmp_path, match):
    errors = errors_of(write(tmp_path / "e.yml", [entry(trust_client_fields=None, match=match)]))
    assert len(errors) == 1 and "are set by the client" in errors[0] and "trust_client_fields: true" in errors[0]
    assert len(loaded(tmp_path, entry(trust_client_fields=True, match=match))) == 1


@pytest.mark.parametrize(
    "match",
    [
        {"source.ip": ["10.0.0.1"]},
        {"source.ip|cidr": ["10.20.0.0/16"]},
        {"abusewatch.identity_key": ["key:9f86d081", "ip:10.0.0.1"]},  # ip: is the client address, as forwarded
        {"source.ip|cidr": ["10.20.0.0/16"], "user.id": ["batch-svc"]},  # two values the client writes
    ],
)
def test_a_forwarded_address_needs_its_own_opt_in(tmp_path, match):
    """OTel's client.address and LiteLLM's requester_ip_address come from X-Forwarded-For behind proxies: the client
    writes it, so an address condition is not server-derived."""
    refused = entry(trust_client_fields=None, trust_forwarded_ip=None, match=match)
    errors = errors_of(write(tmp_path / "e.yml", [refused]))
    assert len(errors) == 1 and "source.ip may come from X-Forwarded-For" in errors[0], errors
    assert "trust_forwarded_ip: true" in errors[0]
    assert len(loaded(tmp_path, entry(trust_client_fields=None, trust_forwarded_ip=True, match=match))) == 1


def test_trusting_client_fields_does_not_trust_a_forwarded_address(tmp_path):
    errors = errors_of(write(tmp_path / "e.yml", [entry(trust_forwarded_ip=None, match={"source.ip": ["10.0.0.1"]})]))
    assert len(errors) == 1 and "trust_forwarded_ip: true" in errors[0] and "trust_client_fields" not in errors[0]


# -- matching --------------------------------------------------------------------------------------------------


def loaded(tmp_path: Path, *entries: dict):
    return load_exceptions(write(tmp_path / "e.yml", list(entries)))


def test_exact_values_match_any_of_the_list_and_conditions_are_anded(tmp_path):
    exceptions = loaded(
        tmp_path, entry(match={"user.id": ["qa-bot", "qa-bot-2"], "abusewatch.api_key_hash": ["9f86d081"]})
    )
    assert exceptions.match(detection(user_id="qa-bot-2", api_key_hash="9f86d081")).id == "qa-load-test"
    assert exceptions.match(detection(user_id="qa-bot", api_key_hash="other")) is None
    assert exceptions.match(detection(user_id="qa-bot")) is None  # the key is unknown: the condition fails
    assert exceptions.match(detection(user_id="mallory", api_key_hash="9f86d081")) is None


def test_cidr_matches_v4_v6_and_v4_mapped_addresses(tmp_path):
    exceptions = loaded(tmp_path, entry(match={"source.ip|cidr": ["10.20.0.0/16", "2001:db8::/32"]}))
    assert exceptions.match(detection(source_ip="10.20.3.4")) is not None
    assert exceptions.match(detection(source_ip="::ffff:10.20.3.4")) is not None
    assert exceptions.match(detection(source_ip="2001:db8::7")) is not None
    assert exceptions.match(detection(source_ip="10.21.0.1")) is None
    assert exceptions.match(detection(source_ip="not-an-ip")) is None
    assert exceptions.match(detection(user_id="qa-bot")) is None


def test_v4_mapped_addresses_and_networks_in_an_exception_match_their_ipv4_form(tmp_path):
    exceptions = loaded(
        tmp_path,
        entry(id="one", match={"source.ip": ["::ffff:10.0.0.1"]}),
        entry(id="net", match={"source.ip|cidr": ["::ffff:10.20.0.0/112"]}),
    )
    assert exceptions.match(detection(source_ip="10.0.0.1")).id == "one"
    assert exceptions.match(detection(source_ip="::ffff:10.0.0.1")).id == "one"
    assert exceptions.match(detection(source_ip="10.20.3.4")).id == "net"
    assert exceptions.match(detection(source_ip="::ffff:10.20.3.4")).id == "net"
    assert exceptions.match(detection(source_ip="10.21.0.1")) is None
    assert exceptions.match(detection(source_ip="10.0.0.2")) is None


def test_an_exact_ip_matches_that_address_only(tmp_path):
    exceptions = loaded(tmp_path, entry(match={"source.ip": ["203.0.113.9"]}))
    assert exceptions.match(detection(source_ip="203.0.113.9")) is not None
    assert exceptions.match(detection(source_ip="203.0.113.10")) is None


def test_identity_key_field_matches_what_alerts_show(tmp_path):
    exceptions = loaded(tmp_path, entry(match={"abusewatch.identity_key": ["key:9f86d081"]}))
    assert exceptions.match(detection(api_key_hash="9f86d081")) is not None
    assert exceptions.match(detection(api_key_hash="9f86d081", user_id="someone")) is None  # key is then user:...


def test_rule_globs_categories_and_the_all_rules_guard(tmp_path):
    exceptions = loaded(
        tmp_path,
        entry(id="anomaly", rules=["abusewatch-anomaly-scraping-*"], match={"user.id": ["a"]}),
        entry(id="redteam", rules=None, categories=["jailbreak"], match={"user.id": ["b"]}),
        entry(id="everything", rules=["*"], all_rules=True, match={"user.id": ["c"]}),
    )
    assert exceptions.match(detection("abusewatch-anomaly-scraping-volume", user_id="a")).id == "anomaly"
    assert exceptions.match(detection("abusewatch-anomaly-model-extraction", user_id="a")) is None
    assert exceptions.match(detection("55f4a2e7", category="jailbreak", user_id="b")).id == "redteam"
    assert exceptions.match(detection("55f4a2e7", category="prompt_injection", user_id="b")) is None
    assert exceptions.match(detection("anything-at-all", category="tool_abuse", user_id="c")).id == "everything"


def test_the_first_matching_exception_wins(tmp_path):
    exceptions = loaded(tmp_path, entry(id="first"), entry(id="second"))
    assert exceptions.match(detection(user_id="qa-bot")).id == "first"


def test_expiry_is_judged_in_event_time(tmp_path):
    exceptions = loaded(tmp_path, entry(expires="2026-11-21"))
    midnight = datetime(2026, 11, 21, tzinfo=UTC).timestamp()
    assert exceptions.match(detection(user_id="qa-bot", at=midnight - 1)) is not None
    assert exceptions.match(detection(user_id="qa-bot", at=midnight)) is None
    assert [e.id for e in exceptions.expired(date(2026, 11, 21))] == ["qa-load-test"]
    assert exceptions.expired(date(2026, 11, 20)) == []
    assert [e.id for e in exceptions.expiring(date(2026, 11, 15), 7)] == ["qa-load-test"]
    assert exceptions.expiring(date(2026, 11, 1), 7) == []


# -- routing in the pipeline -----------------------------------------------------------------------------------


class OnePerEvent(Detector):
    """Raises one ``rule`` detection per event (except for the users in ``spared``), like a volume rule tripped by
    a bulk job."""

    name = "one-per-event"

    def __init__(self, rule: RuleInfo, spared: frozenset[str] = frozenset()) -> None:
        self.rule, self.spared = rule, spared

    def detect(self, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        return [
            Detection(
                rule=self.rule,
                event_ids=[event.id],
                timestamp=event.timestamp,
                identity=event.identity,
                message=self.rule.name,
            )
            for event in events
            if event.identity.user_id not in self.spared
        ]


VOLUME = RuleInfo(id="r-volume", name="Volume", category="scraping", level="high")


def events(user: str, count: int) -> list[Event]:
    return [
        Event(
            id=f"{user}-{n}",
            timestamp=T0 + n,
            dataset="test",
            input_messages=[Message(role="user", content="summarise this")],
            identity=Identity(user_id=user, source_ip="10.20.0.5"),
        )
        for n in range(count)
    ]


def pipeline(exceptions=None) -> Pipeline:
    redactor = Redactor(b"k")
    grouper = AlertGrouper(redactor, AlertPolicy(risk_threshold=100.0))  # 50 per high detection: 2 reach it
    return Pipeline([OnePerEvent(VOLUME)], redactor, grouper, exceptions)


def test_suppressed_detections_go_to_shadow_alerts_and_add_no_risk(tmp_path):
    batch = events("qa-bot", 4)
    without = pipeline().process(batch)
    assert {a["rule"]["id"] for a in without.alerts} == {"r-volume", RISK_RULE_ID}  # risk would fire

    exceptions = loaded(tmp_path, entry(match={"user.id": ["qa-bot"], "source.ip|cidr": ["10.20.0.0/16"]}))
    result = pipeline(exceptions).process(batch)
    assert result.alerts == []
    assert len(result.shadow_alerts) == 1  # grouped as ever: one alert for the four detections, and no risk alert
    shadow = result.shadow_alerts[0]
    assert shadow["rule"]["id"] == "r-volume"
    assert shadow["abusewatch"]["exception"] == {"id": "qa-load-test", "reason": "QA load test, ticket QA-12"}
    assert shadow["abusewatch"]["shadow"] is True
    assert shadow["abusewatch"]["count"] == 4
    assert shadow["event"]["id"] != without.alerts[0]["event"]["id"]  # never overwrites an unsuppressed alert
    assert result.suppressed_counts() == {("qa-load-test", "r-volume"): 4}
    assert len(result.detections) == 4  # nothing is lost


def test_only_matching_detections_are_suppressed_and_ids_stay_deterministic(tmp_path):
    exceptions = loaded(tmp_path, entry(match={"user.id": ["qa-bot"], "source.ip|cidr": ["10.20.0.0/16"]}))
    outside = Event(
        id="qa-bot-outside",
        timestamp=T0 + 5,
        dataset="test",
        identity=Identity(user_id="qa-bot", source_ip="198.51.100.4"),
    )
    batch = [*events("qa-bot", 1), outside, *events("mallory", 1)]  # the same user, but not from the subnet
    first = pipeline(exceptions).process(batch)
    again = pipeline(exceptions).process(batch)
    assert sorted(a["abusewatch"]["identity_key"] for a in first.alerts) == ["user:mallory", "user:qa-bot"]
    assert [a["abusewatch"]["event_ids"] for a in first.shadow_alerts] == [["qa-bot-0"]]
    assert [a["event"]["id"] for a in first.shadow_alerts] == [a["event"]["id"] for a in again.shadow_alerts]
    assert [a["event"]["id"] for a in first.alerts] == [a["event"]["id"] for a in again.alerts]


def test_an_expired_exception_lets_detections_through(tmp_path):
    exceptions = loaded(tmp_path, entry(expires="2026-11-20"))  # events are at noon on the 20th
    result = pipeline(exceptions).process(events("qa-bot", 2))
    assert [a["rule"]["id"] for a in result.alerts] == ["r-volume"]
    assert result.shadow_alerts == [] and result.suppressed == []


def test_suppressed_groups_survive_a_checkpoint_and_partitions_share_the_exceptions(tmp_path):
    exceptions = loaded(tmp_path, entry())
    first = pipeline(exceptions)
    first.process(events("qa-bot", 1))
    restored = pipeline(exceptions)
    restored.load_state(json.loads(json.dumps(first.state())))
    later = restored.process([Event(id="late", timestamp=T0 + 60, dataset="test", identity=Identity(user_id="qa-bot"))])
    assert later.shadow_alerts[0]["abusewatch"]["count"] == 2
    assert later.shadow_alerts[0]["abusewatch"]["exception"]["id"] == "qa-load-test"
    partitioned = PartitionedPipeline(pipeline(exceptions), partitions=3)
    result = partitioned.process(events("qa-bot", 2) + events("mallory", 1))
    assert partitioned.pipeline(0).exceptions is exceptions
    assert result.suppressed_counts() == {("qa-load-test", "r-volume"): 2}
    assert [a["abusewatch"]["identity_key"] for a in result.alerts] == ["user:mallory"]


# -- settings, engine, replay, backtest, report ----------------------------------------------------------------


def test_the_setting_comes_from_the_environment_and_a_bad_file_fails_the_build(tmp_path, monkeypatch):
    bad = write(tmp_path / "bad.yml", [entry(reason=None)])
    monkeypatch.delenv("ABW_CONFIG", raising=False)
    monkeypatch.setenv("ABW_DETECTION__EXCEPTIONS_PATH", str(bad))
    settings = Settings()
    assert settings.detection.exceptions_path == bad
    with pytest.raises(ExceptionsError, match=r"bad\.yml: entry 1 \(id 'qa-load-test'\): reason: required"):
        build_pipeline(settings)
    assert len(build_exceptions(Settings(detection={"exceptions_path": EXAMPLE}))) == 2
    assert len(build_exceptions(Settings(detection={"exceptions_path": None}))) == 0


def test_replay_honours_the_setting(tmp_path):
    exceptions = write(
        tmp_path / "exceptions.yml",
        [entry(id="eve-redteam", rules=["*"], all_rules=True, match={"user.id": ["contractor.eve@acme.example"]})],
    )
    out = tmp_path / "out"
    result = runner.invoke(
        cli,
        [
            "replay",
            *SAMPLES,
            "--alerts-out",
            str(out / "a.jsonl"),
            "--shadow-alerts-out",
            str(out / "s.jsonl"),
            "--summary-out",
            str(out / "summary.json"),
            "--report",
            str(out / "report.html"),
        ],
        env={"ABW_DETECTION__EXCEPTIONS_PATH": str(exceptions), "ABW_CONFIG": ""},
    )
    assert result.exit_code == 0, result.output
    alerts = [json.loads(line) for line in (out / "a.jsonl").read_text().splitlines()]
    shadow = [json.loads(line) for line in (out / "s.jsonl").read_text().splitlines()]
    eve = [a for a in shadow if a.get("user", {}).get("id") == "contractor.eve@acme.example"]
    assert alerts and eve
    assert all(a["abusewatch"]["exception"]["id"] == "eve-redteam" for a in eve)
    assert not [a for a in alerts if a["abusewatch"]["identity_key"] == "user:contractor.eve@acme.example"]
    assert RISK_RULE_ID not in {a["rule"]["id"] for a in eve}
    summary = json.loads((out / "summary.json").read_text())
    latest = {a["event"]["id"]: a for a in eve}  # an alert rewritten as its group grows: its last version
    assert summary["suppressed_by_exception"] == {"eve-redteam": sum(a["abusewatch"]["count"] for a in latest.values())}
    assert 'data-exception="eve-redteam"' in (out / "report.html").read_text()


def test_backtest_counts_suppressed_events_per_exception_instead_of_as_caught(tmp_path):
    user = "contractor.eve@acme.example"
    exceptions = write(
        tmp_path / "exceptions.yml",
        [entry(id="eve-jailbreaks", rules=None, categories=["jailbreak"], match={"user.id": [user]})],
    )
    inputs = [arg for path in SAMPLES for arg in ("--input", path)]

    def backtest(env: dict[str, str]) -> dict:
        out = tmp_path / "report.json"
        args = ["backtest", *inputs, "--rules", str(BUILTIN_RULES_DIR), "--labels", str(LABELS), "--out", str(out)]
        result = runner.invoke(cli, args, env={"ABW_CONFIG": "", **env})
        assert result.exit_code == 0, result.output
        return json.loads(out.read_text())

    baseline = backtest({})
    report = backtest({"ABW_DETECTION__EXCEPTIONS_PATH": str(exceptions)})
    # what the exception should hide, from the rules themselves
    plain = Pipeline([SignatureDetector(RuleSet.load([BUILTIN_RULES_DIR]))], Redactor(b"k"))
    hidden: dict[str, set[str]] = {}
    caught_elsewhere: set[str] = set()
    for found, _letters, _size in decoded_lines(SAMPLES, max_bytes=1 << 22, max_text_chars=1 << 18):
        for d in plain.process(found).detections:
            if d.rule.category == "jailbreak" and d.identity.user_id == user:
                hidden.setdefault(d.rule.id, set()).update(d.event_ids)
            else:
                caught_elsewhere.update(d.event_ids)
    assert hidden, "the samples hold jailbreaks by this user"
    hidden_events = set().union(*hidden.values())
    attacks = sum(load_labels(LABELS).get(e, BENIGN) != BENIGN for e in hidden_events)
    assert "suppressed_by_exception" not in baseline
    hidden_only = hidden_events - caught_elsewhere  # suppressed and caught by no other detection
    labels = load_labels(LABELS)
    assert report["suppressed_by_exception"] == {
        "eve-jailbreaks": {
            "events_suppressed": len(hidden_events),
            "events_hidden": len(hidden_only),
            "attacks_suppressed": attacks,
            "attacks_hidden": sum(labels.get(e, BENIGN) != BENIGN for e in hidden_only),
        }
    }
    assert report["alerts"] < baseline["alerts"] and report["suppressed_alerts"] > 0
    assert baseline["suppressed_alerts"] == 0
    before = {r["rule_id"]: r["events"] for r in baseline["rules"]}
    after = {r["rule_id"]: r["events"] for r in report["rules"]}
    for rule_id, ids in hidden.items():
        assert before[rule_id] - after.get(rule_id, 0) == len(ids)


def test_backtest_counts_suppressed_alerts_apart_and_attacks_hidden_only_when_nothing_else_caught_them(tmp_path):
    exceptions = loaded(tmp_path, entry(rules=["r-volume"], match={"user.id": ["qa-bot", "quiet"]}))
    redactor = Redactor(b"k")
    catch_all = OnePerEvent(
        RuleInfo(id="r-jailbreak", name="Jailbreak", category="jailbreak", level="high"), frozenset({"quiet"})
    )
    engine = Pipeline([OnePerEvent(VOLUME), catch_all], redactor, AlertGrouper(redactor, AlertPolicy()), exceptions)
    batch = [*events("qa-bot", 3), *events("quiet", 2)]
    labels = {event.id: "jailbreak" for event in batch}
    queue = engine.fresh().process(batch)
    result, seen = run_backtest([batch], engine, labels)
    out = report(result, labels, seen)
    assert out["alerts"] == len(queue.alerts) == 1  # r-jailbreak for qa-bot; the suppressed r-volume groups apart
    assert out["suppressed_alerts"] == len(queue.shadow_alerts) == 2
    assert out["suppressed_by_exception"] == {
        "qa-load-test": {"events_suppressed": 5, "events_hidden": 2, "attacks_suppressed": 5, "attacks_hidden": 2}
    }
    assert out["recall"]["all"] == 3 / 5
    unlabelled = report(result, None, seen)["suppressed_by_exception"]["qa-load-test"]
    assert unlabelled == {
        "events_suppressed": 5,
        "events_hidden": 2,
        "attacks_suppressed": None,
        "attacks_hidden": None,
    }


@pytest.mark.parametrize(
    "command",
    [
        ["replay", *SAMPLES, "--alerts-out", "{out}/a.jsonl"],
        ["demo", "--out", "{out}"],
        ["backtest", "--input", SAMPLES[0], "--builtin"],
        ["backtest", "--input", SAMPLES[0], "--engine"],
    ],
)
def test_a_bad_exceptions_file_ends_replay_demo_and_backtest_with_its_errors_not_a_traceback(tmp_path, command):
    bad = write(tmp_path / "bad.yml", [entry(reason=None), entry(id="two", match={"source.ip": ["[/x] 1.2.3.400"]})])
    args = [arg.replace("{out}", str(tmp_path / "out")) for arg in command]
    result = runner.invoke(cli, args, env={"ABW_DETECTION__EXCEPTIONS_PATH": str(bad), "ABW_CONFIG": ""})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"error: {bad}: entry 1 (id 'qa-load-test'): reason: required" in result.stderr
    assert "[/x] 1.2.3.400" in result.stderr and "2 problem(s): no exception was loaded" in result.stderr
    assert "Traceback" not in result.output


def test_the_report_lists_suppressed_counts_per_exception():
    summary = ReplaySummary(events=10)
    summary.suppressed_by_exception.update({"bulk-job": 7, "red<team>": 2})
    page = render_report([], summary)
    assert 'data-kpi="suppressed detections"><b>9</b>' in page
    assert '<tr data-exception="bulk-job"><td>bulk-job</td><td>7</td></tr>' in page
    assert "red&lt;team&gt;" in page and "red<team>" not in page
    assert "No detection was suppressed" in render_report([], ReplaySummary())


# -- command line ----------------------------------------------------------------------------------------------


def test_check_accepts_the_example_and_lists_its_entries():
    result = runner.invoke(cli, ["exceptions", "check", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "bulk-summariser-scraping" in result.stdout and "redteam-jailbreak-suites" in result.stdout
    assert "2 exceptions valid" in result.stdout
    assert "warning" not in result.stdout  # its rule globs and categories name rules the product has
    assert "0 covering critical rules, 0 covering every rule" in result.stdout  # nor do they reach critical ones


def test_check_fails_listing_every_error(tmp_path):
    path = write(tmp_path / "e.yml", [entry(id="one", reason=None), entry(id="two", expires="soon")])
    result = runner.invoke(cli, ["exceptions", "check", str(path)])
    assert result.exit_code == 1
    assert "(id 'one'): reason: required" in result.stderr
    assert "(id 'two'): expires: Value error" not in result.stderr  # pydantic's wording is unwrapped
    assert "(id 'two'): expires: must be an ISO date" in result.stderr
    assert "2 problem(s)" in result.stderr


def test_check_warns_of_expired_and_expiring_entries_and_strict_fails_on_expired(tmp_path, monkeypatch):
    noon = datetime(2026, 11, 20, 12, tzinfo=UTC)
    monkeypatch.setattr("app.commands.exceptions._now", lambda: noon)  # dates pinned, not "now"
    path = write(
        tmp_path / "e.yml",
        [
            entry(id="old", created="2020-01-01", expires="2020-02-01"),
            entry(id="soon", created=None, expires="2026-11-23"),
            entry(id="fine", created=None, expires="2027-01-19"),
        ],
    )
    result = runner.invoke(cli, ["exceptions", "check", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.startswith("warning: old: expired") for line in lines)
    assert any(line.startswith("warning: soon: expires in 3 days") for line in lines)
    assert any(line.startswith("fine: active") for line in lines)
    assert "1 expired, 1 expiring within 7 days" in result.stdout
    assert runner.invoke(cli, ["exceptions", "check", "--strict", str(path)]).exit_code == 1
    ok = write(tmp_path / "ok.yml", [entry(id="fine", rules=[KNOWN_RULE], created=None, expires="2027-01-19")])
    assert runner.invoke(cli, ["exceptions", "check", "--strict", str(ok)]).exit_code == 0


def test_check_warns_when_no_exception_is_found_and_strict_fails(tmp_path):
    (tmp_path / "notes.txt").write_text("not an exceptions file")
    result = runner.invoke(cli, ["exceptions", "check", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"warning: no exception found in {tmp_path}" in result.stdout
    assert runner.invoke(cli, ["exceptions", "check", "--strict", str(tmp_path)]).exit_code == 1
    write(tmp_path / "a.yml", [entry(rules=[KNOWN_RULE])])
    found = runner.invoke(cli, ["exceptions", "check", "--strict", str(tmp_path)])
    assert found.exit_code == 0 and "no exception found" not in found.stdout


def test_directories_are_searched_recursively_case_insensitively_skipping_hidden_ones(tmp_path):
    (tmp_path / "team-b" / "nested").mkdir(parents=True)
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    write(tmp_path / "a.yml", [entry(id="a")])
    write(tmp_path / "C.YML", [entry(id="c")])
    write(tmp_path / "team-b" / "b.Yaml", [entry(id="b")])
    write(tmp_path / "team-b" / "nested" / "d.yml", [entry(id="d")])
    (tmp_path / ".github" / "workflows" / "ci.yml").write_text("on: push\n")  # not an exceptions file
    (tmp_path / ".hidden.yml").write_text("not: a list\n")
    exceptions = load_exceptions(tmp_path)
    assert [(e.id, Path(e.source).relative_to(tmp_path).as_posix()) for e in exceptions.exceptions] == [
        ("c", "C.YML"),
        ("a", "a.yml"),
        ("b", "team-b/b.Yaml"),
        ("d", "team-b/nested/d.yml"),
    ]


def test_a_dangling_symlink_is_an_error(tmp_path):
    write(tmp_path / "a.yml", [entry()])
    (tmp_path / "gone.yml").symlink_to(tmp_path / "nowhere.yml")
    assert errors_of(tmp_path) == [f"{tmp_path / 'gone.yml'}: dangling symlink (to {tmp_path / 'nowhere.yml'})"]


def test_markup_in_a_path_or_value_is_printed_as_text(tmp_path):
    folder = tmp_path / "m[" / "x]"  # the path reads m[/x]: a closing tag to Rich
    folder.mkdir(parents=True)
    write(folder / "e.yml", [entry(match={"user.id": ["[/bold]qa[red]"]})])
    table = runner.invoke(cli, ["exceptions", "list", str(folder)], env={"COLUMNS": "250"})
    assert table.exit_code == 0, table.output
    assert f"1 alert exceptions in {folder}" in table.stdout and "[/bold]qa[red]" in table.stdout
    write(folder / "e.yml", [entry(match={"source.ip": ["[/x] 10.0.0.300"]})])
    bad = runner.invoke(cli, ["exceptions", "check", str(folder)])
    assert bad.exit_code == 1 and "'[/x] 10.0.0.300' does not appear to be an IPv4 or IPv6 address" in bad.stderr


def test_list_prints_a_table_and_json(tmp_path):
    table = runner.invoke(cli, ["exceptions", "list", str(EXAMPLE)], env={"COLUMNS": "250"})
    assert table.exit_code == 0, table.output
    assert "bulk-summariser-scraping" in table.stdout and "category jailbreak" in table.stdout
    listed = runner.invoke(cli, ["exceptions", "list", "--json", str(EXAMPLE)])
    rows = json.loads(listed.stdout)
    assert [row["id"] for row in rows] == ["bulk-summariser-scraping", "redteam-jailbreak-suites"]
    assert rows[0]["match"]["source.ip|cidr"] == ["10.20.0.0/16"]
    assert rows[0]["source"] == str(EXAMPLE)


def test_list_escapes_control_characters_from_copied_values(tmp_path):
    path = write(tmp_path / "e.yml", [entry(match={"user_agent.original": ["evil\x1b[2J\u202eagent"]})])
    result = runner.invoke(cli, ["exceptions", "list", str(path)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert "\\u001b[2J" in result.stdout


def draft(*args: str):
    return runner.invoke(cli, ["exceptions", "draft", *args], env={"USER": "analyst1"})


def test_draft_round_trips_through_check(tmp_path):
    result = draft(
        "--rule", "abusewatch-anomaly-scraping-*", "--user", "svc-summariser", "--ip", "::ffff:10.20.0.0/112",
        "--trust-forwarded-ip", "--reason", "Sanctioned bulk summariser, CHG-2291", "--expires", "30d",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    path = tmp_path / "drafted.yml"
    path.write_text(result.stdout)
    exceptions = load_exceptions(path)
    (only,) = exceptions.exceptions
    assert only.entry.created == TODAY
    assert only.entry.expires == TODAY + timedelta(days=31)  # holds 30 days at least: to 00:00 UTC after them
    assert only.entry.author == "analyst1" and only.entry.trust_forwarded_ip
    assert only.entry.match == {"user.id": ["svc-summariser"], "source.ip|cidr": ["::ffff:10.20.0.0/112"]}
    now = datetime.combine(TODAY, time(12), tzinfo=UTC).timestamp()
    rule = "abusewatch-anomaly-scraping-volume"
    assert exceptions.match(detection(rule, at=now, user_id="svc-summariser", source_ip="10.20.1.1")) is not None
    assert exceptions.match(detection(rule, at=now, user_id="svc-summariser", source_ip="10.21.1.1")) is None
    assert runner.invoke(cli, ["exceptions", "check", str(path)]).exit_code == 0


def test_draft_needs_a_server_derived_condition_or_the_opt_in():
    refused = draft("--rule", "r", "--user", "u", "--reason", "r", "--expires", "2030-01-01")
    assert refused.exit_code == 1 and "error: match: add a condition on a field the platform" in refused.stderr
    assert "user.id, session.id and user_agent.original are set by the client" in refused.stderr
    trusted = draft("--rule", "r", "--user", "u", "--trust-client-fields", "--reason", "r", "--expires", "2030-01-01")
    assert trusted.exit_code == 0, trusted.output
    assert yaml.safe_load(trusted.stdout)[0]["trust_client_fields"] is True
    forwarded = draft("--rule", "r", "--ip", "10.20.0.0/16", "--reason", "r", "--expires", "2030-01-01")
    assert forwarded.exit_code == 1 and "source.ip may come from X-Forwarded-For" in forwarded.stderr
    opted_in = draft("--rule", "r", "--ip", "10.20.0.0/16", "--trust-forwarded-ip", "--reason", "r")
    assert opted_in.exit_code == 0, opted_in.output
    assert yaml.safe_load(opted_in.stdout)[0]["trust_forwarded_ip"] is True


def test_draft_ids_are_deterministic_and_differ_by_scope():
    def drafted_id(*args: str) -> str:
        result = draft(*args, "--reason", "r", "--expires", "2030-01-01")
        assert result.exit_code == 0, result.output
        return yaml.safe_load(result.stdout)[0]["id"]

    first = drafted_id("--rule", "r-volume", "--api-key-hash", "9f86d081")
    assert first == drafted_id("--rule", "r-volume", "--api-key-hash", "9f86d081")
    assert first.startswith("r-volume-9f86d081-")
    # a real key hash is 64 characters: the rule leads, so drafts for one key differ where ids are read (cut)
    key = "2a9c945753d309fa688f65efc1a02680593aafee298385ae4cd2950620498409"
    ml = drafted_id("--rule", "abusewatch-ml-prompt-injection", "--api-key-hash", key)
    scraping = drafted_id("--rule", "abusewatch-anomaly-scraping-*", "--api-key-hash", key)
    assert ml.startswith("ml-prompt-injection-2a9c945753d309fa-") and scraping.startswith("anomaly-scraping-2a9c9457")
    assert ml[:24] != scraping[:24]
    assert first != drafted_id("--rule", "r-volume", "--api-key-hash", "9f86d081", "--ip", "10.0.0.1")
    assert first != drafted_id("--category", "scraping", "--api-key-hash", "9f86d081")


def test_draft_escapes_hostile_values_and_refuses_what_check_would(tmp_path):
    result = draft(
        "--rule", "r", "--user", "bob\x1b[31m\u202e", "--trust-client-fields", "--reason", "r", "--expires", "7d"
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert yaml.safe_load(result.stdout)[0]["match"]["user.id"] == ["bob\x1b[31m\u202e"]
    no_condition = draft("--rule", "r", "--reason", "r")  # that would disable the rule
    assert no_condition.exit_code == 2 and "give at least one of --user, --ip, --api-key-hash" in no_condition.output
    refused = draft("--rule", "*", "--api-key-hash", "k", "--reason", "r")
    assert refused.exit_code == 1 and "error: rules '*' mutes every rule: say so with all_rules: true" in refused.stderr
    wide = draft("--rule", "r", "--ip", "0.0.0.0/0", "--reason", "r")
    assert wide.exit_code == 1 and "0.0.0.0/0 is too wide" in wide.stderr


def test_a_drafted_expiry_holds_at_least_as_long_as_asked() -> None:
    """An entry stops applying as its date begins (00:00 UTC): ``36h`` asked at 19:30 must not end 28.5 h later."""
    evening = datetime(2026, 11, 24, 19, 30, tzinfo=UTC)
    for asked, hours in (("36h", 36), ("1d", 24), ("30d", 30 * 24)):
        ends = datetime.combine(exceptions_command._expiry(asked, evening), time(0), tzinfo=UTC)
        assert timedelta(hours=hours) <= ends - evening < timedelta(hours=hours + 24), asked
    midnight = datetime(2026, 11, 24, tzinfo=UTC)
    assert exceptions_command._expiry("1d", midnight) == date(2026, 11, 25)  # exactly a day
    assert exceptions_command._expiry("2027-01-01", evening) == date(2027, 1, 1)


@pytest.mark.parametrize(
    ("expires", "message"),
    [
        ("soon", "not a duration: 'soon'"),
        ("0d", "not a duration: '0d'"),
        ("99999999d", "'99999999d' is beyond the year 9999"),
        ("2020-01-01", "2020-01-01 is not after today"),
    ],
)
def test_draft_refuses_an_expiry_it_cannot_use_with_a_clean_message(expires, message):
    result = draft("--rule", "r", "--api-key-hash", "k", "--reason", "r", "--expires", expires)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert message in " ".join(result.output.replace("│", " ").split())
