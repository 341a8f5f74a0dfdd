"""Sigma correlation rules over the stream: ``event_count``, ``value_count``, ``temporal``, ``temporal_ordered``.

Correlation rules are Sigma 2.0 documents (parsed by pySigma) that reference base rules by id or ``name``. As a
product extension a reference may also be ``category:<name>`` (any rule of that alert category, e.g.
``category:prompt_injection``), so a correlation does not go stale when rules are added to the pack.

Evaluation runs on event time, per group (the ``group-by`` fields), on the events that matched a referenced rule;
state is bounded per group and in groups per pipeline (group-by values such as user ids are often the client's to
choose), and expires once older than the rule's timespan.
"""

from __future__ import annotations

import json
import logging
import math
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sigma.correlations import SigmaCorrelationConditionOperator, SigmaCorrelationRule, SigmaCorrelationType
from sigma.exceptions import SigmaError

from detectors.base import CATEGORIES, SEVERITY, Detection, Detector, Evidence, Findings, RuleInfo
from detectors.caps import Evictions, LeastRecentlyActive
from detectors.event import Event
from detectors.signatures.parse import SignatureRule
from detectors.signatures.ruleset import RuleFilesWatcher, one_rule_per_id, rule_files_by_directory

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).resolve().parent / "correlations"
CATEGORY_PREFIX = "category:"
_OPERATORS: dict[SigmaCorrelationConditionOperator, Callable[[int, int], bool]] = {
    SigmaCorrelationConditionOperator.GTE: operator.ge,
    SigmaCorrelationConditionOperator.GT: operator.gt,
    SigmaCorrelationConditionOperator.EQ: operator.eq,
    SigmaCorrelationConditionOperator.LTE: operator.le,
    SigmaCorrelationConditionOperator.LT: operator.lt,
}
_SUPPORTED = {
    SigmaCorrelationType.EVENT_COUNT,
    SigmaCorrelationType.VALUE_COUNT,
    SigmaCorrelationType.TEMPORAL,
    SigmaCorrelationType.TEMPORAL_ORDERED,
}
MAX_EVENTS_PER_GROUP = 1000
DEFAULT_MAX_GROUPS = 100_000  # groups kept per pipeline (one pipeline per partition); see docs/scaling.md
# Partitions of a stream advance unevenly: a group is kept this long past its timespan (event time) so an identity
# whose partition lags behind the newest one still finds its window.
ALLOWED_LATENESS_S = 3600.0


class CorrelationError(ValueError):
    """A correlation rule that cannot be used; the message names the file and rule."""


def event_field(event: Event, name: str) -> str | None:
    """The value of an ECS field of the event that correlations group or count by."""
    identity = event.identity
    return {
        "user.id": identity.user_id,
        "source.ip": identity.source_ip,
        "session.id": identity.session_id,
        "organization.id": identity.organization_id,
        "user_agent.original": identity.user_agent,
        "abusewatch.api_key_hash": identity.api_key_hash,
        "abusewatch.team_id": identity.team_id,
        "abusewatch.identity_key": identity.key(),
        "service.name": event.service_name,
        "gen_ai.request.model": event.request_model,
        "gen_ai.provider.name": event.provider,
    }.get(name)


@dataclass(frozen=True, slots=True)
class Correlation:
    """A loaded correlation rule."""

    info: RuleInfo
    kind: SigmaCorrelationType
    references: tuple[str, ...]
    group_by: tuple[str, ...]
    timespan: float
    compare: Callable[[int, int], bool]
    threshold: int
    field: str | None

    def matches(self, rule_ids: Iterable[str], categories: Iterable[str], aliases: dict[str, str]) -> set[str]:
        """The references of this rule that an event's verdicts satisfy."""
        ids = set(rule_ids)
        cats = set(categories)
        satisfied = set()
        for reference in self.references:
            if reference.startswith(CATEGORY_PREFIX):
                if reference[len(CATEGORY_PREFIX) :] in cats:
                    satisfied.add(reference)
            elif aliases.get(reference, reference) in ids:
                satisfied.add(reference)
        return satisfied


