"""Text measures used to validate candidates: Shannon entropy and normalised word shingles."""

from __future__ import annotations

import math
import string
from collections import Counter
from collections.abc import Iterable

from detectors.signatures.textnorm import fold

_NON_WORD = "".join(ch for ch in string.printable if not ch.isalnum()) + "“”‘’«»—–…•·"
_TO_SPACE = str.maketrans(_NON_WORD, " " * len(_NON_WORD))


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value``'s character distribution (0 for the empty string)."""
    if not value:
        return 0.0
    total = len(value)
    return -sum(count / total * math.log2(count / total) for count in Counter(value).values())


def words(text: str) -> list[str]:
    """Folded words (the signature tier's fold: lower case, look-alike letters to Latin, invisible characters
    dropped) with punctuation, markdown and whitespace removed, so reformatting changes nothing, nor does a
    zero-width space or a Cyrillic ``о`` inside each word of a leaked prompt."""
    return (text.lower() if text.isascii() else fold(text)).translate(_TO_SPACE).split()  # ASCII: fold is lower


def shingles(tokens: list[str], size: int) -> set[str]:
    """The set of ``size``-word shingles; a text shorter than ``size`` words is one shingle."""
    if len(tokens) < size:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[index : index + size]) for index in range(len(tokens) - size + 1)}


def covered_words(tokens: list[str], size: int, found: Iterable[int]) -> int:
    """How many of ``tokens`` lie inside at least one of the shingles starting at ``found`` indexes."""
    covered: set[int] = set()
    for index in found:
        covered.update(range(index, min(index + size, len(tokens))))
    return len(covered)
