"""The online anomaly detector: event-time windows per identity, scored against self and peers, then alerted.

Every event is counted into a tumbling window (``window_seconds``, aligned to the epoch) of each entity it
belongs to: its identity (:meth:`Identity.key`) and, as separate entities, its API-key hash and source IP. A
window closes when the entity's next event falls in a later window, or when the watermark (newest event time
minus ``allowed_lateness_seconds``) passes its end; events older than that are counted as late and skipped.
Only event time is used and events are taken one by one in arrival order, so a replay of two days in seconds,
cut into any batches, gives the same alerts as live traffic.

A closed window is scored against the entity's own EWMA baseline (z-scores) and against its peers (Half-Space
Trees per entity kind); alert rules combine those scores with behaviour thresholds (:class:`AnomalyConfig`).
The templated-enumeration rule needs no history: it judges a window's structure (one template, many distinct
values, no payload), and a window together with the previous one when a burst crosses the boundary.
Each event's prompt template signature goes on its document; campaigns across identities are judged from
those by ``detectors.campaigns``, where every member of a campaign meets whatever partition it came from.
"""

from __future__ import annotations

import heapq
import logging
import math
from array import array
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import msgspec

from detectors.anomaly import rules
from detectors.anomaly.config import AnomalyConfig
from detectors.anomaly.features import (
    Limits,
    PromptShape,
    TemplateBurst,
    WindowAccumulator,
    event_signals,
    refusal_matcher,
    remember,
    slot_bit,
    steps_from_any,
)
from detectors.anomaly.models import DAY_SUMS, Baseline, DayPeers, DaySums, PeerModel
from detectors.base import Detection, Detector, Findings, RuleInfo
from detectors.event import ANONYMOUS, Event, Identity

log = logging.getLogger(__name__)
STATE_VERSION = 3  # 2: slot-value maps, context and slot text, last template burst; 3: campaigns moved out
LONG_SIGNALS: tuple[str, ...] = ("interarrival_cv", "template_reuse", "enumeration_rate", "extraction_param_rate")
# the slow averages an entity keeps: the window features above, then the inter-arrival CV with rests left out and
# the share of the run's windows that were bare (within the enumeration rule's payload limits)
SLOW_SIGNALS: tuple[str, ...] = (*LONG_SIGNALS, "interarrival_cv_without_rest", "bare_share")
WITHOUT_REST = SLOW_SIGNALS.index("interarrival_cv_without_rest")
BARE_SHARE = SLOW_SIGNALS.index("bare_share")
HOURS_OF_DAY = 24  # the harvest rule's memory of which recent hours an identity stepped through values in
DAY_MASK = (1 << HOURS_OF_DAY) - 1
# the category whose rules make a day rule wait a day on the entity, for each of DAY_SUMS
DAY_CATEGORIES: tuple[str, ...] = tuple(rule.category for rule in rules.DAY_RULES)


class _Enumeration(NamedTuple):
    """A templated-enumeration verdict: the message, its score, and the figures it was judged on."""

    message: str
    score: float
    explanation: dict[str, float]


