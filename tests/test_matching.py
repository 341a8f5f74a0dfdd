"""The multi-pattern matcher: correct spans, RE2 fallback, rejection of backtracking-only patterns."""

import re

import pytest

from detectors.matching import MultiMatcher, Pattern, PatternError, check_pattern


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
