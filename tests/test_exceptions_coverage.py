"""Alert exceptions beyond per-identity detections: entity-risk alerts and campaign alerts go through them too;
conditions are compiled once; rule selectors that match no known rule are reported."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import msgspec
import pytest
import yaml
from msgspec.structs import replace
from typer.testing import CliRunner

from app.cli import cli
from detectors import exceptions as exceptions_module
from detectors.alerting import CAMPAIGN_RISK_RULE_ID, RISK_RULE_ID, AlertGrouper, AlertPolicy
from detectors.anomaly.config import AnomalyConfig
from detectors.anomaly.rules import SCRAPING_CAMPAIGN
from detectors.base import Detection, RuleInfo
from detectors.campaigns import MAX_MEMBER_IDENTITIES, CampaignCandidate, CampaignDetector, CampaignStage
from detectors.catalogue import BUILTIN_RULES, known_rules
from detectors.correlation import BUILTIN_DIR as BUILTIN_CORRELATIONS
from detectors.correlation import load_correlations
from detectors.event import Event, Identity
from detectors.exceptions import ExceptionList, KnownRules, load_exceptions
from detectors.pipeline import Pipeline
from detectors.redact import Redactor
from detectors.signatures.ruleset import BUILTIN_RULES_DIR, RuleSet
from tests.test_exceptions import OnePerEvent

DETECTORS = Path(__file__).resolve().parent.parent / "detectors"
CAMPAIGN_RULE = "abusewatch-anomaly-scraping-campaign"
START = 1_767_571_200.0  # 2026-01-05 00:00 UTC, a campaign window boundary (600 s)
T0 = datetime(2026, 11, 20, 12, tzinfo=UTC).timestamp()
runner = CliRunner()


def entry(**overrides) -> dict:
    base = {
        "id": "bulk-job",
        "rules": [CAMPAIGN_RULE],
        "match": {"abusewatch.api_key_hash": [f"key-{i}" for i in range(5)]},
        "reason": "Sanctioned bulk job, CHG-1",
        "expires": "2099-01-01",
    }
    return {**base, **overrides}


def loaded(tmp_path: Path, *entries: dict) -> ExceptionList:
    path = tmp_path / "exceptions.yml"
    path.write_text(yaml.safe_dump(list(entries), sort_keys=False))
    return load_exceptions(path)


# -- conditions are compiled once ------------------------------------------------------------------------------


def test_each_condition_is_compiled_once_when_a_file_is_loaded(tmp_path, monkeypatch):
    calls: list[str] = []
    compile_condition = exceptions_module._condition

    def counted(key, values):
        calls.append(key)
        return compile_condition(key, values)

    monkeypatch.setattr(exceptions_module, "_condition", counted)
    exceptions = loaded(
        tmp_path,
        entry(id="one", trust_forwarded_ip=True, match={"source.ip|cidr": ["10.20.0.0/16"], "user.id": ["svc"]}),
        entry(id="two", match={"abusewatch.api_key_hash": ["k"]}),
    )
    assert sorted(calls) == ["abusewatch.api_key_hash", "source.ip|cidr", "user.id"]
    first = exceptions.exceptions[0]
    assert [c.field for c in first.conditions] == ["user.id", "source.ip|cidr"]  # exact ones first, as before
    assert first.conditions is first.entry.conditions
    detection = Detection(
        rule=RuleInfo(id=CAMPAIGN_RULE, name="c", category="scraping", level="high"),
        event_ids=["e"],
        timestamp=T0,
        identity=Identity(user_id="svc", source_ip="10.20.1.2"),
        message="m",
    )
    assert exceptions.match(detection).id == "one"
    assert exceptions.match(replace(detection, identity=Identity(user_id="svc", source_ip="10.21.1.2"))) is None


# -- rule selectors that match no known rule -------------------------------------------------------------------

KNOWN = KnownRules(
    rule_ids=frozenset({"abusewatch-anomaly-scraping-volume", "abusewatch-ml-jailbreak"}),
    categories=frozenset({"scraping", "jailbreak"}),
)


def test_unknown_rule_ids_globs_and_categories_are_named_with_the_closest_known_rule(tmp_path):
    exceptions = loaded(
        tmp_path,
        entry(id="typo", rules=["abusewatch-anomaly-scrapping-volume", "abusewatch-anomaly-*"]),
        entry(id="glob", rules=["abusewatch-exfil-*"], categories=["jailbreak", "tool_abuse"]),
        entry(id="all", rules=["*"], all_rules=True),
    )
    source = exceptions.exceptions[0].source
    assert exceptions.unknown_rule_warnings(KNOWN) == [
        f"{source}: typo: rule 'abusewatch-anomaly-scrapping-volume' matches no known rule "
        "(closest known rule: abusewatch-anomaly-scraping-volume)",
        f"{source}: glob: rule 'abusewatch-exfil-*' matches no known rule",
        f"{source}: glob: category 'tool_abuse': no known rule alerts in it",
    ]
    assert loaded(tmp_path, entry(rules=["abusewatch-ml-*"])).unknown_rule_warnings(KNOWN) == []


def test_the_catalogue_lists_every_rule_id_a_detector_defines():
    """Every ``RuleInfo(id="...")`` written in detectors/ is a built-in rule of the catalogue."""
    written = set()
    for path in DETECTORS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "RuleInfo":
                written.update(
                    k.value.value for k in node.keywords if k.arg == "id" and isinstance(k.value, ast.Constant)
                )
    assert len(written) >= 20
    assert written <= {rule.id for rule in BUILTIN_RULES}


def test_known_rules_are_the_builtin_detectors_the_rule_pack_correlations_and_the_risk_alerts():
    known, errors = known_rules([BUILTIN_RULES_DIR], [BUILTIN_CORRELATIONS])
    assert errors == []
    pack = RuleSet.load([BUILTIN_RULES_DIR]).rules
    correlations, _ = load_correlations([BUILTIN_CORRELATIONS])
    expected = {
        RISK_RULE_ID,
        CAMPAIGN_RISK_RULE_ID,
        *(r.id for r in BUILTIN_RULES),
        *(r.id for r in pack),
        *(c.info.id for c in correlations),
    }
    assert pack and correlations
    assert known.rule_ids == expected
    assert known.categories == {r.category for r in [*BUILTIN_RULES, *pack]} | {c.info.category for c in correlations}


def rule_file(directory: Path, rule_id: str) -> Path:
    """A copy of a built-in signature rule under another id: a deployment's own rule."""
    source = sorted(BUILTIN_RULES_DIR.rglob("*.yml"))[0]
    document = yaml.safe_load(source.read_text(encoding="utf-8"))
    document["id"] = rule_id
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "own.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def test_check_warns_of_unknown_rules_and_strict_fails_on_them(tmp_path, monkeypatch):
    monkeypatch.setattr("app.commands.exceptions._today", lambda: date(2098, 11, 23))  # 2099-01-01 is 39 days ahead
    own_id = "0d6f4d7e-1111-4a2b-9c3d-5e6f7a8b9c0d"
    path = tmp_path / "exceptions.yml"
    path.write_text(yaml.safe_dump([entry(id="typo", rules=["abusewatch-anomaly-scrapping-volume", own_id])]))
    env = {"ABW_CONFIG": ""}
    result = runner.invoke(cli, ["exceptions", "check", str(path)], env=env)
    assert result.exit_code == 0, result.output
    assert (
        f"warning: {path}: typo: rule 'abusewatch-anomaly-scrapping-volume' matches no known rule "
        "(closest known rule: abusewatch-anomaly-scraping-volume)"
    ) in result.stdout
    assert f"rule '{own_id}' matches no known rule" in result.stdout
    assert "2 rule selectors matching no known rule" in result.stdout
    assert runner.invoke(cli, ["exceptions", "check", "--strict", str(path)], env=env).exit_code == 1

    rules = rule_file(tmp_path / "rules", own_id).parent  # the deployment's rules make the id known
    with_rules = runner.invoke(cli, ["exceptions", "check", "--rules-dir", str(rules), str(path)], env=env)
    assert with_rules.exit_code == 0, with_rules.output
    assert own_id not in with_rules.stdout and "1 rule selectors matching no known rule" in with_rules.stdout
    from_settings = runner.invoke(
        cli, ["exceptions", "check", str(path)], env={**env, "ABW_DETECTION__RULES_DIR": str(rules)}
    )
    assert own_id not in from_settings.stdout

    path.write_text(yaml.safe_dump([entry(rules=["evil\x1b[2J\u202erule"])]))
    hostile = runner.invoke(cli, ["exceptions", "check", str(path)], env=env)
    assert hostile.exit_code == 0 and "\x1b" not in hostile.stdout and "\u202e" not in hostile.stdout
    assert "evil\\x1b[2J" in hostile.stdout and "matches no known rule" in hostile.stdout  # as repr() writes it

    path.write_text(yaml.safe_dump([entry(rules=["abusewatch-anomaly-scraping-*"], categories=["jailbreak"])]))
    clean = runner.invoke(cli, ["exceptions", "check", "--strict", str(path)], env=env)
    assert clean.exit_code == 0, clean.output
    assert "0 rule selectors matching no known rule" in clean.stdout and "warning" not in clean.stdout


