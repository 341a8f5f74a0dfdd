"""Alert triage in Elasticsearch: find, show, acknowledge and close alerts, rule precision from the verdicts, and
the evidence to promote (or drop) a shadow rule.

The verdict lives on the alert document itself, under fields the stream never writes (``abusewatch.status`` and
``abusewatch.triage.*``, see :data:`TRIAGE_FIELDS`), so an alert that grows after triage keeps its verdict: the
sink re-writes it with :func:`app.sinks.elasticsearch.preserving_update`, which leaves them out. Updates go to the
concrete index that holds the alert (a data stream's backing index, or the plain index), guarded by the sequence
number read just before, so a concurrent write is never lost: after a stream re-write the update is retried on the
document read again by id (real time, not through search, which lags a refresh); after another analyst's verdict
(or a reopening) it stops and says so, so no verdict is replaced unseen. Closing writes the whole verdict (reason,
note) and reports the one it replaces.

Everything here but the functions taking a client is pure: queries, partial documents and the statistics computed
from aggregation responses, so they are tested without Elasticsearch.
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from elastic_transport import ApiError
from elasticsearch import Elasticsearch, NotFoundError

from app.settings import ElasticsearchSettings
from app.sinks.elasticsearch import STATUS_FIELD, client_options
from detectors.documents import iso_time

Status = Literal["open", "acknowledged", "closed"]
Reason = Literal["true_positive", "false_positive", "benign_positive"]
STATUSES: tuple[Status, ...] = ("open", "acknowledged", "closed")
REASONS: tuple[Reason, ...] = ("true_positive", "false_positive", "benign_positive")
TRIAGED: tuple[Status, ...] = ("acknowledged", "closed")

# Alert fields owned by analysts: the stream must never overwrite them once an alert exists.
TIME_TO_TRIAGE_FIELD = "abusewatch.triage.time_to_triage_seconds"
REASON_FIELD = "abusewatch.triage.reason"

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_RULES = 1000
UPDATE_ATTEMPTS = 5
RETRY_PAUSE_S = 0.05  # times the attempt number, between attempts after a stream re-write
DOCUMENTS_PER_EVENT_ID = 5  # enriched events shown per linked event id (more only if a client reuses its ids)


class TriageError(Exception):
    """A triage request that cannot be carried out (unknown id, not allowed in the alert's status)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One alert moved: the partial document written, and the verdict it replaced (closing a closed alert), in
    words (:func:`describe`)."""

    alert_id: str
    doc: dict[str, Any]
    replaced: str | None = None


def connect(settings: ElasticsearchSettings) -> Elasticsearch:
    """A client with the same connection options the stream uses."""
    return Elasticsearch(**client_options(settings))


def current_user() -> str:
    """Who triages by default: ``$USER``, else the login name."""
    return os.environ.get("USER") or getpass.getuser()


# -- pure helpers ---------------------------------------------------------------------------------------------------


def parse_duration(text: str) -> int:
    """``"24h"`` -> 86400 seconds; units s, m, h, d, w."""
    value, unit = text[:-1].strip(), text[-1:].lower()
    if unit not in DURATION_UNITS or not value.isdigit() or int(value) <= 0:
        raise ValueError(f"not a duration: {text!r} (use a positive number and one of s, m, h, d, w, e.g. 24h)")
    return int(value) * DURATION_UNITS[unit]


def since_filter(seconds: int) -> dict[str, Any]:
    """Documents whose ``@timestamp`` is less than ``seconds`` old."""
    return {"range": {"@timestamp": {"gte": f"now-{seconds}s"}}}


def before_filter(seconds: int) -> dict[str, Any]:
    """Documents whose ``@timestamp`` is ``seconds`` old or more: those :func:`since_filter` leaves out."""
    return {"range": {"@timestamp": {"lt": f"now-{seconds}s"}}}


def list_query(
    *,
    status: Status | None = None,
    severity_min: int | None = None,
    rule_id: str | None = None,
    user_id: str | None = None,
    since_seconds: int | None = None,
) -> dict[str, Any]:
    """The bool query behind ``alerts list``: every given criterion must hold."""
    filters: list[dict[str, Any]] = [{"term": {"event.kind": "alert"}}]
    if status is not None:
        filters.append({"term": {STATUS_FIELD: status}})
    if severity_min is not None:
        filters.append({"range": {"event.severity": {"gte": severity_min}}})
    if rule_id is not None:
        filters.append({"term": {"rule.id": rule_id}})
    if user_id is not None:
        filters.append({"term": {"user.id": user_id}})
    if since_seconds is not None:
        filters.append(since_filter(since_seconds))
    return {"bool": {"filter": filters}}


def triage_update(
    alert: dict[str, Any],
    status: Status,
    *,
    by: str,
    now: float,
    reason: Reason | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """The partial document that moves ``alert`` (its ``_source``) to ``status``.

    ``triage.at`` is the time of the latest action; ``time_to_triage_seconds`` is set once, at the first action
    (acknowledge or close), measured from the alert's ``@timestamp`` (its first detection).
    """
    check_transition(alert, status)
    triage: dict[str, Any] = {"by": by, "at": iso_time(now)}
    previous = alert.get("abusewatch", {}).get("triage") or {}
    if "time_to_triage_seconds" not in previous:
        start = parse_time(alert.get("@timestamp"))
        if start is not None:
            triage["time_to_triage_seconds"] = round(max(0.0, now - start), 3)
    if status == "closed":  # the whole verdict: a note left by an earlier verdict must not stay with this one
        triage["reason"] = reason
        triage["note"] = note
    elif note is not None:
        triage["note"] = note
    if "reopened_because" in previous:  # the analyst has answered the reopening
        triage["reopened_because"] = triage["reopened_at"] = None
    return {"abusewatch": {"status": status, "triage": triage}}


def verdict(alert: dict[str, Any]) -> dict[str, Any]:
    """The analysts' part of an alert (its ``_source``): status and triage section."""
    section = alert.get("abusewatch", {})
    return {"status": section.get("status"), "triage": section.get("triage") or {}}


def describe(alert: dict[str, Any]) -> str:
    """An alert's verdict in words: ``closed as false_positive by ana at ...``, ``reopened (severity rose ...)``."""
    state = verdict(alert)
    triage = state["triage"]
    if state["status"] == "open" and triage.get("reopened_because"):
        return f"reopened ({triage['reopened_because']})"
    words = [str(state["status"])]
    if state["status"] == "closed" and triage.get("reason"):
        words.append(f"as {triage['reason']}")
    if triage.get("by"):
        words.append(f"by {triage['by']}")
    if triage.get("at"):
        words.append(f"at {triage['at']}")
    return " ".join(words)


def check_transition(alert: dict[str, Any], status: Status) -> None:
    """Refuse moves that lose a verdict: acknowledging a closed alert would reopen it (closing again may correct
    the verdict)."""
    if status == "acknowledged" and alert.get("abusewatch", {}).get("status") == "closed":
        raise TriageError("already closed; acknowledging would reopen it (close it again to change the verdict)")


def parse_time(value: Any) -> float | None:
    """Epoch seconds of an ISO 8601 timestamp as Elasticsearch returns it; None if absent or malformed."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


# -- linked events -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkedEvent:
    """The enriched-event documents of one of an alert's event ids: the ``shown`` ones nearest the alert in time
    (oldest first), out of ``total`` documents under that id (more than one when a client reused a request id)."""

    event_id: str
    shown: list[dict[str, Any]]
    total: int

    @property
    def hidden(self) -> int:
        return self.total - len(self.shown)


def alert_window(alert: dict[str, Any]) -> tuple[float, float] | None:
    """Epoch seconds of the alert's first and last detection (``abusewatch.first_seen``/``last_seen`` and its
    ``@timestamp``, whichever are valid); None if it has no usable time."""
    fields = alert.get("abusewatch")
    seen = fields if isinstance(fields, dict) else {}
    times = [parse_time(value) for value in (seen.get("first_seen"), seen.get("last_seen"), alert.get("@timestamp"))]
    known = [time for time in times if time is not None]
    return (min(known), max(known)) if known else None


def alert_event_ids(alert: dict[str, Any]) -> list[str]:
    """The alert's ``abusewatch.event_ids``, each once; anything that is not a list of strings is ignored."""
    fields = alert.get("abusewatch")
    ids = fields.get("event_ids") if isinstance(fields, dict) else None
    return list(dict.fromkeys(i for i in ids if isinstance(i, str))) if isinstance(ids, list) else []


