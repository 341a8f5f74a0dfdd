"""Distributed campaigns: many identities sending requests on one prompt template in the same window.

A campaign spans identities, so it cannot be judged where per-identity state lives (one identity partition sees
only the identities that hash to it). The anomaly tier writes each event's template signature on its document
(``abusewatch.identity.template_signature``); :func:`campaign_candidates` turns those into small records, which
are regrouped by signature (:func:`signature_partition`) and judged here with event-time windows of their own.
The stream does the regrouping through a Kafka topic; replay does it in-process, with the same code.

A window is judged per identity (the campaign rule: many identities with a few requests each) and, failing that,
in total (the distributed-enumeration rule, a shadow rule by default: many identities with a request or two each,
together filling the template with other values and no payload; ``docs/anomaly.md``, "A campaign spread thin").
A window closed without a campaign is kept a while (``campaign_rejudge_seconds``): members arriving late, from a
partition back from a stall, may still complete one, which is then raised once. A window that alerted is kept as
long (within the same bound): its late members join that alert, which is written again naming them (an amendment,
:attr:`Campaign.amends`: same alert id and count).

A window keeps at most ``campaign_max_templates`` signatures. Every distinct benign prompt is a signature of its own,
so at the cap the oldest signature that cannot become a campaign soon (one identity, one request) makes room for
the newcomer; a signature that comes back after that in the same window is marked ``overflowed`` (a request of it
was not seen, so no exception may suppress its alert). Only when no signature can go is a newcomer refused, and
counted (``templates_overflowed``).
"""

from __future__ import annotations

import bisect
import heapq
import logging
import math
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import msgspec

from detectors.alerting import CAMPAIGN_RISK_RULE_ID, AlertGrouper
from detectors.anomaly import rules
from detectors.anomaly.config import AnomalyConfig
from detectors.anomaly.features import SLOT_BITS, context_tokens, distinct_estimate
from detectors.base import Detection, Findings, RuleInfo
from detectors.caps import Tally
from detectors.event import Event, Identity
from detectors.exceptions import AlertException, ExceptionList
from detectors.pipeline import BatchResult
from detectors.redelivery import content_digest

log = logging.getLogger(__name__)

STATE_VERSION = 2  # 2: the event ids already counted (the optional "identities" came later, without a bump)
SIGNATURE = "abusewatch.identity.template_signature"  # written by the anomaly tier, with the next two
VALUE_BUCKET = "abusewatch.identity.template_value_bucket"
SLOT_CHARS = "abusewatch.identity.slot_chars"
MAX_MEMBER_IDENTITIES = 8  # distinct identities kept per member; one more is recorded as UNKNOWN (fail closed)
UNKNOWN = Identity()  # an identity not known (not kept, or from an older checkpoint): it matches no condition
RELIABLE_DISTINCT = 4 * SLOT_BITS  # a linear-counting map counts to about four times its bits (~11 % error)


class CampaignCandidate(msgspec.Struct, frozen=True, kw_only=True):
    """One event's part in a possible campaign: who sent which template when."""

    event_id: str
    timestamp: float
    identity: Identity
    signature: str  # the template signature, hex
    source: int = 0  # the identity partition it came from: each source's event time is tracked on its own
    key: str = ""  # what tells it from another event under the same id (its document's event.hash); "": the id
    # What the prompt put in the template (-1: not known, as from a worker of an earlier version): the bucket of
    # its slot values in a 256-bit distinct-value map, their characters, and the tokens sent beyond the app's text
    value_bucket: int = -1
    slot_chars: int = 0
    context_tokens: float = 0.0

    @property
    def seen_key(self) -> str:
        """What a redelivered candidate is recognised by: a client may reuse one request id for many requests."""
        return self.key or self.event_id


def campaign_candidates(
    events: Sequence[Event], documents: Iterable[dict[str, Any]], source: int = 0
) -> list[CampaignCandidate]:
    """A candidate for each event whose enriched document carries a template signature, in event order;
    ``source`` is the identity partition the events came from. ``documents`` are the events' own, one each, in the
    same order (as the pipeline renders them): paired by position, since ids may repeat (a client may reuse one)
    and a document's ``event.id`` may be masked (an id holding a flagged secret). The candidate takes the
    document's id, masked if it is, as campaign alerts list it."""
    candidates = []
    for event, document in zip(events, documents, strict=True):
        fields = document.get("abusewatch", {}).get("identity", {})
        signature = fields.get("template_signature")
        if signature:
            candidates.append(
                CampaignCandidate(
                    event_id=str(document["event"]["id"]),
                    timestamp=event.timestamp,
                    identity=event.identity,
                    signature=signature,
                    source=source,
                    key=str(document["event"].get("hash", "")),
                    value_bucket=fields.get("template_value_bucket", -1),
                    slot_chars=fields.get("slot_chars", 0),
                    context_tokens=context_tokens(event),
                )
            )
    return candidates


