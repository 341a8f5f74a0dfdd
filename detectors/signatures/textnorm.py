"""Evasion-resistant text normalisation: the views of a text that signature patterns are scanned against.

Attackers hide instructions from naive matching with look-alike letters, invisible characters, spaced-out letters,
leetspeak, rot13 and encodings. :func:`text_views` turns one text into a few *views* (the text as written, its fold,
variants and decoded payloads), each with a map from its offsets back to the original text, so evidence always
points at what the user really sent. :func:`fold` is the same fold applied to pattern literals, so a ``contains``
value matches the folded text.

Patterns that tell case (an inline ``(?-i:DAN)`` group in a caseless pattern) cannot match the fold, which is
lower-case, so a text with look-alike characters also gets, when asked for, a *cased fold*: the fold without the
case folding, where a look-alike of a capital becomes the ASCII capital (``DАN`` with a Cyrillic A, full-width
``ＤＡＮ``, bold ``𝐃𝐀𝐍``, small-capital ``ᴅᴀɴ`` -> ``DAN``) and a lower-case look-alike the lower-case letter.

The extra views are made only when the text shows signs of them, so plain text is scanned once: leet when a leet
character sits inside a word, spaced letters when four or more single letters are separated (by spaces, dots,
underscores...), underscores as spaces when a letter, an underscore and a letter follow each other
(``ignore_all_previous``), rot13 when at least two rot13-encoded common or injection words occur. Decoded payloads get
the same views, nested to ``Limits.max_depth``.

Fold = per character: whitespace other than space, tab, newline, carriage return and form feed (vertical tab, NEL,
U+2028, U+1680...) becomes a space; drop invisible characters (zero-width, bidi controls, Unicode tags, soft hyphen,
variation selectors), NFKD, drop combining marks, NFKC, casefold, then map homoglyphs (Cyrillic/Greek/...
look-alikes) to Latin, and what is still not ASCII to the Latin letter its Unicode name says it is a form of (``ø``
LATIN SMALL LETTER O WITH STROKE, ``ʀ`` LATIN LETTER SMALL CAPITAL R, ``🅘`` NEGATIVE SQUARED LATIN CAPITAL LETTER I,
``🇮`` REGIONAL INDICATOR SYMBOL LETTER I). ASCII text folds to itself (up to case and odd whitespace), so the
common case costs nothing.

Cost: views are built with C-level operations on the text and its UTF-8 bytes, not a Python step per character.
A fold lower-cases the ASCII bytes and replaces each distinct non-ASCII character by its fold (texts of a whole
non-Latin script are translated per character instead); leet and rot13 are byte translations (they change ASCII
only); encoded tokens, Unicode tag characters and spaced-letter runs are found by RE2; the leet / spaced-letters /
rot13 hints are one Hyperscan scan. Python loops only over what was found (tokens, the letters of a spaced run,
the characters that vanish or expand in a fold).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import itertools
import json
import string
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

import re2

from detectors.matching import MultiMatcher, Pattern

# Transform names reported in Evidence.transforms.
NFKC = "nfkc"
ZERO_WIDTH = "zero_width"
HOMOGLYPH = "homoglyph"
LEET = "leet"
SEPARATORS = "separators"  # spaced letters joined, or underscores read as spaces
BASE64 = "base64"
HEX = "hex"
URL = "url"
ROT13 = "rot13"
UNICODE_TAGS = "unicode_tags"  # ASCII smuggled as Unicode tag characters, decoded
DECODINGS = frozenset({BASE64, HEX, URL, UNICODE_TAGS})  # a match after one of these is in decoded text

INVISIBLE_RANGES = (  # also dropped by scanners that do not fold (detectors.exfil.candidates)
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
_UNTAG = {cp: chr(cp - _TAG_BASE) for cp in range(_TAG_BASE, _TAG_LAST + 1)}
# UTF-8 of U+E0000..U+E007F is F3 A0 80 80 .. F3 A0 81 BF; F3 only ever leads a sequence, so these prefixes are exact.
_TAG_PREFIXES = (b"\xf3\xa0\x80", b"\xf3\xa0\x81")

_BYTES = re2.Options()
_BYTES.encoding = re2.Options.Encoding.LATIN1  # patterns over raw UTF-8 bytes
_BYTES.log_errors = False
_TAG_RUN = re2.compile(rb"(?:\xf3\xa0[\x80\x81][\x80-\xbf])+", _BYTES)
_MIN_ENCODED_RUN = 16
# Encoded runs: the base64 (standard and URL-safe) and hex alphabet. In ASCII text a run is a token.
_ENCODED_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_")
_ENCODED_RUN = re2.compile(rb"[A-Za-z0-9+/=_-]{%d,}" % _MIN_ENCODED_RUN, _BYTES)
# In other text a token runs on through non-ASCII characters, which neither hex nor base64 accept, so the only such
# tokens that decode are a run, ONE non-ASCII character and padding (base64 drops a last character left over from
# 4n). These are candidates for both; :func:`_encoded_tokens` checks where the tokens really end.
_UTF8_CHAR = rb"(?:[\xc0-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf7][\x80-\xbf]{3})"
_ENCODED_CANDIDATE = re2.compile(
    rb"[A-Za-z0-9+/=_-]{%d,}(?:%s=*)?|[A-Za-z0-9+/=_-]*%s=+" % (_MIN_ENCODED_RUN - 1, _UTF8_CHAR, _UTF8_CHAR), _BYTES
)
_MIN_PRINTABLE = 0.85
_ASCII = bytes(range(0x80))
# A bytes.replace pass costs about 1/25 of a str.translate lookup per character: fold by replacing while the
# passes (one per distinct character that changes) cost less than translating.
_REPLACE_PASSES = 24


def _byte_table(mapping: dict[str, str]) -> bytes:
    """A ``bytes.translate`` table for a map of ASCII characters to ASCII characters."""
    table = bytearray(range(256))
    for source, target in mapping.items():
        table[ord(source)] = ord(target)
    return bytes(table)


_LEET_MAP = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
_LEET = _byte_table(_LEET_MAP)
_LEET_L = _byte_table({**_LEET_MAP, "1": "l"})
_ASCII_LOWER = _byte_table(dict(zip(string.ascii_uppercase, string.ascii_lowercase, strict=True)))
# Whitespace that patterns' ``\s`` (RE2: space, tab, newline, carriage return, form feed) does not know: a space.
_PLAIN_SPACES = frozenset(" \t\n\r\f")
_ODD_ASCII_SPACES = "".join(chr(cp) for cp in range(0x80) if chr(cp).isspace() and chr(cp) not in _PLAIN_SPACES)
_ASCII_FOLD = _byte_table(
    {**dict(zip(string.ascii_uppercase, string.ascii_lowercase, strict=True)), **dict.fromkeys(_ODD_ASCII_SPACES, " ")}
)
_ASCII_SPACES = _byte_table(dict.fromkeys(_ODD_ASCII_SPACES, " "))  # the cased fold of ASCII: odd spaces only
_NOT_ASCII_UPPER = bytes(b for b in range(256) if not 0x41 <= b <= 0x5A)  # delete these: the ASCII capitals remain
_UNDERSCORES = _byte_table({"_": " "})
_ROT13 = _byte_table(dict(zip(string.ascii_letters, codecs.encode(string.ascii_letters, "rot13"), strict=True)))

# rot13 of common English words and of the words injections are made of: a rot13 text holds several of them, plain
# text almost never does, so the rot13 view is scanned only when at least two different ones occur.
_ROT13_WORDS = (
    *("the", "and", "you", "your", "all", "are", "this", "that", "with", "for", "what", "how", "now", "not", "me"),
    *("ignore", "previous", "prior", "instructions", "system", "prompt", "rules", "forget", "disregard", "password"),
    *("secret", "pretend", "mode", "developer", "jailbreak", "reveal", "print", "override", "above", "say"),
)
_ROT13_MIN_HINTS = 2

# Signs that a variant view is worth scanning, all found in one scan of the folded text.
# Leetspeak looks like a leet character inside or at the edge of a word ("1gn0r3", "4ll"), not like "2024".
_LEET_HINTS = frozenset({1, 2, 3})
# A run of >= 4 single letters separated by 1-3 other characters: "i g n o r e", "i.g.n.o.r.e", "i_g_n_o_r_e".
_SPACED_HINT = 10
# Words joined by underscores: "ignore_all_previous_instructions".
_UNDERSCORE_HINT = 11
_ROT13_HINTS = frozenset(range(100, 100 + len(_ROT13_WORDS)))
_HINTS = MultiMatcher(
    [
        Pattern(1, r"[a-z][013457@$]+[a-z]"),
        Pattern(2, r"(?:^|[^a-z0-9])[013457@$][a-z]{2}"),
        Pattern(3, r"[a-z]{2}[013457@$](?:[^a-z0-9]|$)"),
        Pattern(
            _SPACED_HINT, r"(?:^|[\W_])[^\W_][\W_]{1,3}[^\W_][\W_]{1,3}[^\W_][\W_]{1,3}[^\W_](?:[\W_]|$)", dotall=True
        ),
        Pattern(_UNDERSCORE_HINT, r"[a-z]_[a-z]"),
        *(Pattern(100 + i, rf"\b{codecs.encode(word, 'rot13')}\b") for i, word in enumerate(_ROT13_WORDS)),
    ],
    max_matches_per_pattern=1,
)


def _is_invisible(cp: int) -> bool:
    return any(low <= cp <= high for low, high in INVISIBLE_RANGES)


@cache
def _homoglyphs(keep_case: bool = False) -> dict[str, str]:
    """Non-ASCII letters that look like a Latin letter, from Unicode's confusables (via confusable_homoglyphs): the
    lower-case letter, or with ``keep_case`` the letter as confusable (one in the character's own case if any)."""
    data = json.loads(resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8"))
    table: dict[str, str] = {}
    for char, confusables in data.items():
        if len(char) != 1 or char.isascii():
            continue
        letters = sorted({c["c"] for c in confusables if len(c["c"]) == 1 and c["c"].isascii() and c["c"].isalpha()})
        if not keep_case:
            letters = sorted({letter.lower() for letter in letters})
        same_case = [letter for letter in letters if letter.isupper() == char.isupper()]
        if letters:
            table[char] = (same_case or letters)[0]
    return table


class _AlnumMask(dict[int, str]):
    """``str.translate`` table: "a" for an alphanumeric character, "-" for any other, filled on first sight."""

    def __missing__(self, cp: int) -> str:
        mark = self[cp] = "a" if chr(cp).isalnum() else "-"
        return mark


_ALNUM_MASK = _AlnumMask()
_ALNUM = ord("a")
# A run of >= 4 single alphanumeric characters, each pair split by 1-3 other characters (group 1), in the mask.
_SPACED_RUN = re2.compile(rb"(?:^|-)(a(?:-{1,3}a){3,})(?:-|$)", _BYTES)


class _FoldTable(dict[int, str]):
    """``str.translate`` table that folds each character on first sight with ``fold_char``; remembers which ones
    change length."""

    def __init__(self, fold_char: Callable[[str], str]) -> None:
        super().__init__()
        self.fold_char = fold_char
        self.non_unit: set[str] = set()

    def __missing__(self, cp: int) -> str:
        folded = self.fold_char(chr(cp))
        if len(folded) != 1:
            self.non_unit.add(chr(cp))
        self[cp] = folded
        return folded


def _fold_char(char: str) -> str:
    if char.isspace() and char not in _PLAIN_SPACES:
        return " "
    if char.isascii():
        return char.lower()
    if _is_invisible(ord(char)):
        return ""
    return _capital_look_alike(char) or "".join(_capital_look_alike(c) or _folded_letters(c) for c in _composed(char))


def classifier_fold_char(char: str) -> str:
    """The fold of one character as the text classifier's featuriser was trained on it: :func:`fold` but for
    capitals, which it folds through their lower case (Greek ``Ν`` -> ``v``, ``Β`` -> ``β``).

    The signature tier judges capitals first since session 9 (``ΙGΝΟRΕ`` reads ``ignore``). The classifier keeps the
    fold of its artifact (``detectors/models/MODEL_CARD.md``, "After version 1.2.1": retrained on the new fold it
    alerted on more held-out benign text), so a fold fix for the rules does not change the model's features.
    """
    if char.isspace() or char.isascii() or _is_invisible(ord(char)):
        return _fold_char(char)
    return "".join(_folded_letters(c) for c in _composed(char))


def _capital_look_alike(char: str) -> str | None:
    """The Latin letter (lower case) a capital looks like, judged before lower-casing: Greek ``Ν`` looks like ``N``,
    its lower case ``ν`` like ``v``, and ``Β``, ``Η``, Cyrillic ``В``, ``Н`` have lower cases that look like nothing
    Latin."""
    if not char.isupper():
        return None
    letter = _homoglyphs(keep_case=True).get(char)
    return letter.lower() if letter and letter.isupper() else None


def _folded_letters(char: str) -> str:
    homoglyphs = _homoglyphs()
    return "".join(homoglyphs.get(c) or _letter_by_name(c) or c for c in char.casefold())


def _cased_fold_char(char: str) -> str:
    """The fold of ``char`` in the case it shows (see the module docstring): ASCII letters stay as they are."""
    if char.isspace() or _is_invisible(ord(char)):
        return _fold_char(char)
    if char.isascii():
        return char
    return "".join(_cased_letter(c) for c in _composed(char))


def _cased_letter(char: str) -> str:
    """A composed character's cased fold: its look-alike letter, or its fold in its own case."""
    if char.isascii():
        return char
    letter = _homoglyphs(keep_case=True).get(char)
    if letter:
        return letter
    letter = _letter_by_name(char)
    if letter:  # small capitals, negative squared and regional indicator letters look like capitals
        name = unicodedata.name(char, "")
        return letter.upper() if "CAPITAL" in name or name.startswith("REGIONAL INDICATOR") else letter
    folded = _fold_char(char)
    return folded.upper() if char.isupper() else folded


def _composed(char: str) -> str:
    """``char`` decomposed (NFKD), without its combining marks, composed again (NFKC)."""
    decomposed = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    return unicodedata.normalize("NFKC", decomposed)


# Unicode names of the forms of a Latin letter that neither NFKC nor the confusables map: the letter follows.
_LETTER_NAME_PREFIXES = (
    "LATIN SMALL LETTER ",
    "LATIN CAPITAL LETTER ",
    "LATIN LETTER SMALL CAPITAL ",
    "LATIN SMALL LETTER BARRED ",
    "LATIN CAPITAL LETTER BARRED ",
    "LATIN SMALL LETTER DOTLESS ",
    "LATIN SMALL LETTER SCRIPT ",
    "NEGATIVE CIRCLED LATIN CAPITAL LETTER ",
    "NEGATIVE SQUARED LATIN CAPITAL LETTER ",
    "SQUARED LATIN CAPITAL LETTER ",
    "REGIONAL INDICATOR SYMBOL LETTER ",
)


def _letter_by_name(char: str) -> str | None:
    """The ASCII letter a non-ASCII character is a form of by its Unicode name ("... LETTER O WITH STROKE" -> o)."""
    if char.isascii():
        return None
    name = unicodedata.name(char, "").split(" WITH ", 1)[0]
    for prefix in _LETTER_NAME_PREFIXES:
        letter = name.removeprefix(prefix)
        if letter != name and len(letter) == 1 and "A" <= letter <= "Z":
            return letter.lower()
    return None


_FOLD = _FoldTable(_fold_char)
_CASED_FOLD = _FoldTable(_cased_fold_char)


def fold(text: str) -> str:
    """The fold of ``text`` (see module docstring); pattern literals go through this too."""
    if not text.isascii():
        return text.translate(_FOLD)
    return _translate_ascii(text, _ASCII_FOLD) if _has_odd_ascii_space(text) else text.lower()


def _has_odd_ascii_space(text: str) -> bool:
    return any(space in text for space in _ODD_ASCII_SPACES)


@cache
def _char_transform(char: str) -> str | None:
    """Which transform folding ``char`` amounts to, if any beyond case."""
    if char.isspace() and char not in _PLAIN_SPACES:
        return NFKC
    if char.isascii():
        return None
    if _is_invisible(ord(char)):
        return ZERO_WIDTH
    decomposed = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    composed = unicodedata.normalize("NFKC", decomposed)
    if not composed.isascii() and (_capital_look_alike(char) or any(_capital_look_alike(c) for c in composed)):
        return HOMOGLYPH
    composed = composed.casefold()
    if any(c in _homoglyphs() or _letter_by_name(c) for c in composed):
        return HOMOGLYPH
    if composed != char.casefold():
        return NFKC
    return None


def explain(original: str) -> tuple[str, ...]:
    """The fold transforms that ``original`` (a matched slice) needed, in a stable order."""
    if original.isascii() and not _has_odd_ascii_space(original):
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
    case_only: bool = False  # a fold that differs from its source only in ASCII case: caseless patterns match alike
    case_kept: bool = False  # the cased fold: only caseless patterns that tell case can match it unlike the fold

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


def text_views(text: str, limits: Limits = DEFAULT_LIMITS, keep_case: bool = False) -> tuple[list[View], bool]:
    """Every view of ``text`` to scan, the plainest first, and whether ``text`` was truncated to the budget.
    ``keep_case``: add the cased fold where it differs from the text and from its fold (for patterns that tell
    case)."""
    truncated = len(text) > limits.max_chars
    if truncated:
        text = text[: limits.max_chars]
    views = _fold_views(text, (), None, keep_case)
    budget = [limits.max_decode_bytes]
    _add_decoded(views, text, (), None, limits.max_depth, budget, keep_case)
    return views, truncated


def _fold_views(
    source: str, transforms: tuple[str, ...], origin: tuple[int, int] | None, keep_case: bool = False
) -> list[View]:
    """The source as written, its fold when that differs, the cased fold (``keep_case``) and the leet /
    spaced-letters / rot13 variants."""
    views = [View(source, source, transforms, origin=origin, cased=True)]
    if source.isascii():
        folded, offsets = source, None
        if _has_odd_ascii_space(source):
            folded = _translate_ascii(source, _ASCII_FOLD)
            views.append(View(folded, source, transforms, None, origin))
    else:
        chars = _non_ascii_chars(source)
        folded, offsets = _fold_with_offsets(source, chars=chars)
        if folded != source:
            case_only = offsets is None and folded == _translate_ascii(source, _ASCII_LOWER)
            views.append(View(folded, source, transforms, offsets, origin, case_only=case_only))
        if keep_case and _cased_fold_differs(source, chars):
            cased, cased_offsets = _fold_with_offsets(source, _CASED_FOLD, _ASCII_SPACES, chars)
            views.append(View(cased, source, transforms, cased_offsets, origin, case_kept=True))
    hints = _HINTS.present(folded)
    if not hints:
        return views
    if not hints.isdisjoint(_LEET_HINTS):
        views.append(View(_translate_ascii(folded, _LEET), source, (*transforms, LEET), offsets, origin, variant=True))
        if "1" in folded:
            leet_l = _translate_ascii(folded, _LEET_L)
            views.append(View(leet_l, source, (*transforms, LEET), offsets, origin, variant=True))
    if _SPACED_HINT in hints:
        joined, joined_offsets = join_spaced_letters(folded)
        if offsets is not None:
            joined_offsets = [offsets[i] for i in joined_offsets]
        views.append(View(joined, source, (*transforms, SEPARATORS), joined_offsets, origin, variant=True))
    if _UNDERSCORE_HINT in hints:
        spaced = _translate_ascii(folded, _UNDERSCORES)
        views.append(View(spaced, source, (*transforms, SEPARATORS), offsets, origin, variant=True))
    if len(hints & _ROT13_HINTS) >= _ROT13_MIN_HINTS:
        rot13 = _translate_ascii(folded, _ROT13)
        views.append(View(rot13, source, (*transforms, ROT13), offsets, origin, variant=True))
    return views


def _translate_ascii(text: str, table: bytes) -> str:
    """``text`` with ASCII characters mapped by a byte table: UTF-8 keeps ASCII bytes out of multi-byte sequences."""
    return text.encode("utf-8", "surrogatepass").translate(table).decode("utf-8", "surrogatepass")


def _non_ascii_chars(source: str) -> set[str]:
    return set(_utf8(source).translate(None, _ASCII).decode("utf-8", "surrogatepass"))


def _cased_fold_differs(source: str, chars: set[str]) -> bool:
    """Whether the cased fold of ``source`` (non-ASCII ``chars``) differs from it in a non-ASCII character and from
    its fold: both are per-character maps, so this is known from the distinct characters and the ASCII capitals."""
    if all(_CASED_FOLD[ord(char)] == char for char in chars):
        return False
    return any(_CASED_FOLD[ord(char)] != _FOLD[ord(char)] for char in chars) or bool(
        _utf8(source).translate(None, _NOT_ASCII_UPPER)
    )


def _fold_with_offsets(
    source: str, table: _FoldTable = _FOLD, ascii_table: bytes = _ASCII_FOLD, chars: set[str] | None = None
) -> tuple[str, list[int] | None]:
    """The fold of a non-ASCII ``source`` and, when characters vanish or expand, the map to ``source`` offsets.
    ``table`` folds the non-ASCII characters (``chars``, when known) and ``ascii_table`` the ASCII ones (the fold,
    or the cased fold).

    Most texts hold few distinct non-ASCII characters that fold to something else: their fold is the UTF-8 bytes
    with ASCII lower-cased and each of those characters replaced by its fold (UTF-8 never matches inside another
    character), a few C passes. Texts with many (whole non-Latin scripts) are translated character by character.
    """
    data = _utf8(source)
    if chars is None:
        chars = _non_ascii_chars(source)
    changed = {char: folded for char in chars if (folded := table[ord(char)]) != char}
    if len(changed) * len(data) <= _REPLACE_PASSES * len(source) and _replaceable(changed):
        replaced = data.translate(ascii_table)
        for char, target in changed.items():
            replaced = replaced.replace(_utf8(char), _utf8(target))
        folded = replaced.decode("utf-8", "surrogatepass")
    else:
        folded = source.translate(table)
    if table.non_unit.isdisjoint(chars):
        return folded, None
    return folded, _fold_offsets(source, chars, table)


def _replaceable(changed: dict[str, str]) -> bool:
    """Whether replacing each character by its fold in turn is one fold: no fold holds a character replaced too."""
    return not any(char in changed for target in changed.values() for char in target)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _fold_offsets(source: str, chars: set[str], table: _FoldTable) -> list[int]:
    """For each character of the fold of ``source`` by ``table``, the ``source`` offset it comes from.

    Only the characters that vanish or expand in the fold (``chars`` holds every non-ASCII one) shift offsets, and
    they are found with ``str.find``; the stretches between them map one to one.
    """
    lengths = {char: len(table[ord(char)]) for char in table.non_unit.intersection(chars)}
    shifts = sorted(index for char in lengths for index in _occurrences(source, char))
    offsets: list[int] = []
    position = 0
    for index in shifts:
        offsets.extend(range(position, index))
        offsets.extend([index] * lengths[source[index]])
        position = index + 1
    offsets.extend(range(position, len(source)))
    return offsets


def _occurrences(text: str, char: str) -> Iterator[int]:
    index = text.find(char)
    while index >= 0:
        yield index
        index = text.find(char, index + 1)


def join_spaced_letters(text: str) -> tuple[str, list[int]]:
    """Join runs of >= 4 single characters split by separators ("i g n o r e" -> "ignore") with an offset map.

    Inside a run, the most common separator is taken as the split inside a word and removed; any other separator
    becomes one space, so "i g n o r e  a l l" gives "ignore all". Runs are found by RE2 on a mask of the text
    ("a" for each alphanumeric character, "-" for the others); the text outside them is copied as it is.
    """
    mask = text.translate(_ALNUM_MASK).encode("ascii")
    out: list[str] = []
    offsets: list[int] = []
    position = 0
    for match in _SPACED_RUN.finditer(mask):
        start, end = match.span(1)
        out.append(text[position:start])
        offsets.extend(range(position, start))
        letters = [index for index in range(start, end) if mask[index] == _ALNUM]
        separators = [text[letter + 1 : following] for letter, following in itertools.pairwise(letters)]
        inner = max(sorted(set(separators)), key=separators.count)
        for letter, separator in zip(letters, [*separators, inner], strict=True):
            out.append(text[letter])
            offsets.append(letter)
            if separator != inner:
                out.append(" ")
                offsets.append(letter + 1)
        position = end
    out.append(text[position:])
    offsets.extend(range(position, len(text)))
    return "".join(out), offsets


def _add_decoded(
    views: list[View],
    source: str,
    transforms: tuple[str, ...],
    origin: tuple[int, int] | None,
    depth: int,
    budget: list[int],
    keep_case: bool,
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
        views.extend(_fold_views(payload, chain, payload_origin, keep_case))
        _add_decoded(views, payload, chain, payload_origin, depth - 1, budget, keep_case)


def _payloads(source: str) -> list[tuple[str, tuple[int, int], str]]:
    """Encoded runs in ``source`` that decode to mostly printable text: (transform, span, decoded text)."""
    found: list[tuple[str, tuple[int, int], str]] = []
    data = source.encode("utf-8", "surrogatepass")
    if any(prefix in data for prefix in _TAG_PREFIXES):
        runs = [match.span() for match in _TAG_RUN.finditer(data)]
        smuggled = b"".join(data[start:end] for start, end in runs).decode("utf-8").translate(_UNTAG)
        if len(smuggled) >= 4:
            first, last = _char_offsets(data, (runs[0][0], runs[-1][1]))
            found.append((UNICODE_TAGS, (first, last), smuggled))
    if "%" in source:
        try:
            decoded = urllib.parse.unquote(source, errors="strict")
        except UnicodeError:
            decoded = source
        if decoded != source:
            first = source.index("%")
            last = source.rindex("%")
            found.append((URL, (first, last + len(source[last:].split(None, 1)[0])), decoded))
    for start, end in _encoded_tokens(source, data):
        decoded_text = _decode_run(source[start:end])
        if decoded_text is not None:
            found.append((decoded_text[0], (start, end), decoded_text[1]))
    return found


def _encoded_tokens(source: str, data: bytes) -> list[tuple[int, int]]:
    """Spans of the tokens of >= 16 characters that may decode as hex or base64 (``data`` is ``source`` in UTF-8).

    A token is a whitespace-separated piece of the text once every ASCII character outside the base64 alphabet
    counts as whitespace; non-ASCII characters stay in it, so a token holding one decodes only in the case above.
    """
    if len(data) == len(source):
        return [match.span() for match in _ENCODED_RUN.finditer(data)]
    spans = [match.span() for match in _ENCODED_CANDIDATE.finditer(data)]
    if not spans:
        return []
    tokens: list[tuple[int, int]] = []
    positions = iter(_char_offsets(data, (offset for span in spans for offset in span)))
    for start, match_end in zip(positions, positions, strict=True):
        if start > 0 and not _separates(source[start - 1]):
            continue  # the token starts before: with a non-ASCII character, or with padding
        core = source[start:match_end].rstrip("=")
        end = match_end
        if core and not core[-1].isascii() and core[-1].isspace():
            end = start + len(core) - 1  # the token ends at that (non-ASCII) whitespace
        elif end < len(source) and not _separates(source[end]):
            continue  # the token goes on after its non-ASCII character and padding
        if end - start >= _MIN_ENCODED_RUN:
            tokens.append((start, end))
    return tokens


def _separates(char: str) -> bool:
    """Whether ``char`` separates tokens: whitespace, or ASCII outside the encoded alphabet."""
    return char.isspace() or (char.isascii() and char not in _ENCODED_CHARS)


def _char_offsets(data: bytes, byte_offsets: Iterable[int]) -> list[int]:
    """Character offsets of increasing byte offsets of ``data`` (UTF-8 of the text) that fall between characters."""
    offsets: list[int] = []
    char = byte = 0
    for offset in byte_offsets:
        char += len(data[byte:offset].decode("utf-8", "surrogatepass"))
        byte = offset
        offsets.append(char)
    return offsets


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
    if text.isprintable():
        return text
    printable = sum(1 for c in text if c.isprintable() or c in "\n\r\t")
    return text if printable / len(text) >= _MIN_PRINTABLE else None
