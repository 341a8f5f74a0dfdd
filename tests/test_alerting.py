"""Alert hygiene: grouping per rule and identity in event-time windows, escalation, risk score, state."""

from detectors.alerting import (
    CAMPAIGN_RISK_RULE_ID,
    MAX_RELATED,
    RISK_RULE_ID,
    AlertGrouper,
    AlertPolicy,
)
from detectors.base import Detection, Evidence, RuleInfo, SensitiveValue
from detectors.documents import supersedes
from detectors.event import Identity
from detectors.redact import Redactor

HOUR = 3600.0
T0 = 1_700_000_000.0 - (1_700_000_000.0 % HOUR)  # start of an hour


def detection(event_id: str, at: float, user: str = "mallory", level: str = "medium", score: float = 1.0):
    return Detection(
        rule=RuleInfo(id="r1", name="Override", category="prompt_injection", level=level, atlas=("AML.T0051.000",)),
        event_ids=[event_id],
        timestamp=at,
        identity=Identity(user_id=user),
        message=f"override by {user}",
        score=score,
        evidence=[Evidence(field="gen_ai.prompt", snippet=f"snippet {event_id}")],
    )


def alerts_of(grouper: AlertGrouper, detections: list[Detection]) -> list[dict]:
    return [document for _, document in grouper.alerts(detections, {})]


def test_repeats_in_a_window_become_one_alert_updated_in_place():
    grouper = AlertGrouper(Redactor(b"k"))
    first = alerts_of(grouper, [detection("e1", T0 + 10)])
    second = alerts_of(grouper, [detection("e2", T0 + 20), detection("e3", T0 + 30)])
    assert len(first) == len(second) == 1
    assert first[0]["event"]["id"] == second[0]["event"]["id"]
    doc = second[0]
    assert doc["abusewatch"]["count"] == 3
    assert doc["abusewatch"]["event_ids"] == ["e1", "e2", "e3"]
    assert doc["abusewatch"]["first_seen"] < doc["abusewatch"]["last_seen"]
    assert len(doc["abusewatch"]["evidence"]) == 3


def test_new_window_or_other_identity_is_a_new_alert():
    grouper = AlertGrouper(Redactor(b"k"))
    ids = {
        alerts_of(grouper, [d])[0]["event"]["id"]
        for d in (detection("e1", T0 + 1), detection("e2", T0 + HOUR + 1), detection("e3", T0 + 2, user="eve"))
    }
    assert len(ids) == 3


def test_ids_do_not_depend_on_batching_or_on_state():
    whole = alerts_of(AlertGrouper(Redactor(b"k")), [detection("e1", T0 + 1), detection("e2", T0 + 2)])
    split = AlertGrouper(Redactor(b"k"))
    alerts_of(split, [detection("e1", T0 + 1)])
    assert alerts_of(split, [detection("e2", T0 + 2)]) == whole
    fresh = alerts_of(AlertGrouper(Redactor(b"k")), [detection("e2", T0 + 2)])
    assert fresh[0]["event"]["id"] == whole[0]["event"]["id"]


def test_repeats_escalate_the_severity():
    grouper = AlertGrouper(Redactor(b"k"), AlertPolicy(escalate_at=(3, 5)))
    levels = [alerts_of(grouper, [detection(f"e{i}", T0 + i)])[0]["event"]["severity"] for i in range(6)]
    assert levels == [47, 47, 73, 73, 99, 99]


def test_risk_alert_fires_once_while_the_score_stays_high():
    policy = AlertPolicy(risk_threshold=100.0, risk_half_life_seconds=24 * HOUR)
    grouper = AlertGrouper(Redactor(b"k"), policy)
    docs = []
    for hour in range(6):  # a high alert every hour keeps the score above the bar
        docs += alerts_of(grouper, [detection(f"e{hour}-{i}", T0 + hour * HOUR + i, level="high") for i in range(3)])
    assert sum(d["rule"]["id"] == RISK_RULE_ID for d in docs) == 1