def candidates_from_findings(
    events: Sequence[Event], findings: Sequence[Findings], source: int = 0
) -> list[CampaignCandidate]:
    """The same candidates from the anomaly tier's findings, for code that runs detectors without documents (so
    without document ids: a candidate is recognised by an unkeyed hash of its event instead)."""
    return [
        CampaignCandidate(
            event_id=event.id,
            timestamp=event.timestamp,
            identity=event.identity,
            signature=found.fields[SIGNATURE],
            source=source,
            key=content_digest(event, digest_size=16).hex(),
            value_bucket=found.fields.get(VALUE_BUCKET, -1),
            slot_chars=found.fields.get(SLOT_CHARS, 0),
            context_tokens=context_tokens(event),
        )
        for event, found in zip(events, findings, strict=True)
        if SIGNATURE in found.fields
    ]


def signature_partition(signature: str, partitions: int) -> int:
    """Where candidates of one signature meet: stable across processes (CRC-32)."""
    return zlib.crc32(signature.encode("ascii", "replace")) % partitions


def group_by_signature(candidates: Iterable[CampaignCandidate], partitions: int) -> dict[int, list[CampaignCandidate]]:
    """Candidates by the partition of their signature, in their original order within each group."""
    groups: dict[int, list[CampaignCandidate]] = {}
    for candidate in candidates:
        groups.setdefault(signature_partition(candidate.signature, partitions), []).append(candidate)
    return groups


class Campaign(NamedTuple):
    """A campaign detection, every distinct identity of every member it names (``related.user``), whether
    members were turned away by a bound (``overflowed``: then no exception may suppress it, as not all were seen),
    and whether it ``amends`` the alert its window already raised (late members named: not a new detection)."""

    detection: Detection
    identities: tuple[Identity, ...]
    overflowed: bool = False
    amends: bool = False


class _Alerted(NamedTuple):
    """How a window alerted: its rule, and the detection's time (which places the alert in its grouping window, so
    an amendment carries it to keep the alert's id)."""

    rule: str
    timestamp: float


def _with_identity(identities: list[Identity], identity: Identity) -> list[Identity]:
    """``identities`` with ``identity`` added if it is new; past the bound, UNKNOWN takes its place (once)."""
    if identity in identities or len(identities) > MAX_MEMBER_IDENTITIES:
        return identities
    return [*identities, identity if len(identities) < MAX_MEMBER_IDENTITIES else UNKNOWN]


def _identity_lists(state: dict[str, Any]) -> dict[str, list[Identity]]:
    """Members' identities from a checkpoint: a list each, or one identity each (the format before lists)."""
    return {
        member: msgspec.convert(value if isinstance(value, list) else [value], list[Identity])
        for member, value in state.items()
    }