def distance_to_window(timestamp: float, window: tuple[float, float]) -> float:
    """Seconds between ``timestamp`` and the window (0 inside it)."""
    start, end = window
    return max(0.0, start - timestamp, timestamp - end)


def linked_event_searches(
    event_ids: Sequence[str], window: tuple[float, float], per_id: int = DOCUMENTS_PER_EVENT_ID
) -> list[dict[str, Any]]:
    """The ``msearch`` lines (header, body) that find, per event id, the ``per_id`` documents nearest the alert's
    window: two searches per id, at or before the window's end (newest first) and after it (oldest first). The
    nearest of both are the nearest overall, as distance only grows away from the window in either direction, so no
    script sort is needed (clusters may forbid scripts)."""
    window_end = round(window[1] * 1000)
    searches: list[dict[str, Any]] = []
    for event_id in event_ids:
        for bound, order in (("lte", "desc"), ("gt", "asc")):
            body = {
                "query": {
                    "bool": {
                        "filter": [
                            {"term": {"event.id": event_id}},
                            {"range": {"@timestamp": {bound: window_end, "format": "epoch_millis"}}},
                        ]
                    }
                },
                "size": per_id,
                "sort": [{"@timestamp": {"order": order, "unmapped_type": "date"}}],
                "track_total_hits": True,
            }
            searches.extend(({}, body))
    return searches