def parse_correlation(document: dict[str, Any], origin: str) -> Correlation:
    title = f"{origin}: correlation rule '{document.get('title', '?')}'"
    try:
        rule = SigmaCorrelationRule.from_dict(document)
    except SigmaError as error:
        raise CorrelationError(f"{title}: {error}") from None
    if rule.type not in _SUPPORTED:
        raise CorrelationError(f"{title}: type {rule.type} is not supported (use {sorted(t.name for t in _SUPPORTED)})")
    if rule.timespan is None:
        raise CorrelationError(f"{title}: a timespan is required")
    product = (rule.custom_attributes or {}).get("abusewatch") or {}
    category = product.get("category") if isinstance(product, dict) else None
    if category not in CATEGORIES:
        raise CorrelationError(f"{title}: abusewatch.category must be one of {', '.join(CATEGORIES)}")
    level = rule.level.name.lower() if rule.level else "medium"
    if level not in SEVERITY:
        raise CorrelationError(f"{title}: unknown level {level}")
    condition = rule.condition
    if rule.type == SigmaCorrelationType.VALUE_COUNT and not (condition and condition.fieldref):
        raise CorrelationError(f"{title}: value_count needs condition.field")
    if condition and condition.fieldref is not None and not isinstance(condition.fieldref, str):
        raise CorrelationError(f"{title}: condition.field must be one field name")
    if not all(isinstance(field, str) for field in rule.group_by or ()):
        raise CorrelationError(f"{title}: group-by must list field names")
    tags = [str(tag) for tag in rule.tags]
    return Correlation(
        info=RuleInfo(
            id=str(rule.id) if rule.id else (rule.name or rule.title),
            name=rule.title,
            category=category,
            level=level,  # type: ignore[arg-type]
            description=rule.description or "",
            atlas=tuple(t.split(".", 1)[1].upper() for t in tags if t.startswith("atlas.")),
            owasp=tuple(f"{t.split('.', 1)[1].upper()}:2025" for t in tags if t.startswith("owasp.")),
            status=rule.status.name.lower() if rule.status else "stable",
        ),
        kind=rule.type,
        references=tuple(str(ref.reference) for ref in rule.rules),
        group_by=tuple(rule.group_by or ()),
        timespan=float(rule.timespan.seconds),
        compare=_OPERATORS[condition.op] if condition else operator.ge,
        threshold=condition.count if condition and condition.count is not None else 1,
        field=condition.fieldref if condition else None,
    )


def load_correlations(directories: Iterable[Path]) -> tuple[list[Correlation], list[str]]:
    """Every correlation document in the rule files under ``directories`` (other Sigma documents are skipped), plus
    the errors of what did not load; a file that does not load never stops the others.

    One rule per id, as for signature rules (the state of a rule is kept by its id): a rule of a later directory
    overrides an earlier directory's rule with the same id (a warning), and a second rule with an id already used
    in the same directory is an error (and, as any error, holds back a reload).
    """
    loaded: list[tuple[int, str, Path | None, Correlation]] = []
    errors: list[str] = []
    for layer, paths in enumerate(rule_files_by_directory(directories)):
        for path in paths:
            loaded.extend((layer, rule.info.id, path, rule) for rule in _file_correlations(path, errors))
    rules, duplicates = one_rule_per_id(loaded, "correlation rule")
    errors.extend(
        f"{path}: correlation rule id {rule.info.id} is already used by {kept}" for rule, path, kept in duplicates
    )
    return rules, errors