class _Window:
    """Who used one template signature in one window (bounded), and what all their requests put in it."""

    __slots__ = (
        "alerted",
        "bare",
        "event_ids",
        "identities",
        "ips",
        "keys",
        "last_ts",
        "members",
        "overflowed",
        "profiled",
        "requests",
        "values",
    )

    def __init__(self) -> None:
        self.members: dict[str, int] = {}
        self.identities: dict[str, list[Identity]] = {}  # each member's distinct identities (bounded)
        self.overflowed = False  # a member was turned away at ``campaign_max_identities``
        self.ips: list[str] = []
        self.keys: list[str] = []  # distinct API keys (bounded like ``ips``)
        self.event_ids: list[tuple[float, str]] = []  # the earliest, whatever order they arrived in
        self.last_ts = 0.0
        # every request on the template, a member's or not; those whose slot values are known (``profiled``); of
        # those, the ones that bring no payload of their own (``bare``), and the distinct-value map of the bare ones
        # (linear counting, as the anomaly tier's)
        self.requests = 0
        self.profiled = 0
        self.bare = 0
        self.values = 0
        self.alerted: _Alerted | None = None  # set once the window raised a campaign

    def totals(self) -> list[Any]:
        """What :meth:`add_request` counted, for a checkpoint (a list: there may be 50,000 windows in one)."""
        return [self.requests, self.profiled, self.bare, f"{self.values:x}", self.keys]

    def load_totals(self, totals: list[Any]) -> None:
        """Restore :meth:`totals`; empty (an older checkpoint), the requests are the members' and none profiled."""
        if not totals:
            self.requests = sum(self.members.values())
            return
        requests, profiled, bare, values, keys = totals
        self.requests, self.profiled, self.bare = int(requests), int(profiled), int(bare)
        self.values, self.keys = int(values, 16), [str(key) for key in keys]

    def add_request(self, candidate: CampaignCandidate, config: AnomalyConfig) -> None:
        """Count a request on the template, whoever sent it (so also past the member bound). It is *bare* when it
        brings no payload of its own: context and slot text within the enumeration rule's limits (a NaN is not)."""
        self.requests += 1
        key = candidate.identity.api_key_hash
        if key and key not in self.keys and len(self.keys) < config.campaign_max_identities:
            self.keys.append(key)
        if candidate.value_bucket < 0:
            return
        self.profiled += 1
        if config.is_bare(candidate.context_tokens, candidate.slot_chars):
            self.bare += 1
            self.values |= 1 << (candidate.value_bucket % SLOT_BITS)

    def distinct_share(self) -> float:
        """Distinct slot values per bare request; past :data:`RELIABLE_DISTINCT` requests, per that many (the
        map saturates at about 1,400 values, so a big campaign would otherwise look repetitive)."""
        if not self.bare:
            return 0.0
        return min(1.0, distinct_estimate(self.values) / min(self.bare, RELIABLE_DISTINCT))


def _window_rows(windows: dict[float, dict[str, _Window]]) -> list[list[Any]]:
    """Windows as checkpoint rows; a window that alerted ends with how (:class:`_Alerted`)."""
    return [
        [start, signature, window.members, msgspec.to_builtins(window.identities), window.ips,
         window.event_ids, window.last_ts, window.overflowed, window.totals(),
         *([list(window.alerted)] if window.alerted is not None else [])]
        for start, by_signature in windows.items()
        for signature, window in by_signature.items()
    ]  # fmt: skip


def _windows_from_rows(rows: list[list[Any]]) -> dict[float, dict[str, _Window]]:
    """The windows of :func:`_window_rows`; rows of older checkpoints lack the overflow flag, the totals and how
    the window alerted (a window that alerted was not kept then)."""
    windows: dict[float, dict[str, _Window]] = {}
    for start, signature, members, identities, ips, event_ids, last_ts, *optional in rows:
        window = windows.setdefault(float(start), {}).setdefault(signature, _Window())
        window.members = {k: int(n) for k, n in members.items()}
        window.identities = _identity_lists(identities)
        window.ips, window.last_ts = list(ips), float(last_ts)
        window.overflowed = bool(optional and optional[0])
        window.load_totals(optional[1] if len(optional) > 1 else [])
        window.event_ids = [(float(ts), str(event_id)) for ts, event_id in event_ids]
        if len(optional) > 2:
            rule, timestamp = optional[2]
            window.alerted = _Alerted(str(rule), float(timestamp))
    return windows


def _single(window: _Window) -> bool:
    """Whether a window holds one request of one identity."""
    return len(window.members) == 1 and next(iter(window.members.values())) == 1


