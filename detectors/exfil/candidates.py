"""Candidate finding: one Hyperscan database for every secret, PII and URL anchor, then validation in Python.

A :class:`Spec` pairs a linear-time *anchor* pattern with an ``extend`` step that grows the anchor to the whole
token (a plain character walk over the candidate, never a regex) and a ``validate`` step that decides whether the
token is real (checksums, structure, entropy, placeholder lists). Only the few anchors are ever looked at in
Python, so the cost per text is one Hyperscan pass.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from detectors.matching import MultiMatcher, Pattern

Family = Literal["secret", "pii", "url"]

ALNUM = frozenset(string.ascii_letters + string.digits)
B64URL = ALNUM | {"-", "_"}
B64 = ALNUM | {"+", "/", "="}


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


def walk_right(text: str, position: int, allowed: frozenset[str], limit: int) -> int:
    """The first index at or after ``position`` whose character is not ``allowed`` (at most ``limit`` on)."""
    end = min(len(text), position + limit)
    while position < end and text[position] in allowed:
        position += 1
    return position


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
    """Scans a text once for all specs and returns the validated hits, overlaps resolved per family."""

    def __init__(self, specs: Sequence[Spec], *, max_candidates_per_pattern: int = 256) -> None:
        self.specs = list(specs)
        self._matcher = MultiMatcher(
            [Pattern(index, spec.anchor, caseless=spec.caseless) for index, spec in enumerate(self.specs)],
            max_matches_per_pattern=max_candidates_per_pattern,
        )

    def scan(self, text: str, families: Iterable[Family] | None = None) -> list[Hit]:
        wanted = set(families) if families is not None else None
        spans: dict[tuple[int, int, int], None] = {}
        for match in self._matcher.scan(text):
            spec = self.specs[match.pattern_id]
            if wanted is not None and spec.family not in wanted:
                continue
            span = spec.extend(text, match.start, match.end) if spec.extend else (match.start, match.end)
            if span is not None and span[1] > span[0]:
                spans[(match.pattern_id, *span)] = None
        ordered = sorted(spans, key=lambda item: (self.specs[item[0]].priority, item[1], -item[2]))
        accepted: list[Hit] = []
        for spec_index, start, end in ordered:
            spec = self.specs[spec_index]
            if any(h.family == spec.family and h.start < end and start < h.end for h in accepted):
                continue
            valid = spec.validate(text[start:end], text, start)
            if valid is None:
                continue
            value_start = start + valid.start_offset
            accepted.append(
                Hit(
                    spec.kind,
                    spec.family,
                    value_start,
                    value_start + len(valid.value),
                    valid.value,
                    valid.key,
                    valid.alertable,
                )
            )
        accepted.sort(key=lambda hit: hit.start)
        return accepted
