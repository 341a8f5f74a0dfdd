"""One-pass, linear-time multi-pattern matching over attacker-controlled text.

All patterns go into a single Hyperscan database and every text is scanned once. A pattern Hyperscan cannot
compile (it has no lookaround, for one) is tried with RE2, which is also linear-time; a pattern neither engine
accepts is rejected with :class:`PatternError`, because a backtracking engine must never see attacker text.

Offsets are character offsets into the ``str`` that was scanned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import hyperscan
import re2

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.max_mem = 64 << 20


class PatternError(ValueError):
    """A pattern that no linear-time engine accepts; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Pattern:
    """``expression`` is a regex (escape literals with :func:`re.escape` first)."""

    id: int
    expression: str
    caseless: bool = True
    dotall: bool = False
    multiline: bool = False


@dataclass(frozen=True, slots=True)
class Match:
    pattern_id: int
    start: int
    end: int


class MultiMatcher:
    """Scans a text once for all patterns. Build once (compiling is slow), scan many times (thread-safe)."""

    def __init__(self, patterns: Sequence[Pattern], *, max_matches_per_pattern: int = 16) -> None:
        ids = [p.id for p in patterns]
        if len(set(ids)) != len(ids):
            raise ValueError("pattern ids must be unique")
        self.max_matches_per_pattern = max_matches_per_pattern
        self._database, rejected = _build_hyperscan(patterns)
        self._re2 = [(p.id, _compile_re2(p)) for p in rejected]
        accepted = len(patterns) - len(rejected)
        self.pattern_count = len(patterns)
        self.hyperscan_count = accepted

    def scan(self, text: str) -> list[Match]:
        """Every pattern that matches ``text``, with up to ``max_matches_per_pattern`` spans each, in order."""
        if not text:
            return []
        data = text.encode("utf-8", "replace")
        spans: list[tuple[int, int, int]] = []
        if self._database is not None:
            counts: dict[int, int] = {}
            limit = self.max_matches_per_pattern

            def on_match(pattern_id: int, start: int, end: int, _flags: int, _context: object) -> None:
                seen = counts.get(pattern_id, 0)
                if seen < limit:
                    counts[pattern_id] = seen + 1
                    spans.append((pattern_id, start, end))

            self._database.scan(data, match_event_handler=on_match)
        for pattern_id, regex in self._re2:
            for found, _ in zip(regex.finditer(data), range(self.max_matches_per_pattern), strict=False):
                spans.append((pattern_id, found.start(), found.end()))
        if not spans:
            return []
        to_chars = _offset_converter(text, data)
        matches = [Match(pid, to_chars(start), to_chars(end)) for pid, start, end in spans]
        matches.sort(key=lambda m: (m.start, m.end, m.pattern_id))
        return matches


def _flags(pattern: Pattern) -> int:
    flags = hyperscan.HS_FLAG_SOM_LEFTMOST | hyperscan.HS_FLAG_UTF8
    if pattern.caseless:
        flags |= hyperscan.HS_FLAG_CASELESS
    if pattern.dotall:
        flags |= hyperscan.HS_FLAG_DOTALL
    if pattern.multiline:
        flags |= hyperscan.HS_FLAG_MULTILINE
    return flags


def _compile_hyperscan(patterns: Sequence[Pattern]) -> hyperscan.Database:
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(
        expressions=[p.expression.encode("utf-8") for p in patterns],
        ids=[p.id for p in patterns],
        flags=[_flags(p) for p in patterns],
    )
    return database


def _build_hyperscan(patterns: Sequence[Pattern]) -> tuple[hyperscan.Database | None, list[Pattern]]:
    """One database of every pattern Hyperscan takes, and the patterns it refuses.

    Compiling is the slow part, so a refused pattern is found by bisection (a few compiles), not one by one.
    """
    if not patterns:
        return None, []
    try:
        return _compile_hyperscan(patterns), []
    except hyperscan.error:
        pass
    rejected = _refused(list(patterns))
    refused_ids = {p.id for p in rejected}
    accepted = [p for p in patterns if p.id not in refused_ids]
    return (_compile_hyperscan(accepted) if accepted else None), rejected


def _refused(patterns: list[Pattern]) -> list[Pattern]:
    """The patterns of a group that Hyperscan refuses (the group as a whole is known to fail)."""
    if len(patterns) == 1:
        return patterns
    middle = len(patterns) // 2
    refused = []
    for half in (patterns[:middle], patterns[middle:]):
        try:
            _compile_hyperscan(half)
        except hyperscan.error:
            refused.extend(_refused(half))
    return refused


def _compile_re2(pattern: Pattern) -> re2._Regexp:
    prefix = "".join(
        flag for flag, on in (("i", pattern.caseless), ("s", pattern.dotall), ("m", pattern.multiline)) if on
    )
    expression = f"(?{prefix}){pattern.expression}" if prefix else pattern.expression
    try:
        return re2.compile(expression.encode("utf-8"), _RE2_OPTIONS)
    except re2.error as error:
        raise PatternError(
            f"pattern {pattern.expression!r} is not supported by a linear-time engine "
            f"(Hyperscan and RE2 both refuse it: {error.args[0]!s}). Lookarounds and backreferences are never "
            "allowed; bounded repeats are limited to {,1000}"
        ) from None


def check_pattern(expression: str, *, caseless: bool = True) -> None:
    """Raise :class:`PatternError` unless ``expression`` compiles in a linear-time engine."""
    pattern = Pattern(0, expression, caseless=caseless)
    try:
        _compile_hyperscan([pattern])
    except hyperscan.error:
        _compile_re2(pattern)


def _offset_converter(text: str, data: bytes):
    if len(data) == len(text):  # ASCII: byte offsets are character offsets
        return lambda offset: offset
    return lambda offset: len(data[:offset].decode("utf-8", "ignore"))