def _file_correlations(path: Path, errors: list[str]) -> list[Correlation]:
    """The correlation rules of one file; what cannot be read or parsed is appended to ``errors``."""
    try:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError) as error:
        errors.append(f"{path}: cannot read the file: {error}")
        return []
    except Exception as error:  # YAMLError, or a value PyYAML cannot build (date: 2026-13-01): this file's error
        errors.append(f"{path}: invalid YAML: {error}")
        return []
    rules = []
    for document in documents:
        if not (isinstance(document, dict) and "correlation" in document):
            continue
        try:
            rules.append(parse_correlation(document, str(path)))
        except CorrelationError as error:
            errors.append(str(error))
        except Exception as error:  # pySigma assumes well-typed fields: a hostile document must not stop the load
            title = str(document.get("title", "?"))[:200]
            errors.append(f"{path}: correlation rule '{title}': malformed: {type(error).__name__}: {error}"[:1000])
    return rules


def rule_aliases(rules: Iterable[SignatureRule]) -> dict[str, str]:
    """Sigma rule ``name`` -> rule id of the signature rules that have one: correlations may refer to either."""
    return {rule.sigma.name: rule.id for rule in rules if rule.sigma.name}


class CorrelationWatcher(RuleFilesWatcher[list[Correlation]]):
    """Reloads the correlation rules under rule directories when their files change (see
    :class:`~detectors.signatures.ruleset.RuleFilesWatcher`)."""

    kind = "correlation rule"

    def _load(self) -> tuple[list[Correlation], list[str]]:
        return load_correlations(self.directories)

    def _summary(self, loaded: list[Correlation]) -> str:
        return f"{len(loaded)} correlation rules"


@dataclass(slots=True)
class _Hit:
    timestamp: float
    event_id: str
    references: frozenset[str]
    value: str | None


GroupKey = tuple[str, tuple[str | None, ...]]  # (correlation rule id, group-by values)


def _group_order(key: GroupKey) -> tuple[str, tuple[tuple[bool, str], ...]]:
    """A total order on group keys (a missing value, ``None``, does not compare with strings), for ties."""
    rule_id, group = key
    return rule_id, tuple((value is not None, value or "") for value in group)


