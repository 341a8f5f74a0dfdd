"""What an exception reaches: its conditions as Elasticsearch filters, and the answer read back (no cluster)."""

from __future__ import annotations

from datetime import date

from app import reach
from detectors.exceptions import ExceptionEntry, compile_entry


def exception(**fields: object) -> object:
    entry = {"id": "e1", "reason": "r", "expires": date(2099, 1, 1), **fields}
    return compile_entry(ExceptionEntry.model_validate(entry), "exceptions.yml")


def test_conditions_become_filters_on_the_same_fields() -> None:
    entry = exception(
        rules=["abusewatch-anomaly-scraping-*"],
        match={"abusewatch.api_key_hash": ["k2", "k1"], "source.ip|cidr": ["::ffff:10.20.0.0/112"]},
        trust_forwarded_ip=True,
    )
    assert reach.condition_filters(entry) == [  # type: ignore[arg-type]
        {"terms": {"abusewatch.api_key_hash": ["k1", "k2"]}},
        {"terms": {"source.ip": ["10.20.0.0/16"]}},  # an IPv4-mapped network, as the pipeline compares it
    ]


def test_only_alerts_of_the_rules_the_entry_covers_count() -> None:
    entry = exception(
        rules=["abusewatch-anomaly-scraping-*"], categories=["jailbreak"], match={"organization.id": ["o"]}
    )
    events = {
        "hits": {"total": {"value": 7}},
        "aggregations": {"identities": {"value": 2}, "top": {"buckets": [{"key": "user:a", "doc_count": 5}]}},
    }

    def rule(rule_id: str, category: str, identities: dict[str, int]) -> dict[str, object]:
        buckets = [{"key": key, "doc_count": count} for key, count in identities.items()]
        return {"key": rule_id, "category": {"buckets": [{"key": category}]}, "identities": {"buckets": buckets}}

    alerts = {
        "aggregations": {
            "rules": {
                "buckets": [
                    rule("abusewatch-anomaly-scraping-volume", "scraping", {"user:a": 2, "user:b": 1}),
                    rule("r-dan", "jailbreak", {"user:b": 3}),
                    rule("r-injection", "prompt_injection", {"user:c": 9}),  # not covered
                ]
            }
        }
    }
    found = reach.reach_of(entry, events, alerts)  # type: ignore[arg-type]
    assert (found.events, found.event_identities, found.top_event_identities) == (7, 2, [("user:a", 5)])
    assert dict(found.alerts) == {"user:a": 2, "user:b": 4}
    assert found.as_dict()["alerts"] == 6