class _Entity:
    """Everything remembered about one entity: a fixed number of fields, whatever its traffic."""

    __slots__ = (
        "baseline",
        "burst",
        "clock",
        "closed",
        "day",
        "harvest_hour",
        "harvest_hours",
        "harvested_steps",
        "harvested_tokens",
        "identity",
        "last_score",
        "last_ts",
        "last_window",
        "long",
        "pending",
        "recent",
        "sole",
        "streak",
        "window",
    )

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.window: WindowAccumulator | None = None
        # the window before ``window``, left open until the watermark passes its end: the entity moved on, but its
        # events for that window may still arrive within the allowed lateness (order within it does not matter)
        self.pending: WindowAccumulator | None = None
        self.baseline = Baseline()
        self.long = array("d", bytes(8 * len(SLOW_SIGNALS)))
        self.streak = 0  # active windows of the run (gaps up to slow_enumeration_max_gap_windows bridged)
        self.clock = 0  # active windows of the run since its last gap over slow_max_gap_windows
        self.closed = 0  # windows closed so far
        # enumeration steps in bare windows, and their output tokens, decayed over harvest_span_seconds of event time
        self.harvested_steps = 0.0
        self.harvested_tokens = 0.0
        # which of the last HOURS_OF_DAY hours (bit k: k hours before ``harvest_hour``, an epoch hour) had such a window
        self.harvest_hours = 0
        self.harvest_hour = 0
        self.last_window: float | None = None
        self.last_ts: float | None = None
        self.recent: tuple[PromptShape, ...] = ()  # the last prompt of each of a few templates, newest first
        self.last_score = 0.0
        self.burst: TemplateBurst | None = None  # the last window's top template, if a burst could continue it
        # an API key's or IP's only identity ever ("" once it carried two; None before its first window): while it
        # has one, the key or IP only repeats that identity's alerts
        self.sole: str | None = None
        self.day: DaySums | None = None  # its sums over about a day, once it is judged on them (the day rules)

    def dump(self) -> dict[str, Any]:
        previous, *earlier = self.recent or (None,)
        return {
            "identity": msgspec.to_builtins(self.identity),
            "window": self.window.dump() if self.window else None,
            "pending": self.pending.dump() if self.pending else None,
            "baseline": self.baseline.dump(),
            "long": list(self.long[: len(LONG_SIGNALS)]),  # as earlier code reads it: a rollback loads it too
            "long_without_rest": self.long[WITHOUT_REST],
            "bare_share": self.long[BARE_SHARE],
            "streak": self.streak,
            "clock": self.clock,
            "closed": self.closed,
            # left out until the entity harvests (most never do), as in earlier checkpoints
            **(
                {"harvest": [self.harvested_steps, self.harvested_tokens, self.harvest_hours, self.harvest_hour]}
                if self.harvested_steps
                else {}
            ),
            "last_window": self.last_window,
            "last_ts": self.last_ts,
            # the newest as earlier code reads it, the other templates' last prompts (if any) beside it
            "previous": None if previous is None else _dump_shape(previous),
            **({"earlier": [_dump_shape(shape) for shape in earlier]} if earlier else {}),
            "last_score": self.last_score,
            "burst": self.burst.dump() if self.burst else None,
            "sole": self.sole,
            **({"day": self.day.dump()} if self.day is not None else {}),  # only entities the day rules judge
        }

    @classmethod
    def load(cls, data: dict[str, Any]) -> _Entity:
        entity = cls(msgspec.convert(data["identity"], Identity))
        entity.window = WindowAccumulator.load(data["window"]) if data["window"] else None
        pending = data.get("pending")  # absent from checkpoints of earlier versions, which closed it at once
        entity.pending = WindowAccumulator.load(pending) if pending else None
        entity.baseline = Baseline.load(data["baseline"])
        long = [float(v) for v in data["long"]]
        # absent from checkpoints of earlier code: started from the CV with rests, which only ages out of it
        long.append(float(data.get("long_without_rest", long[SLOW_SIGNALS.index("interarrival_cv")])))
        # absent from checkpoints of earlier code, which judged bareness on the window alone: as if the run were bare
        long.append(float(data.get("bare_share", 1.0)))
        entity.long = array("d", long)
        entity.streak, entity.closed = int(data["streak"]), int(data["closed"])
        # absent from checkpoints of earlier code, whose runs ended at a gap over slow_max_gap_windows: their streak
        entity.clock = int(data.get("clock", entity.streak))
        # absent until the entity harvests, and from checkpoints of earlier code: nothing harvested yet
        steps, tokens, hours, hour = data.get("harvest", (0.0, 0.0, 0, 0))
        entity.harvested_steps, entity.harvested_tokens = float(steps), float(tokens)
        entity.harvest_hours, entity.harvest_hour = int(hours), int(hour)
        entity.last_window, entity.last_ts = data["last_window"], data["last_ts"]
        # "earlier" is absent from checkpoints of earlier code, which remembered one prompt
        shapes = [data["previous"], *data.get("earlier", ())] if data["previous"] is not None else []
        entity.recent = tuple(PromptShape(0, int(template, 16), tuple(values), 0, 0.0) for template, values in shapes)
        entity.last_score = float(data["last_score"])
        entity.burst = TemplateBurst.load(data["burst"]) if data["burst"] else None
        entity.sole = data.get("sole")  # absent in checkpoints of earlier versions: learnt again from the next window
        day = data.get("day")  # absent from checkpoints of earlier code: started at the next window, as no new entity
        entity.day = DaySums.load(day) if day is not None else None
        return entity


def _own_traffic(entity: _Entity, window: WindowAccumulator, primary: str) -> bool:
    """The entity has carried only this event's identity (a user, or a key or IP that never named another): the
    last prompts of several templates are remembered for its steps. On a key or IP that several identities share,
    their requests interleave, and a step is judged against the previous prompt alone, as if one template were
    remembered: a step across another template there would join different people's numbers. So is the anonymous
    entity, which pools every request that names no one."""
    if primary == ANONYMOUS or entity.sole not in (None, primary):
        return False
    # the windows not closed yet, whose identities ``sole`` does not know: another in either makes it shared now
    pending = entity.pending
    return window.primaries <= {primary} and (pending is None or pending.primaries <= {primary})


def _dump_shape(shape: PromptShape) -> list[Any]:
    """A remembered prompt as a checkpoint holds it: its template hash and its values."""
    return [f"{shape.template:016x}", list(shape.values)]


def entity_keys(identity: Identity) -> list[tuple[str, Identity]]:
    """The entities an event counts for: its identity, then its API key and source IP when those differ."""
    primary = identity.key()
    keys = [(primary, identity)]
    if identity.api_key_hash and f"key:{identity.api_key_hash}" != primary:
        keys.append((f"key:{identity.api_key_hash}", Identity(api_key_hash=identity.api_key_hash)))
    if identity.source_ip and f"ip:{identity.source_ip}" != primary:
        keys.append((f"ip:{identity.source_ip}", Identity(source_ip=identity.source_ip)))
    return keys


def _kind(key: str) -> str:
    return key.split(":", 1)[0] if ":" in key else ANONYMOUS


