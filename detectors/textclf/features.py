"""Text → hashed n-gram bags, vectorised over a whole batch: no vocabulary to ship, no per-character Python.

A batch of texts is truncated, joined and encoded to arrays of code points, in slices of ``SLICE_CHARS``
characters (which keep the arrays in the CPU cache); every step after that is a numpy operation over a slice. Code
points are folded through one lookup table (lower case, look-alike letters to Latin, invisible characters
dropped, Unicode tag characters decoded to the ASCII they hide, whitespace to one space; the fold is
:func:`detectors.signatures.textnorm.classifier_fold_char`, the signature fold but for capitals), so the usual
obfuscations do not break n-grams.
Features are character n-grams inside word boundaries (``char_wb``-like: an n-gram may begin or end with the
space around a word but never contains one) and word uni/bi-grams (runs of two or more word characters), hashed
with polynomial rolling hashes (uint64 arithmetic, fixed constants) into a fixed number of columns. Words listed
in :mod:`detectors.textclf.concepts` also emit their class and the ordered class pairs they form with the next
``concept_window`` words (in the word columns, each occurrence counted ``concept_weight`` times so that a handful of
concepts is not drowned by hundreds of n-grams), so the model can learn intent across synonyms.

With ``shape_indicators`` on (a training candidate, off in the shipped model: see the model card), each paragraph
piece also emits indicators of text that no natural language looks like, each counted ``shape_weight`` times: the
share of tokens that mix letters with odd symbols (``**ONE``, ``<style``), the share of symbol characters, and runs
of three or more symbols, each quantised into a few levels (:data:`SHAPES`). Adversarial suffixes (GCG and its
kin) are fresh gibberish every time, so no n-gram of one recurs in another; their shape does.

Each text is scored whole and paragraph by paragraph (a paragraph ends at a blank line; paragraphs longer than
``chunk_chars`` are cut into pieces), so an injected paragraph is not diluted by the document around it. An
n-gram belongs to the paragraph piece where it starts, and a word pair never spans two pieces, so a paragraph
scores the same inside a document as on its own. Counts per (segment, column) come from a sort-free grouping
(:func:`group`); values are ``log1p(count)`` and every segment's vector is L2-normalised.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import cache

import numpy as np
import scipy.sparse as sp

from detectors.signatures.textnorm import classifier_fold_char
from detectors.textclf.concepts import concept_names, word_concepts

FEATURISER = "abusewatch-ngrams/3"  # bumped whenever the same text would map to different features

_U64 = np.uint64
_BASE = _U64(0x9E3779B97F4A7C15)  # odd: invertible modulo 2**64, so prefix hashes can be differenced
_BASE_INVERSE = _U64(pow(int(_BASE), -1, 2**64))
_MIX = _U64(0xFF51AFD7ED558CCD)  # murmur3 finaliser constant
_WORD_SALT = _U64(0xC2B2AE3D27D4EB4F)
_PAIR_SALT = _U64(0x165667B19E3779F9)
_CONCEPT_SALT = _U64(0x27D4EB2F165667C5)
_SHAPE_SALT = _U64(0x85EBCA77C2B2AE63)
_DROP = np.uint32(0xFFFFFFFF)  # table value: the character is removed
_SPACE, _NEWLINE = 0x20, 0x0A
_TAGS = (0xE0000, 0xE007F)  # Unicode tag characters: E0020-E007E mirror printable ASCII
CONCEPT_NAMES = concept_names()
_KEY_BITS = 24  # columns fit below this bit in grouping keys
# Shape indicators: (name, lower edges of its levels above the lowest); a piece whose statistic reaches an edge
# emits that level's indicator (the lowest level emits nothing). Edges from the statistics of benign and attack
# training text; the model learns each level's weight.
SHAPES: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("mixed_tokens", (0.02, 0.05, 0.1, 0.2, 0.35)),  # tokens holding a letter and an odd symbol, per token
    ("symbols", (0.03, 0.06, 0.1, 0.15, 0.25)),  # symbol characters (not letters, digits or spaces), per character
    ("symbol_runs", (0.01, 0.03, 0.06, 0.12)),  # runs of 3+ symbol characters, per token
)
_PLAIN_PUNCTUATION = "'-,.!?:;\"()"  # symbols ordinary prose puts next to letters: not odd
SLICE_CHARS = 16_384  # batches are featurised in slices of about this many characters (Featurizer.bags_by_slice)


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Everything needed to rebuild the features; stored in the artifact's JSON."""

    featuriser: str = FEATURISER
    char_ngram_min: int = 3
    char_ngram_max: int = 5
    char_features: int = 2**18
    word_ngram_max: int = 2  # 1: words only; 2: words and word pairs
    word_features: int = 2**17
    concept_weight: float = 8.0  # a concept occurrence counts this many times (a few among hundreds of n-grams)
    concept_window: int = 4  # concept pairs: a word's class with the classes of the next this-many words; 0: none
    shape_indicators: bool = False  # gibberish-shape indicators per paragraph piece
    shape_weight: float = 150.0  # a shape indicator counts this many times: one feature against a piece's n-grams
    head_chars: int = 4096
    tail_chars: int = 4096
    chunk_chars: int = 1024  # longer paragraphs are scored in pieces of this many characters
    min_segment_chars: int = 20  # paragraphs with fewer non-space characters are not scored alone

    def __post_init__(self) -> None:
        for name in ("char_features", "word_features"):
            value = getattr(self, name)
            if value < 2 or value & (value - 1) or value >= 2**_KEY_BITS:
                raise ValueError(f"{name} must be a power of two below 2**{_KEY_BITS}, not {value}")
        if not 1 <= self.char_ngram_min <= self.char_ngram_max:
            raise ValueError("need 1 <= char_ngram_min <= char_ngram_max")
        if self.word_ngram_max not in (1, 2):
            raise ValueError("word_ngram_max must be 1 or 2")
        if self.concept_window < 0:
            raise ValueError("concept_window must be 0 (no concept features) or more")
        if not self.concept_weight > 0:
            raise ValueError("concept_weight must be positive")
        if not self.shape_weight > 0:
            raise ValueError("shape_weight must be positive")
        if self.char_features + self.word_features >= 2**_KEY_BITS:
            raise ValueError(f"char_features + word_features must stay below 2**{_KEY_BITS}")

    @property
    def n_features(self) -> int:
        return self.char_features + self.word_features

    def to_dict(self) -> dict[str, int | float | str]:
        return asdict(self)


