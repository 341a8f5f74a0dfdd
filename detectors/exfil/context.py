"""One event seen as the exfiltration checks need it: its texts split into inputs and outputs, scanned once.

Inputs are what reached the model (system prompt, user turns, tool results, retrieved documents, earlier turns);
outputs are what the model produced (its reply and the tool calls it asked for). Every text, the resent history
included, is scanned so that every secret and PII value is handed to the redactor; only the new parts (this
turn's input and the outputs) are alerted on.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from detectors.event import COMPLETION, DOCUMENT, PROMPT, SYSTEM, TOOL_ARGUMENTS, TOOL_DEFINITION, TOOL_RESULT, Event
from detectors.exfil.candidates import CandidateScanner, Hit
from detectors.exfil.registry import AppProfile

HISTORY = "gen_ai.input.messages"  # earlier turns that the client resent
RESENT_FIELDS = frozenset({SYSTEM, HISTORY, TOOL_DEFINITION})  # what a client sends again every turn

Side = Literal["input", "output"]


@dataclass(slots=True)
class Segment:
    """One scanned text. ``new`` is False for resent history and the system prompt (never alerted on)."""

    field: str
    text: str
    side: Side
    new: bool
    hits: list[Hit] = field(default_factory=list)
    user_supplied: bool = False
    tool_call_index: int | None = None  # for outputs: which output tool call the arguments belong to


@dataclass(slots=True)
class EventContext:
    event: Event
    profile: AppProfile
    segments: list[Segment]
    earlier: Callable[[str], str | None] = lambda _key: None  # where an earlier event of the session held a value

    def hits(self, family: str | None = None, *, side: Side | None = None, new: bool | None = None):
        """``(segment, hit)`` pairs filtered by family, side and newness."""
        for segment in self.segments:
            if (side is not None and segment.side != side) or (new is not None and segment.new != new):
                continue
            for hit in segment.hits:
                if family is None or hit.family == family:
                    yield segment, hit

    def input_values(self) -> dict[str, tuple[Segment, Hit]]:
        """Secret and PII values that reached the model, by normalised key, with where they were first seen."""
        found: dict[str, tuple[Segment, Hit]] = {}
        for segment, hit in self.hits(side="input"):
            if hit.family != "url":
                found.setdefault(f"{hit.family}:{hit.kind}:{hit.key}", (segment, hit))
        return found

    def user_keys(self) -> set[str]:
        """Keys of the values the user typed in (this turn or earlier ones)."""
        return {f"{h.family}:{h.kind}:{h.key}" for s, h in self.hits(side="input") if s.user_supplied}


def _segments(event: Event) -> list[Segment]:
    segments: list[Segment] = []
    if event.system_instructions:
        segments.append(Segment(SYSTEM, event.system_instructions, "input", new=False))
    new_start, new_end = event.judged_bounds()
    for index, message in enumerate(event.input_messages):
        new = new_start <= index < new_end
        if message.content:
            if message.role == "user":
                segments.append(Segment(PROMPT if new else HISTORY, message.content, "input", new, user_supplied=True))
            elif message.role == "tool":
                segments.append(Segment(TOOL_RESULT if new else HISTORY, message.content, "input", new))
            else:
                segments.append(
                    Segment(
                        SYSTEM if message.role in ("system", "developer") else HISTORY,
                        message.content,
                        "input",
                        new=False,
                    )
                )
        for call in message.tool_calls:
            if call.arguments:
                segments.append(Segment(HISTORY, call.arguments, "input", new=False))
            if call.result:
                segments.append(Segment(HISTORY, call.result, "input", new=False))
    for document in event.retrieved_documents:
        if document.content:
            segments.append(Segment(DOCUMENT, document.content, "input", new=True))
    for tool in event.tool_definitions:  # scanned every turn, so what they hold is masked wherever it is rendered
        if tool.description:
            segments.append(Segment(TOOL_DEFINITION, tool.description, "input", new=not event.tools_shown))
    call_index = 0
    for message in event.output_messages:
        if message.content:
            segments.append(Segment(COMPLETION, message.content, "output", new=True))
        for call in message.tool_calls:
            if call.arguments:
                segments.append(Segment(TOOL_ARGUMENTS, call.arguments, "output", True, tool_call_index=call_index))
            if call.result:
                segments.append(Segment(TOOL_RESULT, call.result, "input", new=True))
            call_index += 1
    return segments


class ScanCache:
    """The hits of texts a client sends again every turn (the system prompt, the history, tool descriptions), by a
    digest of the text, so each is scanned once rather than once a turn: an agent resending 40 tool descriptions of
    2 KB cost ~1.7 ms an event in rescans (bench/bench_agent_tools.py). A pure memo of the scanner (the same hits
    for the same text), bounded to ``max_entries``, least recently used first out; texts shorter than ``min_chars``
    are scanned directly (a digest would cost about as much). Hits hold raw values: kept in memory only, never in a
    checkpoint, as the event itself is."""

    def __init__(self, scanner: CandidateScanner, *, max_entries: int = 4096, min_chars: int = 512) -> None:
        self.scanner = scanner
        self.max_entries = max_entries
        self.min_chars = min_chars
        self._entries: OrderedDict[bytes, list[Hit]] = OrderedDict()

    def scan(self, text: str) -> list[Hit]:
        if len(text) < self.min_chars:
            return self.scanner.scan(text)
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        hits = self._entries.get(key)
        if hits is not None:
            self._entries.move_to_end(key)
            return hits
        hits = self._entries[key] = self.scanner.scan(text)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return hits


def build_context(
    event: Event,
    profile: AppProfile,
    scanner: CandidateScanner,
    max_chars: int,
    earlier: Callable[[str], str | None] = lambda _key: None,
    cache: ScanCache | None = None,
) -> EventContext:
    """Split ``event`` into segments and scan each one (resent texts through ``cache``, when given); PII inside a
    found secret is not PII."""
    scan_resent = cache.scan if cache is not None else scanner.scan
    segments = _segments(event)
    for segment in segments:
        text = segment.text[:max_chars]
        hits = scan_resent(text) if segment.field in RESENT_FIELDS else scanner.scan(text)
        overlaps = _overlap_test([h for h in hits if h.family == "secret"])
        segment.hits = [h for h in hits if h.family != "pii" or not overlaps(h)]
    return EventContext(event, profile, segments, earlier)


def _overlap_test(spans: list[Hit]) -> Callable[[Hit], bool]:
    """A test of whether a hit overlaps any of ``spans``: a binary search on their starts and the running maximum
    of their ends (linear in all, where comparing every hit with every span was quadratic)."""
    ordered = sorted(spans, key=lambda span: span.start)
    starts = [span.start for span in ordered]
    reach = list(itertools.accumulate((span.end for span in ordered), max))

    def overlaps(hit: Hit) -> bool:
        before = bisect.bisect_left(starts, hit.end)  # the spans that start before the hit ends
        return before > 0 and reach[before - 1] > hit.start

    return overlaps
