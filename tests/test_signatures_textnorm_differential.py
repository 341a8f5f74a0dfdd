"""The fast text views (issue #9) are exactly the views of the per-character implementation they replaced.

``reference_text_views`` below is a frozen copy of the code that was replaced: per-character folding with
``str.translate`` over the whole text, tokens from ``str.translate`` + ``split``, Unicode tags from a generator over
every character, three hint matchers, ``str.translate`` / ``codecs`` for leet and rot13, and a loop over every
character to join spaced letters. It reuses what did not change (the fold table, run decoding, ``View``). Every view
of every text must be equal: text, source, transforms, offsets, origin and flags.
"""

from __future__ import annotations

import base64
import codecs
import random
import urllib.parse

import pytest

from detectors.matching import MultiMatcher, Pattern
from detectors.signatures import textnorm
from detectors.signatures.textnorm import DEFAULT_LIMITS, Limits, View, text_views

_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_")
_TO_B64_TOKENS = {cp: " " for cp in range(0x80) if chr(cp) not in _B64_CHARS}
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_LEET_L = str.maketrans({"1": "l"})
_LEETSPEAK = MultiMatcher(
    [
        Pattern(1, r"[a-z][013457@$]+[a-z]"),
        Pattern(2, r"(?:^|[^a-z0-9])[013457@$][a-z]{2}"),
        Pattern(3, r"[a-z]{2}[013457@$](?:[^a-z0-9]|$)"),
    ],
    max_matches_per_pattern=1,
)
_ROT13_HINTS = MultiMatcher(
    [Pattern(i, rf"\b{codecs.encode(word, 'rot13')}\b") for i, word in enumerate(textnorm._ROT13_WORDS)],
    max_matches_per_pattern=1,
)
# Since review 8: underscores separate spaced letters too, and "word_word" gets a view with spaces.
_SPACED_LETTERS = MultiMatcher(
    [Pattern(1, r"(?:^|[\W_])[^\W_][\W_]{1,3}[^\W_][\W_]{1,3}[^\W_][\W_]{1,3}[^\W_](?:[\W_]|$)", dotall=True)],
    max_matches_per_pattern=1,
)
_UNDERSCORE_WORDS = MultiMatcher([Pattern(1, r"[a-z]_[a-z]")], max_matches_per_pattern=1)


def reference_text_views(text: str, limits: Limits) -> tuple[list[View], bool]:
    truncated = len(text) > limits.max_chars
    if truncated:
        text = text[: limits.max_chars]
    views = _reference_fold_views(text, (), None)
    _reference_add_decoded(views, text, (), None, limits.max_depth, [limits.max_decode_bytes])
    return views, truncated


def _reference_fold_views(source: str, transforms: tuple[str, ...], origin: tuple[int, int] | None) -> list[View]:
    fold = textnorm._FOLD
    views = [View(source, source, transforms, origin=origin, cased=True)]
    if source.isascii():
        folded, offsets = source, None
        if any(char.isspace() and char not in " \t\n\r\f" for char in source):  # since review 8: a fold view
            folded = source.translate(fold)
            views.append(View(folded, source, transforms, None, origin))
    else:
        folded = source.translate(fold)
        offsets = None
        if not fold.non_unit.isdisjoint(source):
            offsets = [i for i, char in enumerate(source) for _ in range(len(fold[ord(char)]))]
        if folded != source:
            case_only = offsets is None and folded == "".join(c.lower() if c.isascii() else c for c in source)
            views.append(View(folded, source, transforms, offsets, origin, case_only=case_only))
    if _LEETSPEAK.scan(folded):
        views.append(View(folded.translate(_LEET), source, (*transforms, "leet"), offsets, origin, variant=True))
        if "1" in folded:
            leet_l = folded.translate(_LEET_L).translate(_LEET)
            views.append(View(leet_l, source, (*transforms, "leet"), offsets, origin, variant=True))
    if _SPACED_LETTERS.scan(folded):
        joined, joined_offsets = reference_join_spaced_letters(folded)
        if offsets is not None:
            joined_offsets = [offsets[i] for i in joined_offsets]
        views.append(View(joined, source, (*transforms, "separators"), joined_offsets, origin, variant=True))
    if _UNDERSCORE_WORDS.scan(folded):
        spaced = folded.replace("_", " ")
        views.append(View(spaced, source, (*transforms, "separators"), offsets, origin, variant=True))
    if len({match.pattern_id for match in _ROT13_HINTS.scan(folded)}) >= 2:
        rot13 = codecs.encode(folded, "rot13")
        views.append(View(rot13, source, (*transforms, "rot13"), offsets, origin, variant=True))
    return views