# -- entity-risk alerts ----------------------------------------------------------------------------------------

SCRAPING_VOLUME = RuleInfo(id="abusewatch-anomaly-scraping-volume", name="Volume", category="scraping", level="high")


def risk_pipeline(exceptions: ExceptionList | None = None) -> Pipeline:
    redactor = Redactor(b"k")
    return Pipeline(
        [OnePerEvent(SCRAPING_VOLUME)], redactor, AlertGrouper(redactor, AlertPolicy(risk_threshold=100.0)), exceptions
    )


def key_events(key: str, count: int) -> list[Event]:
    identity = Identity(api_key_hash=key, source_ip="10.20.0.5")
    return [Event(id=f"{key}-{n}", timestamp=T0 + n, dataset="test", identity=identity) for n in range(count)]


def test_an_exception_on_the_risk_rule_sends_the_risk_alert_to_the_shadow_alerts(tmp_path):
    batch = key_events("key-1", 4) + key_events("key-9", 4)
    without = risk_pipeline().process(batch)
    assert sorted(a["rule"]["id"] for a in without.alerts).count(RISK_RULE_ID) == 2
    exceptions = loaded(tmp_path, entry(id="risk-of-bulk-job", rules=[RISK_RULE_ID]))
    result = risk_pipeline(exceptions).process(batch)
    queue = sorted((a["rule"]["id"], a["abusewatch"]["identity_key"]) for a in result.alerts)
    assert queue == [
        ("abusewatch-anomaly-scraping-volume", "key:key-1"),  # the exception names the risk rule only
        ("abusewatch-anomaly-scraping-volume", "key:key-9"),
        (RISK_RULE_ID, "key:key-9"),  # not excepted
    ]
    (shadow,) = result.shadow_alerts
    assert shadow["rule"]["id"] == RISK_RULE_ID and shadow["abusewatch"]["identity_key"] == "key:key-1"
    assert shadow["abusewatch"]["exception"] == {"id": "risk-of-bulk-job", "reason": "Sanctioned bulk job, CHG-1"}
    assert shadow["abusewatch"]["shadow"] is True
    assert result.suppressed_counts() == {("risk-of-bulk-job", RISK_RULE_ID): 1}
    unsuppressed = {a["event"]["id"] for a in without.alerts if a["rule"]["id"] == RISK_RULE_ID}
    assert shadow["event"]["id"] not in unsuppressed