class CampaignDetector:
    """Campaign windows per template signature, closed by an event-time watermark.

    Thresholds come from the anomaly configuration (``campaign_*``, ``window_seconds``, lateness, bounds).
    Candidates arrive from every identity partition, and those partitions' event times drift apart (a worker
    that died leaves its partitions behind until another takes them over). So the watermark follows the
    *slowest* source: each source's newest event time is kept, and a window closes only when every source has
    passed it. A source not heard from for ``idle_seconds`` of wall time (no traffic, or gone) stops holding
    the watermark back, so one quiet partition cannot stall every campaign alert.

    Candidates are delivered at least once (an identity partition that moves re-sends what its old owner sent
    after its last committed offset), so the last ``remember`` event ids are kept and a repeat is ignored.

    ``templates_evicted`` and ``templates_overflowed`` (:class:`Tally`) count the signatures forgotten at
    ``campaign_max_templates`` and the candidates of new signatures refused there, since this detector was created or
    its state loaded (for a metric, told once each through ``unreported``; not checkpointed).
    """

    def __init__(
        self,
        config: AnomalyConfig | None = None,
        *,
        sources: int = 0,
        idle_seconds: float = 120.0,
        remember: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or AnomalyConfig()
        self.sources = sources
        self.idle_seconds = idle_seconds
        self.remember = remember
        self.clock = clock
        self._seen: OrderedDict[str, None] = OrderedDict()  # the last ``remember`` seen keys, oldest first
        self._windows: dict[float, dict[str, _Window]] = {}  # window start -> signature -> window
        # windows closed in the last ``campaign_rejudge_seconds``: late candidates may complete a campaign, or join
        # the one the window raised (``_Window.alerted``)
        self._closed: dict[float, dict[str, _Window]] = {}
        self._closed_members = 0  # members of those windows, in all: what their memory is bounded by
        # the signatures that alerted, per kept window start: never a new alert, only amended if their window is kept
        self._alerted: dict[float, set[str]] = {}
        self._late: set[tuple[float, str]] = set()  # kept windows late candidates joined, to judge again
        self._members: dict[str, dict[str, float]] = {}  # signature -> identity -> last window it qualified in
        self._identities: dict[str, dict[str, list[Identity]]] = {}  # the same members -> identities seen
        self._overflowed: dict[str, float] = {}  # signature -> last window a member was turned away at the cap
        self._sources: dict[int, float] = {}  # source -> newest event time seen from it
        self._heard: dict[int, float] = {}  # source -> wall time it was last heard from (not checkpointed)
        self._started = clock()  # sources not heard from yet count as heard now: they hold the watermark a while
        self._watermark = -math.inf
        self._last_eviction = -math.inf
        # window start -> heap of (time, signature) of the signatures created there; those no longer single are skipped
        self._singles: dict[float, list[tuple[float, str]]] = {}
        # window start -> signatures forgotten there at the cap (None: more than the cap, so any may have been)
        self._forgotten: dict[float, dict[str, None] | None] = {}
        self._refusal_logged: set[float] = set()  # windows whose refusals were logged (not checkpointed)
        self.templates_evicted = Tally()
        self.templates_overflowed = Tally()

    def detect(self, candidates: Sequence[CampaignCandidate]) -> list[Detection]:
        return [campaign.detection for campaign in self.campaigns(candidates)]

    def campaigns(self, candidates: Sequence[CampaignCandidate]) -> list[Campaign]:
        """The campaigns whose windows ``candidates`` close, with the identities each names."""
        detections: list[Campaign] = []
        width = self.config.window_seconds
        now = self.clock()
        for candidate in sorted(candidates, key=lambda c: c.timestamp):
            if not math.isfinite(candidate.timestamp) or candidate.seen_key in self._seen:
                continue
            self._seen[candidate.seen_key] = None
            if len(self._seen) > self.remember:
                self._seen.popitem(last=False)
            start = math.floor(candidate.timestamp / width) * width
            if start + width > self._watermark:
                self._add(start, candidate)
            elif self._add_late(start, candidate):
                self._late.add((start, candidate.signature))
            source = candidate.source
            self._sources[source] = max(self._sources.get(source, -math.inf), candidate.timestamp)
            self._heard[source] = now
            detections.extend(self._advance(self._slowest(now) - self.config.allowed_lateness_seconds))
        return detections + self._rejudge(self._late)

    def _slowest(self, now: float) -> float:
        """The newest event time of the slowest source still heard from (of every source when all are quiet).

        With ``sources`` set, a source not heard from yet holds the watermark back too (for ``idle_seconds``), so
        a partition whose worker starts late does not find its first windows closed.
        """
        expected = set(range(self.sources)) | set(self._sources)
        active = [
            self._sources.get(source, -math.inf)
            for source in expected
            if now - self._heard.get(source, self._started) <= self.idle_seconds
        ]
        if active:
            return min(active)
        return min(self._sources.values(), default=-math.inf)

    def flush(self, until: float | None = None) -> list[Detection]:
        return [campaign.detection for campaign in self.flush_campaigns(until)]

    def flush_campaigns(self, until: float | None = None) -> list[Campaign]:
        """The campaigns of the windows still open (up to ``until``), with the identities each names."""
        return self._advance(math.inf if until is None else until)

    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "watermark": self._watermark if math.isfinite(self._watermark) else None,
            "sources": [[source, ts] for source, ts in self._sources.items()],
            "seen": list(self._seen),
            "last_eviction": self._last_eviction if math.isfinite(self._last_eviction) else None,
            "members": self._members,
            "identities": {s: msgspec.to_builtins(identities) for s, identities in self._identities.items()},
            "overflowed": self._overflowed,
            "forgotten": [
                [start, None if forgotten is None else list(forgotten)] for start, forgotten in self._forgotten.items()
            ],
            "windows": _window_rows(self._windows),
            "closed": _window_rows(self._closed),
            "alerted": [[start, sorted(signatures)] for start, signatures in self._alerted.items()],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            self.config, sources=self.sources, idle_seconds=self.idle_seconds, remember=self.remember, clock=self.clock
        )
        if not state:
            return
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"campaign state version {state.get('version')!r} is not {STATE_VERSION}")
        self._watermark = -math.inf if state["watermark"] is None else float(state["watermark"])
        self._sources = {int(source): float(ts) for source, ts in state["sources"]}
        self._seen = OrderedDict.fromkeys(str(event_id) for event_id in state["seen"])
        self._last_eviction = -math.inf if state["last_eviction"] is None else float(state["last_eviction"])
        self._members = {s: {k: float(v) for k, v in members.items()} for s, members in state["members"].items()}
        self._identities = {  # absent from older checkpoints: their members are judged as unknown identities
            s: _identity_lists(identities) for s, identities in state.get("identities", {}).items()
        }
        self._overflowed = {s: float(start) for s, start in state.get("overflowed", {}).items()}
        self._windows = _windows_from_rows(state["windows"])
        self._closed = _windows_from_rows(state.get("closed", []))  # absent from older checkpoints
        self._closed_members = sum(len(w.members) for windows in self._closed.values() for w in windows.values())
        self._alerted = {float(start): set(map(str, signatures)) for start, signatures in state.get("alerted", [])}
        self._forgotten = {  # absent from older checkpoints
            float(start): None if forgotten is None else dict.fromkeys(map(str, forgotten))
            for start, forgotten in state.get("forgotten", [])
        }
        for start, by_signature in self._windows.items():
            singles = [(window.last_ts, s) for s, window in by_signature.items() if _single(window)]
            heapq.heapify(singles)
            self._singles[start] = singles

    def fresh(self) -> CampaignDetector:
        return CampaignDetector(
            self.config, sources=self.sources, idle_seconds=self.idle_seconds, remember=self.remember, clock=self.clock
        )

    def _add(self, start: float, candidate: CampaignCandidate) -> None:
        config = self.config
        windows = self._windows.setdefault(start, {})
        window = windows.get(candidate.signature)
        if window is None:
            if len(windows) >= config.campaign_max_templates and not self._forget_single(start, windows):
                self._refuse(start)
                return
            window = windows[candidate.signature] = _Window()
            forgotten = self._forgotten.get(start, {})
            if forgotten is None or candidate.signature in forgotten:
                window.overflowed = True  # a request of it was forgotten: no exception may suppress this window
            heapq.heappush(self._singles.setdefault(start, []), (candidate.timestamp, candidate.signature))
        self._count(window, candidate)

    def _add_late(self, start: float, candidate: CampaignCandidate) -> bool:
        """Count a candidate of a closed window, if it is still kept (and there is room for a signature it did not
        hold, or a member it did not have); whether it was counted."""
        windows = self._closed.get(start)
        if windows is None:
            return False
        window = windows.get(candidate.signature)
        if window is None and candidate.signature in self._alerted.get(start, ()):
            return False  # it alerted but was not kept (past the bound): a new window of it would alert again
        joining = window is None or candidate.identity.key() not in window.members
        if joining and self._closed_members >= self.config.campaign_rejudge_max_members:
            return False  # at the bound, only members already kept are counted
        if window is None:
            window = windows[candidate.signature] = _Window()
            window.overflowed = True  # it may have had a request that was not kept (one-off): fail closed
        before = len(window.members)
        self._count(window, candidate)
        self._closed_members += len(window.members) - before
        return True

    def _count(self, window: _Window, candidate: CampaignCandidate) -> None:
        config = self.config
        window.add_request(candidate, config)
        member = candidate.identity.key()
        if member not in window.members:
            if len(window.members) >= config.campaign_max_identities:
                window.overflowed = True  # not recorded, so not judged: no exception may suppress this window
                return
            window.members[member] = 0
            ip = candidate.identity.source_ip
            if ip and ip not in window.ips and len(window.ips) < config.campaign_max_identities:
                window.ips.append(ip)
        window.members[member] += 1
        window.identities[member] = _with_identity(window.identities.get(member, []), candidate.identity)
        window.last_ts = max(window.last_ts, candidate.timestamp)
        if window.alerted is None:  # an alert's events stay those it was raised on, whatever the batching after it
            bisect.insort(window.event_ids, (candidate.timestamp, candidate.event_id))
            del window.event_ids[config.max_event_ids :]

    def _forget_single(self, start: float, windows: dict[str, _Window]) -> bool:
        """Make room in a full window: forget its oldest signature of one identity and one request (time, then
        signature: the same whatever the batching), which cannot become a campaign soon. False if there is none."""
        singles = self._singles.get(start, [])
        while singles:
            timestamp, signature = heapq.heappop(singles)
            window = windows.get(signature)
            if window is not None and window.last_ts == timestamp and _single(window):
                del windows[signature]
                forgotten = self._forgotten.setdefault(start, {})
                if forgotten is not None:
                    forgotten[signature] = None
                    if len(forgotten) > self.config.campaign_max_templates:
                        self._forgotten[start] = None  # too many to list: any signature may have lost a request
                self.templates_evicted.count += 1
                return True
        return False

    def _refuse(self, start: float) -> None:
        """A new signature refused in a full window where no signature could go: counted, logged once per window."""
        self.templates_overflowed.count += 1
        if start not in self._refusal_logged:
            self._refusal_logged.add(start)
            log.warning(
                "campaigns: the window at %s holds campaign_max_templates (%d) signatures, none of which can go; "
                "new signatures are not judged in it",
                start,
                self.config.campaign_max_templates,
            )

    def _advance(self, watermark: float) -> list[Campaign]:
        if watermark <= self._watermark:
            return []
        self._watermark = watermark
        width = self.config.window_seconds
        detections: list[Campaign] = []
        for start in sorted(s for s in self._windows if s + width <= watermark):
            detections.extend(self._close(start, self._windows.pop(start)))
            self._singles.pop(start, None)
            self._forgotten.pop(start, None)
            self._refusal_logged.discard(start)
        expired = {s for s in self._closed if s + width + self.config.campaign_rejudge_seconds <= watermark}
        detections.extend(self._rejudge({late for late in self._late if late[0] in expired}))  # their last chance
        for start in expired:
            self._closed_members -= sum(len(window.members) for window in self._closed.pop(start).values())
            self._alerted.pop(start, None)
        if math.isfinite(watermark) and watermark - self._last_eviction >= 3600.0:
            self._last_eviction = watermark
            horizon = watermark - self.config.campaign_memory_seconds
            for signature in list(self._members):
                members = {k: seen for k, seen in self._members[signature].items() if seen >= horizon}
                identities = self._identities.pop(signature, {})
                if members:
                    self._members[signature] = members
                    self._identities[signature] = {k: v for k, v in identities.items() if k in members}
                else:
                    del self._members[signature]
            self._overflowed = {s: seen for s, seen in self._overflowed.items() if seen >= horizon}
        return detections

    def _judge(self, signature: str, window: _Window) -> tuple[RuleInfo, list[str], str, dict[str, float]] | None:
        """The rule a closed window meets, its members (sorted), the message's opening and the explanation.

        First many identities each sending a few requests on the template (the campaign rule); failing that, the
        window's requests in total, from many identities, each filling the template with other slot values and
        almost no context of their own (the enumeration rule's conditions): a campaign spread thin, a couple of
        requests per key or a new user id per request, that no identity's own window shows.
        """
        config = self.config
        members = sorted(k for k, n in window.members.items() if n >= config.campaign_min_requests)
        if len(members) >= config.campaign_min_identities:
            requests = sum(window.members[k] for k in members)
            opening = f"{len(members)} identities sent {requests} requests on one prompt template ({signature})"
            return rules.SCRAPING_CAMPAIGN, members, opening, {"requests": float(requests)}
        if config.campaign_enumeration_status == "off" or len(window.members) < config.campaign_min_identities:
            return None
        busiest = max(window.members.values())
        distinct = window.distinct_share()
        if not (
            window.bare >= config.enumeration_min_requests
            and 2 * busiest <= window.bare  # no identity sent half of them: not one enumerator and a few others
            and distinct >= config.enumeration_min_distinct_share
        ):
            return None
        rule = rules.with_status(rules.SCRAPING_CAMPAIGN_ENUMERATION, config.campaign_enumeration_status)
        opening = (
            f"{len(window.members)} identities through {len(window.keys)} API keys sent {window.requests} requests "
            f"on one prompt template ({signature}), {window.bare} of them with no payload of their own, "
            f"{distinct:.0%} of those with other values, at most {busiest} from one identity"
        )
        explanation = {
            "requests": float(window.requests),
            "bare_requests": float(window.bare),
            "api_keys": float(len(window.keys)),
            "slot_distinct_share": round(distinct, 3),
            "busiest_identity_requests": float(busiest),
        }
        return rule, sorted(window.members), opening, explanation

    def _close(self, start: float, by_signature: dict[str, _Window]) -> list[Campaign]:
        """The campaigns of a window closing. The windows with one, and those without one that could still become
        one (not a single request), are kept for ``campaign_rejudge_seconds``, ``campaign_rejudge_max_members``
        members in all: first those without (a campaign not raised yet), then those with one, the busiest first."""
        detections, kept, alerted = [], [], set()
        for signature, window in by_signature.items():
            campaign = self._campaign(start, signature, window)
            if campaign is not None:
                detections.append(campaign)
                alerted.add(signature)
            if campaign is not None or not _single(window):
                kept.append((signature, window))
        if self.config.campaign_rejudge_seconds > 0 and kept:
            windows = self._closed[start] = {}
            self._alerted[start] = alerted
            order = sorted(kept, key=lambda item: (item[1].alerted is not None, -item[1].requests, item[0]))
            for signature, window in order:
                if self._closed_members + len(window.members) > self.config.campaign_rejudge_max_members:
                    continue
                windows[signature] = window
                self._closed_members += len(window.members)
        return detections

    def _rejudge(self, late: set[tuple[float, str]]) -> list[Campaign]:
        """Judge again the kept windows late candidates joined (a partition back from a stall): a campaign they
        complete is raised, once. A window that alerted amends its alert with what they added (every batch: the
        alert finally written is then the same whatever the batching), or, now meeting the campaign rule after
        the enumeration rule, raises that rule's alert."""
        detections = []
        for start, signature in sorted(late):
            self._late.discard((start, signature))
            window = self._closed.get(start, {}).get(signature)
            if window is None:
                continue
            campaign = self._campaign(start, signature, window, late=True)
            if campaign is not None:
                detections.append(campaign)
                self._alerted.setdefault(start, set()).add(signature)
        return detections

    def _campaign(self, start: float, signature: str, window: _Window, late: bool = False) -> Campaign | None:
        """The campaign a closed window shows, if any, with the members it adds to the campaign's memory; an
        amendment of the window's alert if it raised one under the same rule."""
        config = self.config
        judged = self._judge(signature, window)
        if judged is None:
            return None
        rule, members, opening, explanation = judged
        before = window.alerted
        amends = before is not None and before.rule == rule.id
        timestamp = before.timestamp if before is not None and amends else window.last_ts
        window.alerted = _Alerted(rule.id, timestamp)
        # A shadow rule's members join no campaign's memory: they would be named, and judged by exceptions, in the
        # alerts of a stable rule on the same template (an app's customers in a bulk job's campaign alert).
        remember = rule.status != "test"
        known = self._members.setdefault(signature, {}) if remember else dict(self._members.get(signature, {}))
        identities = (
            self._identities.setdefault(signature, {}) if remember else dict(self._identities.get(signature, {}))
        )
        overflowed = signature in self._overflowed or window.overflowed
        taking_part = {}
        for member in members:
            merged = identities.get(member, [])
            for identity in window.identities[member]:
                merged = _with_identity(merged, identity)
            taking_part[member] = merged
            if member in known or len(known) < config.campaign_max_identities:
                known[member] = start
                identities[member] = merged
            else:  # not remembered, so later windows' alerts could not name it: they must not be suppressed
                overflowed = True
        if overflowed and remember:
            self._overflowed[signature] = start
        # every identity named, and every one that took part (more than named once the campaign is at its cap)
        named = {key: identities.get(key, [UNKNOWN]) for key in known}
        named.update(taking_part)
        detection = Detection(
            rule=rule,
            event_ids=[event_id for _ts, event_id in window.event_ids],
            timestamp=timestamp,
            identity=window.identities[members[0]][0],
            message=(
                f"{opening} in one window; {len(known)} identities in the campaign so far"
                + (" (and more, not listed: the campaign is at its cap)" if overflowed else "")
                + ("; judged again after the window closed: members arrived late" if late else "")
            ),
            score=min(1.0, 0.5 + len(members) / (4 * config.campaign_min_identities)),
            related_users=sorted(known),
            related_ips=sorted(window.ips),
            group_key=f"campaign:{signature}",
            explanation={
                "identities": float(len(members)),
                "campaign_identities": float(len(known)),
                **explanation,
                "window_start": start,
                **({"judged_late": 1.0} if late else {}),
            },
        )
        every = tuple(identity for member_identities in named.values() for identity in member_identities)
        return Campaign(detection, every, overflowed, amends)