def reference_join_spaced_letters(text: str) -> tuple[str, list[int]]:
    tokens: list[tuple[int, int, bool]] = []  # (start, end, is_word)
    start = 0
    for index in range(1, len(text) + 1):
        if index == len(text) or text[index].isalnum() != text[start].isalnum():
            tokens.append((start, index, text[start].isalnum()))
            start = index
    out: list[str] = []
    offsets: list[int] = []
    position = 0
    while position < len(tokens):
        run_end = position
        if tokens[position][2] and tokens[position][1] - tokens[position][0] == 1:
            while (
                run_end + 2 < len(tokens)
                and tokens[run_end + 1][1] - tokens[run_end + 1][0] <= 3
                and tokens[run_end + 2][1] - tokens[run_end + 2][0] == 1
            ):
                run_end += 2
        if run_end - position < 6:  # fewer than 4 letters
            out.append(text[tokens[position][0] : tokens[position][1]])
            offsets.extend(range(tokens[position][0], tokens[position][1]))
            position += 1
            continue
        separators = [text[tokens[i][0] : tokens[i][1]] for i in range(position + 1, run_end, 2)]
        inner = max(sorted(set(separators)), key=separators.count)
        for i in range(position, run_end + 1):
            begin, end, is_word = tokens[i]
            if is_word:
                out.append(text[begin:end])
                offsets.extend(range(begin, end))
            elif text[begin:end] != inner:
                out.append(" ")
                offsets.append(begin)
        position = run_end + 1
    return "".join(out), offsets


def _reference_add_decoded(
    views: list[View],
    source: str,
    transforms: tuple[str, ...],
    origin: tuple[int, int] | None,
    depth: int,
    budget: list[int],
) -> None:
    if depth <= 0 or budget[0] <= 0:
        return
    for kind, span, decoded in _reference_payloads(source):
        if budget[0] <= 0:
            return
        payload = decoded[: budget[0]]
        budget[0] -= len(payload)
        chain = (*transforms, kind)
        views.extend(_reference_fold_views(payload, chain, origin or span))
        _reference_add_decoded(views, payload, chain, origin or span, depth - 1, budget)


def _reference_payloads(source: str) -> list[tuple[str, tuple[int, int], str]]:
    found = []
    if not source.isascii():
        tags = [i for i, c in enumerate(source) if 0xE0000 <= ord(c) <= 0xE007F]
        if len(tags) >= 4:
            smuggled = "".join(chr(ord(source[i]) - 0xE0000) for i in tags)
            found.append(("unicode_tags", (tags[0], tags[-1] + 1), smuggled))
    if "%" in source:
        try:
            decoded = urllib.parse.unquote(source, errors="strict")
        except UnicodeDecodeError:
            decoded = source
        if decoded != source:
            first, last = source.index("%"), source.rindex("%")
            found.append(("url", (first, last + len(source[last:].split(None, 1)[0])), decoded))
    position = 0
    for token in source.translate(_TO_B64_TOKENS).split():
        if len(token) < 16:
            continue
        start = source.find(token, position)
        position = start + len(token)
        decoded_run = textnorm._decode_run(token)
        if decoded_run is not None:
            found.append((decoded_run[0], (start, start + len(token)), decoded_run[1]))
    return found


_ALPHABET = (
    *("a", "b", "e", "i", "o", "s", "t", "I", "G", "N", " ", "  ", "\n", "1", "3", "0", "4", "5", "7", "@", "$"),
    *("é", "í", "ñ", "¿", "\u2019", "\u2014", "\u2026", "\u200b", "\u200d", "\u00ad", "\ufeff", "\u2060", "\u202e"),
    *("ﬁ", "Ａ", "ı", "İ", "ß", "а", "е", "о", "і", "ο", "Ι", "K", "Ω", "ǅ", "ŉ", "ﷺ", "\u0301", "e\u0301"),
    *("\U000e0041", "\U000e0069", "\U000e0020", "%", "%41", "%2", "%zz", "%C3%A9", "%C3(", "=", "+", "/", "-", "_"),
    *("\u3000", "\u00a0", "\u2003", "\x85", "\ud800", "\udc00", "\U0001f600", "中", "文"),
)
_WORDS = ("ignore", "previous", "instructions", "system", "prompt", "the", "and", "you", "reveal", "password", "DAN")


def _phrase(rng: random.Random, count: int) -> str:
    return " ".join(rng.choices(_WORDS, k=count))