def test_an_exception_by_category_covers_the_risk_alert_of_that_category(tmp_path):
    exceptions = loaded(tmp_path, entry(id="all-scraping", rules=[], categories=["scraping"]))
    result = risk_pipeline(exceptions).process(key_events("key-1", 4))
    assert result.alerts == []  # the volume detections are suppressed, so they add no risk: no risk alert at all
    assert {rule for _exception, rule in result.suppressed_counts()} == {"abusewatch-anomaly-scraping-volume"}


# -- campaign alerts -------------------------------------------------------------------------------------------


def candidate(number: int, key: int, offset: float = 0.0) -> CampaignCandidate:
    return CampaignCandidate(
        event_id=f"e{offset:.0f}-{number}",
        timestamp=START + offset + number,
        identity=Identity(api_key_hash=f"key-{key}", source_ip=f"198.51.100.{key}"),
        signature="00ab",
    )


def burst(keys: Sequence[int], offset: float = 0.0, requests: int = 3) -> list[CampaignCandidate]:
    """Each key sends ``requests`` requests on one template in the window starting ``offset`` after START."""
    return [candidate(n * len(keys) + i, key, offset) for n in range(requests) for i, key in enumerate(keys)]


def stage(exceptions: ExceptionList | None = None) -> CampaignStage:
    redactor = Redactor(b"k")
    return CampaignStage(CampaignDetector(), AlertGrouper(redactor), exceptions)


