"""Replay's judge of record times: a time far ahead of the records around it in its file is not believed.

The stream judges a record's time against its Kafka timestamp, when the shipper produced it. A file has no such
clock, only the wall clock of the replay, hours or months after the logs were written: one record dated hours
ahead of its neighbours (a broken client clock, a forged time) but not of the wall clock would be the newest event
of every event-time tier of its partition and turn every later record late.

So replay judges each event's time by the records around it in its file, reading :data:`LOOKAHEAD` events ahead:

* The present. A time at most ``max_future_s`` ahead of both the lower median of the last :data:`RECENT` times
  believed and the newest time believed from another identity is believed. One identity cannot move this
  reference alone: a ratchet of its own records, each a little ahead of the last, stays judged against the others'
  times (or, alone in the input, against the median, which lags it by half of :data:`RECENT` records).
* A jump, a time further ahead, is put to the vote of the identities of it and of the next :data:`LOOKAHEAD`
  events, one vote each: an identity confirms the jump when at least half of its records there (the jump itself
  included) are dated no more than ``max_future_s`` before it, and the jump is believed when most identities
  confirm it; so it is when nothing else follows in its file, which it could turn late. A burst of forged records
  is one vote against each other identity's, and, alone in the input, loses while its honest records outnumber the
  forged ones in the look-ahead; one identity's stale records cannot outvote the honest identities resuming after
  a quiet night. Followers more than ``max_future_s`` behind the newest time believed (from another identity) are
  passed over: they are late whatever is believed. When all the next events are dated no more than
  ``max_future_s`` before the jump, no vote is needed.
* A time more than ``max_future_s`` ahead of the wall clock is never believed, as the normaliser judges it.

In a file whose times never go back every time is believed (every follower confirms), so replaying the stream's
own traffic in its order believes what the stream believed; files are judged one after the other, not against
each other, since the next file usually goes back in time. An unbelieved time is taken as assumed
(``Event.timestamp_assumed``) at the newest time believed, or before any, at the earliest time of the records
after it (nothing after it turns late); the pipeline then moves it to its partition's newest time. A record
without a time is left as the normaliser stamped it (at ingestion, as the stream stamps it at its Kafka
timestamp), and counted.

Everything depends on the input's order only, not on batching. Memory is bounded by :data:`LOOKAHEAD` events and
lines besides the line being read, and judging an event costs at most one pass over :data:`LOOKAHEAD` followers.
Records are only held back, never dropped or reordered. docs/anomaly.md lists the limits that remain.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

import msgspec

from detectors.event import Event
from detectors.normalise import DeadLetter

LOOKAHEAD = 256  # events (and lines) read ahead of the one judged: the followers that vote on a jump
RECENT = 32  # the believed times whose lower median is the present

Line = tuple[list[Event], list[DeadLetter], int]  # one input line: its events, dead letters and bytes read


@dataclass(slots=True)
class _Held:
    """A line read but not yet passed on, the ``number``-th of the input; ``judged`` counts its events judged so far
    (they are judged in order)."""

    number: int
    events: list[Event]
    letters: list[DeadLetter]
    size: int
    judged: int = 0


# a line, an event's index in it, its identity key and given time, and its number among the events read
_Pending = tuple[_Held, int, str, float | None, int]


@dataclass(slots=True)
class NeighbourTimes:
    """Judges the event times of replayed files against their neighbours (see the module docstring).

    ``not_believed`` counts the events whose time was not believed (taken as assumed) and ``missing`` those
    without a time. State carries from one file to the next.
    """

    max_future_s: float
    lookahead: int = LOOKAHEAD
    not_believed: int = 0
    missing: int = 0
    _recent: deque[float] = field(default_factory=deque)  # the last RECENT believed times, in input order
    _recent_sorted: list[float] = field(default_factory=list)  # the same, sorted
    _newest: float | None = None  # the newest time believed
    _newest_key: str = ""  # the identity that gave it
    _second: float | None = None  # the newest time believed from an identity other than _newest_key
    _held: deque[_Held] = field(default_factory=deque)
    _lines_read: int = 0
    _unjudged: deque[_Pending] = field(default_factory=deque)
    _events_read: int = 0
    _minima: deque[tuple[int, float]] = field(default_factory=deque)  # ascending minima of the unjudged times

    def judged(self, lines: Iterable[Line]) -> Iterator[Line]:
        """The lines of one file in their order, each once its events' times are judged; unbelieved times are
        replaced."""
        for events, letters, size in lines:
            self._lines_read += 1
            held = _Held(self._lines_read, list(events), letters, size)
            self._held.append(held)
            for index, event in enumerate(held.events):
                self._read(held, index, event)
            while self._unjudged and (
                len(self._unjudged) > self.lookahead or self._lines_read - self._unjudged[0][0].number > self.lookahead
            ):
                self._judge(self._unjudged.popleft())
            yield from self._release()
        while self._unjudged:
            self._judge(self._unjudged.popleft())
        yield from self._release()

    def _read(self, held: _Held, index: int, event: Event) -> None:
        """Queues an event to judge, keeping the minima of the times queued (the unjudged times, ascending, each
        the smallest of those read after it) so that a jump all of them confirm needs no vote."""
        self._events_read += 1
        at = None if event.timestamp_assumed else event.timestamp
        self._unjudged.append((held, index, event.identity.key(), at, self._events_read))
        if at is not None:
            while self._minima and self._minima[-1][1] >= at:
                self._minima.pop()
            self._minima.append((self._events_read, at))

    def _judge(self, pending: _Pending) -> None:
        held, index, key, at, number = pending
        held.judged += 1
        if self._minima and self._minima[0][0] == number:
            self._minima.popleft()
        if at is None:
            self.missing += 1
            return
        if at <= time.time() + self.max_future_s and (self._present(at, key) or self._confirmed(at, key)):
            self._believe(at, key)
            return
        self.not_believed += 1
        earliest_after = self._minima[0][1] if self._minima else time.time()  # turns nothing after it late
        stand_in = self._newest if self._newest is not None else earliest_after
        held.events[index] = msgspec.structs.replace(held.events[index], timestamp=stand_in, timestamp_assumed=True)

    def _present(self, at: float, key: str) -> bool:
        """Whether ``at`` is at most ``max_future_s`` ahead of the lower median of the recent believed times and of
        the newest time believed from another identity than ``key`` (if any)."""
        if not self._recent_sorted:
            return False
        if at > self._recent_sorted[(len(self._recent_sorted) - 1) // 2] + self.max_future_s:
            return False
        others = self._others(key)
        return others is None or at <= others + self.max_future_s

    def _others(self, key: str) -> float | None:
        """The newest time believed from another identity than ``key``."""
        return self._newest if key != self._newest_key else self._second

    def _confirmed(self, at: float, key: str) -> bool:
        """Whether most identities among the jump to ``at`` (of identity ``key``) and the next :data:`LOOKAHEAD`
        events confirm it, each when at least half of its times there are no more than ``max_future_s`` before it.
        Times more than ``max_future_s`` behind the newest time believed from another identity (the jump's own could
        be a step of a ratchet), or without one, the newest, are passed over."""
        low = at - self.max_future_s
        if not self._minima or self._minima[0][1] >= low:
            return True  # every time after it confirms it: no need to count
        others = self._others(key)
        newest = others if others is not None else self._newest
        floor = newest - self.max_future_s if newest is not None else -math.inf
        counts: dict[str, list[int]] = {key: [1, 1]}  # identity -> [times confirming, times]
        for _, _, voter, then, _ in islice(self._unjudged, self.lookahead):
            if then is not None and then >= floor:
                tally = counts.get(voter)
                if tally is None:
                    tally = counts[voter] = [0, 0]
                tally[0] += then >= low
                tally[1] += 1
        confirming = sum(1 for confirm, total in counts.values() if 2 * confirm >= total)
        return 2 * confirming > len(counts)

    def _believe(self, at: float, key: str) -> None:
        if len(self._recent) == RECENT:
            del self._recent_sorted[bisect.bisect_left(self._recent_sorted, self._recent.popleft())]
        self._recent.append(at)
        bisect.insort(self._recent_sorted, at)
        if key == self._newest_key:
            self._newest = at if self._newest is None else max(self._newest, at)
        elif self._newest is None or at > self._newest:
            self._second, self._newest, self._newest_key = self._newest, at, key
        elif self._second is None or at > self._second:
            self._second = at

    def _release(self) -> Iterator[Line]:
        """The held lines whose events are all judged, in order."""
        while self._held and self._held[0].judged == len(self._held[0].events):
            head = self._held.popleft()
            yield head.events, head.letters, head.size
