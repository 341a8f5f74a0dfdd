"""Multi-turn chains per session: attacks that only show as a sequence.

- **Blocked, then through**: several attempts in a session refused or blocked by a guardrail, then an attack
  turn that was answered. Persistence that finally worked is worth more than any single attempt.
- **Rising injection score**: the classifier's score climbs turn after turn (crescendo-style jailbreaks).
- **Leaked system prompt reused**: a response leaked the system prompt, and a later prompt of the same identity
  quotes it back (the attacker builds on what was extracted).

It runs after the other detectors and reads their verdicts from each event's findings. State is per session,
bounded (turns per session, and sessions per pipeline: the session id is the client's to choose, so past
``max_sessions`` the least recently active session is forgotten), and expires on event time. A turn that arrives
late takes its place in time order and is judged with the turns before it. Of a leaked response only keyed hashes
of its word shingles are kept: the state is checkpointed, and raw overlapping shingles would rebuild the response
(and any secret or PII in it), which every output document masks.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import math
import secrets
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import msgspec

from detectors.base import Detection, Detector, Evidence, Findings, RuleInfo
from detectors.caps import Evictions, LeastRecentlyActive
from detectors.event import PROMPT, Event, Identity
from detectors.exfil.masking import Masker
from detectors.exfil.measures import shingles, words
from detectors.matching import MultiMatcher, Pattern

log = logging.getLogger(__name__)

DEFAULT_MAX_SESSIONS = 100_000  # sessions kept per pipeline (one pipeline per partition); see docs/scaling.md
SHINGLE_HASH = "blake2b-64"  # how leaked shingles are kept; checkpoints without this marker hold raw shingles
ATTACK_CATEGORIES = frozenset({"prompt_injection", "jailbreak"})
LEAK_MEMORY_WINDOWS = 24  # a leaked prompt quoted back later than this many windows is no longer connected
SESSION_MEMORY_WINDOWS = 3  # a session idle this many windows before the newest event time is over (lagging
# partitions: correlation's lateness)
INJECTION_SCORE = "gen_ai.security.prompt_injection_score"
REFUSALS = (
    r"i\s*(?:am|'m)\s+sorry,?\s+but\s+i\s+(?:can(?:not|'t)|won't)",
    r"i\s+(?:can(?:not|'t)|won't|am\s+not\s+able\s+to|'m\s+not\s+able\s+to)\s+(?:help|assist|comply|provide|do\s+that)",
    r"as\s+an\s+ai(?:\s+language\s+model)?,?\s+i\s+(?:can(?:not|'t)|don't)",
    r"i\s+must\s+(?:decline|refuse)",
    r"this\s+request\s+(?:violates|goes\s+against)",
)

BLOCKED_THEN_THROUGH = RuleInfo(
    id="abusewatch-chain-blocked-then-through",
    name="Jailbreak got through after blocked attempts",
    category="jailbreak",
    level="high",
    description="Several attempts in one session were refused or blocked, then an attack turn was answered.",
    atlas=("AML.T0054",),
    owasp=("LLM01:2025",),
)
RISING_SCORE = RuleInfo(
    id="abusewatch-chain-rising-injection-score",
    name="Injection score rising over a conversation",
    category="prompt_injection",
    level="medium",
    description="The prompt-injection score climbed over consecutive turns of one session (crescendo pattern).",
    atlas=("AML.T0051.000", "AML.T0054"),
    owasp=("LLM01:2025",),
)
PROMPT_REUSED = RuleInfo(
    id="abusewatch-chain-leaked-prompt-reused",
    name="Leaked system prompt reused in a later prompt",
    category="system_prompt_leak",
    level="high",
    description="A response leaked the system prompt and a later prompt of the same identity quotes it back.",
    atlas=("AML.T0056",),
    owasp=("LLM07:2025",),
)


class ChainSettings(msgspec.Struct, frozen=True, kw_only=True):
    window_seconds: float = 3600.0
    blocked_attempts: int = 3
    rising_turns: int = 4
    rising_final_score: float = 0.5
    reuse_overlap: float = 0.5
    shingle_words: int = 5
    max_turns: int = 32
    max_leaks_per_identity: int = 4


@dataclass(slots=True)
class _Turn:
    timestamp: float
    blocked: bool
    score: float | None


@dataclass(slots=True)
class _Session:
    turns: list[_Turn]  # in time order, at most ``max_turns`` (a list: a deque costs ~760 bytes empty)
    last_seen: float  # the newest turn's time: a late turn never moves it back


@dataclass(slots=True)
class _Leak:
    timestamp: float
    # keyed hashes (SessionChainDetector._hash), sorted: 8 bytes each (as a set of hex strings, ~9 KB a response)
    shingles: array[int] = field(default_factory=lambda: array("Q"))

    @classmethod
    def of(cls, timestamp: float, hashes: set[int]) -> _Leak:
        """A leak holding ``hashes`` sorted, as :func:`_shared` reads them."""
        return cls(timestamp, array("Q", sorted(hashes)))


def _shared(quoted: set[int], kept: array[int]) -> int:
    """How many of the sorted hashes ``kept`` are in ``quoted``, walking the smaller side: a short prompt against a
    long leak costs a binary search a shingle, not a Python int per kept hash."""
    if len(kept) <= len(quoted):
        return len(quoted.intersection(kept))
    found = 0
    for value in quoted:
        at = bisect.bisect_left(kept, value)
        found += at < len(kept) and kept[at] == value
    return found


def _turn_time(turn: _Turn) -> float:
    return turn.timestamp


def session_key(identity: Identity) -> str:
    """The chain a turn belongs to: its session within its identity, else the identity. A session id is the
    client's to choose: two users sending the same one ("default") must not share a chain or an alert."""
    key = identity.key()
    if identity.session_id and not key.startswith("session:"):
        return f"{key}|session:{identity.session_id}"
    return key