def test_risk_alert_re_arms_after_the_score_decays():
    policy = AlertPolicy(risk_threshold=100.0, risk_half_life_seconds=HOUR)
    grouper = AlertGrouper(Redactor(b"k"), policy)
    first = alerts_of(grouper, [detection(f"a{i}", T0 + i, level="high") for i in range(3)])
    quiet = alerts_of(grouper, [detection("q", T0 + 5 * HOUR, level="low")])  # decayed far below half the bar
    again = alerts_of(grouper, [detection(f"b{i}", T0 + 6 * HOUR + i, level="high") for i in range(3)])
    assert [sum(d["rule"]["id"] == RISK_RULE_ID for d in docs) for docs in (first, quiet, again)] == [1, 0, 1]


def test_risk_score_crosses_threshold_once_and_decays():
    policy = AlertPolicy(risk_threshold=100.0, risk_half_life_seconds=HOUR)
    grouper = AlertGrouper(Redactor(b"k"), policy)
    docs = alerts_of(grouper, [detection(f"e{i}", T0 + i, level="high") for i in range(3)])
    risk = [d for d in docs if d["rule"]["id"] == RISK_RULE_ID]
    assert len(risk) == 1
    assert risk[0]["rule"]["category"] == "prompt_injection"
    assert risk[0]["abusewatch"]["explanation"]["prompt_injection"] >= 100
    # one high alert a day later: the old score has decayed to nothing, no new risk alert
    later = alerts_of(grouper, [detection("late", T0 + 24 * HOUR, level="high")])
    assert all(d["rule"]["id"] != RISK_RULE_ID for d in later)


def test_state_round_trip_continues_the_group():
    grouper = AlertGrouper(Redactor(b"k"))
    alerts_of(grouper, [detection("e1", T0 + 1), detection("e2", T0 + 2)])
    restored = AlertGrouper(Redactor(b"k"))
    restored.load_state(grouper.state())
    doc = alerts_of(restored, [detection("e3", T0 + 3)])[0]
    assert doc["abusewatch"]["count"] == 3
    assert doc["abusewatch"]["event_ids"] == ["e1", "e2", "e3"]


def test_old_groups_are_forgotten():
    grouper = AlertGrouper(Redactor(b"k"))
    alerts_of(grouper, [detection("e1", T0)])
    alerts_of(grouper, [detection("e2", T0 + 10 * HOUR, user="eve")])
    assert len(grouper.state()["groups"]) == 1


def test_a_batch_spanning_many_windows_renders_every_group():
    grouper = AlertGrouper(Redactor(b"k"))
    docs = alerts_of(grouper, [detection(f"e{i}", T0 + i * HOUR) for i in range(5)])
    assert len(docs) == 5


def explained(event_id: str, at: float, explanation: dict[str, float], users: list[str]) -> Detection:
    base = detection(event_id, at)
    return Detection(
        rule=base.rule,
        event_ids=base.event_ids,
        timestamp=at,
        identity=base.identity,
        message=f"seen with {len(users)} identities",
        explanation=explanation,
        related_users=users,
    )


def test_a_repeat_keeps_the_first_explanation_and_a_growing_campaign_the_latest():
    """Elasticsearch merges an alert's objects on each in-place update, so a group's explanation must not change
    between writes unless the alert really grew (a campaign naming more identities)."""
    grouper = AlertGrouper(Redactor(b"k"))
    alerts_of(grouper, [explained("e1", T0 + 1, {"ngram:ignore": 0.5}, ["mallory"])])
    repeat = alerts_of(grouper, [explained("e2", T0 + 2, {"ngram:market": 0.2}, ["mallory"])])[0]
    assert repeat["abusewatch"]["explanation"] == {"ngram:ignore": 0.5}
    assert repeat["abusewatch"]["count"] == 2
    grown = alerts_of(grouper, [explained("e3", T0 + 3, {"ngram:market": 0.2}, ["mallory", "trudy"])])[0]
    assert grown["abusewatch"]["explanation"] == {"ngram:market": 0.2}
    assert grown["message"].startswith("seen with 2 identities")
    narrower = alerts_of(grouper, [explained("e4", T0 + 4, {"ngram:other": 0.1}, ["trudy"])])[0]
    assert narrower["abusewatch"]["explanation"] == {"ngram:market": 0.2}


