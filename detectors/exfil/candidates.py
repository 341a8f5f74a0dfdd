"""Candidate finding: one Hyperscan database for every secret, PII and URL anchor, then validation in Python.

A :class:`Spec` pairs a linear-time *anchor* pattern with an ``extend`` step that grows the anchor to the whole
token (a plain character walk over the candidate, never a regex) and a ``validate`` step that decides whether the
token is real (checksums, structure, entropy, placeholder lists). Only the few anchors are ever looked at in
Python, so the cost per text is one Hyperscan pass.
"""

from __future__ import annotations

import heapq
import itertools
import string
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

from detectors.matching import MultiMatcher, Pattern
from detectors.signatures.textnorm import INVISIBLE_RANGES

Family = Literal["secret", "pii", "url"]

ALNUM = frozenset(string.ascii_letters + string.digits)
B64URL = ALNUM | {"-", "_"}
B64 = ALNUM | {"+", "/", "="}
_HEX_DIGITS = frozenset(string.hexdigits)
# Zero-width, bidi and other invisible characters (Unicode tags excluded: they spell text of their own), dropped
# before scanning: a value written with them inside looks whole on screen and to the reader it is sent to.
_INVISIBLE = {
    code_point: None for low, high in INVISIBLE_RANGES if low != 0xE0000 for code_point in range(low, high + 1)
}
_INVISIBLE_CHARS = frozenset(map(chr, _INVISIBLE))  # a set test over the text is ~5x faster than translating it


@dataclass(frozen=True, slots=True)
class Valid:
    """A validated token: ``value`` is what is masked, ``key`` the normalised form values are compared by."""

    value: str
    key: str
    alertable: bool = True
    start_offset: int = 0  # where ``value`` starts inside the extended token


Extend = Callable[[str, int, int], tuple[int, int] | None]
Validate = Callable[[str, str, int], Valid | None]  # (token, whole text, token start)


@dataclass(frozen=True, slots=True)
class Spec:
    kind: str
    family: Family
    anchor: str
    validate: Validate
    extend: Extend | None = None  # None: the anchor match is the token
    caseless: bool = False
    priority: int = 0  # lower wins when two candidates of one family overlap


@dataclass(frozen=True, slots=True)
class Hit:
    kind: str
    family: Family
    start: int
    end: int
    value: str
    key: str
    alertable: bool


