"""The multi-pattern matcher: correct spans, RE2 fallback, rejection of backtracking-only patterns."""

import os
import re

import pytest

from detectors.matching import (
    DEFAULT_MAX_CACHED_DATABASES,
    MultiMatcher,
    Pattern,
    PatternError,
    check_pattern,
    max_cached_databases,
    prune_cache,
)


def test_finds_every_pattern_with_character_offsets():
    matcher = MultiMatcher([Pattern(1, r"ignore\s+(all\s+)?previous"), Pattern(2, r"AKIA[0-9A-Z]{16}", caseless=False)])
    text = "é please IGNORE all previous: AKIA1234567890ABCDEF"
    found = {(m.pattern_id, text[m.start : m.end]) for m in matcher.scan(text)}
    assert found == {(1, "IGNORE all previous"), (2, "AKIA1234567890ABCDEF")}


def test_case_sensitive_pattern_does_not_match_other_case():
    matcher = MultiMatcher([Pattern(1, "AKIA[0-9A-Z]{4}", caseless=False)])
    assert matcher.scan("akia1234") == []
    assert len(matcher.scan("AKIA1234")) == 1


def test_pattern_hyperscan_refuses_falls_back_to_re2():
    # a wide bounded gap is too large for Hyperscan; RE2 takes it
    matcher = MultiMatcher([Pattern(1, r"x.{0,1000}y"), Pattern(2, re.escape("hello"))])
    assert matcher.hyperscan_count == 1
    assert {m.pattern_id for m in matcher.scan("x" + "-" * 500 + "y hello")} == {1, 2}


def test_lookaround_is_rejected_with_a_clear_message():
    with pytest.raises(PatternError, match="linear-time"):
        check_pattern(r"foo(?=bar)")


def test_pathological_input_completes():
    # a backtracking engine would not return here in the lifetime of the test run; timings are in bench/
    matcher = MultiMatcher([Pattern(1, r"(a+)+$"), Pattern(2, r"(a|aa)*c")])
    assert matcher.scan("a" * 100_000 + "!") == []


def test_matches_per_pattern_are_capped():
    matcher = MultiMatcher([Pattern(1, "ab")], max_matches_per_pattern=3)
    assert len(matcher.scan("ab" * 100)) == 3


def test_compiled_databases_are_cached_on_disk(tmp_path):
    patterns = [Pattern(1, r"ignore\s+previous"), Pattern(2, r"x.{0,1000}y")]
    first = MultiMatcher(patterns, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.hsdb"))) == 1
    second = MultiMatcher(patterns, cache_dir=tmp_path)
    text = "please IGNORE   previous x---y"
    assert first.scan(text) == second.scan(text)
    assert {m.pattern_id for m in second.scan(text)} == {1, 2}
    assert second.hyperscan_count == 1


def test_a_corrupt_cache_file_is_ignored(tmp_path):
    patterns = [Pattern(1, "abc")]
    MultiMatcher(patterns, cache_dir=tmp_path)
    for path in tmp_path.glob("*.hsdb"):
        path.write_bytes(b"1\nnot a database")
    assert [m.pattern_id for m in MultiMatcher(patterns, cache_dir=tmp_path).scan("xabcx")] == [1]


def _cached(cache_dir, patterns) -> set[str]:
    """Build a matcher for ``patterns`` with ``cache_dir``; the names of the databases the directory then holds."""
    MultiMatcher(patterns, cache_dir=cache_dir)
    return {path.name for path in cache_dir.glob("*.hsdb")}


def _stamp(cache_dir, seconds: int) -> None:
    """Give the newest database file a modification time of ``seconds`` (a clock of its own: no ties)."""
    newest = max(cache_dir.glob("*.hsdb"), key=lambda path: path.stat().st_mtime_ns)
    os.utime(newest, ns=(seconds * 10**9, seconds * 10**9))


def test_the_cache_keeps_the_most_recently_used_databases_and_a_load_counts_as_use(tmp_path, monkeypatch):
    monkeypatch.setenv("ABW_CACHE_MAX_DATABASES", "3")
    sets = [[Pattern(1, f"word{n}")] for n in range(4)]
    names = []
    for stamp, patterns in enumerate(sets[:3], start=1):
        before = {path.name for path in tmp_path.glob("*.hsdb")}
        names.append((_cached(tmp_path, patterns) - before).pop())
        _stamp(tmp_path, 1000 * stamp)

    MultiMatcher(sets[0], cache_dir=tmp_path)  # a cache hit: the oldest file is now the most recently used
    after = _cached(tmp_path, sets[3])  # a fourth database: one goes, the least recently used

    assert len(after) == 3
    assert names[1] not in after
    assert {names[0], names[2]} <= after


def test_the_database_just_stored_is_kept_whatever_the_clock_says(tmp_path, monkeypatch):
    monkeypatch.setenv("ABW_CACHE_MAX_DATABASES", "1")
    future = 4_000_000_000 * 10**9
    _cached(tmp_path, [Pattern(1, "first")])
    for path in tmp_path.glob("*.hsdb"):
        os.utime(path, ns=(future, future))  # a file that looks newer than anything stored now

    before = {path.name for path in tmp_path.glob("*.hsdb")}
    after = _cached(tmp_path, [Pattern(1, "second")])

    assert len(after) == 1 and after != before  # the new one stays, the old one goes
    assert len(prune_cache(tmp_path, 1)) == 0  # within the bound: nothing more to remove


def test_a_database_that_vanishes_is_a_cache_miss_and_pruning_skips_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ABW_CACHE_MAX_DATABASES", "1")
    patterns = [Pattern(1, "abc")]
    name = _cached(tmp_path, patterns).pop()
    (tmp_path / name).unlink()
    (tmp_path / name).symlink_to(tmp_path / "pruned-by-another-worker")  # listed, but gone when read or stat'ed
    (tmp_path / "gone.hsdb").symlink_to(tmp_path / "also-gone")

    assert [m.pattern_id for m in MultiMatcher(patterns, cache_dir=tmp_path).scan("xabcx")] == [1]  # compiled again
    assert (tmp_path / name).is_file()  # and stored again, in place of the dangling name
    assert prune_cache(tmp_path, 0) == [tmp_path / name]  # the dangling entry is skipped, not an error
    assert prune_cache(tmp_path, 0) == []  # a second worker pruning the same directory finds nothing to trip on


def test_an_unreadable_cache_bound_falls_back_to_the_default(monkeypatch):
    monkeypatch.setenv("ABW_CACHE_MAX_DATABASES", "lots")
    assert max_cached_databases() == DEFAULT_MAX_CACHED_DATABASES
    monkeypatch.setenv("ABW_CACHE_MAX_DATABASES", "0")
    assert max_cached_databases() == 1