def nearest_linked_events(
    event_ids: Sequence[str],
    responses: Sequence[dict[str, Any]],
    window: tuple[float, float],
    per_id: int = DOCUMENTS_PER_EVENT_ID,
) -> list[LinkedEvent]:
    """Per event id, in the order given, the ``per_id`` documents nearest the window, from the ``msearch`` responses
    to :func:`linked_event_searches` (two per id); a failed search raises :class:`TriageError`."""
    result = []
    for position, event_id in enumerate(event_ids):
        pair = responses[2 * position : 2 * position + 2]
        for response in pair:
            if "error" in response:
                raise TriageError(f"searching the events of {event_id!r} failed: {_reason(response['error'])}")
        hits = [hit for response in pair for hit in response.get("hits", {}).get("hits", [])]
        total = sum(int(response.get("hits", {}).get("total", {}).get("value", 0)) for response in pair)
        nearest = sorted(hits, key=lambda hit: distance_to_window(_hit_time(hit), window))[:per_id]
        shown = sorted(nearest, key=_hit_time)
        result.append(LinkedEvent(event_id=event_id, shown=shown, total=max(total, len(shown))))
    return result


def oldest_first(linked: Iterable[LinkedEvent]) -> list[dict[str, Any]]:
    """The shown documents of all the ids, oldest first."""
    return sorted((hit for item in linked for hit in item.shown), key=_hit_time)


def _hit_time(hit: dict[str, Any]) -> float:
    """Epoch seconds of a hit's ``@timestamp``; infinitely late without one (shown last, never nearest)."""
    timestamp = parse_time(hit.get("_source", {}).get("@timestamp"))
    return float("inf") if timestamp is None else timestamp


def _reason(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("reason") or error.get("type") or error)
    return str(error)


# -- rule statistics ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleStats:
    """Triage outcome of one rule's alerts; precision counts benign positives as true detections."""

    rule_id: str
    rule_name: str
    alerts: int
    triaged: int
    true_positives: int
    benign_positives: int
    false_positives: int
    median_time_to_triage_seconds: float | None
    min_precision: float

    @property
    def triaged_share(self) -> float:
        return self.triaged / self.alerts if self.alerts else 0.0

    @property
    def verdicts(self) -> int:
        return self.true_positives + self.benign_positives + self.false_positives

    @property
    def precision(self) -> float | None:
        """(TP + BP) / (TP + BP + FP); None until some alert of the rule has a verdict."""
        if not self.verdicts:
            return None
        return (self.true_positives + self.benign_positives) / self.verdicts

    @property
    def flagged(self) -> bool:
        """Under the precision bar (a rule without verdicts is not flagged: there is nothing to judge yet)."""
        precision = self.precision
        return precision is not None and precision < self.min_precision

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "triaged_share": round(self.triaged_share, 4),
            "precision": None if self.precision is None else round(self.precision, 4),
            "flagged": self.flagged,
        }


