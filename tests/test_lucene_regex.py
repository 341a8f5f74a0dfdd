"""RE2 patterns written again for Lucene: same texts found on the lower-cased field (real Elasticsearch checks it in
tests/integration/test_rule_conversion.py; here Python's ``re`` reads the Lucene subset the translation writes)."""

import re

import pytest

from detectors.signatures.lucene_regex import MAX_COUNT, to_lucene
from tests.fixtures.rules.regexes import example_texts, rule_regexes


def lucene_matches(pattern: str, text: str, **flags: bool) -> bool:
    """Whether Lucene would match ``text`` (lower-cased, as the field holds it), read with Python's ``re``: the
    translation escapes every Lucene operator, so what remains means the same in both (ASCII ``\\s``, DOTALL ``.``)."""
    lucene = to_lucene(pattern, **flags)
    return any(re.fullmatch(alt, text.lower(), re.S | re.A) for alt in lucene.alternatives)


@pytest.mark.parametrize(
    ("pattern", "written"),
    [
        (r"a#b@c&d~e\"f<g>", r".{0,}(a\#b\@c\&d\~e\"f\<g\>).{0,}"),  # Lucene operators are escaped
        (r"[\"\x27]\s*do", ".{0,}([\"']\\s*do).{0,}"),  # \x27 is the quote, not "x27"
        (r"Ignore\W+ALL", r".{0,}(ignore[^a-z0-9_ſ]+all).{0,}"),  # lower-cased, \W as RE2's (?i) means it
        (r"^foo", r"(foo).{0,}"),
        (r"foo$", r".{0,}(foo)"),
        (r"\bdan\b", r"(.{0,}[^a-z0-9_])?(dan)([^a-z0-9_].{0,})?"),
        (r"ignore\b\W+\bthat", r".{0,}(ignore[^a-z0-9_ſ]+that).{0,}"),  # boundaries that always hold are dropped
        (r"a+?b{2,}", r".{0,}(a+b{2,}).{0,}"),  # lazy: the same texts
        (r"(?P<x>a)(?:b)", r".{0,}(ab).{0,}"),
        (r"[\x{80}-\x{10FFFF}]", ".{0,}([ks\x80-\U0010ffff]).{0,}"),  # a range kept whole; k, s: Kelvin sign, long s
        (r"\S", ".{0,}([^\t\n\x0c\r ]).{0,}"),  # not Lucene's \s, which also takes \v, in a negated class
    ],
)
def test_translations(pattern, written):
    assert to_lucene(pattern).text == written


@pytest.mark.parametrize(
    ("pattern", "text", "found"),
    [
        (r"\bdan\b", "hi dan!", True),
        (r"\bdan\b", "dan", True),
        (r"\bdan\b", "jordan", False),
        (r"\bdan\b", "danger", False),
        (r"(^|;)\s*env\s*($|;)", "env", True),
        (r"(^|;)\s*env\s*($|;)", "x; env ;y", True),
        (r"(^|;)\s*env\s*($|;)", "my env", False),
        (r"a.b", "a\nb", False),
        (r"(?s)a.b", "a\nb", True),
        (r"a.b", "a\u00e9b", True),
        (r"^b", "a\nb", False),
        (r"(?m)^b", "a\nb", True),
        (r"(?m)a$", "a\nb", True),
        (r"[^a-z]x", "\u00e9x", True),  # non-ASCII is outside [a-z], and not a word character for RE2
        (r"\w\b", "a\u00e9", True),
        ("caf[\u00c9]", "CAF\u00c9", True),  # a non-ASCII capital matches its lower case
    ],
)
def test_edge_semantics(pattern, text, found):
    assert lucene_matches(pattern, text) is found


def test_what_cannot_be_exact_is_a_superset_and_said():
    cased = to_lucene(r"(?-i:DAN)\W*:")
    assert cased.approximations and "case-sensitive" in cased.approximations[0]
    assert lucene_matches(r"(?-i:DAN)\W*:", "dan:")  # found by the query, not by the engine: a superset
    repeated = to_lucene(r"(\bfoo)+")  # after "foo" or after the padding: not one kind of character
    assert any("word boundary" in note for note in repeated.approximations)
    assert to_lucene(r"(foo\s)?\bbar").approximations == ()  # the boundary goes into both cases of the group
    counted = to_lucene(r"=[^\"]{16}")
    assert any(f"{MAX_COUNT} or more" in note for note in counted.approximations)
    bounded = to_lucene(r"ignore.{0,50}instructions")  # too big an automaton for Elasticsearch as written
    assert bounded.alternatives == (".{0,}(ignore[^\n]*in[sſ]truction[sſ]).{0,}",)
    assert any("0 or more" in note for note in bounded.approximations)
    assert to_lucene(r"\bignore\W+previous\b").approximations == ()


def test_top_level_branches_are_alternatives_of_their_own():
    assert to_lucene(r"(\bprintenv\b|cat\s+\.env)").alternatives == (
        r"(.{0,}[^a-z0-9_])?(printenv)([^a-z0-9_].{0,})?",
        r".{0,}(cat\s+\.env).{0,}",
    )


@pytest.mark.parametrize("pattern", [r"\pL+", r"\Qa.b\E", r"[[:alpha:]]", r"*a", r"(a"])
def test_what_lucene_cannot_express_raises(pattern):
    with pytest.raises(NotImplementedError):
        to_lucene(pattern)


def test_every_regex_of_the_pack_finds_what_re2_finds_on_the_rule_examples():
    texts = example_texts()
    compared = positives = 0
    for regex in rule_regexes():
        searcher = regex.searcher()
        lucene = to_lucene(regex.pattern, dotall=regex.dotall, multiline=regex.multiline)
        compiled = [re.compile(alt, re.S | re.A) for alt in lucene.alternatives]
        for text in texts:
            expected = searcher.search(text) is not None
            found = any(c.fullmatch(text) for c in compiled)
            assert found is expected or (found and lucene.approximations), (regex.title, regex.pattern[:60], text[:80])
            positives += expected
        compared += 1
    assert compared >= 150 and positives >= 5 * compared