class _Runs:
    """What the walks of one scan learnt about runs of allowed characters, per allowed set.

    Anchors of one pattern often sit in one long run (a hostile text of ``https://a`` repeated): without this each
    anchor would walk the run again up to its limit, so the cost would be anchors x limit; with it every character
    is walked once per allowed set and scan, whatever the number of anchors.
    """

    __slots__ = ("known", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        # allowed set -> (run start, how far it is known to be allowed, whether the run ends there)
        self.known: dict[frozenset[str], tuple[int, int, bool]] = {}


_scan_runs: ContextVar[_Runs | None] = ContextVar("exfil_scan_runs", default=None)


def walk_right(text: str, position: int, allowed: frozenset[str], limit: int) -> int:
    """The first index at or after ``position`` whose character is not ``allowed`` (at most ``limit`` on)."""
    end = min(len(text), position + limit)
    runs = _scan_runs.get()
    if runs is None or runs.text is not text or position >= end:
        while position < end and text[position] in allowed:
            position += 1
        return position
    run_start, reached = position, position
    known = runs.known.get(allowed)
    if known is not None and known[0] <= position <= known[1]:
        run_start, reached, complete = known
        if complete or reached >= end:
            return min(reached, end)
    while reached < end and text[reached] in allowed:
        reached += 1
    runs.known[allowed] = (run_start, reached, reached < end or reached == len(text))
    return reached


def walk_left(text: str, position: int, allowed: frozenset[str], limit: int) -> int:
    """The smallest index ``i <= position`` such that ``text[i:position]`` is all ``allowed`` (within ``limit``)."""
    stop = max(0, position - limit)
    while position > stop and text[position - 1] in allowed:
        position -= 1
    return position


def extend_over(allowed: frozenset[str], limit: int = 512) -> Extend:
    """An ``extend`` that grows the anchor to the right over ``allowed`` characters."""

    def extend(text: str, start: int, end: int) -> tuple[int, int]:
        return start, walk_right(text, end, allowed, limit)

    return extend


def is_boundary(text: str, index: int) -> bool:
    """True when ``text[index]`` (or the position outside the text) is not a letter or digit."""
    return index < 0 or index >= len(text) or not text[index].isalnum()


class CandidateScanner:
    """Scans a text once for all specs and returns the validated hits, overlaps resolved per family.

    Two bounds per pattern: ``max_values_per_pattern`` validated values (what the redactor and the checks get) and
    ``max_anchors_per_pattern`` raw anchor matches. Anchors that fail validation do not count against the first,
    so harmless look-alikes (``"tokens": 7``) cannot use up a pattern's values before a real one; the second only
    keeps hostile input linear and is set well above what a scanned text of ordinary layout holds.
    """

    def __init__(
        self, specs: Sequence[Spec], *, max_values_per_pattern: int = 1024, max_anchors_per_pattern: int = 16_384
    ) -> None:
        self.specs = list(specs)
        self.max_values_per_pattern = max_values_per_pattern
        self._matcher = MultiMatcher(
            [Pattern(index, spec.anchor, caseless=spec.caseless) for index, spec in enumerate(self.specs)],
            max_matches_per_pattern=max_anchors_per_pattern,
        )

    def scan(self, text: str, families: Iterable[Family] | None = None) -> list[Hit]:
        """Validated hits in ``text``. Neither invisible characters inside a value nor JSON ``\\u`` escapes hide
        it: the text is scanned as a reader sees it (:func:`reader_view`) and each hit is mapped back, so its
        ``value`` is the text as written (what the redactor must mask) and its ``key`` the value as read (what
        values are compared by)."""
        view = reader_view(text)
        if view is None:
            return self._scan(text, families)
        read, starts, ends = view
        return [
            Hit(hit.kind, hit.family, start, end, text[start:end], hit.key, hit.alertable)
            for hit in self._scan(read, families)
            for start, end in ((starts[hit.start], ends[hit.end - 1]),)
        ]

    def _scan(self, text: str, families: Iterable[Family] | None) -> list[Hit]:
        wanted = set(families) if families is not None else None
        # Every anchor is ASCII, so matching a copy with each other character as "?" finds the same anchors (none
        # holds a literal "?"; "?" is no word character, as no non-ASCII one is to RE2 and Hyperscan here) at the
        # same character offsets, which spares the matcher converting byte offsets back match by match.
        matchable = text if text.isascii() else text.encode("ascii", "replace").decode("ascii")
        matches = self._matcher.scan(matchable)
        if not matches:
            return []
        token = _scan_runs.set(_Runs(text))
        try:
            spans: dict[tuple[int, int, int], None] = {}
            for match in matches:
                spec = self.specs[match.pattern_id]
                if wanted is not None and spec.family not in wanted:
                    continue
                span = spec.extend(text, match.start, match.end) if spec.extend else (match.start, match.end)
                if span is not None and span[1] > span[0]:
                    spans[(match.pattern_id, *span)] = None
        finally:
            _scan_runs.reset(token)
        return self._validated(text, sorted(spans, key=lambda item: (self.specs[item[0]].priority, item[1], -item[2])))

    def _validated(self, text: str, ordered: list[tuple[int, int, int]]) -> list[Hit]:
        """The candidates (``(spec index, start, end)`` by priority, then start) that validate and overlap no hit
        of their family accepted before them, at most ``max_values_per_pattern`` per spec.

        One sweep per priority level: accepted hits of a family never overlap, so ordered by end they are also
        ordered by start, and a heap of them by end answers "does anything accepted overlap [start, end)?" from
        its top once the hits ending at or before ``start`` are dropped (later candidates start no earlier)."""
        accepted: list[Hit] = []
        if not ordered:
            return accepted
        kept: Counter[int] = Counter()
        for _, level in itertools.groupby(ordered, key=lambda item: self.specs[item[0]].priority):
            open_hits: dict[Family, list[tuple[int, int]]] = defaultdict(list)
            for hit in accepted:
                open_hits[hit.family].append((hit.end, hit.start))
            for heap in open_hits.values():
                heapq.heapify(heap)
            for spec_index, start, end in level:
                spec = self.specs[spec_index]
                if kept[spec_index] >= self.max_values_per_pattern:
                    continue
                heap = open_hits[spec.family]
                while heap and heap[0][0] <= start:
                    heapq.heappop(heap)
                if heap and heap[0][1] < end:
                    continue
                valid = spec.validate(text[start:end], text, start)
                if valid is None:
                    continue
                value_start = start + valid.start_offset
                hit = Hit(
                    spec.kind,
                    spec.family,
                    value_start,
                    value_start + len(valid.value),
                    valid.value,
                    valid.key,
                    valid.alertable,
                )
                accepted.append(hit)
                kept[spec_index] += 1
                heapq.heappush(heap, (hit.end, hit.start))
        accepted.sort(key=lambda hit: hit.start)
        return accepted


def reader_view(text: str) -> tuple[str, list[int], list[int]] | None:
    """``text`` as a reader sees it, with JSON ``\\uXXXX`` escapes decoded and invisible characters dropped, and
    where each of its characters was written (``text[starts[i]:ends[i]]``); None when that is ``text`` itself."""
    escaped = "\\u" in text
    if not escaped and (text.isascii() or _INVISIBLE_CHARS.isdisjoint(text)):
        return None
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    index, length = 0, len(text)
    while index < length:
        char, end = text[index], index + 1
        if escaped and char == "\\" and text.startswith("u", end):
            digits = text[index + 2 : index + 6]
            if len(digits) == 4 and set(digits) <= _HEX_DIGITS:
                char, end = chr(int(digits, 16)), index + 6
        if ord(char) not in _INVISIBLE:
            chars.append(char)
            starts.append(index)
            ends.append(end)
        index = end
    return "".join(chars), starts, ends
