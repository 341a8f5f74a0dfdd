"""Small helpers the notebooks share: paths, threshold sweeps, per-window identity series and their baselines.

Importing this module puts the repository root on ``sys.path`` (``bench`` is not an installed package) and
selects matplotlib's Agg backend, so a notebook runs the same under Jupyter, nbclient and CI.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from detectors.anomaly.models import BASELINE_FEATURES, Baseline  # noqa: E402  (after the path is set)

OUT = REPO / "out" / "notebooks"  # git-ignored; figures and reports the notebooks write
BASELINE_METRICS = ("requests", "tokens")  # window counts the own-history baseline learns on a log scale


def out_dir(name: str) -> Path:
    """A fresh-enough output folder for one notebook (created if missing)."""
    path = OUT / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """Confusion counts and rates at one threshold (alert when score >= threshold)."""

    threshold: float
    true_positives: int
    false_positives: int
    positives: int
    negatives: int

    @property
    def recall(self) -> float:
        return self.true_positives / self.positives if self.positives else 0.0

    @property
    def fpr(self) -> float:
        return self.false_positives / self.negatives if self.negatives else 0.0

    @property
    def precision(self) -> float | None:
        flagged = self.true_positives + self.false_positives
        return self.true_positives / flagged if flagged else None


def sweep(scores: Sequence[float], positive: Sequence[bool], thresholds: Iterable[float]) -> list[SweepPoint]:
    """Precision / recall / FPR of ``score >= threshold`` for each threshold (ascending)."""
    pairs = list(zip(scores, positive, strict=True))
    positives = sum(1 for _, p in pairs if p)
    negatives = len(pairs) - positives
    points = []
    for threshold in sorted(thresholds):
        tp = sum(1 for s, p in pairs if p and s >= threshold)
        fp = sum(1 for s, p in pairs if not p and s >= threshold)
        points.append(SweepPoint(threshold, tp, fp, positives, negatives))
    return points


def plot_sweep(ax: Any, points: Sequence[SweepPoint], configured: float, title: str) -> None:
    """Precision, recall and FPR against the threshold, with the configured operating point marked."""
    xs = [p.threshold for p in points]
    ax.plot(xs, [p.recall for p in points], label="recall")
    ax.plot(xs, [math.nan if p.precision is None else p.precision for p in points], label="precision")
    ax.plot(xs, [p.fpr for p in points], label="false-positive rate")
    ax.axvline(configured, color="black", linestyle="--", label=f"configured {configured:.3f}")
    ax.set_xlabel("threshold (alert when score >= threshold)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(loc="center left")


def at_threshold(points: Sequence[SweepPoint], threshold: float) -> SweepPoint:
    """The sweep point closest to ``threshold``."""
    return min(points, key=lambda p: abs(p.threshold - threshold))


def non_increasing(values: Sequence[float]) -> bool:
    return all(b <= a for a, b in pairwise(values))


@dataclass(frozen=True, slots=True)
class WindowPoint:
    """One identity's traffic in one tumbling window, as the anomaly detector annotated it."""

    start: float
    requests: int
    tokens: int
    template_reuse: float  # share of the window's prompts on its most frequent template signature
    anomaly_score: float  # the identity's latest closed-window score when the window's last event arrived


def window_series(
    events: Sequence[Any], findings: Sequence[Any], identity_key: str, window_seconds: float
) -> list[WindowPoint]:
    """Per-window counts of one identity from the events and the fields the anomaly detector wrote on them."""
    by_window: dict[float, list[tuple[Any, Any]]] = defaultdict(list)
    for event, found in zip(events, findings, strict=True):
        if event.identity.key() == identity_key:
            by_window[math.floor(event.timestamp / window_seconds) * window_seconds].append((event, found))
    series = []
    for start in sorted(by_window):
        rows = by_window[start]
        templates = Counter(f.fields.get("abusewatch.identity.template_signature") for _, f in rows)
        templates.pop(None, None)
        series.append(
            WindowPoint(
                start=start,
                requests=len(rows),
                tokens=sum((e.input_tokens or 0) + (e.output_tokens or 0) for e, _ in rows),
                template_reuse=max(templates.values()) / len(rows) if templates else 0.0,
                anomaly_score=float(rows[-1][1].fields.get("gen_ai.security.anomaly_score", 0.0)),
            )
        )
    return series


def judged_against(
    points: Sequence[WindowPoint], span: float, unlearned: Iterable[float] = ()
) -> tuple[dict[str, list[float]], Baseline]:
    """The own-history baseline each window was judged against, per metric in :data:`BASELINE_METRICS`, and the
    baseline after the last window.

    It is the anomaly detector's :class:`~detectors.anomaly.models.Baseline`, learned as the detector learns it: the
    EWMA over active windows of ``log1p`` of each count, seeded with the first window, not learning the windows in
    ``unlearned`` (start times of windows that raised a detection). Each value is the mean brought back to counts
    (``expm1``): a geometric-style average that a burst moves far less than an average of the raw counts would.
    ``nan`` before the first learned window (nothing to judge against).
    """
    skip, baseline = set(unlearned), Baseline()
    curves: dict[str, list[float]] = {metric: [] for metric in BASELINE_METRICS}
    for point in points:
        for metric in BASELINE_METRICS:
            mean = baseline.means[BASELINE_FEATURES.index(metric)]
            curves[metric].append(math.expm1(mean) if baseline.windows else math.nan)
        if point.start not in skip:
            features = dict.fromkeys(BASELINE_FEATURES, 0.0)
            features.update({metric: float(getattr(point, metric)) for metric in BASELINE_METRICS})
            baseline.learn(features, span)
    return curves, baseline


def baseline_counts(baseline: Baseline) -> dict[str, float]:
    """A baseline's means of :data:`BASELINE_METRICS`, in counts per window."""
    return {metric: math.expm1(baseline.means[BASELINE_FEATURES.index(metric)]) for metric in BASELINE_METRICS}