def alert_filters(since_seconds: int | None) -> list[dict[str, Any]]:
    """Alerts (``event.kind: alert``) newer than ``since_seconds`` when given: what every statistic starts from."""
    filters: list[dict[str, Any]] = [{"term": {"event.kind": "alert"}}]
    if since_seconds is not None:
        filters.append(since_filter(since_seconds))
    return filters


def older_request(since_seconds: int, rule_id: str | None = None) -> dict[str, Any]:
    """Search body: the alerts (of ``rule_id`` when given) older than the window, counted, with the newest one's
    ``@timestamp``; asked only when the window held none."""
    filters = [*alert_filters(None), before_filter(since_seconds)]
    if rule_id is not None:
        filters.append({"term": {"rule.id": rule_id}})
    return {
        "size": 0,
        "track_total_hits": True,
        "query": {"bool": {"filter": filters}},
        "aggs": {"newest": {"max": {"field": "@timestamp"}}},
    }


def stats_request(since_seconds: int | None) -> dict[str, Any]:
    """Search body (no hits, only aggregations) for :func:`rule_stats`: per rule, alerts, triaged and verdicts."""
    return {
        "size": 0,
        "track_total_hits": True,
        "query": {"bool": {"filter": alert_filters(since_seconds)}},
        "aggs": {
            "rules": {
                "terms": {"field": "rule.id", "size": MAX_RULES, "order": {"_count": "desc"}},
                "aggs": {
                    "name": {"terms": {"field": "rule.name", "size": 1}},
                    "triaged": {
                        "filter": {"terms": {STATUS_FIELD: list(TRIAGED)}},
                        "aggs": {"time_to_triage": {"percentiles": {"field": TIME_TO_TRIAGE_FIELD, "percents": [50]}}},
                    },
                    "verdicts": {
                        "filter": {"term": {STATUS_FIELD: "closed"}},
                        "aggs": {"reason": {"terms": {"field": REASON_FIELD, "size": len(REASONS) + 1}}},
                    },
                },
            }
        },
    }


def rule_stats(response: dict[str, Any], min_precision: float) -> list[RuleStats]:
    """:class:`RuleStats` per rule from the response to :func:`stats_request`, most alerts first."""
    result = []
    for bucket in response.get("aggregations", {}).get("rules", {}).get("buckets", []):
        names = bucket.get("name", {}).get("buckets", [])
        reasons = {b["key"]: b["doc_count"] for b in bucket.get("verdicts", {}).get("reason", {}).get("buckets", [])}
        triaged = bucket.get("triaged", {})
        result.append(
            RuleStats(
                rule_id=str(bucket["key"]),
                rule_name=str(names[0]["key"]) if names else "",
                alerts=int(bucket["doc_count"]),
                triaged=int(triaged.get("doc_count", 0)),
                true_positives=int(reasons.get("true_positive", 0)),
                benign_positives=int(reasons.get("benign_positive", 0)),
                false_positives=int(reasons.get("false_positive", 0)),
                median_time_to_triage_seconds=_median(triaged.get("time_to_triage", {})),
                min_precision=min_precision,
            )
        )
    return result


def _median(percentiles: dict[str, Any]) -> float | None:
    values = percentiles.get("values", {})
    value = values.get("50.0", values.get("50"))
    return None if value is None else float(value)


def overall_precision(stats: Iterable[RuleStats]) -> float | None:
    """Precision over all verdicts of all rules (None without verdicts)."""
    rows = list(stats)
    verdicts = sum(row.verdicts for row in rows)
    if not verdicts:
        return None
    return sum(row.true_positives + row.benign_positives for row in rows) / verdicts


# -- shadow rules ---------------------------------------------------------------------------------------------------

EXCEPTION_FIELD = "abusewatch.exception.id"
IDENTITY_FIELD = "abusewatch.identity_key"
LAST_SEEN_FIELD = "abusewatch.last_seen"
COUNT_FIELD = "abusewatch.count"
MAX_EXCEPTIONS = 20  # exception ids listed per rule; the alerts of any others are counted together
TOP_IDENTITIES = 5
# Distinct counts (cardinality) are exact up to about this many values per rule, approximate (HyperLogLog++) above.
DISTINCT_PRECISION = 3000
DISTINCT_FIELDS = {
    "identities": IDENTITY_FIELD,
    "users": "user.id",
    "api_keys": "abusewatch.api_key_hash",
    "source_ips": "source.ip",
    "related_users": "related.user",  # a campaign alert names every member here, its own identity is one of them
}


