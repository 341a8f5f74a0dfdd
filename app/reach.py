"""What an alert exception reaches: the identities whose recent events and alerts its conditions match.

An exception drafted from one customer's alert may name a value other customers share (an API key several of them
use, a NAT network): it would then also hide their real attacks, and nothing in the file says so. ``abusewatch
exceptions reach`` asks Elasticsearch, for each entry, which identities (``abusewatch.identity_key``) sent events
matching its conditions, and which alerts of the rules it covers they raised, in the queue or already suppressed.

The conditions are sent as Elasticsearch filters on the same ECS fields they test in the pipeline (exact values as
``terms``, networks as CIDR ``terms`` on the ``ip`` field); which of the alerts' rules an entry covers is decided
here, by :meth:`~detectors.exceptions.AlertException.covers`, so rule globs mean what they mean to the engine.
Values the redactor masks in documents (an e-mail address as a user id) are not found by their clear text.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from elasticsearch import Elasticsearch

from app.triage import alert_filters, since_filter
from detectors.exceptions import AlertException

IDENTITY_FIELD = "abusewatch.identity_key"
TOP_IDENTITIES = 20  # named per entry; the distinct count covers the rest
MAX_RULES = 1000


@dataclass
class Reach:
    """One entry's reach over the window: events and alerts per identity."""

    exception: AlertException
    events: int = 0
    event_identities: int = 0  # distinct (Elasticsearch's cardinality: exact below 3,000)
    top_event_identities: list[tuple[str, int]] = field(default_factory=list)
    alerts: Counter[str] = field(default_factory=Counter)  # alerts of the covered rules, per identity

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.exception.id,
            "source": self.exception.source,
            "events": self.events,
            "event_identities": self.event_identities,
            "top_event_identities": [{"identity": key, "events": count} for key, count in self.top_event_identities],
            "alerts": sum(self.alerts.values()),
            "alert_identities": [{"identity": key, "alerts": count} for key, count in self.alerts.most_common()],
        }


def condition_filters(exception: AlertException) -> list[dict[str, Any]]:
    """The entry's conditions as Elasticsearch filters (ANDed, like the conditions)."""
    filters = []
    for condition in exception.conditions:
        name = condition.field.partition("|")[0]
        values = [str(network) for network in condition.networks] or sorted(condition.values)
        filters.append({"terms": {name: values}})
    return filters


def events_request(exception: AlertException, since_seconds: int) -> dict[str, Any]:
    """Search body: events matching the conditions in the window, their identities counted and the top named."""
    return {
        "size": 0,
        "track_total_hits": True,
        "query": {"bool": {"filter": [*condition_filters(exception), since_filter(since_seconds)]}},
        "aggs": {
            "identities": {"cardinality": {"field": IDENTITY_FIELD}},
            "top": {"terms": {"field": IDENTITY_FIELD, "size": TOP_IDENTITIES}},
        },
    }


def alerts_request(exception: AlertException, since_seconds: int) -> dict[str, Any]:
    """Search body: alerts (queue and shadow) matching the conditions in the window, per rule, category, identity."""
    return {
        "size": 0,
        "query": {"bool": {"filter": [*condition_filters(exception), *alert_filters(since_seconds)]}},
        "aggs": {
            "rules": {
                "terms": {"field": "rule.id", "size": MAX_RULES},
                "aggs": {
                    "category": {"terms": {"field": "rule.category", "size": 1}},
                    "identities": {"terms": {"field": IDENTITY_FIELD, "size": TOP_IDENTITIES}},
                },
            }
        },
    }


def reach_of(exception: AlertException, events: dict[str, Any], alerts: dict[str, Any]) -> Reach:
    """The entry's :class:`Reach` from the answers to :func:`events_request` and :func:`alerts_request`."""
    aggs = events.get("aggregations", {})
    reach = Reach(
        exception,
        events=int(events["hits"]["total"]["value"]),
        event_identities=int(aggs.get("identities", {}).get("value", 0)),
        top_event_identities=[(b["key"], int(b["doc_count"])) for b in aggs.get("top", {}).get("buckets", [])],
    )
    for rule in alerts.get("aggregations", {}).get("rules", {}).get("buckets", []):
        categories = rule["category"]["buckets"]
        if exception.covers(str(rule["key"]), str(categories[0]["key"]) if categories else ""):
            reach.alerts.update({b["key"]: int(b["doc_count"]) for b in rule["identities"]["buckets"]})
    return reach


def measure(
    client: Elasticsearch, exception: AlertException, *, events_index: str, alert_indices: str, since_seconds: int
) -> Reach:
    """:func:`reach_of` from the events index and the alert indices (comma-separated: queue and shadow)."""
    events = client.search(index=events_index, **events_request(exception, since_seconds))
    alerts = client.search(index=alert_indices, ignore_unavailable=True, **alerts_request(exception, since_seconds))
    return reach_of(exception, dict(events), dict(alerts))