def run(campaigns: CampaignStage, candidates: list[CampaignCandidate]):
    result = campaigns.process(candidates)
    result.extend(campaigns.flush())
    return result


def test_a_campaign_of_excepted_identities_only_is_suppressed_and_adds_no_risk(tmp_path):
    exceptions = loaded(tmp_path, entry())
    control = run(stage(), burst(range(5)))
    assert [a["rule"]["id"] for a in control.alerts] == [CAMPAIGN_RULE]
    suppressed = stage(exceptions)
    result = run(suppressed, burst(range(5)))
    assert result.alerts == []
    (shadow,) = result.shadow_alerts
    assert shadow["rule"]["id"] == CAMPAIGN_RULE
    assert shadow["abusewatch"]["exception"]["id"] == "bulk-job" and shadow["abusewatch"]["shadow"] is True
    assert shadow["related"]["user"] == control.alerts[0]["related"]["user"]
    assert shadow["event"]["id"] != control.alerts[0]["event"]["id"]
    assert result.suppressed_counts() == {("bulk-job", CAMPAIGN_RULE): 1}
    assert len(result.detections) == 1
    assert suppressed.grouper.state()["risk"] == {}  # while the control's first member gained risk
    assert stage().grouper.state()["risk"] == {}
    risky = stage()
    run(risky, burst(range(5)))
    assert list(risky.grouper.state()["risk"]) == ["key:key-0"]


def test_one_identity_outside_the_exception_keeps_the_campaign_alert_in_the_queue(tmp_path):
    exceptions = loaded(tmp_path, entry())
    result = run(stage(exceptions), burst([0, 1, 2, 3, 4, 66]))  # five excepted bulk-job keys and an attacker's
    assert [a["rule"]["id"] for a in result.alerts] == [CAMPAIGN_RULE]
    assert "key:key-66" in result.alerts[0]["related"]["user"]
    assert result.shadow_alerts == [] and result.suppressed == []


def test_an_identity_named_from_an_earlier_window_keeps_the_campaign_alert_in_the_queue(tmp_path):
    """The attacker's keys took part ten minutes before; the bulk job's window alone would be suppressed."""
    exceptions = loaded(tmp_path, entry())
    alone = run(stage(exceptions), burst(range(5), offset=600.0))
    assert alone.alerts == [] and len(alone.shadow_alerts) == 1
    result = run(stage(exceptions), burst(range(60, 65)) + burst(range(5), offset=600.0))
    assert len(result.detections) == 2
    named = result.detections[1].related_users
    assert "key:key-60" in named and "key:key-0" in named
    assert result.suppressed == [] and result.shadow_alerts == []


def test_members_identities_survive_a_checkpoint_and_older_checkpoints_fail_closed(tmp_path):
    """Keys 0-4 make a campaign, then keys 5-9 carry it on: the second alert names all ten."""
    exceptions = loaded(tmp_path, entry(match={"abusewatch.api_key_hash": [f"key-{i}" for i in range(10)]}))
    first = stage(exceptions)
    assert first.process(burst(range(5))).alerts == []
    assert len(first.flush(START + 700.0).shadow_alerts) == 1  # the first window closes
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(first.state()))
    assert state["campaigns"]["identities"]["00ab"]["key:key-0"][0]["api_key_hash"] == "key-0"
    later = burst(range(5, 10), offset=600.0)

    restored = stage(exceptions)
    restored.load_state(state)
    again = run(restored, later)
    assert len(again.detections[0].related_users) == 10
    assert again.alerts == [] and again.suppressed_counts() == {("bulk-job", CAMPAIGN_RULE): 1}
    assert again.shadow_alerts[0]["abusewatch"]["count"] == 2  # the same alert as the first window's

    del state["campaigns"]["identities"]  # a checkpoint written before identities were kept
    older = stage(exceptions)
    older.load_state(state)
    result = run(older, later)
    assert [a["rule"]["id"] for a in result.alerts] == [CAMPAIGN_RULE]  # keys 0-4 are not known in full