class SessionChainDetector(Detector):
    """Correlates turns of a session (``session.id``, else the identity) into chain alerts.

    ``shingle_key`` keys the hashes kept of leaked responses' shingles; pass one that is stable per deployment
    (``redactor.derive_key("chain shingles")``) so a restored checkpoint still matches. Without one, a random key
    per detector: nothing leaks, but leaks from before a restart are no longer recognised.

    At most ``max_sessions`` sessions are kept: past it, the session whose newest turn is oldest (event time, then
    key) is forgotten, one at a time, so what is kept never depends on how arrivals were batched (a session that
    expiry would already have dropped is always the first to go). ``evictions.count`` counts the sessions forgotten this
    way since this detector was created or its state loaded (for a metric; not checkpointed).
    """

    name = "chains"

    def __init__(
        self,
        settings: ChainSettings | None = None,
        *,
        shingle_key: bytes | None = None,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        self.settings = settings or ChainSettings()
        self.max_sessions = max_sessions
        self._shingle_key = shingle_key or secrets.token_bytes(32)
        self._refusals = MultiMatcher([Pattern(i, p) for i, p in enumerate(REFUSALS)], max_matches_per_pattern=1)
        self._sessions: dict[str, _Session] = {}
        self._new_cap_state()
        self._leaks: dict[str, list[_Leak]] = {}
        self._newest = -math.inf  # the newest event time seen
        self._expired_at = -math.inf  # the newest event time when state was last scanned for expiry

    def detect(self, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        detections: list[Detection] = []
        for event, found in zip(events, findings, strict=True):  # arrival order: the same in any batching
            detections.extend(self._observe(event, found))
        self._expire(events)
        self.evictions.say(self.max_sessions)
        return detections

    def _observe(self, event: Event, found: Findings) -> list[Detection]:
        settings = self.settings
        key = session_key(event.identity)
        self._newest = max(self._newest, event.timestamp)
        session = self._sessions.get(key)
        if (
            session is None
            or event.timestamp - session.last_seen > settings.window_seconds
            or session.last_seen < self._horizon(SESSION_MEMORY_WINDOWS)  # over, even if no batch end expired it yet
        ):
            self._sessions.pop(key, None)  # a session that starts over goes last, as a new one
            session = self._sessions[key] = _Session(turns=[], last_seen=event.timestamp)
            self._activity.touched(key, session.last_seen, len(self._sessions))
            self._forget_least_recent()
        elif event.timestamp > session.last_seen:
            session.last_seen = event.timestamp
            self._activity.touched(key, session.last_seen, len(self._sessions))
        blocked = self._blocked(event)
        attack = bool(found.categories & ATTACK_CATEGORIES)
        score = found.fields.get(INJECTION_SCORE)
        turn = _Turn(event.timestamp, blocked, score if isinstance(score, int | float) else None)
        # A late turn takes its place in time order and is judged with the turns before it, as on time.
        position = bisect.bisect_right(session.turns, event.timestamp, key=_turn_time)
        previous = session.turns[:position]
        upto = [*previous, turn]
        if position or len(session.turns) < settings.max_turns:  # a full session keeps its newest turns
            session.turns.insert(position, turn)
            del session.turns[: -settings.max_turns]
        detections = []
        blocked_before = sum(1 for kept in previous if kept.blocked)
        if attack and not blocked and blocked_before >= settings.blocked_attempts:
            detections.append(
                self._detection(
                    BLOCKED_THEN_THROUGH,
                    event,
                    key,
                    f"{blocked_before} blocked or refused attempts in {key}, then an attack turn was answered",
                    {"blocked_attempts": float(blocked_before)},
                )
            )
        scores = [kept.score for kept in upto if kept.score is not None][-settings.rising_turns :]
        if (
            len(scores) == settings.rising_turns
            and all(a < b for a, b in pairwise(scores))
            and scores[-1] >= settings.rising_final_score
        ):
            detections.append(
                self._detection(
                    RISING_SCORE,
                    event,
                    key,
                    f"Injection score rose over {len(scores)} turns in {key} to {scores[-1]:.2f}",
                    {f"turn_{i}": round(s, 3) for i, s in enumerate(scores)},
                    score=scores[-1],
                )
            )
        detections.extend(self._leak_reuse(event, found))
        return detections

    # Bound methods, not closures: a deep copy of the detector (Pipeline.fresh) must take its own store along.
    def _session_times(self) -> Iterator[tuple[str, float]]:
        return ((key, session.last_seen) for key, session in self._sessions.items())

    def _last_seen(self, key: str) -> float | None:
        session = self._sessions.get(key)
        return None if session is None else session.last_seen

    def _new_cap_state(self) -> None:
        """A count of evictions and an eviction order of this detector's own: :meth:`fresh` copies shallowly, and
        ``load_state`` calls this, so copies never share them."""
        self.evictions = Evictions(
            log, "chains: max_sessions (%d) reached; forgot the %d sessions least recently active since last said"
        )
        self._activity = LeastRecentlyActive(self._last_seen, self._session_times)

    def _forget_least_recent(self) -> None:
        """Past ``max_sessions``, forget the sessions whose newest turn is oldest (a client inventing a session id
        per request must not grow the partition's state without bound)."""
        while len(self._sessions) > self.max_sessions and (key := self._activity.pop()) is not None:
            del self._sessions[key]
            self.evictions.count += 1

    def _leak_reuse(self, event: Event, found: Findings) -> list[Detection]:
        identity = event.identity.key()
        prompt = " ".join(m.content for m in event.new_input() if m.role == "user")
        leaks = self._leaks.get(identity, [])
        detections = []
        if prompt and leaks:
            quoted = self._shingles(prompt)
            for leak in leaks:
                overlap = _shared(quoted, leak.shingles) / len(leak.shingles) if leak.shingles else 0.0
                age = event.timestamp - leak.timestamp
                if (
                    overlap >= self.settings.reuse_overlap
                    and 0 < age <= LEAK_MEMORY_WINDOWS * self.settings.window_seconds
                ):
                    detections.append(
                        self._detection(
                            PROMPT_REUSED,
                            event,
                            identity,
                            f"{identity} quoted back {overlap:.0%} of a system prompt leaked to it earlier",
                            {"overlap": round(overlap, 3)},
                            evidence_field=PROMPT,
                            snippet=Masker((v.kind, v.value) for v in found.sensitive).excerpt(prompt, 0, 120),
                        )
                    )
                    break
        if "system_prompt_leak" in found.categories:
            completion = " ".join(m.content for m in event.output_messages)
            leaked = self._shingles(completion)
            if leaked:
                kept = self._leaks.setdefault(identity, [])
                kept.append(_Leak.of(event.timestamp, leaked))
                del kept[: -self.settings.max_leaks_per_identity]
        return detections

    def _blocked(self, event: Event) -> bool:
        if any(verdict.action == "blocked" for verdict in event.guardrails):
            return True
        if "content_filter" in event.finish_reasons:
            return True
        completion = " ".join(m.content[:600] for m in event.output_messages)
        return bool(completion) and bool(self._refusals.scan(completion))

    def _shingles(self, text: str) -> set[int]:
        """Keyed hashes of ``text``'s word shingles (empty for a text shorter than one shingle)."""
        tokens = words(text[:20_000])
        if len(tokens) < self.settings.shingle_words:
            return set()
        return {self._hash(shingle) for shingle in shingles(tokens, self.settings.shingle_words)}

    def _stored(self, kept: list[str], hashed: bool) -> set[int]:
        """A checkpoint's shingles of one leak as hashes: its hex hashes, or raw shingles (older checkpoints) hashed
        now."""
        return {int(h, 16) for h in kept} if hashed else {self._hash(s) for s in kept}

    def _hash(self, shingle: str) -> int:
        """64-bit keyed BLAKE2b of a shingle: enough to intersect sets, useless without the key (checkpointed as its
        16 hex digits)."""
        data = shingle.encode("utf-8", "surrogatepass")
        return int.from_bytes(hashlib.blake2b(data, key=self._shingle_key[:64], digest_size=8).digest(), "big")

    def _detection(
        self,
        rule: RuleInfo,
        event: Event,
        group: str,
        message: str,
        explanation: dict[str, float],
        *,
        score: float = 1.0,
        evidence_field: str = "session",
        snippet: str = "",
    ) -> Detection:
        return Detection(
            rule=rule,
            event_ids=[event.id],
            timestamp=event.timestamp,
            identity=event.identity,
            message=message,
            score=score,
            evidence=[Evidence(field=evidence_field, snippet=snippet or message)],
            group_key=group,
            explanation=explanation,
        )

    def _expire(self, events: Sequence[Event]) -> None:
        """Forget sessions and leaks long over, bounding memory on event time.

        Everything is scanned only when event time crosses a quarter-window step, not per batch (every session
        would be visited for each one-event batch); in between, only the batch's own sessions and leaks are
        checked, which catches a late event's. Both are judged against the last step crossed, so what is kept does
        not depend on how arrivals were cut into batches. What stays a little longer changes no verdict: a
        session restarts after a window without turns, and a leak counts only for its own age."""
        newest = self._horizon(0)
        if newest > self._expired_at:
            self._expired_at = newest
            sessions, leaks = list(self._sessions), list(self._leaks)
        else:
            sessions = [session_key(event.identity) for event in events]
            leaks = [event.identity.key() for event in events]
        horizon = self._horizon(SESSION_MEMORY_WINDOWS)
        for key in sessions:
            session = self._sessions.get(key)
            if session is not None and session.last_seen < horizon:
                del self._sessions[key]
        leak_horizon = self._horizon(LEAK_MEMORY_WINDOWS)
        for key in leaks:
            if key in self._leaks:
                self._leaks[key] = [leak for leak in self._leaks[key] if leak.timestamp >= leak_horizon]
                if not self._leaks[key]:
                    del self._leaks[key]

    def _horizon(self, windows: int) -> float:
        """``windows`` windows before the newest event time, taken at the last quarter-window step: the same
        bound for the next event whichever batch it comes in."""
        step = self.settings.window_seconds / 4
        newest = math.floor(self._newest / step) * step if math.isfinite(self._newest) else -math.inf
        return newest - windows * self.settings.window_seconds

    def state(self) -> dict[str, Any]:
        return {
            "sessions": {
                key: {
                    "last_seen": session.last_seen,
                    "turns": [[t.timestamp, t.blocked, t.score] for t in session.turns],
                }
                for key, session in self._sessions.items()
            },
            "leaks": {
                key: [[leak.timestamp, [f"{h:016x}" for h in leak.shingles]] for leak in leaks]
                for key, leaks in self._leaks.items()
            },
            "leak_shingles": SHINGLE_HASH,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        maxlen = self.settings.max_turns
        self._sessions = {
            key: _Session(
                turns=sorted((_Turn(t, bool(b), s) for t, b, s in value["turns"]), key=_turn_time)[-maxlen:],
                last_seen=value["last_seen"],
            )
            for key, value in state.get("sessions", {}).items()
        }
        self._new_cap_state()
        self._forget_least_recent()  # a smaller max_sessions than the checkpoint's applies at once
        times = [session.last_seen for session in self._sessions.values()]
        self._newest, self._expired_at = max(times, default=-math.inf), -math.inf
        hashed = state.get("leak_shingles") == SHINGLE_HASH
        self._leaks = {
            key: [_Leak.of(timestamp, self._stored(kept, hashed)) for timestamp, kept in leaks]
            for key, leaks in state.get("leaks", {}).items()
        }
