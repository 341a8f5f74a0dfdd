"""The trained text classifier: a linear model per head over hashed n-grams, with Platt-calibrated scores.

The artifact is two files and contains no code: ``<name>.json`` (vectoriser settings, heads, calibration,
thresholds, training-data manifest) and ``<name>.npz`` (the coefficient matrix, loaded with
``allow_pickle=False``). The JSON records the sha256 of the ``.npz`` and loading refuses a mismatch.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detectors.textclf.concepts import concepts_digest
from detectors.textclf.features import FEATURISER, Bags, FeatureConfig, Featurizer, Occurrences, fold_digest

FORMAT = "abusewatch-textclf/1"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_NAME = "textclf"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
log = logging.getLogger(__name__)
_CANDIDATES = 16  # explanations look at most this many n-grams per place to fill


class ModelError(ValueError):
    """The artifact is missing, corrupt or of an unknown format; the message says which."""


@dataclass(frozen=True, slots=True)
class Head:
    """One binary output. ``probability = sigmoid(platt_a * (x·coef + intercept) + platt_b)``."""

    name: str
    intercept: float
    platt_a: float
    platt_b: float
    threshold: float  # operating point for user prompts, chosen on grouped cross-validation for the target FPR
    high_threshold: float  # stricter point for level "high"
    # Retrieved documents and tool results are longer and scored paragraph by paragraph, so benign ones reach
    # higher scores than benign prompts: they get their own operating points, chosen the same way on documents.
    document_threshold: float
    document_high_threshold: float
    positive_families: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "intercept": self.intercept,
            "platt_a": self.platt_a,
            "platt_b": self.platt_b,
            "threshold": self.threshold,
            "high_threshold": self.high_threshold,
            "document_threshold": self.document_threshold,
            "document_high_threshold": self.document_high_threshold,
            "positive_families": list(self.positive_families),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Head:
        return cls(
            name=str(data["name"]),
            intercept=float(data["intercept"]),
            platt_a=float(data["platt_a"]),
            platt_b=float(data["platt_b"]),
            threshold=float(data["threshold"]),
            high_threshold=float(data["high_threshold"]),
            document_threshold=float(data["document_threshold"]),
            document_high_threshold=float(data["document_high_threshold"]),
            positive_families=tuple(data.get("positive_families", ())),
        )


@dataclass(slots=True)
class TextClassifier:
    """Scores texts on every head at once; ``coef`` is ``(n_features, n_heads)`` float32."""

    features: FeatureConfig
    heads: tuple[Head, ...]
    coef: np.ndarray
    version: str
    metadata: dict[str, Any] = field(default_factory=dict)
    _featurizer: Featurizer = field(init=False, repr=False)
    _columns: list[np.ndarray] = field(init=False, repr=False)
    _intercepts: np.ndarray = field(init=False, repr=False)
    _platt: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.coef.shape != (self.features.n_features, len(self.heads)):
            raise ModelError(
                f"coef shape {self.coef.shape} does not fit {self.features.n_features} features "
                f"x {len(self.heads)} heads"
            )
        self.coef = np.ascontiguousarray(self.coef, dtype=np.float32)
        self._featurizer = Featurizer(self.features)
        self._columns = [np.ascontiguousarray(self.coef[:, index]) for index in range(len(self.heads))]
        self._intercepts = np.array([h.intercept for h in self.heads], dtype=np.float64)
        self._platt = np.array([[h.platt_a for h in self.heads], [h.platt_b for h in self.heads]], dtype=np.float64)

    @property
    def head_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.heads)

    def head(self, name: str) -> Head:
        for head in self.heads:
            if head.name == name:
                return head
        raise KeyError(f"no head {name!r}; heads: {self.head_names}")

    def decision(self, texts: Sequence[str]) -> np.ndarray:
        """Raw linear scores, ``(len(texts), n_heads)``: per head, the maximum over each text's segments."""
        return self.analyse(texts).decisions

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated probabilities, ``(len(texts), n_heads)``: one vectorised pass over the whole batch."""
        return self.analyse(texts).scores

    def analyse(self, texts: Sequence[str], keep: float = np.inf) -> Analysis:
        """Scores of ``texts`` (one vectorised pass), keeping what is needed to explain those that score ``keep``
        or more on any head, so that explaining a detection does not featurise its text again."""
        decisions = np.empty((len(texts), len(self.heads)))
        kept = []
        for start, bags, found, spelled_by in self._featurizer.occurrences_by_slice(texts, spell=keep < np.inf):
            rows = bags.decision(self._columns) + self._intercepts
            decisions[start : start + bags.n_texts] = max_by_owner(rows, bags.owners, bags.n_texts)
            if np.any(self._probability(decisions[start : start + bags.n_texts]) >= keep):
                kept.append(_Slice(start, bags, found, spelled_by, rows))
        return Analysis(self, decisions, self._probability(decisions), kept)

    def explain(self, text: str, head: str, top: int = 8, min_chars: int = 5) -> dict[str, float]:
        """The features of ``text`` that pushed the ``head`` score up most; see :meth:`Analysis.explain`."""
        return self.analyse([text], keep=-np.inf).explain(0, head, top, min_chars)

    def _probability(self, decisions: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self._platt[0] * decisions + self._platt[1])))

    def _top_grams(
        self,
        found: Occurrences,
        spelled_by: np.ndarray,
        columns: np.ndarray,
        contributions: np.ndarray,
        top: int,
        min_chars: int,
    ) -> dict[str, float]:
        """The strongest readable features among ``columns`` (``spelled_by``: an occurrence of each), half of them
        words and concepts, as ``ngram:<text>`` / ``concept:<class>`` / ``concept:<class>…<class>`` /
        ``shape:<name>≥<level>``."""
        is_word = columns >= self.features.char_features
        chosen: dict[str, float] = {}
        for pool, quota in ((is_word, top - top // 2), (~is_word, top // 2)):
            candidates = np.flatnonzero(pool & (contributions > 0))
            candidates = candidates[np.argsort(-contributions[candidates], kind="stable")][: _CANDIDATES * quota]
            taken = 0
            for index in candidates.tolist():
                if taken == quota:
                    break
                occurrence = int(spelled_by[index])
                if found.is_concept(occurrence):
                    key = "concept:" + found.gram(occurrence)
                elif found.is_shape(occurrence):
                    key = "shape:" + found.gram(occurrence)
                else:
                    gram = found.gram(occurrence).strip()
                    if len(gram) < min_chars and not is_word[index]:
                        continue
                    key = "ngram:" + gram
                    listed = [k[len("ngram:") :] for k in chosen if k.startswith("ngram:")]
                    if any(gram in other or other in gram for other in listed):  # "romp" under "prompt"
                        continue
                if key not in chosen:
                    chosen[key] = round(float(contributions[index]), 4)
                    taken += 1
        return dict(sorted(chosen.items(), key=lambda item: -item[1]))

    # ------------------------------------------------------------------------------------------- storage

    def save(self, directory: Path, name: str = DEFAULT_NAME) -> tuple[Path, Path]:
        """Write ``name.npz`` and ``name.json`` byte-for-byte deterministically; returns both paths."""
        directory.mkdir(parents=True, exist_ok=True)
        arrays_path, config_path = directory / f"{name}.npz", directory / f"{name}.json"
        arrays = _npz_bytes({"coef": self.coef})
        arrays_path.write_bytes(arrays)
        config = {
            "format": FORMAT,
            "version": self.version,
            "arrays_sha256": hashlib.sha256(arrays).hexdigest(),
            "coef_sha256": array_sha256(self.coef),
            "features": self.features.to_dict(),
            "fold_sha256": fold_digest(),
            "concepts_sha256": concepts_digest(),
            "heads": [h.to_dict() for h in self.heads],
            **self.metadata,
        }
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return arrays_path, config_path

    @classmethod
    def load(cls, directory: Path = DEFAULT_MODEL_DIR, name: str = DEFAULT_NAME) -> TextClassifier:
        """Load and verify an artifact written by :meth:`save`."""
        arrays_path, config_path = Path(directory) / f"{name}.npz", Path(directory) / f"{name}.json"
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            arrays = arrays_path.read_bytes()
        except (OSError, ValueError) as error:
            raise ModelError(f"cannot read model {name!r} in {directory}: {error}") from error
        if config.get("format") != FORMAT:
            raise ModelError(f"{config_path}: format {config.get('format')!r}, expected {FORMAT!r}")
        if hashlib.sha256(arrays).hexdigest() != config.get("arrays_sha256"):
            raise ModelError(f"{arrays_path}: sha256 does not match {config_path}")
        featuriser = config.get("features", {}).get("featuriser", "sklearn HashingVectorizer (abusewatch-ngrams/1)")
        if featuriser != FEATURISER:
            raise ModelError(
                f"{config_path}: built for featuriser {featuriser!r}, this code computes {FEATURISER!r}; "
                "retrain with `python -m bench.train_classifier`"
            )
        if config.get("concepts_sha256") != concepts_digest():
            raise ModelError(
                f"{config_path}: trained with another concept table (detectors/textclf/concepts.py); "
                "retrain with `python -m bench.train_classifier`"
            )
        if config.get("fold_sha256") != fold_digest():
            # Only non-ASCII characters fold differently: the model still works, slightly off on such text, so
            # this warns rather than stopping the engine; the shipped-artifact test fails until it is retrained.
            log.warning(
                "%s: trained under another character fold (detectors.signatures.textnorm.fold, Unicode data or "
                "confusable-homoglyphs changed); retrain with `python -m bench.train_classifier`",
                config_path,
            )
        with np.load(io.BytesIO(arrays), allow_pickle=False) as npz:
            coef = npz["coef"]
        known = {
            "format",
            "version",
            "arrays_sha256",
            "coef_sha256",
            "features",
            "fold_sha256",
            "concepts_sha256",
            "heads",
        }
        return cls(
            features=FeatureConfig(**config["features"]),
            heads=tuple(Head.from_dict(h) for h in config["heads"]),
            coef=coef,
            version=str(config["version"]),
            metadata={k: v for k, v in config.items() if k not in known},
        )


@dataclass(frozen=True, slots=True)
class _Slice:
    """What explaining the texts of one featurised slice needs: its bags, occurrences and row decisions."""

    start: int
    bags: Bags
    found: Occurrences
    spelled_by: np.ndarray
    decisions: np.ndarray


@dataclass(frozen=True, slots=True)
class Analysis:
    """The scores of a batch of texts and what is needed to explain the high-scoring ones."""

    model: TextClassifier
    decisions: np.ndarray
    scores: np.ndarray
    kept: list[_Slice]

    def explain(self, index: int, head: str, top: int = 8, min_chars: int = 5) -> dict[str, float]:
        """The features of text ``index`` that pushed the ``head`` score up most (weight × feature value), strongest
        first, keyed ``ngram:<text>``, ``concept:<class>`` or ``concept:<class>…<class>``; ``{}`` for a text scored
        below the ``keep`` level of :meth:`TextClassifier.analyse`.

        Explains the segment of the text that scored highest. Half the places go to words, word pairs and concepts,
        which read best; character n-grams shorter than ``min_chars`` (once stripped) and n-grams overlapping a
        stronger listed one ("romp" under "prompt") count in the score but are left out: they tell an analyst
        nothing new.
        """
        part = next((p for p in self.kept if p.start <= index < p.start + p.bags.n_texts), None)
        if part is None:
            return {}
        column = self.model.head_names.index(head)
        bags = part.bags
        rows = np.flatnonzero(bags.owners == index - part.start)
        best = int(rows[np.argmax(part.decisions[rows, column])])
        entries = np.flatnonzero(bags.rows == best)
        columns = bags.columns[entries]
        contributions = bags.values[entries] / bags.norms()[best] * self.model.coef[columns, column]
        return self.model._top_grams(part.found, part.spelled_by[entries], columns, contributions, top, min_chars)


def max_by_owner(values: np.ndarray, owners: np.ndarray, size: int) -> np.ndarray:
    """Row-wise maximum of ``values`` grouped by ``owners`` (each of ``0..size-1`` must own a row)."""
    out = np.full((size, *values.shape[1:]), -np.inf)
    np.maximum.at(out, owners, values)
    return out


def array_sha256(array: np.ndarray) -> str:
    """Hash of an array's dtype, shape and bytes: equal hashes mean identical coefficients."""
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` with fixed member timestamps, so the same arrays always give the same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()