class CampaignStage:
    """A campaign detector with its own alert grouper and the alert exceptions: candidates in, alerts out.

    An exception suppresses a campaign alert only if its conditions hold for *every* identity the alert names
    (``related.user``) and every one that took part in the window, each member judged on *every distinct* identity
    it was seen with in the campaign (a member is an identity key, and a client-chosen user id can be sent with
    anyone's API key): one excepted bulk-job key, or its user ids, cannot hide an attacker's campaign on the same
    template. What is not known matches nothing: a member restored from an older checkpoint, a member's identities
    past :data:`MAX_MEMBER_IDENTITIES`; and a campaign that turned members away at ``campaign_max_identities``
    (in this window, or in one still remembered) is never suppressed. An entity-risk alert that a campaign raises
    is judged on that campaign's identities too, so it is suppressed only where the campaign alert would be.

    The stage groups with a grouper of its own, made like ``grouper`` (redactor, policy) but empty, whose risk
    alerts are rule :data:`CAMPAIGN_RISK_RULE_ID`: the identity partitions keep risk scores for the same identities,
    and a risk alert of both under one rule would be one alert id with two writers.
    """

    def __init__(
        self, detector: CampaignDetector, grouper: AlertGrouper, exceptions: ExceptionList | None = None
    ) -> None:
        self.detector = detector
        self.grouper = grouper.for_risk_rule(CAMPAIGN_RISK_RULE_ID)
        self.exceptions = exceptions if exceptions is not None else ExceptionList()

    def process(self, candidates: Sequence[CampaignCandidate]) -> BatchResult:
        """Everything ``candidates`` produce, as :meth:`Pipeline.process` returns it: alerts, shadow alerts,
        detections and suppressed detections."""
        return self._render(self.detector.campaigns(candidates))

    def flush(self, until: float | None = None) -> BatchResult:
        """The same for the windows still open (up to ``until``)."""
        return self._render(self.detector.flush_campaigns(until))

    def state(self) -> dict[str, Any]:
        return {"campaigns": self.detector.state(), "alerting": self.grouper.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.detector.load_state(state.get("campaigns", {}))
        self.grouper.load_state(state.get("alerting", {}))

    def fresh(self) -> CampaignStage:
        return CampaignStage(self.detector.fresh(), self.grouper.fresh(), self.exceptions)

    def _render(self, campaigns: list[Campaign]) -> BatchResult:
        """Alerts of ``campaigns``: an amendment goes to the grouper as one (it widens its alert, not a new one)."""
        result = BatchResult(detections=[campaign.detection for campaign in campaigns])
        by_detection = {id(campaign.detection): campaign for campaign in campaigns}
        fresh = [campaign.detection for campaign in campaigns if not campaign.amends]
        amendments = [campaign.detection for campaign in campaigns if campaign.amends]

        def judge(detection: Detection, cause: Detection | None = None) -> AlertException | None:
            """A campaign alert, or the risk alert it raised (``cause``), judged on the campaign's identities."""
            campaign = by_detection[id(cause if cause is not None else detection)]
            return None if campaign.overflowed else self.exceptions.match(detection, campaign.identities)

        fresh.sort(key=lambda detection: detection.timestamp)
        for _detection, document in self.grouper.alerts(
            fresh, {}, judge, result.suppressed, judge_risk=judge, amendments=amendments
        ):
            (result.shadow_alerts if document["abusewatch"]["shadow"] else result.alerts).append(document)
        return result
