"""Fitting the classifier: one logistic regression per head, calibrated and thresholded out of fold.

Every training text belongs to a fold (the caller assigns folds by source, so a source never straddles
folds). For each head, models fitted with one fold held out score that fold; those out-of-fold scores,
which behave like scores on unseen sources (and are computed over text windows exactly as the shipped model
scores), fit the Platt calibration and pick the operating thresholds: one pair on benign prompts, one on benign
documents (a head's ``documents`` mask), since the detector scores user prompts and documents separately. Each
threshold keeps the false-positive rate of every population of negatives (a head's ``populations``: corpus texts,
synthetic texts) at most the target, so plentiful easy negatives cannot hide a higher rate on real text. The shipped
model is then fitted on all folds. Everything is deterministic: no random state is involved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from detectors.textclf.features import FeatureConfig, Featurizer
from detectors.textclf.model import Head, TextClassifier, max_by_owner

IGNORE = -1  # target value: the text takes no part in this head


@dataclass(frozen=True, slots=True)
class HeadTarget:
    """What one head learns: ``targets[i]`` is 1 (positive), 0 (negative) or ``IGNORE`` for text ``i``."""

    name: str
    targets: np.ndarray
    positive_families: tuple[str, ...] = ()
    documents: np.ndarray | None = None  # which texts are documents (own thresholds); None: none are
    # Negatives of different kinds (corpus texts, synthetic prompts, ...): a threshold keeps the false-positive
    # rate of EACH kind at most the target, so easy synthetic negatives cannot hide a higher rate on real text.
    populations: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class TrainingOptions:
    regularisation_c: float = 16.0  # chosen on grouped cross-validation of the train split (model card)
    # Operating threshold: out-of-fold false-positive rate at most this. Below the 1 % goal on purpose: held-out
    # sources ran ~0.4 points above the out-of-fold rate at a 1 % point (model card), so this leaves that margin.
    target_fpr: float = 0.0075
    high_fpr: float = 0.001  # "high" threshold
    max_iter: int = 5000


@dataclass(frozen=True, slots=True)
class FitResult:
    """The model plus each head's calibrated out-of-fold probabilities (NaN where the head ignores a text)."""

    model: TextClassifier
    out_of_fold: dict[str, np.ndarray]


def fit(
    texts: Sequence[str],
    heads: Sequence[HeadTarget],
    folds: np.ndarray,
    features: FeatureConfig,
    version: str,
    options: TrainingOptions = TrainingOptions(),
) -> FitResult:
    """Fit all heads on ``texts``; ``folds[i]`` is the cross-validation fold of text ``i``."""
    bags = Featurizer(features).bags(texts)
    segment_matrix, owners = bags.matrix(), bags.owners
    matrix = segment_matrix[: len(texts)]  # rows of whole texts come first
    fitted_heads, columns, out_of_fold = [], [], {}
    for target in heads:
        used = target.targets != IGNORE
        scores = np.full(len(texts), np.nan)
        for fold in np.unique(folds[used]):
            train, held = used & (folds != fold), used & (folds == fold)
            if len(np.unique(target.targets[train])) < 2:
                raise ValueError(f"head {target.name}: fold {fold} leaves a single class to train on")
            model = _fit_linear(matrix[train], target.targets[train], options)
            rows = held[owners]  # segments of held-out texts, scored the way the shipped model scores
            decisions = max_by_owner(model.decision_function(segment_matrix[rows]), owners[rows], len(texts))
            scores[held] = decisions[held]
        platt_a, platt_b = _platt(scores[used], target.targets[used])
        probabilities = _sigmoid(platt_a * scores + platt_b)
        documents = np.zeros(len(texts), dtype=bool) if target.documents is None else target.documents
        populations = np.zeros(len(texts), dtype=int) if target.populations is None else target.populations
        negatives = used & (target.targets == 0)
        prompts = [probabilities[negatives & ~documents & (populations == p)] for p in np.unique(populations)]
        benign_documents = [probabilities[negatives & documents & (populations == p)] for p in np.unique(populations)]
        if not any(len(population) for population in benign_documents):
            benign_documents = prompts
        final = _fit_linear(matrix[used], target.targets[used], options)
        fitted_heads.append(
            Head(
                name=target.name,
                intercept=float(final.intercept_[0]),
                platt_a=platt_a,
                platt_b=platt_b,
                threshold=strictest_threshold(prompts, options.target_fpr),
                high_threshold=strictest_threshold(prompts, options.high_fpr),
                document_threshold=strictest_threshold(benign_documents, options.target_fpr),
                document_high_threshold=strictest_threshold(benign_documents, options.high_fpr),
                positive_families=target.positive_families,
            )
        )
        columns.append(final.coef_[0].astype(np.float32))
        out_of_fold[target.name] = probabilities
    model = TextClassifier(
        features=features, heads=tuple(fitted_heads), coef=np.stack(columns, axis=1), version=version
    )
    return FitResult(model=model, out_of_fold=out_of_fold)


def strictest_threshold(populations: Sequence[np.ndarray], fpr: float) -> float:
    """The lowest threshold at which at most ``fpr`` of the negatives of every (non-empty) population alert."""
    return max((threshold_for_fpr(scores, fpr) for scores in populations if len(scores)), default=0.0)


def threshold_for_fpr(negative_scores: np.ndarray, fpr: float) -> float:
    """The lowest threshold (score ≥ threshold alerts) at which at most ``fpr`` of the negatives alert."""
    ranked = np.sort(negative_scores)[::-1]
    allowed = int(np.floor(fpr * len(ranked)))
    if allowed >= len(ranked):
        return 0.0
    return float(np.nextafter(ranked[allowed], np.inf))


def _fit_linear(matrix: sp.csr_matrix, targets: np.ndarray, options: TrainingOptions) -> LogisticRegression:
    model = LogisticRegression(
        C=options.regularisation_c, class_weight="balanced", solver="lbfgs", max_iter=options.max_iter
    )
    return model.fit(matrix, targets)


def _platt(scores: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """Platt scaling: a 1-D logistic fit of the labels on the out-of-fold scores (unregularised)."""
    calibrator = LogisticRegression(C=1e6, solver="lbfgs", max_iter=1000)
    calibrator.fit(scores.reshape(-1, 1), targets)
    return float(calibrator.coef_[0, 0]), float(calibrator.intercept_[0])


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))