def test_members_identities_are_forgotten_with_the_members(tmp_path):
    detector = CampaignDetector()
    detector.detect(burst(range(5)))
    detector.flush(START + 700.0)
    assert set(detector.state()["identities"]["00ab"]) == {f"key:key-{i}" for i in range(5)}
    day_later = burst(range(10, 15), offset=2 * 86400.0)
    detector.detect(day_later)
    detector.flush()
    assert set(detector.state()["identities"]["00ab"]) == {f"key:key-{i}" for i in range(10, 15)}
    assert detector.state()["identities"].keys() == detector.state()["members"].keys()


def test_suppressed_campaigns_stay_out_of_the_queue_alerts_of_process_and_flush(tmp_path):
    exceptions = loaded(tmp_path, entry())
    campaigns = stage(exceptions)
    assert campaigns.process(burst(range(5))).alerts + campaigns.flush().alerts == []
    plain = stage(exceptions)
    alerts = plain.process(burst([0, 1, 2, 3, 66])).alerts + plain.flush().alerts
    assert [a["rule"]["id"] for a in alerts] == [CAMPAIGN_RULE]
    assert campaigns.fresh().exceptions is exceptions


@pytest.mark.parametrize(
    ("match", "suppressed"),
    [
        ({"source.ip|cidr": ["198.51.100.0/24"]}, True),
        ({"abusewatch.identity_key": [f"key:key-{i}" for i in range(5)]}, True),
        ({"abusewatch.identity_key": [f"key:key-{i}" for i in range(4)]}, False),
        ({"abusewatch.api_key_hash": [f"key-{i}" for i in range(5)], "source.ip": ["198.51.100.1"]}, False),
    ],
)
def test_every_condition_must_hold_for_every_named_identity(tmp_path, match, suppressed):
    result = run(stage(loaded(tmp_path, entry(match=match, trust_forwarded_ip=True))), burst(range(5)))
    assert (result.alerts == []) is suppressed
    assert len(result.shadow_alerts) == int(suppressed)


# -- every identity of every member; bounds fail closed; a campaign's risk alert -------------------------------


def sends(identities: Sequence[Identity], tag: str, offset: float = 0.0, requests: int = 3) -> list[CampaignCandidate]:
    """Each identity sends ``requests`` requests on one template in the window starting ``offset`` after START."""
    return [
        CampaignCandidate(
            event_id=f"{tag}-{offset:.0f}-{n}-{i}",
            timestamp=START + offset + n * len(identities) + i,
            identity=identity,
            signature="00ab",
        )
        for n in range(requests)
        for i, identity in enumerate(identities)
    ]


def restored(campaigns: CampaignStage) -> CampaignStage:
    """A fresh stage from ``campaigns``' checkpoint (through msgpack, as the stream stores it)."""
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(campaigns.state()))
    again = campaigns.fresh()
    again.load_state(state)
    return again


BULK_USERS = [Identity(user_id=f"u{i}", api_key_hash=f"key-{i}") for i in range(5)]
ATTACKER_AS_BULK_USERS = [
    Identity(user_id=f"u{i}", api_key_hash="attacker-key", source_ip="203.0.113.9") for i in range(5)
]


