"""Alert hygiene: group detections into few, rich alerts and keep an entity risk score per identity.

Detections of one rule for one identity within a tumbling event-time window become ONE alert, updated in place:
its id is derived from (rule, identity, window start), so a replay, a redelivery or a restarted worker all write
the same id. Repeats escalate the severity. Every alert adds to its identity's risk score, which decays with a
half-life; crossing the threshold raises an alert of its own, once, until the score has decayed below half the
threshold again. All times are event times.

Groups whose windows are long over are forgotten (two windows behind the newest detection). Known limit: a
detection of a forgotten window (a shipper delayed by hours) re-opens its group under the same id with a count of
one, and the sink's partial update overwrites the grown alert with it. Giving such detections an alert of their own
was tried (session 8) and reverted: whether a detection counts as late depends on the order records arrive in,
which differs between raw partitions, so the stream would no longer write exactly what replay writes.

A detection that an alert exception suppresses (detectors/exceptions.py) is grouped apart, under a key that names
the exception, and adds nothing to the risk score; its alert document carries ``abusewatch.exception`` and is
marked ``shadow``, so the pipeline routes it to the shadow alerts. A risk alert goes through the exceptions too,
like any detection of rule ``abusewatch-entity-risk`` (its category is that of the identity's top contributions).

Groups outlive their batch, and detectors name events of earlier batches, so a detection is masked with its
events' sensitive values before a group keeps it, and event ids that held such a value are remembered masked
(keyed hashes of the raw ids, bounded) to mask them again when a later detection names them.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from detectors.base import LEVELS, Detection, Evidence, RuleInfo, SensitiveValue
from detectors.documents import alert_document, iso_time
from detectors.exceptions import AlertException
from detectors.redact import Redactor, substitute


class AlertPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Tunables; defaults suit a SOC queue (one alert per rule per identity per hour)."""

    window_seconds: float = 3600.0
    max_event_ids: int = 50
    max_evidence: int = 5
    escalate_at: tuple[int, ...] = (5, 25)  # repeats in one window that raise the level one step each
    risk_half_life_seconds: float = 24 * 3600.0
    risk_threshold: float = 200.0
    risk_weight: dict[str, float] = msgspec.field(
        default_factory=lambda: {"informational": 0.0, "low": 5.0, "medium": 20.0, "high": 50.0, "critical": 100.0}
    )


RISK_RULE_ID = "abusewatch-entity-risk"
CAMPAIGN_RISK_RULE_ID = "abusewatch-entity-risk-campaign"  # the campaign stage's own: never one id with the above
RISK_RULE_IDS = frozenset({RISK_RULE_ID, CAMPAIGN_RISK_RULE_ID})
RISK_RULE_NAMES = {
    RISK_RULE_ID: "Identity risk score over threshold",
    CAMPAIGN_RISK_RULE_ID: "Identity risk score over threshold (campaigns)",
}
RISK_RULE_DESCRIPTIONS = {
    RISK_RULE_ID: "Alerts on this identity add up (with decay) past the risk threshold.",
    CAMPAIGN_RISK_RULE_ID: "Campaign alerts charged to this identity add up (with decay) past the risk threshold.",
}
MAX_RELATED = 64  # related users, and related IPs, an alert names (first seen kept)
MAX_RISK_MAPPING = 16  # ATLAS techniques, and OWASP entries, a risk score keeps per category
MAX_MASKED_IDS = 10_000  # event ids that held a flagged value, remembered masked (rare: bounded, oldest forgotten)


@dataclass(slots=True)
class _Group:
    detection: Detection
    count: int
    first_seen: float
    last_seen: float
    event_ids: list[str]
    evidence: list[Evidence]
    score: float
    exception: tuple[str, str] | None = None  # (id, reason) of the exception that suppresses the group
    related_users: list[str] = field(default_factory=list)  # union over the group's detections, first seen first
    related_ips: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Risk:
    score: float = 0.0
    updated: float = 0.0
    armed: bool = True  # a risk alert fires when armed; re-armed once the score decays below half the bar
    contributions: dict[str, float] = field(default_factory=dict)
    # category -> (ATLAS ids, OWASP ids) of the detections that added to it, so the risk alert maps its top category
    mappings: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)


