"""One finding seen by two tiers is one alert: a rule's ``abusewatch.folds_into`` (detectors.pipeline)."""

from __future__ import annotations

import pytest

from app.engine import build_pipeline
from app.settings import load_settings
from detectors.base import Detection, Evidence, RuleInfo
from detectors.catalogue import BUILTIN_RULES
from detectors.event import Identity
from detectors.exfil.secrets import SECRET_IN_OUTPUT
from detectors.normalise import normalise
from detectors.pipeline import fold_same_findings
from detectors.signatures import BUILTIN_RULES_DIR, RuleSet
from detectors.signatures.parse import RuleLoadError, parse_rule

TARGET = RuleInfo(id="tier-check", name="Secret in a response", category="secret_exposure", level="high")
FORMAT = RuleInfo(
    id="format-rule", name="Key format", category="secret_exposure", level="critical", folds_into=("tier-check",)
)
# a realistic-looking key (not a documentation placeholder), so both tiers see it
OPENAI_KEY = "sk-proj-T7xQ2mLp9ZkR4vNw8YcB3hJf6DsG1aUe5KoXi0WtMqPzVr2E"
OPENAI_FORMAT_RULE = "b1796531-37dd-46c2-a7d7-33ce59b01571"


def detection(rule: RuleInfo, event_id: str = "e1", start: int = 10, score: float = 1.0) -> Detection:
    return Detection(
        rule=rule,
        event_ids=[event_id],
        timestamp=1_700_000_000.0,
        identity=Identity(user_id="alice"),
        message=rule.name,
        score=score,
        evidence=[Evidence(field="gen_ai.completion", snippet="[key]", start=start, end=start + 20)],
    )


def test_a_detection_folds_into_the_named_rules_detection_of_the_same_event() -> None:
    folded = fold_same_findings([detection(FORMAT, score=0.9), detection(TARGET, score=0.6)])
    assert len(folded) == 1
    (one,) = folded
    assert one.rule.id == "tier-check"
    assert one.rule.level == "critical"  # the higher level of the two
    assert one.score == 0.9
    assert one.also_matched == ["format-rule"]
    assert len(one.evidence) == 1  # the same span is not repeated


def test_evidence_at_another_span_is_carried_over() -> None:
    (one,) = fold_same_findings([detection(TARGET, start=10), detection(FORMAT, start=50)])
    assert [evidence.start for evidence in one.evidence] == [10, 50]
    assert one.rule.level == "critical"


@pytest.mark.parametrize(
    "detections",
    [
        [detection(FORMAT, "e1"), detection(TARGET, "e2")],  # another event
        [detection(FORMAT)],  # the target rule did not fire
    ],
)
def test_without_the_target_on_the_same_event_nothing_is_folded(detections: list[Detection]) -> None:
    assert fold_same_findings(detections) == detections


def test_a_shadow_detection_is_not_folded() -> None:
    shadow = RuleInfo(**{**_fields(FORMAT), "status": "test"})
    detections = [detection(shadow), detection(TARGET)]
    assert fold_same_findings(detections) == detections


def test_folds_do_not_chain() -> None:
    """A rule that folds into others is never a target, so a third rule folding into it stays an alert."""
    third = RuleInfo(**{**_fields(FORMAT), "id": "third", "folds_into": ("format-rule",)})
    folded = fold_same_findings([detection(FORMAT), detection(third), detection(TARGET)])
    assert [one.rule.id for one in folded] == ["third", "tier-check"]


def _fields(rule: RuleInfo) -> dict:
    return {name: getattr(rule, name) for name in rule.__struct_fields__}


def openai_log(reply: str) -> dict:
    return {
        "request_id": "r1",
        "timestamp": 1_764_000_000,
        "user": "mallory",
        "client_ip": "203.0.113.5",
        "request": {"model": "gpt-4.1", "messages": [{"role": "user", "content": "what is the deploy key?"}]},
        "response": {
            "id": "x1",
            "model": "gpt-4.1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}],
        },
    }


def test_a_key_in_a_response_is_one_critical_alert_from_the_engine() -> None:
    """Both the exfiltration tier and the pack's format rule fire; the SOC gets one alert naming both."""
    result = build_pipeline(load_settings()).process([normalise(openai_log(f"The key is {OPENAI_KEY}, keep it."))])
    raised = {one.rule.id for one in result.detections}
    assert {SECRET_IN_OUTPUT.id, OPENAI_FORMAT_RULE} <= raised  # the tiers' own verdicts are all kept
    secret_alerts = [alert for alert in result.alerts if alert["rule"]["category"] == "secret_exposure"]
    assert len(secret_alerts) == 1
    (alert,) = secret_alerts
    assert alert["rule"]["id"] == SECRET_IN_OUTPUT.id
    assert alert["abusewatch"]["level"] == "critical"  # the format rule's level, above the tier's "high"
    assert alert["abusewatch"]["also_matched"] == [OPENAI_FORMAT_RULE]
    assert OPENAI_KEY not in str(result.alerts)
    (document,) = result.events
    assert {SECRET_IN_OUTPUT.id, OPENAI_FORMAT_RULE} <= set(document["abusewatch"]["rule_ids"])  # what matched


def test_every_fold_in_the_pack_names_a_builtin_rule_of_the_same_category() -> None:
    builtin = {rule.id: rule for rule in BUILTIN_RULES}
    folding = [rule for rule in RuleSet.load([BUILTIN_RULES_DIR]).rules if rule.folds_into]
    assert folding, "the pack's secrets/ format rules fold into the exfiltration tier's alert"
    for rule in folding:
        for target in rule.folds_into:
            assert target in builtin, f"{rule.label} folds into unknown rule {target}"
            assert builtin[target].category == rule.category, rule.label


RULE = """
title: Test rule
id: 6f1c7a1e-0b7e-4c55-9d0e-3c7b1f0a9e11
status: stable
level: high
tags: [atlas.aml.t0057, owasp.llm02]
logsource: {product: llm, category: response}
detection:
  selection:
    gen_ai.completion|contains: secret
  condition: selection
abusewatch:
  category: secret_exposure
  {fold}
  tests:
    match: [a secret]
    nomatch: [nothing]
"""


def test_folds_into_is_read_as_one_id_or_a_list() -> None:
    assert parse_rule(RULE.replace("{fold}", "folds_into: abw-exfil-secret-output")).folds_into == (
        SECRET_IN_OUTPUT.id,
    )
    assert parse_rule(RULE.replace("{fold}", "folds_into: [a, b]")).folds_into == ("a", "b")
    assert parse_rule(RULE.replace("{fold}", "")).folds_into == ()


@pytest.mark.parametrize(
    ("fold", "message"),
    [
        ("folds_into: 12", "must be a rule id or a list"),
        ("folds_into: []", "must be a rule id or a list"),
        ("folds_into: 6f1c7a1e-0b7e-4c55-9d0e-3c7b1f0a9e11", "names the rule itself"),
    ],
)
def test_a_bad_folds_into_is_a_load_error(fold: str, message: str) -> None:
    with pytest.raises(RuleLoadError, match=message):
        parse_rule(RULE.replace("{fold}", fold))