def test_a_member_is_judged_on_every_identity_it_was_seen_with(tmp_path):
    """Members are identity keys, and a user id is the client's choice: the attacker sends the bulk job's user ids
    with their own API key, after one bulk-job request per user id."""
    exceptions = loaded(tmp_path, entry())
    alone = run(stage(exceptions), sends(BULK_USERS, "bulk"))
    assert alone.alerts == [] and len(alone.shadow_alerts) == 1
    mixed = sends(BULK_USERS, "bulk", requests=1) + sends(ATTACKER_AS_BULK_USERS, "attacker", offset=10.0, requests=20)
    campaigns = stage(exceptions)
    result = campaigns.process(mixed)
    result.extend(campaigns.flush(START + 700.0))
    assert [a["rule"]["id"] for a in result.alerts] == [CAMPAIGN_RULE]
    assert {f"user:u{i}" for i in range(5)} <= set(result.alerts[0]["related"]["user"])
    assert result.suppressed == [] and result.shadow_alerts == []
    # the campaign remembers both identities of each member, across a checkpoint: the bulk job alone, ten
    # minutes later, is still judged with the attacker's key
    later = run(restored(campaigns), sends(BULK_USERS, "bulk", offset=600.0))
    assert [a["rule"]["id"] for a in later.alerts] == [CAMPAIGN_RULE] and later.suppressed == []


@pytest.mark.parametrize(("keys", "suppressed"), [(MAX_MEMBER_IDENTITIES, True), (MAX_MEMBER_IDENTITIES + 1, False)])
def test_a_member_seen_with_more_identities_than_are_kept_matches_nothing(tmp_path, keys, suppressed):
    """User u0 comes with ``keys`` excepted API keys: within the bound each is judged (and excepted); past it the
    identities not kept are unknown, so the campaign alert stays in the queue."""
    all_keys = [f"key-{i}" for i in range(keys)]
    exceptions = loaded(tmp_path, entry(match={"abusewatch.api_key_hash": all_keys}))
    u0 = [Identity(user_id="u0", api_key_hash=key) for key in all_keys]
    others = [Identity(user_id=f"u{i}", api_key_hash="key-1") for i in range(1, 5)]
    campaigns = stage(exceptions)
    result = run(campaigns, sends(u0, "u0", requests=1) + sends(others, "others", offset=100.0))
    assert len(result.detections) == 1
    assert (result.alerts == []) is suppressed
    assert len(result.shadow_alerts) == int(suppressed)
    kept = campaigns.detector.state()["identities"]["00ab"]["user:u0"]
    assert len(kept) == min(keys, MAX_MEMBER_IDENTITIES + 1)


def test_a_checkpoint_with_one_identity_per_member_still_loads(tmp_path):
    """The format before identity lists: one identity per member, windows of seven fields."""
    exceptions = loaded(tmp_path, entry(match={"abusewatch.api_key_hash": [f"key-{i}" for i in range(10)]}))
    first = stage(exceptions)
    first.process(burst(range(5)))
    first.flush(START + 700.0)
    first.process(burst(range(5, 10), offset=600.0, requests=2))  # the second window is still open
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(first.state()))
    campaign_state = state["campaigns"]
    campaign_state["identities"] = {
        signature: {member: identities[0] for member, identities in members.items()}
        for signature, members in campaign_state["identities"].items()
    }
    campaign_state["windows"] = [
        [*row[:3], {m: ids[0] for m, ids in row[3].items()}, *row[4:7]] for row in campaign_state["windows"]
    ]
    del campaign_state["overflowed"]
    older = stage(exceptions)
    older.load_state(state)
    result = run(older, burst(range(5, 10), offset=620.0, requests=1))
    assert len(result.detections) == 1 and len(result.detections[0].related_users) == 10
    assert result.alerts == [] and result.suppressed_counts() == {("bulk-job", CAMPAIGN_RULE): 1}


def capped_stage(exceptions: ExceptionList | None = None) -> CampaignStage:
    """A stage that keeps five identities per window and per campaign (the bulk job's five keys fill it)."""
    return CampaignStage(
        CampaignDetector(AnomalyConfig(campaign_max_identities=5)), AlertGrouper(Redactor(b"k")), exceptions
    )


