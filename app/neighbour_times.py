"""Replay's judge of record times: a time far ahead of the records around it in the input is not believed.

The stream judges a record's time against its Kafka timestamp, when the shipper produced it. A file has no such
clock, only the wall clock of the replay, hours or months after the logs were written: one record dated hours
ahead of its neighbours (a broken client clock, a forged time) but not of the wall clock would be the newest event
of every event-time tier of its partition and turn every later record late; and a first record without a time
would be taken at the wall clock, far ahead of the records after it.

So replay reads :data:`LOOKAHEAD` events ahead and judges each event's time against the records around it: one
more than ``max_future_s`` ahead of both the newest time believed so far and the lower median of the times of the
:data:`NEIGHBOURS` nearest events that follow it is not believed, nor is one more than ``max_future_s`` ahead of
the wall clock (as the normaliser judges it). Followers more than ``max_future_s`` behind the newest believed time
are passed over: they are late whatever is believed (the next file going back in time). A real jump forward (logs
resuming after a quiet night) is believed: the records after it confirm it. The last events of the input have
fewer followers and are judged against those there are; the very last is judged against the believed time and the
wall clock only (nothing follows that it could turn late). An event with no time or an unbelieved one is taken as
assumed (``Event.timestamp_assumed``) at the newest believed time, which the pipeline then moves to its
partition's; before any time was believed, at the first time believed after it, if one comes within about
:data:`LOOKAHEAD` events, else at the wall clock.

Everything depends on the input's order only, not on batching, and memory is bounded by ``2 * LOOKAHEAD`` events
and lines, whatever the input's size. Records are only held back (an event is judged once :data:`LOOKAHEAD` events
or lines follow it, or the input ended), never dropped or reordered.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import msgspec

from detectors.event import Event
from detectors.normalise import DeadLetter

LOOKAHEAD = 256  # events (and lines) read ahead of the one judged
NEIGHBOURS = 32  # the followers an event's time is judged against: the nearest ones in the look-ahead

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


@dataclass(slots=True)
class NeighbourTimes:
    """Judges the event times of replayed lines against their neighbours (see the module docstring).

    ``not_believed`` counts the events whose time was not believed and ``missing`` those without a time: both are
    taken as assumed.
    """

    max_future_s: float
    lookahead: int = LOOKAHEAD
    believed: float | None = None  # the newest time believed so far
    not_believed: int = 0
    missing: int = 0
    _held: deque[_Held] = field(default_factory=deque)
    _held_events: int = 0
    _lines_read: int = 0
    _unjudged: deque[tuple[_Held, int]] = field(default_factory=deque)
    _waiting: deque[tuple[_Held, int]] = field(default_factory=deque)  # assumed before any time was believed

    def judged(self, lines: Iterable[Line]) -> Iterator[Line]:
        """``lines`` in their order, each once its events' times are judged; unbelieved times are replaced."""
        for events, letters, size in lines:
            self._lines_read += 1
            held = _Held(self._lines_read, list(events), letters, size)
            self._held.append(held)
            self._held_events += len(events)
            self._unjudged.extend((held, index) for index in range(len(events)))
            while self._unjudged and (
                len(self._unjudged) > self.lookahead or self._lines_read - self._unjudged[0][0].number > self.lookahead
            ):
                self._judge_next()
            yield from self._release(final=False)
        while self._unjudged:
            self._judge_next()
        yield from self._release(final=True)

    def _judge_next(self) -> None:
        held, index = self._unjudged.popleft()
        held.judged += 1
        event = held.events[index]
        if event.timestamp_assumed:
            self.missing += 1
            self._assume(held, index)
            return
        if not self._believable(event.timestamp):
            self.not_believed += 1
            self._assume(held, index)
            return
        if self.believed is None:
            while self._waiting:  # before this, no time was believed: they take this one
                waiting, position = self._waiting.popleft()
                waiting.events[position] = _assumed(waiting.events[position], event.timestamp)
        self.believed = event.timestamp if self.believed is None else max(self.believed, event.timestamp)

    def _believable(self, at: float) -> bool:
        """Whether a time is at most ``max_future_s`` ahead of the wall clock and of the newest believed time, or
        failing the latter, of the lower median of the times of the :data:`NEIGHBOURS` nearest events that follow
        it and gave one (a jump forward they confirm).

        Followers more than ``max_future_s`` behind the newest believed time are passed over: they are late whatever
        is believed (the next file going back in time, a day replayed twice), so they can neither confirm nor deny.
        """
        if at > time.time() + self.max_future_s:
            return False
        if self.believed is not None and at <= self.believed + self.max_future_s:
            return True
        floor = -math.inf if self.believed is None else self.believed - self.max_future_s
        followers: list[float] = []
        for held, index in self._unjudged:
            event = held.events[index]
            if not event.timestamp_assumed and event.timestamp >= floor:
                followers.append(event.timestamp)
                if len(followers) == NEIGHBOURS:
                    break
        if not followers:
            return True
        followers.sort()
        return at <= followers[(len(followers) - 1) // 2] + self.max_future_s

    def _assume(self, held: _Held, index: int) -> None:
        """The event's time taken as assumed: the newest believed time, or later the first one believed."""
        if self.believed is None:
            self._waiting.append((held, index))
        else:
            held.events[index] = _assumed(held.events[index], self.believed)

    def _release(self, *, final: bool) -> Iterator[Line]:
        """The held lines whose events are all judged and timed, in order. At the end of the input, or when more
        than ``2 * lookahead`` events or lines are held, events still waiting for a believed time take the wall
        clock."""
        while self._held and self._held[0].judged == len(self._held[0].events):
            head = self._held[0]
            if self._waiting and self._waiting[0][0] is head:
                full = self._held_events > 2 * self.lookahead or len(self._held) > 2 * self.lookahead
                if not (final or full):
                    return
                now = time.time()
                while self._waiting and self._waiting[0][0] is head:
                    _, position = self._waiting.popleft()
                    head.events[position] = _assumed(head.events[position], now)
            self._held.popleft()
            self._held_events -= len(head.events)
            yield head.events, head.letters, head.size


def _assumed(event: Event, at: float) -> Event:
    return msgspec.structs.replace(event, timestamp=at, timestamp_assumed=True)