class AlertGrouper:
    """Turns a batch's detections into alert documents, merging repeats within the window.

    ``risk_rule_id`` is the rule of the risk alerts it raises: two groupers that keep risk scores for the same
    identities (an identity partition's, the campaign stage's) raise them under different rules, so never under one
    alert id.
    """

    def __init__(
        self, redactor: Redactor, policy: AlertPolicy | None = None, *, risk_rule_id: str = RISK_RULE_ID
    ) -> None:
        if risk_rule_id not in RISK_RULE_IDS:
            raise ValueError(f"not a risk rule: {risk_rule_id}")
        self.redactor = redactor
        self.policy = policy or AlertPolicy()
        self.risk_rule_id = risk_rule_id
        self._groups: dict[str, _Group] = {}
        self._risk: dict[str, _Risk] = {}
        self._id_key = redactor.derive_key("masked event ids")
        # keyed hash of an event id that held a flagged value -> the id masked: detectors keep event ids in their
        # state and may name them in a later batch's detection, when that batch's values no longer cover them
        self._masked_ids: OrderedDict[str, str] = OrderedDict()
        # the newest detection time grouped: groups and risk scores older than their horizon before it are over,
        # judged before each detection (not once a batch), so a detection hours late meets the same groups
        # whichever batch it came in
        self._newest = -math.inf

    def alerts(
        self,
        detections: list[Detection],
        sensitive: dict[str, list[SensitiveValue]],
        judge: Callable[[Detection], AlertException | None] | None = None,
        suppressed: list[tuple[Detection, AlertException]] | None = None,
        judge_risk: Callable[[Detection, Detection], AlertException | None] | None = None,
        amendments: list[Detection] | None = None,
    ) -> list[tuple[Detection, dict[str, Any]]]:
        """Alert documents for the groups this batch touched, each in its latest state. ``detections`` are taken in
        the order given (a pipeline gives them in the order their events arrived, so the result does not depend on
        how the stream was cut into batches).


        ``judge`` names the exception that suppresses a detection, if any (e.g. ``ExceptionList.match``): each of
        ``detections`` goes through it, and so does each risk alert the batch raises, unless ``judge_risk`` is
        given: it judges a risk alert together with the detection that raised it (a campaign's risk alert is
        judged on the campaign's identities, not on the one member it is charged to). A suppressed one is grouped
        apart and appended, with its exception, to ``suppressed``.

        ``amendments`` are later versions of detections already grouped (a campaign window that alerted, naming
        the members that arrived after it closed), taken after ``detections``: one whose group is open widens it
        without counting as a repeat, adding to a risk score or to ``suppressed``, so the alert keeps its id, count
        and severity; one whose group is not (forgotten, or it was suppressed and no longer is) is a detection.
        """
        self._remember_masked_ids(sensitive)
        touched: dict[str, None] = {}
        for detection in detections:
            self._take(detection, sensitive, touched, judge, suppressed, judge_risk)
            self._newest = max(self._newest, detection.timestamp)
        for detection in amendments or ():
            exception = judge(detection) if judge is not None else None
            if self._open_group(self._key(detection, exception)) is not None:
                touched[self._add(detection, sensitive, exception, repeat=False)] = None
            else:
                self._take(detection, sensitive, touched, judge, suppressed, judge_risk)
            self._newest = max(self._newest, detection.timestamp)
        rendered = [self._render(key, sensitive) for key in touched]
        self._expire()
        return rendered

    def _take(
        self,
        detection: Detection,
        sensitive: dict[str, list[SensitiveValue]],
        touched: dict[str, None],
        judge: Callable[[Detection], AlertException | None] | None,
        suppressed: list[tuple[Detection, AlertException]] | None,
        judge_risk: Callable[[Detection, Detection], AlertException | None] | None,
    ) -> None:
        """Group one detection and the risk alert it raises, if any, marking the groups in ``touched``."""
        exception = _judge(detection, judge, suppressed)
        touched[self._add(detection, sensitive, exception)] = None
        if exception is not None:
            return  # a suppressed detection adds nothing to the risk score
        risk = self._add_risk(detection)
        if risk is not None:
            risk_judge = judge if judge_risk is None else lambda risk, cause=detection: judge_risk(risk, cause)
            touched[self._add(risk, sensitive, _judge(risk, risk_judge, suppressed))] = None

    def _key(self, detection: Detection, exception: AlertException | None) -> str:
        """The group of ``detection``: apart from the unsuppressed one when an exception suppresses it."""
        key = self._group_key(detection)
        return key if exception is None else f"{key}\x1fexception:{exception.id}"

    def _add(
        self,
        detection: Detection,
        sensitive: dict[str, list[SensitiveValue]],
        exception: AlertException | None = None,
        *,
        repeat: bool = True,
    ) -> str:
        """Group ``detection``; into an open group it counts as one more detection unless not a ``repeat`` (an
        amendment of one already counted). Returns the group's key."""
        key = self._key(detection, exception)
        detection = self._scrubbed(detection, sensitive)
        group = self._open_group(key)
        if group is None:
            self._groups[key] = _Group(
                detection=detection,
                count=1,
                first_seen=detection.timestamp,
                last_seen=detection.timestamp,
                event_ids=list(detection.event_ids[: self.policy.max_event_ids]),
                evidence=list(detection.evidence[: self.policy.max_evidence]),
                score=detection.score,
                exception=(exception.id, exception.reason) if exception is not None else None,
                related_users=_union([], detection.related_users),
                related_ips=_union([], detection.related_ips),
            )
            return key
        group.count += int(repeat)
        group.first_seen = min(group.first_seen, detection.timestamp)
        group.last_seen = max(group.last_seen, detection.timestamp)
        for event_id in detection.event_ids:
            if len(group.event_ids) >= self.policy.max_event_ids:
                break
            if event_id not in group.event_ids:
                group.event_ids.append(event_id)
        room = self.policy.max_evidence - len(group.evidence)
        group.evidence.extend(detection.evidence[: max(0, room)])
        group.score = max(group.score, detection.score)
        group.related_users = _union(group.related_users, detection.related_users)
        group.related_ips = _union(group.related_ips, detection.related_ips)
        if _widens(group.detection, detection) or (not repeat and _covers(detection, group.detection)):
            group.detection = detection  # campaign alerts: the latest list of identities is the fullest
        return key

    def _scrubbed(self, detection: Detection, sensitive: dict[str, list[SensitiveValue]]) -> Detection:
        """``detection`` with the sensitive values of its events masked, before a group keeps any of it: a group
        outlives its batch, and is rendered again (and checkpointed) when only later batches' values are known. Its
        ``raised_by`` is dropped: it only ordered the batch, and it names an event the masked ids do not cover."""
        if detection.raised_by is not None:
            detection = msgspec.structs.replace(detection, raised_by=None)
        values = [value for event_id in detection.event_ids for value in sensitive.get(event_id, ())]
        known = [(event_id, masked) for event_id in detection.event_ids if (masked := self._masked_id(event_id))]
        if not values and not known:
            return detection
        scrubbed = self.redactor.scrub(msgspec.to_builtins(detection), values)
        return msgspec.convert(substitute(scrubbed, sorted(known, key=lambda pair: -len(pair[0]))), Detection)

    def _remember_masked_ids(self, sensitive: dict[str, list[SensitiveValue]]) -> None:
        """Remember, masked, the ids of this batch's events that hold one of their own sensitive values."""
        for event_id, values in sensitive.items():
            masked = self.redactor.scrub(event_id, values) if values else event_id
            if masked != event_id:
                hashed = self._hashed_id(event_id)
                self._masked_ids[hashed] = masked
                self._masked_ids.move_to_end(hashed)
        while len(self._masked_ids) > MAX_MASKED_IDS:
            self._masked_ids.popitem(last=False)

    def _masked_id(self, event_id: str) -> str | None:
        return self._masked_ids.get(self._hashed_id(event_id)) if self._masked_ids else None

    def _hashed_id(self, event_id: str) -> str:
        """Keyed, so that the raw id (which holds a secret) is never kept, in memory or in a checkpoint."""
        encoded = event_id.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(encoded, key=self._id_key, digest_size=16).hexdigest()

    def _group_key(self, detection: Detection) -> str:
        window = math.floor(detection.timestamp / self.policy.window_seconds) * self.policy.window_seconds
        subject = detection.group_key or detection.identity.key()
        return f"{detection.rule.id}\x1f{subject}\x1f{window:.0f}"

    def _add_risk(self, detection: Detection) -> Detection | None:
        """Add ``detection`` to its identity's risk score; the risk alert, when the score crosses the threshold."""
        if detection.rule.id in RISK_RULE_IDS or detection.rule.status == "test":
            return None
        identity_key = detection.identity.key()
        risk = self._risk.get(identity_key)
        if risk is None or risk.updated < self._risk_horizon:
            risk = self._risk[identity_key] = _Risk(updated=detection.timestamp)
        elapsed = max(0.0, detection.timestamp - risk.updated)
        decay = 0.5 ** (elapsed / self.policy.risk_half_life_seconds)
        risk.score *= decay
        for category in risk.contributions:
            risk.contributions[category] *= decay
        added = self.policy.risk_weight[detection.rule.level] * detection.score
        risk.score += added
        category = detection.rule.category
        risk.contributions[category] = risk.contributions.get(category, 0.0) + added
        atlas, owasp = risk.mappings.get(category, ([], []))
        risk.mappings[category] = (
            _union(atlas, detection.rule.atlas, MAX_RISK_MAPPING),
            _union(owasp, detection.rule.owasp, MAX_RISK_MAPPING),
        )
        risk.updated = max(risk.updated, detection.timestamp)
        if risk.score < self.policy.risk_threshold / 2:
            risk.armed = True
        if risk.score < self.policy.risk_threshold or not risk.armed:
            return None
        risk.armed = False
        top = max(risk.contributions, key=risk.contributions.__getitem__)
        atlas, owasp = risk.mappings.get(top, ([], []))  # none for a category restored from an older checkpoint
        return Detection(
            rule=RuleInfo(
                id=self.risk_rule_id,
                name=RISK_RULE_NAMES[self.risk_rule_id],
                category=top,  # type: ignore[arg-type]
                level="high",
                description=RISK_RULE_DESCRIPTIONS[self.risk_rule_id],
                atlas=tuple(atlas),
                owasp=tuple(owasp),
            ),
            event_ids=list(detection.event_ids),
            timestamp=detection.timestamp,
            identity=detection.identity,
            message=f"Risk score of {identity_key} reached {risk.score:.0f} (mostly {top})",
            score=1.0,
            explanation={k: round(v, 1) for k, v in sorted(risk.contributions.items())},
        )

    def _render(self, key: str, sensitive: dict[str, list[SensitiveValue]]) -> tuple[Detection, dict[str, Any]]:
        group = self._groups[key]
        detection = group.detection
        merged = msgspec.structs.replace(
            detection,
            rule=self._escalated(detection.rule, group.count),
            event_ids=group.event_ids,
            evidence=group.evidence,
            score=group.score,
            timestamp=group.first_seen,
            group_key=key,
            related_users=group.related_users,
            related_ips=group.related_ips,
        )
        values = [value for event_id in group.event_ids for value in sensitive.get(event_id, ())]
        document = alert_document(merged, self.redactor, values, count=group.count)
        document["abusewatch"]["last_seen"] = iso_time(group.last_seen)
        if group.count > 1:
            document["message"] = f"{detection.message} (x{group.count} in this window)"
        if group.exception is not None:
            exception_id, reason = group.exception
            document["abusewatch"]["exception"] = {"id": exception_id, "reason": reason}
            document["abusewatch"]["shadow"] = True
        return merged, document

    def _escalated(self, rule: RuleInfo, count: int) -> RuleInfo:
        steps = sum(1 for threshold in self.policy.escalate_at if count >= threshold)
        if steps == 0:
            return rule
        level = LEVELS[min(len(LEVELS) - 1, LEVELS.index(rule.level) + steps)]
        return msgspec.structs.replace(rule, level=level)

    @property
    def _group_horizon(self) -> float:
        """A group last seen before this is over."""
        return self._newest - 2 * self.policy.window_seconds

    @property
    def _risk_horizon(self) -> float:
        """A risk score last updated before this is over (decayed to under 0.4 % of itself)."""
        return self._newest - 8 * self.policy.risk_half_life_seconds

    def _open_group(self, key: str) -> _Group | None:
        """The group under ``key`` unless its window is long over (then it is forgotten)."""
        group = self._groups.get(key)
        if group is not None and group.last_seen < self._group_horizon:
            del self._groups[key]
            return None
        return group

    def _expire(self) -> None:
        """Forget groups and risk whose windows are long over, so memory stays bounded (what each detection would
        find over anyway, see ``_newest``)."""
        horizon, risk_horizon = self._group_horizon, self._risk_horizon
        for key in [k for k, g in self._groups.items() if g.last_seen < horizon]:
            del self._groups[key]
        for key in [k for k, r in self._risk.items() if r.updated < risk_horizon]:
            del self._risk[key]

    def state(self) -> dict[str, Any]:
        return {
            "groups": {key: _group_state(group) for key, group in self._groups.items()},
            "risk": {
                key: {
                    "score": risk.score,
                    "updated": risk.updated,
                    "armed": risk.armed,
                    "contributions": dict(risk.contributions),
                    "mappings": {category: list(pair) for category, pair in risk.mappings.items()},
                }
                for key, risk in self._risk.items()
            },
            "masked_ids": list(self._masked_ids.items()),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`; a state of an older version (no related lists or risk mappings) loads too."""
        self._groups = {key: _group_from_state(value) for key, value in state.get("groups", {}).items()}
        self._risk = {key: _risk_from_state(value) for key, value in state.get("risk", {}).items()}
        self._masked_ids = OrderedDict((str(key), str(masked)) for key, masked in state.get("masked_ids", []))
        self._newest = max((group.last_seen for group in self._groups.values()), default=-math.inf)

    def fresh(self) -> AlertGrouper:
        """A grouper with the same redactor, policy and risk rule, and no open groups."""
        return AlertGrouper(self.redactor, self.policy, risk_rule_id=self.risk_rule_id)

    def for_risk_rule(self, risk_rule_id: str) -> AlertGrouper:
        """A grouper with the same redactor and policy, no open groups, raising risk alerts as ``risk_rule_id``."""
        return AlertGrouper(self.redactor, self.policy, risk_rule_id=risk_rule_id)


def _judge(
    detection: Detection,
    judge: Callable[[Detection], AlertException | None] | None,
    suppressed: list[tuple[Detection, AlertException]] | None,
) -> AlertException | None:
    """The exception ``judge`` finds for ``detection``, recorded in ``suppressed``; None if it is not suppressed."""
    exception = judge(detection) if judge is not None else None
    if exception is not None and suppressed is not None:
        suppressed.append((detection, exception))
    return exception


def _union(kept: list[str], new: Any, cap: int = MAX_RELATED) -> list[str]:
    """``kept`` and then the values of ``new`` it lacks, in first-seen order, at most ``cap`` of them."""
    merged = list(kept)
    for value in new:
        if len(merged) >= cap:
            break
        if value not in merged:
            merged.append(value)
    return merged


def _covers(new: Detection, current: Detection) -> bool:
    """Whether ``new`` names every related identity ``current`` names (it may name more)."""
    return set(new.related_users) >= set(current.related_users) and set(new.related_ips) >= set(current.related_ips)


def _widens(current: Detection, new: Detection) -> bool:
    """Whether ``new`` names more related identities than ``current`` and drops none (a campaign that grew).

    Only then does a repeat replace a group's detection (an amendment, a later version of the same detection,
    replaces it if it drops none): a repeat naming the same identities keeps the first one, so the alert's message
    and explanation stay those of its first detection. (An alert is updated in place in Elasticsearch with a
    partial update, which merges objects: an explanation that changed between writes would be stored as the union
    of both; an amendment's has the same fields, and more.)
    """
    return _covers(new, current) and not _covers(current, new)


def _group_state(group: _Group) -> dict[str, Any]:
    return {
        "detection": msgspec.to_builtins(group.detection),
        "count": group.count,
        "first_seen": group.first_seen,
        "last_seen": group.last_seen,
        "event_ids": group.event_ids,
        "evidence": msgspec.to_builtins(group.evidence),
        "score": group.score,
        "exception": list(group.exception) if group.exception is not None else None,
        "related_users": group.related_users,
        "related_ips": group.related_ips,
    }


def _group_from_state(value: dict[str, Any]) -> _Group:
    detection = msgspec.convert(value["detection"], Detection)
    return _Group(
        detection=detection,
        count=value["count"],
        first_seen=value["first_seen"],
        last_seen=value["last_seen"],
        event_ids=list(value["event_ids"]),
        evidence=msgspec.convert(value["evidence"], list[Evidence]),
        score=value["score"],
        exception=(value["exception"][0], value["exception"][1]) if value.get("exception") else None,
        related_users=_union([], value.get("related_users", detection.related_users)),
        related_ips=_union([], value.get("related_ips", detection.related_ips)),
    )


def _risk_from_state(value: dict[str, Any]) -> _Risk:
    mappings = value.get("mappings", {})
    return _Risk(
        score=value["score"],
        updated=value["updated"],
        armed=value["armed"],
        contributions=dict(value["contributions"]),
        mappings={category: (list(pair[0]), list(pair[1])) for category, pair in mappings.items()},
    )
