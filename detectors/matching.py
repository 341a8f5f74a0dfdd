"""One-pass, linear-time multi-pattern matching over attacker-controlled text.

Two linear-time engines, each doing what it is best at:

- **Hyperscan** scans the text once for ALL patterns, in its cheapest mode: no start-of-match tracking and each
  pattern reported at most once. It only answers "which patterns occur".
- **RE2** then locates the spans of just those patterns (rare on normal traffic), which also makes the result
  exact whatever Hyperscan's mode. A pattern Hyperscan refuses is searched by RE2 alone.

RE2 is the authority: a pattern it does not accept (lookaround, backreference, huge repeats) is rejected with
:class:`PatternError`, because a backtracking engine must never see attacker text.

Compiling a large Hyperscan database takes seconds to minutes, so compiled databases are cached on disk by the
hash of their patterns (``ABW_CACHE_DIR``, default ``~/.cache/abusewatch``); the next process loads them in
milliseconds. Every rule edit makes a new database, so the cache keeps only the ``ABW_CACHE_MAX_DATABASES`` most
recently used (default :data:`DEFAULT_MAX_CACHED_DATABASES`; a load marks a file used). Offsets are character
offsets into the ``str`` that was scanned.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from pathlib import Path

import hyperscan
import re2

log = logging.getLogger(__name__)

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.max_mem = 64 << 20
_CACHE_VERSION = "1"
_CACHE_SUFFIX = ".hsdb"
# A worker runs 11 databases (signature pack, text hints, exfil anchors, anomaly features...), the unit tests 79;
# a bound below what a process uses makes it compile again what it pruned. A rule pack's database is about 4 MB,
# so the bound is about 0.5 GB of edits' history at worst, where without it every edit stayed forever.
DEFAULT_MAX_CACHED_DATABASES = 128


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


def default_cache_dir() -> Path | None:
    """Where compiled databases are kept; ``ABW_CACHE_DIR=off`` disables the cache."""
    configured = os.environ.get("ABW_CACHE_DIR")
    if configured == "off":
        return None
    return Path(configured) if configured else Path.home() / ".cache" / "abusewatch" / "hyperscan"


def max_cached_databases() -> int:
    """How many compiled databases the cache keeps (``ABW_CACHE_MAX_DATABASES``, at least 1; unreadable: default)."""
    configured = os.environ.get("ABW_CACHE_MAX_DATABASES", "")
    try:
        return max(1, int(configured)) if configured else DEFAULT_MAX_CACHED_DATABASES
    except ValueError:
        log.warning("ABW_CACHE_MAX_DATABASES=%r is not a number; keeping %d", configured, DEFAULT_MAX_CACHED_DATABASES)
        return DEFAULT_MAX_CACHED_DATABASES


class MultiMatcher:
    """Scans a text once for all patterns. Build once (compiling is slow), scan many times (one thread at a time)."""

    def __init__(
        self,
        patterns: Sequence[Pattern],
        *,
        max_matches_per_pattern: int = 16,
        cache_dir: Path | bool | None = True,
    ) -> None:
        ids = [p.id for p in patterns]
        if len(set(ids)) != len(ids):
            raise ValueError("pattern ids must be unique")
        self.max_matches_per_pattern = max_matches_per_pattern
        self._locators = {p.id: _compile_re2(p) for p in patterns}  # also validates every pattern
        directory = default_cache_dir() if cache_dir is True else (cache_dir or None)
        self._database, refused = _build_hyperscan(patterns, directory)
        self._re2_only = [p.id for p in refused]
        self.pattern_count = len(patterns)
        self.hyperscan_count = len(patterns) - len(refused)

    def scan(self, text: str, exclude: Container[int] = ()) -> list[Match]:
        """Every pattern that matches ``text``, with up to ``max_matches_per_pattern`` spans each, in order.

        Patterns in ``exclude`` are left out before RE2 locates them: a caller that needs only some patterns (the
        others already found, or not allowed on this text) does not pay for locating the rest.
        """
        if not text:
            return []
        data = text.encode("utf-8", "replace")
        candidates = self._candidates(data)
        if exclude:
            candidates = [pattern_id for pattern_id in candidates if pattern_id not in exclude]
        if not candidates:
            return []
        spans = []
        for pattern_id in candidates:
            regex = self._locators[pattern_id]
            # range first: zip stops without asking RE2 for one more match than it keeps
            for _, found in zip(range(self.max_matches_per_pattern), regex.finditer(data), strict=False):
                spans.append((pattern_id, found.start(), found.end()))
        if not spans:
            return []
        to_chars = _offset_converter(text, data)
        matches = [Match(pid, to_chars(start), to_chars(end)) for pid, start, end in spans]
        matches.sort(key=lambda m: (m.start, m.end, m.pattern_id))
        return matches

    def present(self, text: str) -> set[int]:
        """The ids of the patterns that match ``text`` (as :meth:`scan` would report them), without locating them."""
        if not text:
            return set()
        data = text.encode("utf-8", "replace")
        return {
            pattern_id for pattern_id in self._candidates(data) if self._locators[pattern_id].search(data) is not None
        }

    def _candidates(self, data: bytes) -> list[int]:
        """The patterns Hyperscan reports in ``data`` (each once) plus those only RE2 can search."""
        candidates = list(self._re2_only)
        if self._database is not None:

            def on_match(pattern_id: int, _start: int, _end: int, _flags: int, _context: object) -> None:
                candidates.append(pattern_id)

            self._database.scan(data, match_event_handler=on_match)
        return candidates


def _flags(pattern: Pattern) -> int:
    flags = hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_UTF8
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


def _build_hyperscan(
    patterns: Sequence[Pattern], cache_dir: Path | None
) -> tuple[hyperscan.Database | None, list[Pattern]]:
    """One database of every pattern Hyperscan takes (from the cache when it was built before), and the refused."""
    if not patterns:
        return None, []
    key = _cache_key(patterns)
    cached = _load_cached(cache_dir, key)
    if cached is not None:
        database, refused_ids = cached
        return database, [p for p in patterns if p.id in refused_ids]
    try:
        database, refused = _compile_hyperscan(patterns), []
    except hyperscan.error:
        refused = _refused(list(patterns))
        refused_ids = {p.id for p in refused}
        accepted = [p for p in patterns if p.id not in refused_ids]
        database = _compile_hyperscan(accepted) if accepted else None
    _store_cached(cache_dir, key, database, {p.id for p in refused})
    return database, refused


def _refused(patterns: list[Pattern]) -> list[Pattern]:
    """The patterns of a group that Hyperscan refuses (the group as a whole is known to fail), by bisection."""
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


def _cache_key(patterns: Sequence[Pattern]) -> str:
    digest = hashlib.sha256(f"{_CACHE_VERSION}|{hyperscan.__version__}".encode())
    for pattern in patterns:
        digest.update(f"\x1e{pattern.id}\x1f{_flags(pattern)}\x1f{pattern.expression}".encode("utf-8", "replace"))
    return digest.hexdigest()


def _load_cached(cache_dir: Path | None, key: str) -> tuple[hyperscan.Database | None, set[int]] | None:
    """The cached database of ``key``, or ``None`` (a miss) if there is none, it is unreadable or it vanished (a
    worker sharing the directory pruned it); a hit marks the file used, so pruning keeps it."""
    if cache_dir is None:
        return None
    path = cache_dir / f"{key}{_CACHE_SUFFIX}"
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    try:
        header, _, body = blob.partition(b"\n")
        refused = {int(i) for i in header.decode().split(",") if i}
        database = None
        if body:
            database = hyperscan.loadb(body, hyperscan.HS_MODE_BLOCK)
            database.scratch = hyperscan.Scratch(database)  # a loaded database comes without scratch space
    except (ValueError, TypeError, hyperscan.error):
        log.warning("ignoring a corrupt compiled-pattern cache file %s", path)
        return None
    _mark_used(path)
    return database, refused


def _store_cached(cache_dir: Path | None, key: str, database: hyperscan.Database | None, refused: set[int]) -> None:
    if cache_dir is None:
        return
    path = cache_dir / f"{key}{_CACHE_SUFFIX}"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        body = hyperscan.dumpb(database) if database is not None else b""
        temporary = cache_dir / f".{key}.{os.getpid()}.tmp"
        temporary.write_bytes(",".join(map(str, sorted(refused))).encode() + b"\n" + body)
        temporary.replace(path)  # atomic: concurrent workers never read half a file
    except OSError as error:
        log.warning("cannot cache compiled patterns in %s: %s", cache_dir, error)
        return
    prune_cache(cache_dir, max_cached_databases(), keep=path)


def prune_cache(cache_dir: Path, limit: int, keep: Path | None = None) -> list[Path]:
    """Delete all but the ``limit`` most recently used databases in ``cache_dir`` (by modification time, which a
    load refreshes), never ``keep`` (the one just stored); return what was deleted. Files that vanish meanwhile (a
    worker sharing the directory pruned them first) are skipped: a worker that wanted one compiles it again."""
    used = []
    try:
        for path in cache_dir.glob(f"*{_CACHE_SUFFIX}"):
            try:
                used.append((path == keep, path.stat().st_mtime_ns, path))
            except OSError:
                continue
    except OSError:  # the directory itself is gone or unreadable: nothing to prune
        return []
    used.sort(reverse=True)  # ``keep`` first, as the most recently used whatever the clocks say
    deleted = []
    for _, _, path in used[limit:]:
        if path == keep:
            continue
        try:
            path.unlink()
        except OSError:  # gone already, or not ours to delete: either way not in the way
            continue
        deleted.append(path)
    if deleted:
        log.info("compiled-pattern cache %s: removed %d least recently used databases", cache_dir, len(deleted))
    return deleted


def _mark_used(path: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only cache, or pruned by another worker since the read: no matter
        os.utime(path)


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
            f"(RE2 refuses it: {error.args[0]!s}). Lookarounds and backreferences are never "
            "allowed; bounded repeats are limited to {,1000}"
        ) from None


def check_pattern(expression: str, *, caseless: bool = True) -> None:
    """Raise :class:`PatternError` unless ``expression`` compiles in a linear-time engine."""
    _compile_re2(Pattern(0, expression, caseless=caseless))


def _offset_converter(text: str, data: bytes) -> Callable[[int], int]:
    if len(data) == len(text):  # ASCII: byte offsets are character offsets
        return lambda offset: offset
    return lambda offset: len(data[:offset].decode("utf-8", "ignore"))