def test_an_alert_rendered_again_in_a_later_batch_never_shows_an_earlier_batchs_secrets():
    """A group outlives its batch; when a later batch updates the alert, only that batch's sensitive values are
    known, so what the group kept of earlier events must already be masked (in its checkpoint too)."""
    key = "AKIAZ7Q4N2KX5MB3VW6P"
    grouper = AlertGrouper(Redactor(b"k"))
    leaky = detection(f"trace-{key}", T0 + 1)
    leaky.evidence = [Evidence(field="gen_ai.prompt", snippet=f"ignore your rules, my key is {key}")]
    sensitive = {f"trace-{key}": [SensitiveValue(kind="aws_access_key_id", value=key)]}
    [(_, first)] = grouper.alerts([leaky], sensitive)
    [(_, again)] = grouper.alerts([detection("clean", T0 + 2)], {})
    assert first["event"]["id"] == again["event"]["id"] and again["abusewatch"]["count"] == 2
    for document in (first, again):
        assert key not in str(document)
    assert again["abusewatch"]["event_ids"] == sorted([*first["abusewatch"]["event_ids"], "clean"])
    assert key not in str(grouper.state())


def test_an_earlier_batchs_id_named_by_a_later_detection_is_masked_even_after_a_restore():
    """Correlations and windows keep event ids in their state and name them in later batches' detections, when
    those batches' values no longer cover them: an id that held a flagged value must still come out masked."""
    key = "AKIAZ7Q4N2KX5MB3VW6P"
    grouper = AlertGrouper(Redactor(b"k"))
    [(_, first)] = grouper.alerts(
        [detection(f"trace-{key}", T0 + 1)],
        {f"trace-{key}": [SensitiveValue(kind="aws_access_key_id", value=key)]},
    )
    [masked] = first["abusewatch"]["event_ids"]
    assert key not in masked
    restored = AlertGrouper(Redactor(b"k"))
    restored.load_state(grouper.state())
    assert key not in str(grouper.state())
    later = detection("clean", T0 + 2 * HOUR)  # another window: a new alert, naming the earlier id again
    later.event_ids = [f"trace-{key}", "clean"]
    later.message = f"two attempts, the first trace-{key}"
    [(_, document)] = restored.alerts([later], {})
    assert key not in str(document)
    assert sorted(document["abusewatch"]["event_ids"]) == sorted([masked, "clean"])


def related(event_id: str, at: float, users: list[str], ips: list[str]) -> Detection:
    return Detection(
        rule=RuleInfo(id="anomaly", name="Burst", category="scraping", level="medium"),
        event_ids=[event_id],
        timestamp=at,
        identity=Identity(source_ip="203.0.113.9"),
        message="burst",
        related_users=users,
        related_ips=ips,
        group_key="anomaly:ip:203.0.113.9",
    )