@dataclass(frozen=True, slots=True)
class ShadowRuleStats:
    """What one rule wrote to the shadow alerts over a period, and to the queue (the alerts index) beside it.

    ``in_test`` alerts come from the rule's status (``test``: shadow mode), ``suppressed`` ones from an alert
    exception (``exceptions``: id -> alerts, the ``MAX_EXCEPTIONS`` largest; ``other_exceptions``: the alerts of any
    others). ``per_day`` holds the UTC days with alerts only. ``queue_alerts`` are the rule's alerts in the alerts
    index over the same period: a rule promoted mid-period, or a stable rule an exception partly suppressed.
    """

    rule_id: str
    rule_name: str
    shadow_alerts: int
    detections: int
    in_test: int
    suppressed: int
    exceptions: dict[str, int]
    other_exceptions: int
    identities: int
    users: int
    api_keys: int
    source_ips: int
    related_users: int
    first_seen: str | None
    last_seen: str | None
    per_day: dict[str, int]
    top_identities: list[tuple[str, int]]
    queue_alerts: int
    period_days: float | None

    @property
    def alerts_per_day(self) -> float | None:
        """Shadow alerts per day over the whole period (None without a period)."""
        return self.shadow_alerts / self.period_days if self.period_days else None

    @property
    def peak_day(self) -> int:
        return max(self.per_day.values(), default=0)

    @property
    def why(self) -> str:
        """``test``, ``exception`` or both: why the rule's alerts went to the shadow index."""
        return " + ".join(reason for reason, count in (("test", self.in_test), ("exception", self.suppressed)) if count)

    def as_dict(self) -> dict[str, Any]:
        per_day = self.alerts_per_day
        return {
            **asdict(self),
            "top_identities": [{"identity_key": key, "alerts": count} for key, count in self.top_identities],
            "why": self.why,
            "alerts_per_day": None if per_day is None else round(per_day, 2),
            "peak_day": self.peak_day,
            "days_with_alerts": len(self.per_day),
        }


def shadow_request(
    since_seconds: int | None, shadow_index: str, alerts_index: str, rule_id: str | None = None
) -> dict[str, Any]:
    """Search body for :func:`shadow_stats`, sent to both indices at once (``shadow_index,alerts_index``).

    Per rule (shadow alerts first): in a filter on the shadow index, the figures a promotion is judged on; in a
    filter on the alerts index, the count of queue alerts. ``_index`` matches a data stream's name, an alias or an
    index, so the filters hold whatever the targets are; both indices hold alerts only (``event.kind: alert``).
    """
    filters = alert_filters(since_seconds)
    if rule_id is not None:
        filters.append({"term": {"rule.id": rule_id}})
    distinct = {
        name: {"cardinality": {"field": field, "precision_threshold": DISTINCT_PRECISION}}
        for name, field in DISTINCT_FIELDS.items()
    }
    shadow_aggs = {
        "name": {"terms": {"field": "rule.name", "size": 1}},
        "detections": {"sum": {"field": COUNT_FIELD}},
        "suppressed": {
            "filter": {"exists": {"field": EXCEPTION_FIELD}},
            "aggs": {"exceptions": {"terms": {"field": EXCEPTION_FIELD, "size": MAX_EXCEPTIONS}}},
        },
        **distinct,
        "first_seen": {"min": {"field": "@timestamp"}},
        "last_timestamp": {"max": {"field": "@timestamp"}},
        "last_seen": {"max": {"field": LAST_SEEN_FIELD}},
        "per_day": {
            "date_histogram": {
                "field": "@timestamp",
                "calendar_interval": "1d",
                "min_doc_count": 1,
                "format": "yyyy-MM-dd",
            }
        },
        "top_identities": {"terms": {"field": IDENTITY_FIELD, "size": TOP_IDENTITIES}},
    }
    return {
        "size": 0,
        "track_total_hits": True,
        "query": {"bool": {"filter": filters}},
        "aggs": {
            "rules": {
                "terms": {"field": "rule.id", "size": MAX_RULES, "order": [{"shadow": "desc"}, {"_key": "asc"}]},
                "aggs": {
                    "shadow": {"filter": {"term": {"_index": shadow_index}}, "aggs": shadow_aggs},
                    "queue": {"filter": {"term": {"_index": alerts_index}}},
                },
            }
        },
    }