def truncate(text: str, head_chars: int, tail_chars: int) -> str:
    """The first ``head_chars`` and last ``tail_chars`` characters: bounded cost whatever the input size."""
    if len(text) <= head_chars + tail_chars:
        return text
    return text[:head_chars] + "\n\n" + text[len(text) - tail_chars :]


@dataclass(frozen=True, slots=True)
class Bags:
    """The n-gram bags of a batch: one row per segment, entries ``(row, column, log1p(count))``.

    Rows ``0..n_texts-1`` are the whole texts; the rest are paragraphs of texts that have several, ``owners[r]``
    being the text of row ``r``. Entries are not sorted.
    """

    n_texts: int
    rows: np.ndarray
    columns: np.ndarray
    values: np.ndarray
    owners: np.ndarray
    n_features: int

    @property
    def n_rows(self) -> int:
        return len(self.owners)

    def norms(self) -> np.ndarray:
        """L2 norm of every row (1 for an empty row, so it scores as its intercept)."""
        squares = np.bincount(self.rows, weights=self.values * self.values, minlength=self.n_rows)
        return np.sqrt(np.where(squares > 0, squares, 1.0))

    def decision(self, coef_columns: Sequence[np.ndarray]) -> np.ndarray:
        """``(n_rows, len(coef_columns))`` dot products of the L2-normalised rows with each coefficient column.

        Entries come in long runs of the same row, so sums are taken run by run (``np.add.reduceat``, a sequential
        pass) and only the run totals are added up by row.
        """
        out = np.zeros((self.n_rows, len(coef_columns)))
        if len(self.rows) == 0:
            return out
        runs = np.concatenate([[0], np.flatnonzero(self.rows[1:] != self.rows[:-1]) + 1])
        run_rows = self.rows[runs]

        def row_sums(values: np.ndarray) -> np.ndarray:
            return np.bincount(run_rows, weights=np.add.reduceat(values, runs), minlength=self.n_rows)

        squares = row_sums(self.values * self.values)
        norms = np.sqrt(np.where(squares > 0, squares, 1.0))
        for index, coef in enumerate(coef_columns):
            out[:, index] = row_sums(self.values * np.take(coef, self.columns)) / norms
        return out

    @classmethod
    def concatenate(cls, parts: Sequence[Bags]) -> Bags:
        """The bags of consecutive slices of a batch as one: text rows first, then every slice's paragraph rows."""
        n_texts = sum(part.n_texts for part in parts)
        text_offset = piece_offset = 0
        rows, owners = [], [np.arange(n_texts)]
        for part in parts:
            is_text = part.rows < part.n_texts
            rows.append(np.where(is_text, part.rows + text_offset, part.rows - part.n_texts + n_texts + piece_offset))
            owners.append(part.owners[part.n_texts :] + text_offset)
            text_offset += part.n_texts
            piece_offset += part.n_rows - part.n_texts
        return cls(
            n_texts=n_texts,
            rows=np.concatenate(rows),
            columns=np.concatenate([part.columns for part in parts]),
            values=np.concatenate([part.values for part in parts]),
            owners=np.concatenate(owners),
            n_features=parts[0].n_features,
        )

    def matrix(self) -> sp.csr_matrix:
        """All rows as an L2-normalised CSR matrix (for training)."""
        values = self.values / self.norms()[self.rows]
        matrix = sp.csr_matrix((values, (self.rows, self.columns)), shape=(self.n_rows, self.n_features))
        matrix.sort_indices()
        return matrix