def _piece(rng: random.Random) -> str:
    """One fragment: a hostile character, a word, an encoding or an obfuscation of a phrase."""
    kind = rng.randrange(12)
    if kind < 4:
        return rng.choice(_ALPHABET)
    if kind == 4:
        return rng.choice(_WORDS)
    if kind == 5:
        return " ".join(rng.choice(_WORDS))  # spaced letters
    if kind == 6:
        encoded = base64.b64encode(_phrase(rng, rng.randint(1, 4)).encode()).decode()
        if rng.random() < 0.5:  # glued to a non-ASCII character and padding: one token that may still decode
            encoded = encoded[: len(encoded) // 4 * 4] + rng.choice(("é", "\u200b", "\u3000")) + "=" * rng.randint(0, 4)
        return encoded
    if kind == 7:
        return rng.choice((_phrase(rng, 3).encode().hex(), urllib.parse.quote(_phrase(rng, 3))))
    if kind == 8:
        return codecs.encode(_phrase(rng, 4), "rot13")
    if kind == 9:
        return "".join(chr(0xE0000 + ord(c)) for c in rng.choice(_WORDS))  # Unicode tag smuggling
    if kind == 10:
        return rng.choice(_WORDS).translate(str.maketrans("oieast", "013457"))
    noise = ("a", "é", "\u200b", "1", "Z", "9", "+", "/", "=", "中", "\u3000")
    return "".join(rng.choice(noise) for _ in range(rng.randint(10, 40)))  # runs mixing base64 and non-ASCII


def hostile_texts(seed: int, count: int) -> list[str]:
    """Dense hostile texts, and long ASCII prose with a few of them inside (the run-by-run fold path)."""
    rng = random.Random(seed)
    texts = []
    for index in range(count):
        separator = rng.choice(("", " ", "\n", "é", "\u200b", "\u3000"))
        text = separator.join(_piece(rng) for _ in range(rng.randint(1, 30)))
        if index % 2:
            prose = " ".join(
                rng.choice((*_WORDS, "Lorem", "ipsum", "data", "table")) for _ in range(rng.randint(50, 300))
            )
            cut = rng.randrange(len(prose))
            text = prose[:cut] + text + prose[cut:]
        texts.append(text)
    return texts


def _assert_same_views(text: str, limits: Limits = DEFAULT_LIMITS) -> None:
    expected_views, expected_truncated = reference_text_views(text, limits)
    views, truncated = text_views(text, limits)
    assert truncated == expected_truncated
    assert [_comparable(view) for view in views] == [_comparable(view) for view in expected_views], repr(text)


def _comparable(view: View) -> tuple:
    offsets = None if view.offsets is None else list(view.offsets)
    return (view.text, view.source, view.transforms, offsets, view.origin, view.cased, view.variant, view.case_only)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_views_equal_the_replaced_implementation_on_hostile_texts(seed):
    for text in hostile_texts(seed, 150):
        _assert_same_views(text)


def test_views_equal_the_replaced_implementation_under_tight_budgets():
    limits = Limits(max_chars=60, max_decode_bytes=40, max_depth=1)
    for text in hostile_texts(4, 150):
        _assert_same_views(text, limits)


def test_spaced_letters_are_joined_as_the_replaced_implementation_did():
    rng = random.Random(6)
    letters = ("i", "g", "N", "о", "中", "7", "é", "ab", "xyz")
    separators = (" ", "  ", ".", " . ", "-_-", "    ", "\u200b", "\ud800", "\n", ", ")
    for _ in range(400):
        parts = [rng.choice(letters) + rng.choice(separators) for _ in range(rng.randint(0, 25))]
        text = rng.choice(("", "x ", "ab")) + "".join(parts) + rng.choice(("", "q", " end"))
        assert textnorm.join_spaced_letters(text) == reference_join_spaced_letters(text), repr(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain ascii, nothing to see",
        "c3lzdGVtIHRoZSB0aGUgaWdub3Jl\u200b$",  # a base64 run glued to an invisible char: one token, still decoded
        "aGVsbG8gd29y\u200b===",  # 12 ASCII + 1 non-ASCII + padding: a 16-character token that decodes
        "aWdub3JlIHByZXZpb3Vz\u3000aWdub3JlIHByZXZpb3Vz",  # ideographic space separates tokens
        "aWdub3JlIHByZXZpb3Vz\u00a0é",  # no-break space separates, é does not
        "x" * 15 + "é" + "y" * 15,  # 31 characters, no 16-character ASCII run
        "\ud800aWdub3JlIHByZXZpb3Vz\udc00",  # lone surrogates around a run
        "Ｉｇｎｏｒｅ ＤＡＮ \U000e0049\U000e0047\U000e004e\U000e004f\U000e0052\U000e0045 ok",
        "Smart quotes \u2019 and dashes \u2014 only: CASE stays",  # a fold that differs only in ASCII case
        "ig\u200bnore " * 40 + "\ufb01nal",  # invisible and expanding characters in sparse text: offset map
        "%C3(%41 and %zz\ud800",  # undecodable percent-encoding, and a surrogate
    ],
)
def test_views_equal_the_replaced_implementation_on_edge_cases(text):
    _assert_same_views(text)
