"""Text → hashed n-gram features: no vocabulary to ship, the same vectors at training and scoring time.

Character n-grams inside word boundaries (``char_wb``) catch obfuscated and misspelt attack phrasing; word
uni/bi-grams catch the instruction vocabulary ("ignore previous", "developer mode"). Counts are log-damped and
each text's vector is L2-normalised, so a long text does not score higher just for repeating words; long texts
are also cut into overlapping windows (see :meth:`Featurizer.segments`).

The tokenisers are scikit-learn's built-in ones; their only regular expressions are fixed, linear-time
patterns (``\\s\\s+`` and ``\\b\\w\\w+\\b``), never patterns derived from input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction import FeatureHasher
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Everything needed to rebuild the vectoriser; stored in the artifact's JSON."""

    char_ngram_min: int = 3
    char_ngram_max: int = 5
    char_features: int = 2**18
    word_ngram_min: int = 1
    word_ngram_max: int = 2
    word_features: int = 2**17
    head_chars: int = 4096
    tail_chars: int = 4096
    window_chars: int = 1024  # texts are also scored paragraph by paragraph (long ones window by window):
    window_stride: int = 512  # injected instructions are local to a document
    min_segment_chars: int = 20

    @property
    def n_features(self) -> int:
        return self.char_features + self.word_features

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def truncate(text: str, head_chars: int, tail_chars: int) -> str:
    """The first ``head_chars`` and last ``tail_chars`` characters: bounded cost whatever the input size."""
    if len(text) <= head_chars + tail_chars:
        return text
    return text[:head_chars] + "\n" + text[len(text) - tail_chars :]


class Featurizer:
    """Turns a batch of texts into one sparse matrix (rows L2-normalised, columns: char block, then word block)."""

    def __init__(self, config: FeatureConfig) -> None:
        self.config = config
        common = {"alternate_sign": False, "norm": None, "lowercase": True, "dtype": np.float32}
        self._char = HashingVectorizer(
            analyzer="char_wb",
            ngram_range=(config.char_ngram_min, config.char_ngram_max),
            n_features=config.char_features,
            **common,
        )
        self._word = HashingVectorizer(
            analyzer="word",
            ngram_range=(config.word_ngram_min, config.word_ngram_max),
            n_features=config.word_features,
            **common,
        )

    def prepare(self, texts: Sequence[str]) -> list[str]:
        """Truncated texts, with anything UTF-8 cannot encode (lone surrogates) replaced: the hasher encodes."""
        return [
            truncate(text, self.config.head_chars, self.config.tail_chars).encode("utf-8", "replace").decode("utf-8")
            for text in texts
        ]

    def segments(self, texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Each (truncated) text, followed by its paragraphs when it has several, long ones cut into windows.

        Returns the segments and, for each, the index of its text. A text's score is the maximum over its
        segments, so an injected paragraph is not diluted by the document around it. Paragraphs partition the
        text and windows overlap twice, so the work stays within about three times the text's length.
        """
        window, stride, shortest = self.config.window_chars, self.config.window_stride, self.config.min_segment_chars
        segments, owners = [], []
        for index, text in enumerate(self.prepare(texts)):
            segments.append(text)
            owners.append(index)
            paragraphs = [p for p in text.split("\n\n") if len(p.strip()) >= shortest]
            if paragraphs == [text] and len(text) <= window + stride:
                paragraphs = []  # one short paragraph: already scored whole
            for paragraph in paragraphs:
                if len(paragraph) <= window + stride:
                    parts = [paragraph]
                else:
                    parts = [paragraph[start : start + window] for start in range(0, len(paragraph) - stride, stride)]
                segments.extend(parts)
                owners.extend(index for _ in parts)
        return segments, np.asarray(owners, dtype=np.int64)

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Features of ``texts`` (truncated first), one row per text."""
        prepared = self.prepare(texts)
        counts = sp.hstack([self._char.transform(prepared), self._word.transform(prepared)], format="csr")
        np.log1p(counts.data, out=counts.data)
        return normalize(counts, norm="l2", copy=False)

    def ngrams(self, text: str) -> tuple[list[str], np.ndarray]:
        """The distinct n-grams of one (truncated) text and their column indices, for explanations."""
        prepared = self.prepare([text])[0]
        char_grams = sorted(set(self._char.build_analyzer()(prepared)))
        word_grams = sorted(set(self._word.build_analyzer()(prepared)))
        columns = np.concatenate(
            [
                _hashed_columns(char_grams, self.config.char_features),
                _hashed_columns(word_grams, self.config.word_features) + self.config.char_features,
            ]
        )
        return char_grams + word_grams, columns


def _hashed_columns(grams: list[str], n_features: int) -> np.ndarray:
    """The column HashingVectorizer gives each n-gram (same hash, same modulus)."""
    if not grams:
        return np.zeros(0, dtype=np.int64)
    hasher = FeatureHasher(n_features=n_features, input_type="string", alternate_sign=False)
    return hasher.transform([[gram] for gram in grams]).indices.astype(np.int64)
