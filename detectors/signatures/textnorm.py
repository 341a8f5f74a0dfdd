"""Evasion-resistant text normalisation: the views of a text that signature patterns are scanned against.

Attackers hide instructions from naive matching with look-alike letters, invisible characters, spaced-out letters,
leetspeak, rot13 and encodings. :func:`text_views` turns one text into a few *views* (the text as written, its fold,
variants and decoded payloads), each with a map from its offsets back to the original text, so evidence always
points at what the user really sent. :func:`fold` is the same fold applied to pattern literals, so a ``contains``
value matches the folded text.

The extra views are made only when the text shows signs of them, so plain text is scanned once: leet when a leet
character sits inside a word, spaced letters when four or more single letters are separated, rot13 when at least two
rot13-encoded common or injection words occur. Decoded payloads get the same views, nested to ``Limits.max_depth``.

Fold = per character: drop invisible characters (zero-width, bidi controls, Unicode tags, soft hyphen, variation
selectors), NFKD, drop combining marks, NFKC, casefold, then map homoglyphs (Cyrillic/Greek/... look-alikes) to
Latin. ASCII text folds to itself (up to case), so the common case costs nothing.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import unicodedata
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

from detectors.matching import MultiMatcher, Pattern

# Transform names reported in Evidence.transforms.
NFKC = "nfkc"
ZERO_WIDTH = "zero_width"
HOMOGLYPH = "homoglyph"
LEET = "leet"
SEPARATORS = "separators"
BASE64 = "base64"
HEX = "hex"
URL = "url"
ROT13 = "rot13"
UNICODE_TAGS = "unicode_tags"  # ASCII smuggled as Unicode tag characters, decoded

_INVISIBLE_RANGES = (
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # Arabic letter mark (bidi)
    (0x115F, 0x1160),  # Hangul fillers
    (0x17B4, 0x17B5),  # Khmer invisible vowels
    (0x180B, 0x180F),  # Mongolian variation selectors and vowel separator
    (0x200B, 0x200F),  # zero-width space/non-joiner/joiner, LRM, RLM
    (0x202A, 0x202E),  # bidi embeddings and overrides
    (0x2060, 0x206F),  # word joiner, invisible operators, bidi isolates, deprecated format characters
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),  # zero-width no-break space (BOM)
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0x1D173, 0x1D17A),  # musical symbol formatting
    (0xE0000, 0xE007F),  # Unicode tag characters
    (0xE0100, 0xE01EF),  # variation selectors supplement
)
_TAG_BASE = 0xE0000
_TAG_LAST = 0xE007F

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_LEET_L = str.maketrans({"1": "l"})
# Leetspeak looks like a leet character inside or at the edge of a word ("1gn0r3", "4ll"), not like "2024".
_LEETSPEAK = MultiMatcher(
    [
        Pattern(1, r"[a-z][013457@$]+[a-z]"),
        Pattern(2, r"(?:^|[^a-z0-9])[013457@$][a-z]{2}"),
        Pattern(3, r"[a-z]{2}[013457@$](?:[^a-z0-9]|$)"),
    ],
    max_matches_per_pattern=1,
)

_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_")
_TO_B64_TOKENS = {cp: " " for cp in range(0x80) if chr(cp) not in _B64_CHARS}
_MIN_ENCODED_RUN = 16
_MIN_PRINTABLE = 0.85

# rot13 of common English words and of the words injections are made of: a rot13 text holds several of them, plain
# text almost never does, so the rot13 view is scanned only when at least two different ones occur.
_ROT13_WORDS = (
    *("the", "and", "you", "your", "all", "are", "this", "that", "with", "for", "what", "how", "now", "not", "me"),
    *("ignore", "previous", "prior", "instructions", "system", "prompt", "rules", "forget", "disregard", "password"),
    *("secret", "pretend", "mode", "developer", "jailbreak", "reveal", "print", "override", "above", "say"),
)
_ROT13_HINTS = MultiMatcher(
    [Pattern(i, rf"\b{codecs.encode(word, 'rot13')}\b") for i, word in enumerate(_ROT13_WORDS)],
    max_matches_per_pattern=1,
)
_ROT13_MIN_HINTS = 2

# A run of >= 4 single letters separated by 1-3 non-word characters: "i g n o r e", "i.g.n.o.r.e".
_SPACED_LETTERS = MultiMatcher(
    [Pattern(1, r"(?:^|\W)\w\W{1,3}\w\W{1,3}\w\W{1,3}\w(?:\W|$)", dotall=True)], max_matches_per_pattern=1
)


def _is_invisible(cp: int) -> bool:
    return any(low <= cp <= high for low, high in _INVISIBLE_RANGES)


@cache
def _homoglyphs() -> dict[str, str]:
    """Non-ASCII letters that look like a Latin letter, from Unicode's confusables (via confusable_homoglyphs)."""
    data = json.loads(resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8"))
    table: dict[str, str] = {}
    for char, confusables in data.items():
        if len(char) != 1 or char.isascii():
            continue
        letters = sorted(
            {c["c"].lower() for c in confusables if len(c["c"]) == 1 and c["c"].isascii() and c["c"].isalpha()}
        )
        if letters:
            table[char] = letters[0]
    return table


class _FoldTable(dict[int, str]):
    """``str.translate`` table that folds each character on first sight; remembers which ones change length."""

    def __init__(self) -> None:
        super().__init__()
        self.non_unit: set[str] = set()

    def __missing__(self, cp: int) -> str:
        folded = _fold_char(chr(cp))
        if len(folded) != 1:
            self.non_unit.add(chr(cp))
        self[cp] = folded
        return folded


def _fold_char(char: str) -> str:
    if char.isascii():
        return char.lower()
    if _is_invisible(ord(char)):
        return ""
    decomposed = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    composed = unicodedata.normalize("NFKC", decomposed).casefold()
    homoglyphs = _homoglyphs()
    return "".join(homoglyphs.get(c, c) for c in composed)


_FOLD = _FoldTable()


def fold(text: str) -> str:
    """The fold of ``text`` (see module docstring); pattern literals go through this too."""
    return text.lower() if text.isascii() else text.translate(_FOLD)


@cache
def _char_transform(char: str) -> str | None:
    """Which transform folding ``char`` amounts to, if any beyond case."""
    if char.isascii():
        return None
    if _is_invisible(ord(char)):
        return ZERO_WIDTH
    decomposed = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    composed = unicodedata.normalize("NFKC", decomposed).casefold()
    if any(c in _homoglyphs() for c in composed):
        return HOMOGLYPH
    if composed != char.casefold():
        return NFKC
    return None


def explain(original: str) -> tuple[str, ...]:
    """The fold transforms that ``original`` (a matched slice) needed, in a stable order."""
    if original.isascii():
        return ()
    found = {_char_transform(c) for c in original} - {None}
    return tuple(name for name in (NFKC, ZERO_WIDTH, HOMOGLYPH) if name in found)


@dataclass(frozen=True, slots=True)
class View:
    """One text to scan: a transform of the original text or of a payload decoded from it.

    ``source`` is the text that ``offsets`` index into (the original, or the decoded payload); ``offsets[i]`` is
    the ``source`` offset of ``text[i]`` (``None`` when they are the same). ``origin`` is the span of the encoded
    run in the original text for decoded payloads. ``cased`` views show the text as written, where case-sensitive
    patterns may match; on the others :func:`explain` says which fold transforms a match needed.
    """

    text: str
    source: str
    transforms: tuple[str, ...] = ()
    offsets: Sequence[int] | None = None
    origin: tuple[int, int] | None = None
    cased: bool = False
    variant: bool = False  # an extra scan variant (leet, rot13, separators): only patterns that allow variants

    def source_span(self, start: int, end: int) -> tuple[int, int]:
        """The ``source`` span of ``text[start:end]``."""
        if self.offsets is None:
            return start, end
        if end <= start:
            position = self.offsets[start] if start < len(self.offsets) else len(self.source)
            return position, position
        return self.offsets[start], self.offsets[end - 1] + 1


@dataclass(frozen=True, slots=True)
class Limits:
    """Scan budget: ``max_chars`` of each text are scanned; decoding stops at ``max_decode_bytes`` per text."""

    max_chars: int = 256 * 1024
    max_decode_bytes: int = 64 * 1024
    max_depth: int = 2


DEFAULT_LIMITS = Limits()


def text_views(text: str, limits: Limits = DEFAULT_LIMITS) -> tuple[list[View], bool]:
    """Every view of ``text`` to scan, the plainest first, and whether ``text`` was truncated to the budget."""
    truncated = len(text) > limits.max_chars
    if truncated:
        text = text[: limits.max_chars]
    views = _fold_views(text, (), None)
    budget = [limits.max_decode_bytes]
    _add_decoded(views, text, (), None, limits.max_depth, budget)
    return views, truncated


def _fold_views(source: str, transforms: tuple[str, ...], origin: tuple[int, int] | None) -> list[View]:
    """The source as written, its fold when that differs, and the leet / spaced-letters / rot13 variants."""
    views = [View(source, source, transforms, origin=origin, cased=True)]
    if source.isascii():
        folded, offsets = source, None
    else:
        folded = source.translate(_FOLD)
        offsets = None
        if not _FOLD.non_unit.isdisjoint(source):
            offsets = _fold_offsets(source)
        if folded != source:
            views.append(View(folded, source, transforms, offsets, origin))
    if _LEETSPEAK.scan(folded):
        leet = folded.translate(_LEET)
        views.append(View(leet, source, (*transforms, LEET), offsets, origin, variant=True))
        if "1" in folded:
            leet_l = folded.translate(_LEET_L).translate(_LEET)
            views.append(View(leet_l, source, (*transforms, LEET), offsets, origin, variant=True))
    if _SPACED_LETTERS.scan(folded):
        joined, joined_offsets = join_spaced_letters(folded)
        if offsets is not None:
            joined_offsets = [offsets[i] for i in joined_offsets]
        views.append(View(joined, source, (*transforms, SEPARATORS), joined_offsets, origin, variant=True))
    if len({match.pattern_id for match in _ROT13_HINTS.scan(folded)}) >= _ROT13_MIN_HINTS:
        rot13 = codecs.encode(folded, "rot13")
        views.append(View(rot13, source, (*transforms, ROT13), offsets, origin, variant=True))
    return views


def _fold_offsets(source: str) -> list[int]:
    offsets: list[int] = []
    for index, char in enumerate(source):
        offsets.extend([index] * len(_FOLD[ord(char)]))
    return offsets


def join_spaced_letters(text: str) -> tuple[str, list[int]]:
    """Join runs of >= 4 single characters split by separators ("i g n o r e" -> "ignore") with an offset map.

    Inside a run, the most common separator is taken as the split inside a word and removed; any other separator
    becomes one space, so "i g n o r e  a l l" gives "ignore all".
    """
    tokens: list[tuple[int, int, bool]] = []  # (start, end, is_word)
    start = 0
    for index in range(1, len(text) + 1):
        if index == len(text) or text[index].isalnum() != text[start].isalnum():
            tokens.append((start, index, text[start].isalnum()))
            start = index
    out: list[str] = []
    offsets: list[int] = []

    def emit(begin: int, end: int) -> None:
        out.append(text[begin:end])
        offsets.extend(range(begin, end))

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
            emit(tokens[position][0], tokens[position][1])
            position += 1
            continue
        separators = [text[tokens[i][0] : tokens[i][1]] for i in range(position + 1, run_end, 2)]
        inner = max(sorted(set(separators)), key=separators.count)
        for i in range(position, run_end + 1):
            begin, end, is_word = tokens[i]
            if is_word:
                emit(begin, end)
            elif text[begin:end] != inner:
                out.append(" ")
                offsets.append(begin)
        position = run_end + 1
    return "".join(out), offsets


def _add_decoded(
    views: list[View],
    source: str,
    transforms: tuple[str, ...],
    origin: tuple[int, int] | None,
    depth: int,
    budget: list[int],
) -> None:
    """Append views of payloads decoded from ``source`` (base64, hex, %-encoding, Unicode tags), recursively."""
    if depth <= 0 or budget[0] <= 0:
        return
    for kind, span, decoded in _payloads(source):
        if budget[0] <= 0:
            return
        payload = decoded[: budget[0]]
        budget[0] -= len(payload)
        payload_origin = origin or span
        chain = (*transforms, kind)
        views.extend(_fold_views(payload, chain, payload_origin))
        _add_decoded(views, payload, chain, payload_origin, depth - 1, budget)


def _payloads(source: str) -> list[tuple[str, tuple[int, int], str]]:
    """Encoded runs in ``source`` that decode to mostly printable text: (transform, span, decoded text)."""
    found: list[tuple[str, tuple[int, int], str]] = []
    if not source.isascii():
        smuggled = "".join(chr(ord(c) - _TAG_BASE) for c in source if _TAG_BASE <= ord(c) <= _TAG_LAST)
        if len(smuggled) >= 4:
            first = next(i for i, c in enumerate(source) if _TAG_BASE <= ord(c) <= _TAG_LAST)
            last = max(i for i, c in enumerate(source) if _TAG_BASE <= ord(c) <= _TAG_LAST)
            found.append((UNICODE_TAGS, (first, last + 1), smuggled))
    if "%" in source:
        decoded = urllib.parse.unquote(source, errors="strict") if _valid_percent(source) else source
        if decoded != source:
            first = source.index("%")
            last = source.rindex("%")
            found.append((URL, (first, last + len(source[last:].split(None, 1)[0])), decoded))
    position = 0
    for token in source.translate(_TO_B64_TOKENS).split():
        if len(token) < _MIN_ENCODED_RUN:
            continue
        start = source.find(token, position)
        position = start + len(token)
        decoded_text = _decode_run(token)
        if decoded_text is not None:
            found.append((decoded_text[0], (start, start + len(token)), decoded_text[1]))
    return found


def _valid_percent(source: str) -> bool:
    try:
        urllib.parse.unquote(source, errors="strict")
    except UnicodeDecodeError:
        return False
    return True


def _decode_run(token: str) -> tuple[str, str] | None:
    """Decode a run as hex (even length, hex digits only) or else base64 (standard or URL-safe)."""
    if len(token) % 2 == 0 and token.isalnum():
        try:
            text = _printable(bytes.fromhex(token))
        except ValueError:
            text = None
        if text is not None:
            return HEX, text
    core = token.rstrip("=")
    if len(core) % 4 == 1:
        core = core[:-1]
    padded = core + "=" * (-len(core) % 4)
    altchars = b"-_" if ("-" in core or "_" in core) else None
    try:
        raw = base64.b64decode(padded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return None
    text = _printable(raw)
    return (BASE64, text) if text is not None else None


def _printable(raw: bytes) -> str | None:
    """``raw`` as text when it is UTF-8 and mostly printable, else ``None``."""
    if not raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(1 for c in text if c.isprintable() or c in "\n\r\t")
    return text if printable / len(text) >= _MIN_PRINTABLE else None