class CorrelationDetector(Detector):
    """Evaluates correlation rules on the verdicts earlier detectors recorded in each event's findings.

    Give it a :class:`CorrelationWatcher` to have the stream worker reload its rules (app/stream/reload.py), which
    swaps them in with :meth:`use_rules`.

    At most ``max_groups`` groups are kept (all rules together): past it, the group whose newest hit is oldest
    (event time, then key) is forgotten, one at a time, so what is kept never depends on how arrivals were batched
    (a group that expiry would already have dropped is always the first to go). ``evictions.count`` counts the groups
    forgotten this way since this detector was created or its state loaded (for a metric; not checkpointed).
    """

    name = "correlation"

    def __init__(
        self,
        correlations: Sequence[Correlation] | CorrelationWatcher,
        aliases: dict[str, str] | None = None,
        *,
        max_groups: int = DEFAULT_MAX_GROUPS,
    ) -> None:
        if max_groups < 1:
            raise ValueError("max_groups must be >= 1")
        self.watcher = correlations if isinstance(correlations, CorrelationWatcher) else None
        self.correlations = list(correlations.current if isinstance(correlations, CorrelationWatcher) else correlations)
        self.aliases = aliases or {}  # Sigma rule name -> rule id, so references by name resolve
        self.max_groups = max_groups
        self._groups: dict[GroupKey, list[_Hit]] = {}  # hits in time order (a list: a deque costs 760 bytes empty)
        self._references: dict[frozenset[str], frozenset[str]] = {}  # one copy of each set of references
        self._new_cap_state()
        self._newest = -math.inf  # the newest hit time seen
        self._expired_at = -math.inf  # the newest hit time when groups were last scanned for expiry

    def use_rules(self, correlations: Sequence[Correlation], aliases: dict[str, str]) -> None:
        """Run ``correlations`` from the next batch on (call between batches, on the thread that runs them).

        The windows of a rule that is in both sets unchanged (same id, same definition) are kept; those of a rule
        removed or changed (a new threshold, timespan, group-by or reference list) are dropped, so a changed rule
        starts counting afresh rather than judging old hits by new terms. New ``aliases`` (signature rule names)
        do not reset anything: hits already recorded stay recorded.
        """
        running = {correlation.info.id: correlation for correlation in self.correlations}
        unchanged = {c.info.id for c in correlations if running.get(c.info.id) == c}
        self._groups = {key: hits for key, hits in self._groups.items() if key[0] in unchanged}
        self._activity.rebuild()
        self.correlations = list(correlations)
        self.aliases = aliases

    def detect(self, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        detections = []
        touched: set[GroupKey] = set()
        for event, found in zip(events, findings, strict=True):  # arrival order: the same in any batching
            if not found.rule_ids and not found.categories:
                continue
            for correlation in self.correlations:
                satisfied = correlation.matches(found.rule_ids, found.categories, self.aliases)
                if satisfied:
                    detection = self._observe(correlation, event, self._interned(satisfied), touched)
                    if detection is not None:
                        detections.append(detection)
        self._expire(touched)
        self.evictions.say(self.max_groups)
        return detections

    def _expire(self, touched: set[GroupKey]) -> None:
        """Drop groups whose newest hit is older than the longest timespan: bounded memory on event time.

        Every group is scanned only when event time crosses a step (a quarter of the shortest timespan), not per
        batch (every group would be visited for each one-event batch); in between, only the groups the batch
        touched are checked, which catches a late hit's. Both are judged against the last step crossed, so what is
        kept does not depend on how arrivals were cut into batches; a group kept a little longer changes no
        verdict, as each is judged on the hits inside its window."""
        if not self._groups or not self.correlations or not math.isfinite(self._newest):
            return
        step = min(c.timespan for c in self.correlations) / 4
        newest = math.floor(self._newest / step) * step
        keys: Iterable[GroupKey] = touched
        if newest > self._expired_at:
            self._expired_at = newest
            keys = list(self._groups)
        horizon = self._expired_at - max(c.timespan for c in self.correlations) - ALLOWED_LATENESS_S
        for key in keys:
            hits = self._groups.get(key)
            if hits is not None and (not hits or hits[-1].timestamp < horizon):
                del self._groups[key]

    def _observe(
        self,
        correlation: Correlation,
        event: Event,
        satisfied: frozenset[str],
        touched: set[GroupKey],
    ) -> Detection | None:
        group = tuple(event_field(event, name) for name in correlation.group_by)
        if correlation.group_by and all(value is None for value in group):
            return None
        key = (correlation.info.id, group)
        touched.add(key)
        hits = self._groups.get(key)
        created = hits is None
        if hits is None:
            hits = self._groups[key] = []
        value = event_field(event, correlation.field) if correlation.field else None
        self._newest = max(self._newest, event.timestamp)
        hit = _Hit(event.timestamp, event.id, satisfied, value)
        _insert_in_time_order(hits, hit)
        if hits[-1] is hit:  # the group's newest hit: its activity for eviction
            self._activity.touched(key, hit.timestamp, len(self._groups))
        if created:
            self._forget_least_recent()
        oldest = hits[-1].timestamp - correlation.timespan - ALLOWED_LATENESS_S
        cut = 0
        while hits[cut].timestamp < oldest:
            cut += 1
        del hits[:cut]
        # The window that ends at this event: a hit that arrived late is judged with the hits of its own time, not
        # with newer ones, so the alerts do not depend on how arrivals were cut into batches.
        start = event.timestamp - correlation.timespan
        window = [hit for hit in hits if start <= hit.timestamp <= event.timestamp]
        if not self._fires(correlation, window):
            return None
        hits = window
        described = ", ".join(f"{name}={value}" for name, value in zip(correlation.group_by, group, strict=True))
        return Detection(
            rule=correlation.info,
            event_ids=[hit.event_id for hit in hits[-50:]],
            timestamp=event.timestamp,
            identity=event.identity,
            message=f"{correlation.info.name} ({described or 'all events'}; {len(hits)} events in "
            f"{correlation.timespan:.0f}s)",
            evidence=[Evidence(field="correlation", snippet=described, detail=correlation.kind.name.lower())],
            group_key=correlation_group_key(correlation.info.id, group),
            related_users=sorted({e for e in (event.identity.user_id,) if e}),
        )

    def _interned(self, references: Iterable[str]) -> frozenset[str]:
        """The one copy of this set of references (a frozenset costs 216 bytes; there are few distinct ones)."""
        satisfied = frozenset(references)
        return self._references.setdefault(satisfied, satisfied)

    # Bound methods, not closures: a deep copy of the detector (Pipeline.fresh) must take its own store along.
    def _group_times(self) -> Iterator[tuple[GroupKey, float]]:
        return ((key, hits[-1].timestamp) for key, hits in self._groups.items() if hits)

    def _newest_hit(self, key: GroupKey) -> float | None:
        hits = self._groups.get(key)
        return hits[-1].timestamp if hits else None

    def _new_cap_state(self) -> None:
        """A count of evictions and an eviction order of this detector's own: :meth:`fresh` copies shallowly, and
        ``load_state`` calls this, so copies never share them."""
        self.evictions = Evictions(
            log, "correlation: max_groups (%d) reached; forgot the %d groups least recently active since last said"
        )
        self._activity = LeastRecentlyActive(self._newest_hit, self._group_times, order=_group_order)

    def _forget_least_recent(self) -> None:
        """Past ``max_groups``, forget the groups whose newest hit is oldest (an injector rotating user ids or IPs
        must not grow the partition's state without bound)."""
        while len(self._groups) > self.max_groups and (key := self._activity.pop()) is not None:
            del self._groups[key]
            self.evictions.count += 1

    @staticmethod
    def _fires(correlation: Correlation, hits: list[_Hit]) -> bool:
        kind = correlation.kind
        if kind == SigmaCorrelationType.EVENT_COUNT:
            return correlation.compare(len(hits), correlation.threshold)
        if kind == SigmaCorrelationType.VALUE_COUNT:
            distinct = {hit.value for hit in hits if hit.value is not None}
            return correlation.compare(len(distinct), correlation.threshold)
        if kind == SigmaCorrelationType.TEMPORAL:
            seen = set().union(*(hit.references for hit in hits))
            return seen >= set(correlation.references)
        position = 0  # temporal_ordered: the references appear in this order within the window
        for hit in hits:
            while position < len(correlation.references) and correlation.references[position] in hit.references:
                position += 1
            if position == len(correlation.references):
                return True
        return False

    def state(self) -> dict[str, Any]:
        return {
            "groups": [
                [rule_id, list(group), [[h.timestamp, h.event_id, sorted(h.references), h.value] for h in hits]]
                for (rule_id, group), hits in self._groups.items()
            ]
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self._references = {}
        self._groups = {
            (rule_id, tuple(group)): [
                _Hit(t, event_id, self._interned(refs), value) for t, event_id, refs, value in hits
            ][-MAX_EVENTS_PER_GROUP:]
            for rule_id, group, hits in state.get("groups", [])
        }
        self._new_cap_state()
        self._forget_least_recent()  # a smaller max_groups than the checkpoint's applies at once
        self._newest = max((hits[-1].timestamp for hits in self._groups.values() if hits), default=-math.inf)
        self._expired_at = -math.inf


def correlation_group_key(rule_id: str, group: tuple[Any, ...]) -> str:
    """The alert group key of a correlation's group: injective (a JSON list), so no two groups share one however
    their values are chosen (a client-chosen user id may hold any separator)."""
    values = [None if value is None else str(value) for value in group]
    return f"{rule_id}|{json.dumps(values, ensure_ascii=True, separators=(',', ':'))}"


def _insert_in_time_order(hits: list[_Hit], hit: _Hit) -> None:
    """Insert ``hit`` after every hit not newer than it (hits arrive nearly in order: a short walk from the end);
    a full group (:data:`MAX_EVENTS_PER_GROUP`) drops its oldest hit first."""
    if len(hits) >= MAX_EVENTS_PER_GROUP:
        del hits[0]
    position = len(hits)
    while position and hits[position - 1].timestamp > hit.timestamp:
        position -= 1
    hits.insert(position, hit)