def test_a_window_that_turned_an_identity_away_at_the_cap_is_never_suppressed(tmp_path):
    exceptions = loaded(tmp_path, entry())
    full = run(capped_stage(exceptions), burst(range(5)))
    assert full.alerts == [] and len(full.shadow_alerts) == 1  # at the cap, but every identity judged
    campaigns = capped_stage(exceptions)
    campaigns.process(burst(range(5)) + burst([66], offset=100.0))  # the attacker's key is turned away
    result = restored(campaigns).flush()  # the window was open at the checkpoint
    (alert,) = result.alerts
    assert alert["rule"]["id"] == CAMPAIGN_RULE and "key:key-66" not in alert["related"]["user"]
    assert "not listed" in alert["message"]
    assert result.suppressed == [] and result.shadow_alerts == []


def test_a_campaign_that_turned_members_away_is_not_suppressed_while_it_is_remembered(tmp_path):
    """The bulk job's keys fill the campaign; the attacker's keys, ten minutes later, are not remembered; the bulk
    job's next window is judged as overflowed, until the campaign is forgotten."""
    exceptions = loaded(tmp_path, entry())
    control = run(capped_stage(exceptions), burst(range(5)) + burst(range(5), offset=1200.0))
    assert control.alerts == [] and len(control.suppressed) == 2
    campaigns = capped_stage(exceptions)
    campaigns.process(burst(range(5)) + burst(range(60, 65), offset=600.0))
    campaigns.flush(START + 1300.0)  # both windows close
    again = restored(campaigns)
    result = again.process(burst(range(5), offset=1200.0))
    result.extend(again.flush(START + 1900.0))
    assert [a["rule"]["id"] for a in result.alerts] == [CAMPAIGN_RULE] and result.suppressed == []
    assert not any("key:key-60" in a["related"]["user"] for a in result.alerts)
    forgotten = run(again, burst(range(5), offset=2 * 86400.0))
    assert forgotten.alerts == [] and forgotten.suppressed_counts() == {("bulk-job", CAMPAIGN_RULE): 1}


def risk_stage(exceptions: ExceptionList) -> CampaignStage:
    return CampaignStage(
        CampaignDetector(), AlertGrouper(Redactor(b"k"), AlertPolicy(risk_threshold=100.0)), exceptions
    )


def four_windows(keys: Sequence[int]) -> list[CampaignCandidate]:
    """A campaign of ``keys`` in four windows: enough to push its first member's risk over 100."""
    return [c for window in range(4) for c in burst(keys, offset=600.0 * window)]


def test_a_risk_alert_raised_by_a_campaign_in_the_queue_is_not_suppressed(tmp_path):
    """The risk is charged to key-0, an excepted bulk-job key; the campaign also has the attacker's key-66. The
    campaign stage raises it under a rule of its own: the identity partition's risk alert for key-0 in the same hour
    is another document."""
    by_category = loaded(tmp_path, entry(rules=[], categories=[SCRAPING_CAMPAIGN.category]))
    result = run(risk_stage(by_category), four_windows([0, 1, 2, 3, 4, 66]))
    assert sorted({a["rule"]["id"] for a in result.alerts}) == sorted([CAMPAIGN_RULE, CAMPAIGN_RISK_RULE_ID])
    risk = next(a for a in result.alerts if a["rule"]["id"] == CAMPAIGN_RISK_RULE_ID)
    assert risk["abusewatch"]["identity_key"] == "key:key-0"
    assert result.shadow_alerts == [] and result.suppressed == []


def test_a_risk_alert_raised_by_a_campaign_of_excepted_identities_only_is_suppressed(tmp_path):
    risk_only = loaded(tmp_path, entry(id="risk-of-bulk-job", rules=[CAMPAIGN_RISK_RULE_ID]))
    result = run(risk_stage(risk_only), four_windows(range(5)))
    assert {a["rule"]["id"] for a in result.alerts} == {CAMPAIGN_RULE}  # the exception names the risk rule only
    (shadow,) = result.shadow_alerts
    assert (
        shadow["rule"]["id"] == CAMPAIGN_RISK_RULE_ID and shadow["abusewatch"]["exception"]["id"] == "risk-of-bulk-job"
    )
    assert result.suppressed_counts() == {("risk-of-bulk-job", CAMPAIGN_RISK_RULE_ID): 1}