@dataclass(frozen=True, slots=True)
class Occurrences:
    """Every n-gram occurrence of a batch: its column and where it starts in ``codes``.

    Occurrences come in blocks (character n-grams of each length, words, word pairs, concepts, concept pairs, shape
    indicators); ``blocks`` holds each block's first index and n-gram length (0: words, -1: word pairs, -2: concepts,
    -3: concept pairs, -4: shape indicators), enough to rebuild any n-gram's text.
    """

    codes: np.ndarray
    columns: np.ndarray
    starts: np.ndarray
    blocks: tuple[tuple[int, int], ...]
    word_ends: np.ndarray  # end of each word, in the order of the word block
    pairs: np.ndarray  # for each word pair, the index of its first word
    concepts: np.ndarray  # class id of each concept occurrence
    concept_pairs: np.ndarray  # (first, second) class ids of each concept pair
    shapes: np.ndarray  # indicator id of each shape occurrence (shape index * 8 + level)

    def is_concept(self, index: int) -> bool:
        """Whether occurrence ``index`` is a concept or a concept pair."""
        return self._block(index)[1] in (-2, -3)

    def is_shape(self, index: int) -> bool:
        """Whether occurrence ``index`` is a shape indicator."""
        return self._block(index)[1] == -4

    def weights(self, concept_weight: float, shape_weight: float) -> np.ndarray:
        """How many times each occurrence counts: concepts and concept pairs ``concept_weight``, shape indicators
        ``shape_weight``, n-grams once."""
        out = np.ones(len(self.columns))
        ends = [offset for offset, _ in self.blocks[1:]] + [len(self.columns)]
        for (offset, length), end in zip(self.blocks, ends, strict=True):
            if length in (-2, -3):
                out[offset:end] = concept_weight
            elif length == -4:
                out[offset:end] = shape_weight
        return out

    def _block(self, index: int) -> tuple[int, int]:
        return next(block for block in reversed(self.blocks) if block[0] <= index)

    def gram(self, index: int) -> str:
        """The (folded) text of occurrence ``index``; a word pair's words are joined by one space, a concept is
        spelled ``class``, a concept pair ``class…class`` and a shape indicator ``name≥level`` (:meth:`is_concept`
        and :meth:`is_shape` tell them from n-grams)."""
        offset, length = self._block(index)
        if length == -4:
            shape, level = divmod(int(self.shapes[index - offset]), 8)
            name, edges = SHAPES[shape]
            return f"{name}≥{edges[level - 1]:g}"
        if length == -2:
            return CONCEPT_NAMES[int(self.concepts[index - offset])]
        if length == -3:
            first, second = self.concept_pairs[index - offset].tolist()
            return f"{CONCEPT_NAMES[first]}…{CONCEPT_NAMES[second]}"
        start = int(self.starts[index])
        if length > 0:
            return _chars(self.codes[start : start + length])
        word_block = next(block[0] for block in self.blocks if block[1] == 0)
        word = index - word_block if length == 0 else int(self.pairs[index - offset])
        first = _chars(self.codes[start : self.word_ends[word]])
        if length == 0:
            return first
        second = int(self.starts[word_block + word + 1])
        return first + " " + _chars(self.codes[second : self.word_ends[word + 1]])