def shadow_stats(response: dict[str, Any], since_seconds: int | None) -> list[ShadowRuleStats]:
    """:class:`ShadowRuleStats` per rule with shadow alerts, most first, from the response to
    :func:`shadow_request`; rules with queue alerts only are left out."""
    result = []
    for bucket in response.get("aggregations", {}).get("rules", {}).get("buckets", []):
        shadow = bucket.get("shadow", {})
        alerts = int(shadow.get("doc_count", 0))
        if not alerts:
            continue
        suppressed = shadow.get("suppressed", {})
        exceptions = suppressed.get("exceptions", {})
        names = shadow.get("name", {}).get("buckets", [])
        last = [_epoch(shadow.get(name, {})) for name in ("last_timestamp", "last_seen")]
        known_last = [time for time in last if time is not None]
        first = _epoch(shadow.get("first_seen", {}))
        distinct = {name: int(shadow.get(name, {}).get("value") or 0) for name in DISTINCT_FIELDS}
        result.append(
            ShadowRuleStats(
                rule_id=str(bucket["key"]),
                rule_name=str(names[0]["key"]) if names else "",
                shadow_alerts=alerts,
                detections=int(shadow.get("detections", {}).get("value") or 0),
                in_test=alerts - int(suppressed.get("doc_count", 0)),
                suppressed=int(suppressed.get("doc_count", 0)),
                exceptions={str(b["key"]): int(b["doc_count"]) for b in exceptions.get("buckets", [])},
                other_exceptions=int(exceptions.get("sum_other_doc_count", 0)),
                identities=distinct["identities"],
                users=distinct["users"],
                api_keys=distinct["api_keys"],
                source_ips=distinct["source_ips"],
                related_users=distinct["related_users"],
                first_seen=None if first is None else iso_time(first),
                last_seen=iso_time(max(known_last)) if known_last else None,
                per_day={_day(b): int(b["doc_count"]) for b in shadow.get("per_day", {}).get("buckets", [])},
                top_identities=[
                    (str(b["key"]), int(b["doc_count"])) for b in shadow.get("top_identities", {}).get("buckets", [])
                ],
                queue_alerts=int(bucket.get("queue", {}).get("doc_count", 0)),
                period_days=None if since_seconds is None else since_seconds / 86400,
            )
        )
    return result


def _epoch(metric: dict[str, Any]) -> float | None:
    """Epoch seconds of a min / max aggregation on a date (milliseconds; None when no alert had the field)."""
    value = metric.get("value")
    return None if value is None else float(value) / 1000


def _day(bucket: dict[str, Any]) -> str:
    """The UTC day of a daily histogram bucket: its ``key_as_string``, else from its key (epoch milliseconds)."""
    return str(bucket.get("key_as_string") or iso_time(float(bucket["key"]) / 1000)[:10])


# -- Elasticsearch --------------------------------------------------------------------------------------------------


def search(client: Elasticsearch, index: str, **request: Any) -> dict[str, Any]:
    """``client.search`` on the alerts ``index``; a name that matches nothing is an error, not an empty answer (a
    misspelt index once gave an empty ``rules stats`` and exit 0, which a pipeline gate would pass)."""
    try:
        return dict(client.search(index=index, **request))
    except NotFoundError as error:
        if error.error != "index_not_found_exception":
            raise
        raise TriageError(
            f"no index or data stream {index} in Elasticsearch: check elasticsearch.alerts_index "
            "(ABW_ELASTICSEARCH__ALERTS_INDEX), or run abusewatch bootstrap"
        ) from None


