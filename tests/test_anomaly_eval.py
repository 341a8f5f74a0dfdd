"""The anomaly evaluation's own traffic: short scraper bursts and templated automation, labelled by the identities
their normalised logs carry, reproducible per seed, and scored by ``run_seed`` on a small simulation."""

from collections import Counter

from app.traffic.simulate import ATTACK_KINDS, DEFAULT_START, SimulationConfig
from bench.eval_anomaly import AUTOMATION_KINDS, SHORT_SCRAPER, run_seed, templated_traffic
from bench.eval_grouping import identity_names
from detectors.anomaly import AnomalyConfig

END = DEFAULT_START + 12 * 3600


def test_templated_traffic_is_reproducible_and_labelled_by_logged_identities() -> None:
    first = templated_traffic(4, DEFAULT_START, END, short_scrapers=3)
    again = templated_traffic(4, DEFAULT_START, END, short_scrapers=3)
    assert [(e.timestamp, e.identity.key(), e.input_messages[0].content) for e in first.events] == [
        (e.timestamp, e.identity.key(), e.input_messages[0].content) for e in again.events
    ]
    per_identity = Counter(e.identity.key() for e in first.events)
    assert [label.kind for label in first.labels] == [SHORT_SCRAPER] * 3
    for label in first.labels:
        assert 100 <= per_identity[label.identity] <= 300
        assert DEFAULT_START + 4 * 3600 <= label.start < label.end <= END
    automation_identities = {e.identity.key() for e in first.events if e.identity.key() in first.automation}
    assert sorted(first.automation[key] for key in automation_identities) == sorted(AUTOMATION_KINDS)
    automation_events = [e for e in first.events if (e.identity.user_agent or "").startswith("batch-worker/")]
    assert automation_events and all(identity_names(e.identity) & first.automation.keys() for e in automation_events)


def test_run_seed_scores_short_bursts_and_templated_automation() -> None:
    traffic = SimulationConfig(hours=12, benign_users=20, attackers=dict.fromkeys(ATTACK_KINDS, 0))
    result = run_seed(3, traffic, AnomalyConfig(peer_warmup_windows=50), short_scrapers=2)
    assert len(result.detected[SHORT_SCRAPER]) == 2
    assert all(delay is not None and delay < 30 * 60 for delay in result.detected[SHORT_SCRAPER])
    assert set(result.automation) == set(AUTOMATION_KINDS)
    enumeration = "abusewatch-anomaly-scraping-enumeration"
    assert enumeration in result.automation_rules["catalogue_generator"]  # the trade-off, by design
    assert enumeration not in result.automation_rules["bulk_classifier"]
    assert enumeration not in result.automation_rules["bulk_summariser"]