def _chars(codes: np.ndarray) -> str:
    return "".join(map(chr, codes.tolist()))


@cache
def fold_table() -> np.ndarray:
    """Code point (BMP) → folded code point, or ``_DROP``: one lookup replaces per-character normalisation."""
    table = np.empty(0x10000, dtype=np.uint32)
    for code in range(0x10000):
        char = chr(code)
        if 0xD800 <= code < 0xE000:
            table[code] = 0xFFFD  # lone surrogate
        elif char == "\n" or char in "\u2028\u2029":
            table[code] = _NEWLINE
        elif char.isspace():
            table[code] = _SPACE
        elif unicodedata.category(char) == "Cc":
            table[code] = _DROP  # NUL and other control characters split words for no reason
        else:
            folded = classifier_fold_char(char)
            table[code] = _DROP if not folded else ord(folded) if len(folded) == 1 else ord(char.lower()[:1] or char)
    return table


@cache
def fold_digest() -> str:
    """sha256 of the fold table: an artifact trained under another fold (Unicode data, look-alike list) differs."""
    return hashlib.sha256(fold_table().tobytes()).hexdigest()


@cache
def word_table() -> np.ndarray:
    """Code point (BMP) → whether it is a word character (``\\w``: letters, digits, underscore)."""
    return np.array([chr(code).isalnum() or code == 0x5F for code in range(0x10000)], dtype=bool)


def group(keys: np.ndarray) -> np.ndarray:
    """For each key, the index of one element with the same key, the same for all of them (sort-free).

    Vectorised hashing with verification: every pending element writes its index into a slot picked by hashing
    its key; the index left in the slot is a candidate, accepted when its key is equal. Elements with the same key
    always share a slot, so they are resolved together, by the same candidate; the others retry with another hash.
    Each round resolves at least the groups of its winning candidates, so the loop ends.
    """
    size = len(keys)
    representative = np.empty(size, dtype=np.int64)
    if size == 0:
        return representative
    bits = max(10, size.bit_length() + 1)
    table = np.empty(1 << bits, dtype=np.int64)
    pending = np.arange(size, dtype=np.int64)
    pending_keys = keys
    attempt = 0
    while True:
        multiplier = _U64((int(_MIX) + 2 * attempt * int(_BASE)) % 2**64 | 1)
        slots = ((pending_keys * multiplier) >> _U64(64 - bits)).view(np.int64)  # top bits depend on every bit
        table[slots] = pending
        candidates = table[slots]
        representative[pending] = candidates
        retry = np.flatnonzero(keys[candidates] != pending_keys)
        if len(retry) == 0:
            return representative
        pending, pending_keys = pending[retry], pending_keys[retry]
        attempt += 1


def _columns(hashes: np.ndarray, salt: np.uint64, n_features: int) -> np.ndarray:
    """Hash → column in ``[0, n_features)`` (a power of two): the top bits of a multiplication, which depend on
    every bit of the hash."""
    return (((hashes ^ salt) * _MIX) >> _U64(64 - (n_features.bit_length() - 1))).view(np.int64)