class AnomalyDetector(Detector):
    """Per-identity online anomaly models for scraping, model extraction and resource abuse."""

    name = "anomaly"
    marks_events = False  # its detections close windows over earlier events (see Detector.marks_events)

    def __init__(self, config: AnomalyConfig | None = None) -> None:
        self.config = config or AnomalyConfig()
        self._refusals = refusal_matcher()
        self._limits = Limits(
            templates=self.config.max_templates,
            distinct=self.config.max_distinct,
            event_ids=self.config.max_event_ids,
            window_seconds=self.config.window_seconds,
        )
        self._reset()

    def _reset(self) -> None:
        self._entities: dict[str, _Entity] = {}
        self._open: dict[float, dict[str, None]] = {}  # window end -> entities with that window open
        self._ends: list[float] = []  # heap of the keys of _open
        self._peers: dict[str, PeerModel] = {}  # per entity kind, created on first use
        self._day_peers: dict[str, DayPeers] = {}  # identity-days per peer group ("ip", "identity"), the day rules'
        self._day_origin: float | None = None  # the first window this detector closed: its first day is no one's new
        self._watermark = -math.inf
        self._closed_through = -math.inf  # every window ending at or before this is closed
        self._last_eviction = -math.inf

    # ------------------------------------------------------------------ the Detector API

    def detect(self, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        detections: list[Detection] = []
        for event, found in zip(events, findings, strict=True):
            if not math.isfinite(event.timestamp):  # normalisers never emit one; a hand-built event might
                found.fields.setdefault("abusewatch.errors", []).append("anomaly: event time is not a finite number")
                continue
            for closed in self._advance(event.timestamp - self.config.allowed_lateness_seconds):
                closed.raised_by = event.id
                detections.append(closed)
            detections.extend(self._count(event, found))
        return detections

    def flush(self, until: float | None = None) -> list[Detection]:
        """Close every window ending by event time ``until`` (all of them if ``None``): the end of a replay."""
        return self._advance(math.inf if until is None else until)

    def state(self) -> dict[str, Any]:
        return self.state_for(None)

    def state_for(self, keys: Iterable[str] | None) -> dict[str, Any]:
        """State with only the entities in ``keys`` (all if ``None``), e.g. those of partitions being handed over.

        Peer models are shared by every entity of a partition and always included.
        """
        wanted = None if keys is None else set(keys)
        return {
            "version": STATE_VERSION,
            "watermark": _finite(self._watermark),
            "closed_through": _finite(self._closed_through),
            "last_eviction": _finite(self._last_eviction),
            "entities": {
                key: entity.dump() for key, entity in self._entities.items() if wanted is None or key in wanted
            },
            "open": [  # which windows close at each boundary, in the order they will close
                [end, [key for key in keys if wanted is None or key in wanted]] for end, keys in self._open.items()
            ],
            "peers": {kind: model.dump() for kind, model in self._peers.items()},
            "day_origin": self._day_origin,
            "day_peers": {group: peers.dump() for group, peers in self._day_peers.items()},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self._reset()
        if not state:
            return
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"anomaly state version {state.get('version')!r} cannot be loaded: this build reads version "
                f"{STATE_VERSION} only; start the anomaly detector without that checkpoint (identities warm up again)"
            )
        self._watermark = _infinite(state["watermark"])
        self._closed_through = _infinite(state["closed_through"])
        self._last_eviction = _infinite(state["last_eviction"])
        for key, data in state["entities"].items():
            self._entities[key] = _Entity.load(data)
        for end, keys in state["open"]:
            for key in keys:
                if key in self._entities:
                    self._register_open(key, float(end))
        for kind, data in state["peers"].items():
            self._peer(kind).load(data)
        # absent from checkpoints of earlier code: the day rules start afresh (the day after the upgrade is their first)
        self._day_origin = state.get("day_origin")
        for group, data in state.get("day_peers", {}).items():
            self._day_peer(group).load(data)

    # ------------------------------------------------------------------ counting

    def _count(self, event: Event, found: Findings) -> list[Detection]:
        config = self.config
        width = config.window_seconds
        start = math.floor(event.timestamp / width) * width
        if start + width <= self._closed_through:
            found.fields["abusewatch.identity.late"] = True
            return []
        signals = event_signals(event, self._refusals, config.prompt_chars)
        shape = signals.shape
        detections: list[Detection] = []
        keys = entity_keys(event.identity)
        primary = keys[0][0]
        for key, identity in keys:
            entity = self._entities.get(key)
            if entity is None:
                if len(self._entities) >= config.max_entities:
                    self._forget_least_recent()
                entity = self._entities[key] = _Entity(identity)
            if entity.window is not None and start > entity.window.start:
                if entity.pending is not None:  # only when the lateness is a window or more: closed in order
                    detections.extend(self._close(key, entity, entity.pending))
                entity.pending, entity.window = entity.window, None  # closes when the watermark passes its end
            window = entity.window
            if window is not None and start < window.start:
                if entity.pending is None or start != entity.pending.start:
                    if key == primary:
                        found.fields["abusewatch.identity.late"] = True
                    continue
                window = entity.pending  # a late event of the window before, within the allowed lateness
            if window is None:
                window = entity.window = WindowAccumulator(start)
                self._register_open(key, start + width)
            entity.identity = identity
            if window is entity.pending:  # no step from, or gap to, a later prompt: counted, not sequenced
                window.add(signals, enumeration=False, previous_ts=None, limits=self._limits)
                enumeration = False
            else:
                size = config.step_templates if _own_traffic(entity, window, primary) else 1
                enumeration = shape is not None and steps_from_any(entity.recent[:size], shape)
                window.add(signals, enumeration=enumeration, previous_ts=entity.last_ts, limits=self._limits)
                if shape is not None:
                    entity.recent = remember(entity.recent, shape, size)
            entity.last_ts = event.timestamp if entity.last_ts is None else max(entity.last_ts, event.timestamp)
            if key == primary:
                self._annotate(found, entity, window, shape, enumeration, config.min_template_chars)
        return detections

    @staticmethod
    def _annotate(
        found: Findings,
        entity: _Entity,
        window: WindowAccumulator,
        shape: PromptShape | None,
        enumeration: bool,
        min_template_chars: int,
    ) -> None:
        found.fields["gen_ai.security.anomaly_score"] = round(entity.last_score, 4)
        found.fields["abusewatch.identity.window_requests"] = window.requests
        found.fields["abusewatch.identity.window_tokens"] = window.input_tokens + window.output_tokens
        if shape is not None and shape.masked_chars >= min_template_chars:  # long enough to mark a campaign
            found.fields["abusewatch.identity.template_signature"] = f"{shape.signature:016x}"
            # what the campaign stage needs to judge many identities' requests on it in total (bucket: not values)
            found.fields["abusewatch.identity.template_value_bucket"] = slot_bit(shape.values)
            found.fields["abusewatch.identity.slot_chars"] = shape.slot_chars
        if shape is not None:
            found.fields["abusewatch.identity.enumeration"] = enumeration

    def _peer(self, kind: str) -> PeerModel:
        model = self._peers.get(kind)
        if model is None:
            config = self.config
            model = self._peers[kind] = PeerModel(
                trees=config.peer_trees,
                height=config.peer_height,
                window=config.peer_window,
                seed=config.seed,
                warmup=config.peer_warmup_windows,
                span=config.peer_span_windows,
            )
        return model

    def _day_peer(self, group: str) -> DayPeers:
        peers = self._day_peers.get(group)
        if peers is None:
            peers = self._day_peers[group] = DayPeers(self.config.day_peer_span)
        return peers

    def _register_open(self, key: str, end: float) -> None:
        if end not in self._open:
            self._open[end] = {}
            heapq.heappush(self._ends, end)
        self._open[end][key] = None

    # ------------------------------------------------------------------ closing windows

    def _advance(self, watermark: float) -> list[Detection]:
        """Move the watermark forward and close every window that ends at or before it."""
        if watermark <= self._watermark:
            return []
        self._watermark = watermark
        detections: list[Detection] = []
        while self._ends and self._ends[0] <= watermark:
            end = heapq.heappop(self._ends)
            for key in self._open.pop(end):
                entity = self._entities.get(key)
                if entity is None:
                    continue
                for window in (entity.pending, entity.window):  # the older first
                    if window is not None and window.start + self.config.window_seconds == end:
                        detections.extend(self._close(key, entity, window))
        width = self.config.window_seconds
        closed = math.floor(watermark / width) * width if math.isfinite(watermark) else watermark
        self._closed_through = max(self._closed_through, closed)
        if watermark != math.inf and watermark - self._last_eviction >= 3600.0:
            self._evict(watermark)
        return detections

    def _evict(self, watermark: float) -> None:
        """Forget entities idle for ``idle_ttl_seconds``, so memory follows the active population."""
        self._last_eviction = watermark
        horizon = watermark - self.config.idle_ttl_seconds
        stale = [
            k
            for k, e in self._entities.items()
            if e.window is None and e.pending is None and (e.last_ts or 0.0) < horizon
        ]
        for key in stale:
            del self._entities[key]

    def _forget_least_recent(self) -> None:
        """Make room under ``max_entities``: forget the tenth of the entities seen least recently (an open window
        included). Identities are often client-chosen: without a cap, a client inventing one per request would
        grow a partition's state without bound, faster than idle entities expire."""
        count = max(1, len(self._entities) // 10)
        oldest = heapq.nsmallest(count, self._entities.items(), key=lambda item: item[1].last_ts or 0.0)
        for key, _entity in oldest:
            del self._entities[key]
        log.warning("anomaly: max_entities reached; forgot the %d entities seen least recently", count)

    def _close(self, key: str, entity: _Entity, window: WindowAccumulator) -> list[Detection]:
        """Score and learn ``window``, the entity's pending or current window, and forget it."""
        config = self.config
        if window is entity.pending:
            entity.pending = None
        else:
            entity.window = None
        features = window.features(config.template_hamming)
        bare = config.is_bare(features["context_tokens"], features["slot_chars"])
        # An API key or IP whose window carries one other identity repeats that identity's enumeration alert, which
        # the identity raises from its first window. The rules that need a warm entity are judged on the key or IP
        # unless it only ever carried that one identity: an IP whose key changes every window carries many, each
        # too new to be judged itself.
        primaries = window.primaries
        if entity.sole is None:
            entity.sole = next(iter(primaries)) if len(primaries) == 1 else ""
        elif entity.sole and (len(primaries) != 1 or entity.sole not in primaries):
            entity.sole = ""
        slow = [*(features[name] for name in LONG_SIGNALS), window.interarrival_cv_without_rest(), float(bare)]
        harvested = self._count_harvest(key, entity, window, bare)
        self._continue_run(entity, window.start, slow)
        z_scores = entity.baseline.z_scores(features)
        peer, peer_z = self._peer(_kind(key)).score_and_learn(features)
        own = max(0.0, max(z_scores.values(), default=0.0))
        crowd = max(0.0, max(peer_z.values(), default=0.0))
        entity.last_score = round(
            max(
                _squash(peer, config.peer_threshold),
                own / (own + config.z_threshold),
                crowd / (crowd + config.peer_z_threshold),
            ),
            6,
        )
        warm = entity.closed >= config.identity_warmup_windows
        first_window = entity.closed == 0
        entity.closed += 1
        repeats_one = len(primaries) == 1 and key not in primaries
        detections: list[Detection] = []
        if bool(entity.sole) and entity.sole != key:
            entity.burst = None
        else:
            burst = None if repeats_one else window.template_burst(config.template_hamming)
            enumeration = self._enumeration(key, entity.burst, burst)
            if enumeration:
                entity.last_score = max(entity.last_score, enumeration.score)
            # kept for the next window when a burst could continue into it (values, a tenth of the threshold)
            could_continue = (
                burst is not None and burst.values != 0 and 10 * burst.on_template >= config.enumeration_min_requests
            )
            entity.burst = burst if could_continue and enumeration is None else None
            found = self._rules(
                key,
                entity,
                features,
                z_scores,
                peer,
                peer_z,
                enumeration=enumeration,
                warm=warm,
                bare=bare,
                harvested=harvested,
            )
            day_explanation: dict[str, float] = {}
            if config.day_status != "off" and key != ANONYMOUS:
                day_explanation = self._day_rules(key, entity, window, found, first_window=first_window)
            if found:
                explanation = _explain(features, z_scores, peer, peer_z, entity, config.window_seconds)
                explanation.update(enumeration.explanation if enumeration else {})
                explanation.update(day_explanation)
                detections = self._detections(key, entity, window, found, explanation)
        if not detections:
            entity.baseline.learn(features, config.baseline_span_windows)
        return detections

    def _count_harvest(self, key: str, entity: _Entity, window: WindowAccumulator, bare: bool) -> bool:
        """Decay the entity's harvest to this window's start and add the window's enumeration steps, with their
        output tokens, if the window is bare; ``True`` if it added any. Rests and gaps of any length only decay
        it: what was taken in the last day or so, however it was paced. Only one identity's own windows count: a key,
        IP or the anonymous entity that several identities share interleaves their prompts, and their hours."""
        if entity.sole != key or key == ANONYMOUS:
            if entity.harvested_steps:  # it carried another identity since: what it harvested alone is dropped
                entity.harvested_steps = entity.harvested_tokens = 0.0
                entity.harvest_hours = entity.harvest_hour = 0
            return False
        if entity.harvested_steps and entity.last_window is not None:  # most entities never harvest: no floats made
            decay = math.exp(-max(0.0, window.start - entity.last_window) / self.config.harvest_span_seconds)
            entity.harvested_steps *= decay
            entity.harvested_tokens *= decay
        if bare and window.enumeration:
            entity.harvested_steps += window.enumeration
            entity.harvested_tokens += window.step_output_tokens
            hour = math.floor(window.start / 3600.0)
            shift = hour - entity.harvest_hour
            kept = (entity.harvest_hours << shift) & DAY_MASK if 0 <= shift < HOURS_OF_DAY else 0
            entity.harvest_hours = kept | 1
            entity.harvest_hour = hour
            return True
        return False

    def _day_rules(
        self,
        key: str,
        entity: _Entity,
        window: WindowAccumulator,
        found: list[tuple[RuleInfo, str]],
        *,
        first_window: bool,
    ) -> dict[str, float]:
        """Count the window into the entity's day sums (:meth:`_count_day`), and add to ``found`` the day rules they
        meet; the figures they were judged on, for the explanation (empty when none met).

        Each of :data:`DAY_SUMS` (tokens, requests, requests with extraction parameters) is a sum decayed over
        ``day_span_seconds``: what the entity took in about the last day, whatever its pace. A sum alerts as
        :meth:`_day_reason` says, but not within a day of a rule of its category on the entity (the window rules
        included): a run of days is one alert a day, and an attack a window rule named is not named again for it.
        """
        config = self.config
        day, peers = self._count_day(key, entity, window, first_window=first_window)
        now = window.start
        for rule, _ in found:  # the window's own alerts: a day rule of their category waits a day
            if rule.category in DAY_CATEGORIES:
                day.mark(DAY_CATEGORIES.index(rule.category), now)
        explanation: dict[str, float] = {}
        for index, (name, rule) in enumerate(zip(DAY_SUMS, rules.DAY_RULES, strict=True)):
            if now - day.alerted(index) < config.day_span_seconds:
                continue
            reason = self._day_reason(index, day, peers, explanation)
            if reason is None:
                continue
            found.append(
                (
                    rules.with_status(rule, config.day_status),
                    f"{key} took about {day.sum(index):,.0f} {name.replace('_', ' ')} over the last day (decayed over "
                    f"{config.day_span_seconds / 3600:.0f} h of event time): {reason}",
                )
            )
            day.mark(index, now)
        if explanation:  # which sums drove it, and the others beside them
            explanation.update({f"day.{name}": round(day.sum(i), 1) for i, name in enumerate(DAY_SUMS)})
            explanation["day.own_days"] = float(day.days)
        return explanation

    def _count_day(
        self, key: str, entity: _Entity, window: WindowAccumulator, *, first_window: bool
    ) -> tuple[DaySums, DayPeers]:
        """The entity's day sums with ``window`` counted, and its peer group's days. At the first window of a UTC day
        the entity's total of the day before is learnt into its own history of days and into its peers' days. The
        sums start at an entity's first judged window; the entity is *new* if that is its first window at all and
        the detector's first day is over (on that day every entity is new to it)."""
        config = self.config
        if self._day_origin is None:
            self._day_origin = window.start
        day = entity.day
        if day is None:
            new = first_window and window.start >= self._day_origin + config.day_span_seconds
            day = entity.day = DaySums(new=new)
        peers = self._day_peer("ip" if _kind(key) == "ip" else "identity")
        finished = day.advance(window.start, config.day_span_seconds)
        if finished is not None:
            day.learn_one(finished, config.day_history_span_days)
            peers.learn_one(finished)
        day.add((float(window.input_tokens + window.output_tokens), float(window.requests), float(window.extraction)))
        return day, peers

    def _day_reason(self, index: int, day: DaySums, peers: DayPeers, explanation: dict[str, float]) -> str | None:
        """Why the day sum ``DAY_SUMS[index]`` alerts, or ``None``; what it was judged on goes into ``explanation``.

        A configured ``day_token_budget`` alerts on the UTC day's tokens whatever the history. Otherwise the sum must
        reach its floor (``day_min_*``) and then, for a new entity with fewer than ``day_new_days`` days of its own,
        ``day_peer_factor`` times the ``day_peer_quantile`` of its peers' days (once they have learnt
        ``day_peer_warmup`` days); for any other entity with a day of its own, ``day_z_threshold`` standard deviations
        above its own days."""
        config = self.config
        name, total = DAY_SUMS[index], day.sum(index)
        budget = config.day_token_budget
        if index == 0 and budget is not None and day.today(0) >= budget:
            explanation["day.budget"] = budget
            explanation["day.today.tokens"] = round(day.today(0), 1)
            return f"{day.today(0):,.0f} tokens today (UTC), over the budget of {budget:,.0f}"
        floor = (config.day_min_tokens, config.day_min_requests, config.day_min_extraction_requests)[index]
        if total < floor:
            return None
        if day.new and day.days < config.day_new_days:
            if peers.learned < config.day_peer_warmup:
                return None
            quantile = peers.quantile(index, config.day_peer_quantile)
            if total < config.day_peer_factor * quantile:
                return None
            explanation[f"day.peer_quantile.{name}"] = round(quantile, 1)
            return (
                f"{total / quantile:,.0f} times what {config.day_peer_quantile:.0%} of its peers' days reach "
                f"({quantile:,.0f}), as a new identity"
            )
        z = day.score_one(index)
        if not z >= config.day_z_threshold:  # NaN: no day of its own yet
            return None
        explanation[f"day.z.{name}"] = round(z, 2)
        explanation[f"day.typical.{name}"] = round(day.typical(index), 1)
        return f"{z:.1f} standard deviations above its own days (typically {day.typical(index):,.0f})"

    def _continue_run(self, entity: _Entity, start: float, slow: Sequence[float]) -> None:
        """Count the window starting at ``start`` into the entity's run of activity and its slow averages.

        A run survives up to ``slow_enumeration_max_gap_windows`` empty windows: a scraper resting 40 minutes every
        100 stays one run. The streak counts active windows only, so a run with gaps needs as much observed behaviour
        as one without; across a gap the slow averages age as if each empty window had been a step of the EWMA
        (the old average keeps ``(1 - alpha) ** (gap + 1)`` of its weight), but for the inter-arrival CV without
        rests and the bare share, which leave the empty windows out (one step per active window; a window too short
        for a CV still moves the former, with its placeholder 1.0: docs/anomaly.md, session 15, says what skipping it
        did to benign bots). A longer gap starts a new run. The clock counts the run's active windows since its last
        gap over ``slow_max_gap_windows``: the around-the-clock path reads it, so a benign bot that pauses that long
        never reaches that path. ``slow`` holds the window's values of :data:`SLOW_SIGNALS`."""
        config = self.config
        last = entity.last_window
        gap = None if last is None else round((start - last) / config.window_seconds) - 1  # empty windows between
        if gap is not None and gap <= config.slow_enumeration_max_gap_windows:
            entity.streak += 1
            entity.clock = entity.clock + 1 if gap <= config.slow_max_gap_windows else 1
            alpha = 2.0 / (config.long_span_windows + 1.0)
            weight = alpha * sum((1.0 - alpha) ** k for k in range(gap + 1))  # 1 - (1 - alpha) ** (gap + 1)
            steps = [weight] * len(LONG_SIGNALS) + [alpha, alpha]  # the last two leave the empty windows out
            for index, (step, value) in enumerate(zip(steps, slow, strict=True)):
                entity.long[index] += step * (value - entity.long[index])
        else:
            entity.streak = entity.clock = 1
            entity.long = array("d", slow)
        entity.last_window = start

    def _rules(
        self,
        key: str,
        entity: _Entity,
        features: dict[str, float],
        z_scores: dict[str, float],
        peer: float,
        peer_z: dict[str, float],
        *,
        enumeration: _Enumeration | None,
        warm: bool,
        bare: bool,
        harvested: bool,
    ) -> list[tuple[RuleInfo, str]]:
        """The rules a closed window raises, with their messages; before the identity is warm only the
        templated-enumeration rule (judged by :meth:`_enumeration`) can raise. ``bare``: the window is within the
        enumeration rule's payload limits; ``harvested``: it added to the entity's harvest (:meth:`_count_harvest`)."""
        config = self.config

        def unusual(feature: str) -> bool:
            """Far above the identity's own history, or far above its peers'."""
            return (
                z_scores.get(feature, 0.0) >= config.z_threshold
                or peer_z.get(feature, 0.0) >= config.peer_z_threshold
                or peer >= config.peer_threshold
            )

        found: list[tuple[RuleInfo, str]] = []
        requests = features["requests"]
        if not warm:
            return [(rules.SCRAPING_ENUMERATION, enumeration.message)] if enumeration else []
        if requests >= config.volume_min_requests and (unusual("requests") or requests >= config.volume_hard_requests):
            found.append((rules.SCRAPING_VOLUME, f"{key} sent {requests:.0f} requests in one window"))
        elif enumeration:
            found.append((rules.SCRAPING_ENUMERATION, enumeration.message))
        if (
            requests >= config.extraction_min_requests
            and features["extraction_param_rate"] >= config.extraction_min_param_rate
            and (
                features["extraction_temperature_std"] >= config.extraction_min_temperature_std
                or features["extraction_distinct_temperatures"] >= config.extraction_min_distinct_temperatures
                # enumerated prompts that bring nothing but their values (the enumeration rule's payload limits): a
                # classifier stepping through ticket ids with each ticket's text is no extraction (session 24)
                or (features["enumeration_rate"] >= config.slow_min_enumeration and bare)
            )
        ):
            found.append(
                (
                    rules.MODEL_EXTRACTION,
                    f"{key} asked for log-probabilities / several choices on {features['extraction_param_rate']:.0%} "
                    f"of {requests:.0f} requests with temperature sweeps or enumerated bare prompts",
                )
            )
        long = dict(zip(SLOW_SIGNALS, entity.long, strict=True))
        # Enumeration separates scrapers from benign regular bots, so it reads the whole run (longer rests bridged);
        # without it, only the active windows since the last gap over slow_max_gap_windows count (a bot's pauses).
        enumerating = long["enumeration_rate"] >= config.slow_min_enumeration
        windows = entity.streak if enumerating else entity.clock
        hours = windows * config.window_seconds / 3600.0  # active windows only: the rests are not counted
        # An enumerator sending bare values (the enumeration rule's payload limits) in this window and in most of the
        # run is judged on how regular its work is, its rests left out: a scraper working in short chunks. Everything
        # else keeps its rests in the CV: a bot that does not enumerate, and a notebook loop sending a document with
        # each numbered request, even in the odd window where its documents happen to be short.
        without_rests = enumerating and bare and long["bare_share"] >= config.slow_min_bare_share
        cv = long["interarrival_cv_without_rest" if without_rests else "interarrival_cv"]
        if (
            hours >= config.slow_min_hours
            and cv <= config.slow_max_interarrival_cv
            and long["template_reuse"] >= config.slow_min_template_reuse
            and (enumerating or hours >= config.around_clock_hours)
            and not any(rule is rules.MODEL_EXTRACTION for rule, _ in found)
        ):
            found.append(
                (
                    rules.SCRAPING_SLOW,
                    f"{key} has sent machine-regular requests (inter-arrival CV {cv:.2f}"
                    f"{', its rests left out' if without_rests else ''}) on one prompt template for {hours:.1f} h "
                    f"of activity ({long['enumeration_rate']:.0%} enumeration steps)",
                )
            )
        if (
            config.harvest_status != "off"
            and harvested
            and entity.harvested_steps >= config.harvest_min_steps
            and entity.harvested_tokens >= config.harvest_min_output_tokens
            and entity.harvest_hours.bit_count() >= config.harvest_min_hours
            and not any(rule.category == "scraping" for rule, _ in found)
        ):
            found.append(
                (
                    rules.with_status(rules.SCRAPING_HARVEST, config.harvest_status),
                    f"{key} has stepped through about {entity.harvested_steps:.0f} values of a prompt template with "
                    f"no payload of its own in {entity.harvest_hours.bit_count()} of the last {HOURS_OF_DAY} hours, "
                    f"taking about {entity.harvested_tokens:,.0f} output tokens for them (decayed over "
                    f"{config.harvest_span_seconds / 3600:.0f} h of event time)",
                )
            )
        tokens = features["tokens"]
        if tokens >= config.tokens_min and (
            unusual("tokens") or features["tokens_per_request"] >= config.tokens_per_request_hard
        ):
            found.append((rules.RESOURCE_ABUSE, f"{key} consumed {tokens:,.0f} tokens in one window"))
        return found

    def _enumeration(
        self, key: str, previous: TemplateBurst | None, burst: TemplateBurst | None
    ) -> _Enumeration | None:
        """Many requests on one template, each with other slot values and little context of its own: judged on
        this window, then on this window together with the previous one (a burst cut by the window boundary)."""
        if burst is None:
            return None
        config = self.config
        width = config.window_seconds
        candidates = [(burst, 1)]
        if previous is not None and previous.start + width == burst.start:
            merged = previous.then(burst, config.template_hamming)
            if merged is not None:
                candidates.append((merged, 2))
        for candidate, windows in candidates:
            span = max(0.0, candidate.last_ts - candidate.first_ts)
            needed = config.enumeration_min_requests * max(1.0, span / width)  # the rate of one window, sustained
            if (
                candidate.on_template >= needed
                and candidate.template_share >= config.enumeration_min_template_share
                and candidate.distinct_share >= config.enumeration_min_distinct_share
                and config.is_bare(candidate.context_tokens, candidate.slot_chars_per_prompt)
            ):
                message = (
                    f"{key} sent {candidate.on_template} requests on one prompt template in {span / 60:.1f} minutes, "
                    f"{candidate.distinct_share:.0%} of them with other values, "
                    f"{candidate.context_tokens:.0f} tokens of context each"
                )
                explanation = {
                    "template_requests": float(candidate.on_template),
                    "template_reuse": round(candidate.template_share, 3),
                    "slot_distinct_share": round(candidate.distinct_share, 3),
                    "context_tokens": round(candidate.context_tokens, 3),
                    "slot_chars": round(candidate.slot_chars_per_prompt, 3),
                    "burst_windows": float(windows),
                    "burst_minutes": round(span / 60, 2),
                }
                score = round(candidate.on_template / (candidate.on_template + needed), 6)  # 0.5 at the threshold
                return _Enumeration(message, score, explanation)
        return None

    def _detections(
        self,
        key: str,
        entity: _Entity,
        window: WindowAccumulator,
        found: list[tuple[RuleInfo, str]],
        explanation: dict[str, float],
    ) -> list[Detection]:
        return [
            Detection(
                rule=rule,
                event_ids=list(window.event_ids),
                timestamp=window.last_ts if window.last_ts is not None else window.start,
                identity=entity.identity,
                message=message,
                score=min(1.0, max(0.5, entity.last_score)),
                related_users=sorted(k for k in window.primaries if k != key),
                group_key=f"anomaly:{key}",
                explanation=explanation,
            )
            for rule, message in found
        ]


def _squash(value: float, threshold: float) -> float:
    """Map a score in [0, 1] onto [0, 1] so that ``threshold`` lands on 0.5 (comparable across scorers)."""
    value = min(1.0, max(0.0, value))
    if value <= threshold:
        return 0.5 * value / threshold
    return 0.5 + 0.5 * (value - threshold) / max(1e-9, 1.0 - threshold)


def _explain(
    features: dict[str, float],
    z_scores: dict[str, float],
    peer: float,
    peer_z: dict[str, float],
    entity: _Entity,
    window_seconds: float,
) -> dict[str, float]:
    """What drove the verdict: the top own-history and peer z-scores, the peer model score, the raw signals."""
    explanation = {}
    for prefix, scores in (("z", z_scores), ("peer_z", peer_z)):
        for name, value in sorted(scores.items(), key=lambda item: -item[1])[:3]:
            if value > 0:
                explanation[f"{prefix}.{name}"] = round(value, 2)
    explanation["peer_score"] = round(peer, 3)
    for name in (
        "requests",
        "tokens",
        "template_reuse",
        "enumeration_rate",
        "extraction_param_rate",
        "interarrival_cv",
        "template_requests",
        "slot_distinct_share",
        "context_tokens",
        "slot_chars",
    ):
        explanation[name] = round(features[name], 3)
    explanation["continuous_hours"] = round(entity.streak * window_seconds / 3600.0, 2)
    explanation["long.interarrival_cv"] = round(entity.long[SLOW_SIGNALS.index("interarrival_cv")], 3)
    explanation["long.interarrival_cv_without_rest"] = round(entity.long[WITHOUT_REST], 3)  # what bare enumerators get
    explanation["long.bare_share"] = round(entity.long[BARE_SHARE], 3)
    if entity.harvested_steps:  # only an identity that has been harvesting
        explanation["harvest.steps"] = round(entity.harvested_steps, 1)
        explanation["harvest.output_tokens"] = round(entity.harvested_tokens, 1)
        explanation["harvest.hours"] = float(entity.harvest_hours.bit_count())
    return explanation


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _infinite(value: float | None) -> float:
    return -math.inf if value is None else float(value)
