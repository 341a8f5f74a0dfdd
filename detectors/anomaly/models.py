"""The two scorers of a closed window: the identity against its own history, and against its peers.

:class:`Baseline` keeps an exponentially weighted mean and variance per feature (a few floats per identity) and
turns a new window into z-scores. :class:`PeerModel` is one river Half-Space-Trees model per identity kind
(user, key, ip, session), learned online over every identity's windows, which scores how unusual a window is
among everyone's. Both keep all their state in themselves; :meth:`dump` / :meth:`load` give JSON-able data.
"""

from __future__ import annotations

import base64
import math
import pickle
from array import array
from typing import Any

from river import anomaly

# Features compared with the identity's own history: counts on a log scale, rates as they are.
LOG_FEATURES: tuple[str, ...] = ("requests", "tokens", "tokens_per_request", "max_tokens_requested", "distinct_ips")
RATE_FEATURES: tuple[str, ...] = (
    "template_reuse",
    "enumeration_rate",
    "extraction_param_rate",
    "extraction_temperature_std",
    "error_rate",
    "refusal_rate",
    "guardrail_block_rate",
)
BASELINE_FEATURES: tuple[str, ...] = LOG_FEATURES + RATE_FEATURES
_LOG_FLOOR = 0.35  # a std below this is not trusted: x1.4 in a count is never news
_RATE_FLOOR = 0.08

# Features the peer model sees, each mapped into [0, 1] with fixed limits (no drifting min-max scaling); counts
# are compared on a log scale.
PEER_LOG_FEATURES = frozenset({"requests", "tokens", "tokens_per_request", "distinct_ips"})
PEER_LIMITS: dict[str, tuple[float, float]] = {
    "requests": (0.0, math.log1p(2000)),
    "tokens": (0.0, math.log1p(2_000_000)),
    "tokens_per_request": (0.0, math.log1p(64_000)),
    "template_reuse": (0.0, 1.0),
    "enumeration_rate": (0.0, 1.0),
    "extraction_param_rate": (0.0, 1.0),
    "interarrival_cv": (0.0, 3.0),
    "error_rate": (0.0, 1.0),
    "distinct_ips": (0.0, math.log1p(32)),
}
PEER_CODEC = "pickle+base64"  # river estimators have no JSON form; the topic holding this is internal and trusted


def transformed(features: dict[str, float], name: str) -> float:
    value = features[name]
    return math.log1p(max(0.0, value)) if name in LOG_FEATURES else value


class Baseline:
    """EWMA mean/variance of :data:`BASELINE_FEATURES` over one identity's active windows."""

    __slots__ = ("means", "variances", "windows")

    def __init__(self, windows: int = 0, means: list[float] | None = None, variances: list[float] | None = None):
        self.windows = windows
        size = len(BASELINE_FEATURES)
        self.means = array("d", means or [0.0] * size)  # 8 bytes a value: a baseline per identity stays small
        self.variances = array("d", variances or [0.0] * size)

    def z_scores(self, features: dict[str, float]) -> dict[str, float]:
        """How many (floored) standard deviations above its own mean each feature is; ``{}`` with no history."""
        if self.windows == 0:
            return {}
        scores = {}
        for index, name in enumerate(BASELINE_FEATURES):
            floor = _LOG_FLOOR if name in LOG_FEATURES else _RATE_FLOOR
            std = math.sqrt(self.variances[index] + floor * floor)
            scores[name] = (transformed(features, name) - self.means[index]) / std
        return scores

    def learn(self, features: dict[str, float], span: float) -> None:
        alpha = 2.0 / (span + 1.0)
        for index, name in enumerate(BASELINE_FEATURES):
            value = transformed(features, name)
            if not math.isfinite(value):  # never learnt: one such value would hold the baseline at inf / NaN
                continue
            if self.windows == 0:
                self.means[index], self.variances[index] = value, 0.0
                continue
            delta = value - self.means[index]
            step = alpha * delta
            self.means[index] += step
            self.variances[index] = (1.0 - alpha) * (self.variances[index] + delta * step)
        self.windows += 1

    def dump(self) -> list[Any]:
        return [self.windows, list(self.means), list(self.variances)]

    @classmethod
    def load(cls, data: list[Any]) -> Baseline:
        return cls(int(data[0]), [float(m) for m in data[1]], [float(v) for v in data[2]])


class PeerModel:
    """How one window compares with every identity's windows of the same kind.

    Two views, both learned online across identities: river Half-Space Trees over the whole window (a joint
    anomaly score in [0, 1]) and a population EWMA baseline per feature (peer z-scores: "5 standard deviations
    more requests than identities of this kind send"). An attacker's own windows are a handful among thousands,
    so neither learns the attack as normal, unlike the attacker's own baseline. Scores are 0 / empty until
    ``warmup`` windows were learned.
    """

    def __init__(self, *, trees: int, height: int, window: int, seed: int, warmup: int, span: float) -> None:
        self.warmup = warmup
        self.span = span
        self.learned = 0
        self.population = Baseline()
        self.model = anomaly.HalfSpaceTrees(
            n_trees=trees, height=height, window_size=window, limits=dict.fromkeys(PEER_LIMITS, (0.0, 1.0)), seed=seed
        )

    @staticmethod
    def vector(features: dict[str, float]) -> dict[str, float]:
        vector = {}
        for name, (low, high) in PEER_LIMITS.items():
            value = math.log1p(max(0.0, features[name])) if name in PEER_LOG_FEATURES else features[name]
            vector[name] = min(1.0, max(0.0, (value - low) / (high - low)))
        return vector

    def score_and_learn(self, features: dict[str, float]) -> tuple[float, dict[str, float]]:
        """Score the window (Half-Space-Trees score, peer z-scores; nothing while warming up), then learn it."""
        vector = self.vector(features)
        warm = self.learned >= self.warmup
        score = self.model.score_one(vector) if warm else 0.0
        z_scores = self.population.z_scores(features) if warm else {}
        self.model.learn_one(vector)
        self.population.learn(features, self.span)
        self.learned += 1
        return score, z_scores

    def dump(self) -> dict[str, Any]:
        return {
            "learned": self.learned,
            "population": self.population.dump(),
            "codec": PEER_CODEC,
            "model": base64.b64encode(pickle.dumps(self.model)).decode(),
        }

    def load(self, data: dict[str, Any]) -> None:
        if data.get("codec") != PEER_CODEC:
            raise ValueError(f"unknown peer model codec {data.get('codec')!r}")
        self.learned = int(data["learned"])
        self.population = Baseline.load(data["population"])
        self.model = pickle.loads(base64.b64decode(data["model"]))  # our own checkpoint topic: trusted