class Featurizer:
    """Turns a batch of texts into :class:`Bags` (texts and their paragraphs) or a training matrix."""

    def __init__(self, config: FeatureConfig) -> None:
        self.config = config
        self._fold = fold_table()
        self._word = word_table()
        self._concept_keys, self._concept_ids = self._concept_lookup()

    def _concept_lookup(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted hashes of the concept words (hashed exactly as words in a text are) and each one's class id."""
        table = word_concepts()
        codes, bounds = self._codes(list(table))  # each word in its own region, between two spaces
        keys = _substring_hashes(codes, bounds[:-1] + 1, bounds[1:] - 1)
        order = np.argsort(keys, kind="stable")
        return keys[order], np.array(list(table.values()), dtype=np.int64)[order]

    def _concepts_of(self, hashes: np.ndarray) -> np.ndarray:
        """Class id of each word hash, -1 for a word in no class."""
        slots = np.minimum(np.searchsorted(self._concept_keys, hashes), len(self._concept_keys) - 1)
        return np.where(self._concept_keys[slots] == hashes, self._concept_ids[slots], -1)

    # ----------------------------------------------------------------------------------------- encoding

    def prepare(self, texts: Sequence[str]) -> list[str]:
        """The texts as featurised: truncated to their head and tail."""
        return [truncate(text, self.config.head_chars, self.config.tail_chars) for text in texts]

    def _codes(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Folded code points of all texts, each surrounded by a space, and each text's region start (+ end)."""
        prepared = self.prepare(texts)
        joined = "".join(f" {text} " for text in prepared)
        raw = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        lengths = np.fromiter((len(text) + 2 for text in prepared), dtype=np.int64, count=len(prepared))
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        if len(raw) == 0 or raw.max() < 0x80:
            codes = np.take(self._fold[:0x80], raw)  # ASCII: a small table stays in the cache
        else:
            codes = np.take(self._fold, np.minimum(raw, 0xFFFF))
            astral = np.flatnonzero(raw > 0xFFFF)
            if len(astral):
                codes[astral] = self._fold_astral(raw[astral])
        keep = codes != _DROP
        if not keep.all():
            kept_before = np.concatenate([[0], np.cumsum(keep)])
            codes, bounds = codes[keep], kept_before[bounds]
        return codes.astype(np.uint64), bounds

    def _fold_astral(self, raw: np.ndarray) -> np.ndarray:
        """Code points above the BMP: tag characters decode to the ASCII they mirror, other invisibles drop."""
        out = raw.copy()
        tags = (raw >= _TAGS[0]) & (raw <= _TAGS[1])
        out[tags] = np.take(self._fold, raw[tags] - _TAGS[0])
        out[tags & ((raw < _TAGS[0] + 0x20) | (raw == _TAGS[1]))] = _DROP
        invisible = ((raw >= 0x1D173) & (raw <= 0x1D17A)) | ((raw >= 0xE0100) & (raw <= 0xE01EF))
        out[invisible] = _DROP
        return out

    # ----------------------------------------------------------------------------------------- segments

    def _chunks(
        self, newlines: np.ndarray, spaces_before: np.ndarray, bounds: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Paragraph pieces: start of each (sorted), text of each, non-space characters in each.

        A paragraph ends at a blank line (two newlines with only spaces between); each text starts a new one and
        a paragraph longer than ``chunk_chars`` is cut into pieces of that length. ``spaces_before[i]`` counts
        the spaces (newlines included) before position ``i``.
        """
        gaps, gap_spaces = np.diff(newlines), np.diff(spaces_before[newlines])
        blank = newlines[1:][gaps == gap_spaces]  # second newline of a blank line
        starts = np.unique(np.concatenate([bounds[:-1], blank]))
        lengths = np.diff(np.append(starts, bounds[-1]))
        pieces = np.maximum(1, -(-lengths // self.config.chunk_chars))
        offsets = np.arange(int(pieces.sum())) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        starts = np.repeat(starts, pieces) + offsets * self.config.chunk_chars
        ends = np.append(starts[1:], bounds[-1])
        texts = np.searchsorted(bounds, starts, side="right") - 1
        return starts, texts, (ends - starts) - (spaces_before[ends] - spaces_before[starts])

    # ------------------------------------------------------------------------------------------ n-grams

    def _occurrences(
        self, codes: np.ndarray, chunk_of: np.ndarray, space: np.ndarray, spaces_before: np.ndarray
    ) -> Occurrences:
        """Every character n-gram, word, word pair, concept and concept pair of ``codes`` (pairs never span two
        paragraph pieces)."""
        config = self.config
        columns, starts, blocks, size = [], [], [], 0
        if config.char_ngram_min == 1:
            valid = np.flatnonzero(~space)
            columns.append(_columns(codes[valid] + _U64(1), _U64(0), config.char_features))
            starts.append(valid)
            blocks.append((size, 1))
            size += len(valid)
        rolling = codes
        for n in range(2, config.char_ngram_max + 1):  # rolling[i] = hash of codes[i : i + n]
            rolling = rolling[:-1] * _BASE + codes[n - 1 :]
            if n < config.char_ngram_min:
                continue
            count = len(rolling)
            inside = spaces_before[n - 1 : n - 1 + count] == spaces_before[1 : 1 + count]  # no space inside
            if n == 2:
                inside &= ~(space[:-1] & space[1:])
            valid = np.flatnonzero(inside)
            columns.append(_columns(rolling[valid] + _U64(n), _U64(0), config.char_features))
            starts.append(valid)
            blocks.append((size, n))
            size += len(valid)
        is_word = np.take(self._word, np.minimum(codes, 0xFFFF)) & (codes <= 0xFFFF)
        edges = np.diff(is_word.view(np.int8), prepend=0, append=0)
        word_starts, word_ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        long_enough = np.flatnonzero(word_ends - word_starts >= 2)
        word_starts, word_ends = word_starts[long_enough], word_ends[long_enough]
        hashes = _substring_hashes(codes, word_starts, word_ends)
        columns.append(config.char_features + _columns(hashes, _WORD_SALT, config.word_features))
        starts.append(word_starts)
        blocks.append((size, 0))
        size += len(word_starts)
        pairs = np.zeros(0, dtype=np.int64)
        paragraph = chunk_of[word_starts]
        if config.word_ngram_max == 2:
            pairs = np.flatnonzero(paragraph[:-1] == paragraph[1:])
            pair_hashes = hashes[pairs] * _MIX + hashes[pairs + 1]
            columns.append(config.char_features + _columns(pair_hashes, _PAIR_SALT, config.word_features))
            starts.append(word_starts[pairs])
            blocks.append((size, -1))
            size += len(pairs)
        concepts, concept_pairs = np.zeros(0, dtype=np.int64), np.zeros((0, 2), dtype=np.int64)
        if config.concept_window:
            concepts, concept_pairs, size = self._concept_occurrences(
                hashes, word_starts, paragraph, size, columns, starts, blocks
            )
        shapes = np.zeros(0, dtype=np.int64)
        if config.shape_indicators:
            shapes, shape_starts = shape_levels(codes, chunk_of, space, is_word)
            columns.append(config.char_features + _columns(shapes.astype(np.uint64), _SHAPE_SALT, config.word_features))
            starts.append(shape_starts)
            blocks.append((size, -4))
        return Occurrences(
            codes,
            np.concatenate(columns),
            np.concatenate(starts),
            tuple(blocks),
            word_ends,
            pairs,
            concepts,
            concept_pairs,
            shapes,
        )

    def _concept_occurrences(
        self,
        hashes: np.ndarray,
        word_starts: np.ndarray,
        paragraph: np.ndarray,
        size: int,
        columns: list[np.ndarray],
        starts: list[np.ndarray],
        blocks: list[tuple[int, int]],
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Append the concept and concept-pair blocks; returns their class ids and the new occurrence count.

        A concept pair is a word's class followed by the class of one of the next ``concept_window`` words of the
        same paragraph piece.
        """
        config = self.config
        concept_of = self._concepts_of(hashes)
        tagged = np.flatnonzero(concept_of >= 0)
        concepts = concept_of[tagged]
        columns.append(config.char_features + _columns(concepts.astype(np.uint64), _CONCEPT_SALT, config.word_features))
        starts.append(word_starts[tagged])
        blocks.append((size, -2))
        size += len(tagged)
        firsts, seconds = [], []
        for distance in range(1, config.concept_window + 1):
            first = tagged[tagged + distance < len(word_starts)]
            second = first + distance
            keep = (concept_of[second] >= 0) & (paragraph[first] == paragraph[second])
            firsts.append(first[keep])
            seconds.append(second[keep])
        first, second = np.concatenate(firsts), np.concatenate(seconds)
        concept_pairs = np.stack([concept_of[first], concept_of[second]], axis=1)
        pair_ids = (concept_pairs[:, 0] * len(CONCEPT_NAMES) + concept_pairs[:, 1]).astype(np.uint64)
        columns.append(config.char_features + _columns(pair_ids, _CONCEPT_SALT ^ _PAIR_SALT, config.word_features))
        starts.append(word_starts[first])
        blocks.append((size, -3))
        return concepts, concept_pairs, size + len(first)

    # ------------------------------------------------------------------------------------------- bags

    def bags(self, texts: Sequence[str]) -> Bags:
        """Bags of every text (rows ``0..n-1``) and of the paragraphs of texts that have several."""
        parts = [bags for _, bags in self.bags_by_slice(texts)]
        return parts[0] if len(parts) == 1 else Bags.concatenate(parts)

    def bags_by_slice(self, texts: Sequence[str]) -> Iterator[tuple[int, Bags]]:
        """The bags of consecutive slices of about ``SLICE_CHARS`` characters, with the index of each first text.

        The arrays of a slice stay in the CPU cache, which makes hashing and grouping several times faster than
        over one huge array. A text's bags do not depend on the other texts of its batch or slice.
        """
        for start, bags, _, _ in self.occurrences_by_slice(texts, spell=False):
            yield start, bags

    def occurrences_by_slice(
        self, texts: Sequence[str], spell: bool = True
    ) -> Iterator[tuple[int, Bags, Occurrences, np.ndarray]]:
        """Like :meth:`bags_by_slice`, with the slice's n-gram occurrences and, if ``spell``, for each bag entry
        the index of one of its occurrences (to spell the n-gram in explanations)."""
        for start, end in self._slices(texts):
            yield start, *self._bags(texts[start:end], spell)

    def _slices(self, texts: Sequence[str]) -> Iterator[tuple[int, int]]:
        limit = self.config.head_chars + self.config.tail_chars + 2
        start, size = 0, 0
        for index, text in enumerate(texts):
            size += min(len(text), limit) + 2
            if size >= SLICE_CHARS:
                yield start, index + 1
                start, size = index + 1, 0
        if start < len(texts) or not texts:
            yield start, len(texts)

    def _bags(self, texts: Sequence[str], spell: bool) -> tuple[Bags, Occurrences, np.ndarray]:
        """The bags, the occurrences counted in them and, if ``spell``, for each bag entry one of its occurrences."""
        n_texts = len(texts)
        codes, bounds = self._codes(texts)
        newlines = np.flatnonzero(codes == _NEWLINE)
        codes[newlines] = _SPACE  # a newline is a space, except that a blank line ends a paragraph
        space = codes == _SPACE
        spaces_before = np.concatenate([[0], np.cumsum(space)])
        chunk_starts, chunk_texts, chunk_chars = self._chunks(newlines, spaces_before, bounds)
        marker = np.zeros(len(codes), dtype=np.int64)
        marker[chunk_starts] = 1
        chunk_of = np.cumsum(marker) - 1
        found = self._occurrences(codes, chunk_of, space, spaces_before)
        chunk = chunk_of[found.starts]
        # Level 1: counts per (piece, column).
        weights = None
        config = self.config
        if (config.concept_window and config.concept_weight != 1.0) or config.shape_indicators:
            weights = found.weights(config.concept_weight, config.shape_weight)
        first, counts = _distinct(chunk, found.columns, weights)
        columns, text = found.columns[first], chunk_texts[chunk[first]]
        # Texts with several non-empty pieces get a row per scorable piece and a text row summed over pieces.
        nonempty = np.bincount(chunk_texts[chunk_chars > 0], minlength=n_texts)
        scorable = (chunk_chars >= self.config.min_segment_chars) & (nonempty[chunk_texts] > 1)
        if not scorable.any():  # every text is one piece: its piece counts are its counts
            rows, values, owners = text, np.log1p(counts), np.arange(n_texts)
            bags = Bags(n_texts, rows, columns, values, owners, self.config.n_features)
            return bags, found, first
        piece_row = np.full(len(chunk_starts), -1, dtype=np.int64)
        piece_row[scorable] = n_texts + np.arange(int(scorable.sum()))
        several = np.flatnonzero(nonempty[text] > 1)
        single = np.flatnonzero(nonempty[text] <= 1)
        # Level 2: counts per (text, column) for texts made of several pieces.
        merged, merged_counts = _distinct(text[several], columns[several], counts[several])
        merged = several[merged]
        in_piece = np.flatnonzero(piece_row[chunk[first]] >= 0)
        bags = Bags(
            n_texts=n_texts,
            rows=np.concatenate([text[single], text[merged], piece_row[chunk[first[in_piece]]]]),
            columns=np.concatenate([columns[single], columns[merged], columns[in_piece]]),
            values=np.log1p(np.concatenate([counts[single], merged_counts, counts[in_piece]])),
            owners=np.concatenate([np.arange(n_texts), chunk_texts[scorable]]),
            n_features=self.config.n_features,
        )
        spelled_by = np.concatenate([first[single], first[merged], first[in_piece]]) if spell else first[:0]
        return bags, found, spelled_by

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Features of whole texts, one L2-normalised row per text (for training and tests)."""
        return self.bags(texts).matrix()[: len(texts)]


def shape_levels(
    codes: np.ndarray, chunk_of: np.ndarray, space: np.ndarray, is_word: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The shape indicators of every paragraph piece: ids (``shape * 8 + level``, levels above the lowest only)
    and, for each, the position where its piece starts (so it is counted in that piece).

    ``chunk_of[i]`` is the piece of position ``i`` (non-decreasing), ``space`` and ``is_word`` flag spaces and word
    characters of the folded ``codes``. Tokens are runs of non-space characters.
    """
    if len(codes) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    n_pieces = int(chunk_of[-1]) + 1
    piece_starts = np.flatnonzero(np.diff(chunk_of, prepend=-1))
    symbol = ~space & ~is_word
    plain = np.isin(codes, np.array([ord(c) for c in _PLAIN_PUNCTUATION], dtype=codes.dtype))
    odd = symbol & ~plain
    token_start = ~space & np.concatenate([[True], space[:-1]])
    token_of = np.cumsum(token_start) - 1  # meaningful at non-space positions
    n_tokens = int(token_start.sum())
    has_word = np.bincount(token_of[is_word & ~space], minlength=n_tokens) > 0
    has_odd = np.bincount(token_of[odd], minlength=n_tokens) > 0
    token_piece = chunk_of[np.flatnonzero(token_start)]
    tokens = np.bincount(token_piece, minlength=n_pieces)
    mixed = np.bincount(token_piece[has_word & has_odd], minlength=n_pieces)
    characters = np.bincount(chunk_of[~space], minlength=n_pieces)
    symbols = np.bincount(chunk_of[symbol], minlength=n_pieces)
    padded = np.concatenate([[False], symbol, [False, False]])
    run_start = padded[1:-2] & padded[2:-1] & padded[3:] & ~padded[:-3]  # a symbol run of 3+ starts here
    runs = np.bincount(chunk_of[run_start], minlength=n_pieces)
    statistics = (
        mixed / np.maximum(tokens, 1),
        symbols / np.maximum(characters, 1),
        runs / np.maximum(tokens, 1),
    )
    ids, starts = [], []
    for index, ((_, edges), values) in enumerate(zip(SHAPES, statistics, strict=True)):
        levels = np.searchsorted(np.array(edges), values, side="right")
        pieces = np.flatnonzero(levels > 0)
        ids.append(index * 8 + levels[pieces])
        starts.append(piece_starts[pieces])
    return np.concatenate(ids).astype(np.int64), np.concatenate(starts)


def _distinct(
    groups: np.ndarray, columns: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One index per distinct ``(group, column)`` and the sum of ``weights`` (default: 1) over each."""
    representative = group(((groups << _KEY_BITS) + columns).view(np.uint64))
    sums = np.bincount(representative, weights=weights, minlength=len(representative))
    first = np.flatnonzero(sums)
    return first, sums[first]


def _substring_hashes(codes: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Polynomial hash of every ``codes[start:end]``, from one prefix sum (uint64 arithmetic wraps)."""
    if len(starts) == 0:
        return np.zeros(0, dtype=np.uint64)
    powers, inverse_powers = _powers(len(codes))
    prefix = np.concatenate([np.zeros(1, dtype=np.uint64), np.cumsum(codes * inverse_powers[: len(codes)])])
    # sum over k in [start, end) of codes[k] * BASE ** (end - 1 - k)
    return (prefix[ends] - prefix[starts]) * powers[ends - 1]


_POWER_CACHE: list[tuple[np.ndarray, np.ndarray]] = []


def _powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """``BASE ** (k + 1)`` and ``BASE ** -(k + 1)`` for ``k < size`` or more, computed once and grown by doubling."""
    if not _POWER_CACHE or len(_POWER_CACHE[-1][0]) < size:
        length = max(size, 2 * len(_POWER_CACHE[-1][0]) if _POWER_CACHE else 1 << 16)
        powers = np.cumprod(np.full(length, _BASE, dtype=np.uint64))
        _POWER_CACHE.append((powers, np.cumprod(np.full(length, _BASE_INVERSE, dtype=np.uint64))))
        del _POWER_CACHE[:-1]
    return _POWER_CACHE[-1]
