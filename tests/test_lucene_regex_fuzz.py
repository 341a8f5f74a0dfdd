"""Property test of :func:`to_lucene`: RE2 searching the lower-cased text finds it exactly when a Lucene alternative
matches the whole lower-cased text (a superset when approximations are reported).

Small RE2 patterns come from a grammar (literals with Lucene's operators and non-ASCII letters, classes with ranges and
Perl classes, escapes, groups with flags, alternation, greedy and lazy quantifiers, anchors and word boundaries) and
texts from an alphabet chosen for the edges: word characters, newline, other ASCII, non-ASCII letters. Python's ``re``
reads the Lucene subset the translation writes (as in tests/test_lucene_regex.py).

One RE2 behaviour is out of scope: RE2 steps through UTF-8 bytes, so ``\\B`` also holds between the two bytes of
``é`` (``re2.search(r"\\B", "_éa")`` finds an empty match there). Lucene works on characters, and an empty match
inside a character says nothing about the text, so the engine side is searched at character boundaries when RE2's
match is empty (:func:`_re2_finds`).
"""

import re
import warnings
from collections.abc import Iterable, Iterator

import pytest
import re2
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from detectors.signatures.lucene_regex import to_lucene

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # patterns RE2 rejects are skipped, not logged

TEXT_ALPHABET = 'absſAéÉ \n\t_1#"-.'
LITERALS = (*'absSAB1_ #@&~"<>-,:;{}', r"\.", r"\#", r"\-", r"\"", r"\x27", r"\n", r"\t", "é", "É", "ß", "İ")
SPECIALS = (".", "^", "$", r"\A", r"\z", r"\b", r"\B", r"\w", r"\W", r"\s", r"\S", r"\d", r"\D")
CLASS_SINGLES = (*'abAZ1_ #"<>.&~$', r"\n", r"\t", r"\x27", r"\]", r"\-", "\\\\", r"\^", "é", "É", "ß", "İ")
CLASS_PERLS = (r"\w", r"\W", r"\s", r"\S", r"\d", r"\D")
ASCII_RANGES = ("a-b", "a-z", "A-Z", "0-9", "A-b", "#-a", " -/", r"\x00-\x7f", r"\t-\n")
LOWER_WIDE_RANGES = ("à-þ", "a-é")  # non-ASCII ranges that case folding leaves alone
CASED_WIDE_RANGES = ("À-Þ", "É-é", "A-É", "À-Ā")  # non-ASCII ranges with capitals to fold
QUANTIFIERS = ("*", "+", "?", "{0}", "{1}", "{2}", "{0,}", "{1,}", "{0,1}", "{1,2}", "{2,3}", "{7}", "{0,8}")
GROUP_OPENS = ("(", "(?:", "(?i:", "(?s:", "(?-s:", "(?m:", "(?-m:", "(?sm:", "(?P<g>")
INLINE_FLAGS = ("(?i)", "(?s)", "(?-s)", "(?m)", "(?-m)", "(?ms)")
CASE_SENSITIVE_GROUPS = ("(?-i:",)
CASE_SENSITIVE_FLAGS = ("(?-i)",)


def re2_patterns(max_leaves: int = 6) -> st.SearchStrategy[str]:
    """RE2 patterns from the grammar, with ``(?-i)`` parts and ranges such as ``[À-Þ]`` often: classes are where
    case folding can go wrong."""
    ranges = ASCII_RANGES + LOWER_WIDE_RANGES
    member = st.one_of(st.sampled_from(CLASS_SINGLES + ranges + CLASS_PERLS), st.sampled_from(CASED_WIDE_RANGES))
    opens = st.one_of(st.sampled_from(GROUP_OPENS), st.sampled_from(CASE_SENSITIVE_GROUPS))
    flags = st.one_of(st.sampled_from(INLINE_FLAGS), st.sampled_from(CASE_SENSITIVE_FLAGS))
    char_class = st.builds(
        lambda negated, first, rest: "[" + "^" * negated + first + "".join(rest) + "]",
        st.booleans(),
        member,
        st.lists(member, max_size=2),
    )
    atom = st.one_of(st.sampled_from(LITERALS), st.sampled_from(SPECIALS), char_class, char_class, char_class)
    leaf = st.one_of(atom, flags)

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        group = st.builds(lambda open_, body: f"{open_}{body})", opens, inner)
        quantified = st.builds(
            lambda unit, quantifier, lazy: unit + quantifier + "?" * lazy,
            st.one_of(atom, group),
            st.sampled_from(QUANTIFIERS),
            st.booleans(),
        )
        sequence = st.lists(st.one_of(leaf, group, quantified), min_size=1, max_size=4).map("".join)
        return st.one_of(group, sequence, st.builds(lambda a, b: f"{a}|{b}", sequence, sequence))

    return st.recursive(leaf, extend, max_leaves=max_leaves)