def search_alerts(client: Elasticsearch, index: str, query: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """Alert hits (``_id``, ``_index``, ``_source``), newest first."""
    response = search(client, index, query=query, size=limit, sort=[{"@timestamp": {"order": "desc"}}])
    return list(response["hits"]["hits"])


def find_alerts(client: Elasticsearch, index: str, alert_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Alert id -> hit (with ``_seq_no``/``_primary_term``) for the ids that exist; works on data streams too."""
    if not alert_ids:
        return {}
    response = search(
        client, index, query={"ids": {"values": list(alert_ids)}}, size=len(alert_ids), seq_no_primary_term=True
    )
    return {hit["_id"]: hit for hit in response["hits"]["hits"]}


def get_alert(client: Elasticsearch, index: str, alert_id: str) -> dict[str, Any]:
    """The alert hit; :class:`TriageError` if there is none with that id."""
    found = find_alerts(client, index, [alert_id]).get(alert_id)
    if found is None:
        raise TriageError(f"no alert with id {alert_id} in {index}")
    return found


def linked_events(
    client: Elasticsearch, index: str, event_ids: Sequence[str], window: tuple[float, float] | None
) -> list[LinkedEvent]:
    """Per event id of an alert, its documents in the events index nearest the alert's ``window`` in time
    (:func:`alert_window`; the present without one), at most ``DOCUMENTS_PER_EVENT_ID`` each, in one ``msearch``.
    Searched by ``event.id``, not ``_id`` (``event.hash``, which also hashes the content): a request id a client
    reused has a document per request, and those from long before or after the alert must not crowd out the one it
    is about."""
    if not event_ids:
        return []
    if window is None:
        now = datetime.now(tz=UTC).timestamp()
        window = (now, now)
    response = client.msearch(index=index, searches=linked_event_searches(event_ids, window), ignore_unavailable=True)
    return nearest_linked_events(event_ids, list(response["responses"]), window)


def set_status(
    client: Elasticsearch,
    index: str,
    alert_ids: Sequence[str],
    status: Status,
    *,
    by: str,
    reason: Reason | None = None,
    note: str | None = None,
    now: float | None = None,
) -> list[Change]:
    """Move every alert in ``alert_ids`` to ``status``; returns what was changed, in order.

    All ids are checked first: if one is unknown, or its status refuses the move, nothing is changed and
    :class:`TriageError` names the ids. An alert that another analyst triages (or the stream reopens) while this
    runs is not changed; the error then names it and says which alerts were changed before it and which were not.
    """
    if status == "closed" and reason is None:
        raise TriageError("closing an alert needs a reason: " + ", ".join(REASONS))
    unique_ids = list(dict.fromkeys(alert_ids))
    found = find_alerts(client, index, unique_ids)
    unknown = [alert_id for alert_id in unique_ids if alert_id not in found]
    if unknown:
        raise TriageError(f"no alert with id {', '.join(unknown)} in {index}; nothing was changed")
    for alert_id, hit in found.items():
        try:
            check_transition(hit["_source"], status)
        except TriageError as error:
            raise TriageError(f"alert {alert_id}: {error}; nothing was changed") from None
    changes: list[Change] = []
    for position, alert_id in enumerate(unique_ids):
        try:
            changes.append(_update(client, found[alert_id], status, by=by, reason=reason, note=note, now=now))
        except TriageError as error:
            changed = ", ".join(change.alert_id for change in changes) or "none"
            raise TriageError(f"{error}; changed: {changed}; not changed: {', '.join(unique_ids[position:])}") from None
    return changes


def _update(
    client: Elasticsearch,
    hit: dict[str, Any],
    status: Status,
    *,
    by: str,
    reason: Reason | None,
    note: str | None,
    now: float | None,
) -> Change:
    """Partial update of one alert in its concrete index. After a concurrent write (409) the alert is read again by
    id, in real time: a stream re-write (same verdict) is retried on it; another verdict stops the update."""
    seen = verdict(hit["_source"])
    for attempt in range(1, UPDATE_ATTEMPTS + 1):
        at = datetime.now(tz=UTC).timestamp() if now is None else now
        doc = triage_update(hit["_source"], status, by=by, now=at, reason=reason, note=note)
        try:
            client.update(
                index=hit["_index"],
                id=hit["_id"],
                doc=doc,
                if_seq_no=hit["_seq_no"],
                if_primary_term=hit["_primary_term"],
                refresh="wait_for",
            )
        except ApiError as error:
            if error.status_code != 409:
                raise
            hit = dict(client.get(index=hit["_index"], id=hit["_id"]))
            if verdict(hit["_source"]) != seen:
                raise TriageError(
                    f"alert {hit['_id']} was {describe(hit['_source'])} while this command ran, so its verdict "
                    "was not replaced: look at it (alerts show), then run the command again to replace it"
                ) from None
            time.sleep(RETRY_PAUSE_S * attempt)
            continue
        replaced = describe(hit["_source"]) if seen["status"] == "closed" and status == "closed" else None
        return Change(hit["_id"], doc, replaced)
    raise TriageError(f"alert {hit['_id']} kept changing while being updated; try again")