def test_related_users_and_ips_are_the_union_of_the_group_and_bounded():
    grouper = AlertGrouper(Redactor(b"k"))
    alerts_of(grouper, [related("e1", T0 + 1, ["alice", "bob"], ["198.51.100.1"])])
    doc = alerts_of(grouper, [related("e2", T0 + 2, ["carol", "bob"], ["198.51.100.2"])])[0]
    assert doc["related"]["user"] == ["alice", "bob", "carol"]
    assert doc["related"]["ip"] == ["198.51.100.1", "198.51.100.2", "203.0.113.9"]
    assert doc["message"] == "burst (x2 in this window)"
    many = alerts_of(grouper, [related("e3", T0 + 3, [f"u{i:03d}" for i in range(200)], [])])[0]
    assert len(many["related"]["user"]) == MAX_RELATED  # the first seen kept: alice, bob, carol and 61 more
    assert {"alice", "bob", "carol", "u000"} <= set(many["related"]["user"]) and "u199" not in many["related"]["user"]
    restored = AlertGrouper(Redactor(b"k"))
    restored.load_state(grouper.state())
    assert alerts_of(restored, [related("e4", T0 + 4, [], [])])[0]["related"] == many["related"]


def test_the_risk_alert_maps_to_its_top_category():
    scraping = RuleInfo(
        id="scrape", name="Scraping", category="scraping", level="medium", atlas=("AML.T0040",), owasp=("LLM10:2025",)
    )
    jailbreak = RuleInfo(
        id="jb", name="Jailbreak", category="jailbreak", level="high", atlas=("AML.T0054",), owasp=("LLM01:2025",)
    )
    who = Identity(user_id="mallory")
    detections = [
        Detection(rule=scraping, event_ids=[f"s{i}"], timestamp=T0 + i, identity=who, message="s") for i in range(9)
    ]
    # the jailbreak pushes the score over the bar, but scraping contributed most
    detections.append(Detection(rule=jailbreak, event_ids=["j"], timestamp=T0 + 90, identity=who, message="j"))
    grouper = AlertGrouper(Redactor(b"k"))
    (risk,) = [doc for doc in alerts_of(grouper, detections) if doc["rule"]["id"] == RISK_RULE_ID]
    assert risk["rule"]["category"] == "scraping"
    assert risk["threat"]["technique"]["id"] == ["AML.T0040"]
    assert risk["abusewatch"]["owasp_llm"] == ["LLM10:2025"]


def test_a_risk_state_without_mappings_still_loads():
    grouper = AlertGrouper(Redactor(b"k"))
    alerts_of(grouper, [detection("e1", T0 + 1, level="high")])
    state = grouper.state()
    for risk in state["risk"].values():
        del risk["mappings"]
    restored = AlertGrouper(Redactor(b"k"))
    restored.load_state(state)
    risks = alerts_of(restored, [detection(f"e{i}", T0 + i, level="high") for i in range(2, 6)])
    (risk,) = [doc for doc in risks if doc["rule"]["id"] == RISK_RULE_ID]
    assert risk["threat"]["technique"]["id"] == ["AML.T0051.000"]  # the category's mapping, from the new detections


def test_groupers_of_different_risk_rules_never_share_a_risk_alert_id():
    identity_partition = AlertGrouper(Redactor(b"k"))
    campaign_stage = identity_partition.for_risk_rule(CAMPAIGN_RISK_RULE_ID)
    detections = [detection(f"e{i}", T0 + i, level="high") for i in range(5)]
    risk_ids = [
        {doc["rule"]["id"]: doc["event"]["id"] for doc in alerts_of(grouper, detections)}
        for grouper in (identity_partition, campaign_stage)
    ]
    assert RISK_RULE_ID in risk_ids[0] and CAMPAIGN_RISK_RULE_ID in risk_ids[1]
    assert risk_ids[0][RISK_RULE_ID] != risk_ids[1][CAMPAIGN_RISK_RULE_ID]
    assert campaign_stage.fresh().risk_rule_id == CAMPAIGN_RISK_RULE_ID


def test_a_rendering_supersedes_the_stored_alert_unless_it_counts_fewer_detections():
    def rendering(count: int) -> dict:
        return {"abusewatch": {"count": count}}

    assert supersedes(rendering(5), rendering(3))
    assert supersedes(rendering(5), rendering(5))  # a re-rendering of the same group (a new score, a new message)
    assert not supersedes(rendering(1), rendering(5))  # a late detection re-opened a forgotten group