def _re2_finds(engine: re2._Regexp, text: str) -> bool:
    """Whether RE2 finds ``text``, with empty matches only at character boundaries (see the module docstring)."""
    match = engine.search(text)
    if match is None or match.group():
        return match is not None
    return any(engine.match(text, index) for index in range(len(text) + 1))  # match() keeps the context for \b, ^


def disagreements(pattern: str, dotall: bool, multiline: bool, texts: Iterable[str]) -> Iterator[str]:
    """Why the translation and RE2 disagree on each text they disagree on (none for a pattern RE2 rejects)."""
    try:
        engine = re2.compile(f"(?i{'s' * dotall}{'m' * multiline}){pattern}", _OPTIONS)
    except re2.error:
        return
    lucene = to_lucene(pattern, dotall=dotall, multiline=multiline)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a FutureWarning would mean Python reads the output otherwise than Lucene
        alternatives = [re.compile(alternative, re.S | re.A) for alternative in lucene.alternatives]
    for lowered in dict.fromkeys(text.lower() for text in texts):
        expected = _re2_finds(engine, lowered)
        found = any(alternative.fullmatch(lowered) for alternative in alternatives)
        if found is not expected and not (found and lucene.approximations):
            yield (
                f"pattern={pattern!r} dotall={dotall} multiline={multiline} text={lowered!r}: "
                f"RE2 {expected}, Lucene {found}, alternatives={lucene.alternatives!r}, "
                f"approximations={lucene.approximations!r}"
            )


def check_texts(pattern: str, dotall: bool, multiline: bool, texts: list[str]) -> None:
    """The claim on ``texts`` and on every text of at most one letter (where a class's members show)."""
    try:
        re2.compile(pattern, _OPTIONS)
        to_lucene(pattern, dotall=dotall, multiline=multiline)
    except (re2.error, NotImplementedError):
        assume(False)
    problems = list(disagreements(pattern, dotall, multiline, [*texts, "", *TEXT_ALPHABET]))
    assert not problems, problems[0]


TEXTS = st.lists(st.text(alphabet=TEXT_ALPHABET, max_size=6), min_size=1, max_size=6)
FUZZ = settings(
    max_examples=400, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@FUZZ
@given(re2_patterns(), st.booleans(), st.booleans(), TEXTS)
def test_translation_finds_what_re2_finds(pattern, dotall, multiline, texts):
    check_texts(pattern, dotall, multiline, texts)


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        (r"(?-i:[^A])", "a"),  # a case-sensitive class is negated, then lower-cased for the field
        (r"(?-i:[^#-a])", "b"),
        (r"(?-i:[^À-Þ])", "é"),
        (r"é(?-i)|[^A]", "a"),
        (r"(?-i:[À-Þ])", "é"),  # ... and reported as approximate
        (r"[A-É]", "é"),  # a non-ASCII range is folded member by member, not by its two ends
        (r"[^A-É]", "é"),
        (r"[À-Ā]", "ā"),
        (r"[À-Þ]", "÷"),
        (r"s", "ſ"),  # RE2 folds by case orbits: s, S, ſ
        (r"σ", "ς"),
        (r"µ", "μ"),
        (r"[^A-É]", "k"),  # the Kelvin sign folds with k, so RE2's [^A-É] leaves it out
        (r"a{١}", "a"),  # a count in other digits is text for RE2
        (r"a{²}", "a"),
    ],
)
def test_minimal_counterexamples(pattern, text):
    assert not list(disagreements(pattern, False, False, [text]))


def test_out_of_scope_byte_level_non_boundary_is_not_counted():
    """RE2 finds ``\\B`` inside ``é`` (between its UTF-8 bytes); at character boundaries there is none."""
    engine = re2.compile(r"(?i)\B", _OPTIONS)
    assert engine.search('_éa"b') is not None
    assert not _re2_finds(engine, '_éa"b')
    assert not list(disagreements(r"\B", False, False, ['_éa"b']))
