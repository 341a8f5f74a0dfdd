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


# ---------------------------------------------------------------------------------------------- a day's sums

# What an entity takes over about a day, each a sum decayed with a time constant of ``day_span_seconds``.
DAY_SUMS: tuple[str, ...] = ("tokens", "requests", "extraction_requests")
_DAY_LOG_FLOOR = 0.5  # a std of the log of a day's total below this is not trusted: x1.6 in a day is never news
_DAY_BINS = 81  # half-octave bins of a day's total: [0, 1), then [2^((b-1)/2), 2^(b/2)) up to 2^40
_SUMS, _TODAY, _MEAN, _VAR, _ALERTED = 0, 3, 6, 9, 12  # offsets of the three-value fields in DaySums.values
_UPDATED, _DAY, _DAYS = 15, 16, 17  # and of its single values
_DAY_FIELDS = 18


class DaySums:
    """One entity's sums over about a day, and its own history of days (a few floats, in one ``array('d')``).

    For each of :data:`DAY_SUMS`: the sum decayed with a time constant of ``span`` seconds of event time (what was
    taken in about the last day, however it was paced: a rest only decays it), the total of the current UTC day, the
    EWMA mean and variance of the logs of the entity's earlier days' totals (per active day), and when a rule of
    that sum's category last alerted on the entity. ``new``: the entity was first seen after the detector's first
    day, so its first days are judged against its peers' days (an entity already there when the detector started
    has a history nobody saw, and is judged on its own days only).
    """

    __slots__ = ("new", "values")

    def __init__(self, new: bool = False, values: list[float] | None = None) -> None:
        self.new = new
        self.values = array("d", values if values is not None else bytes(8 * _DAY_FIELDS))
        if values is None:
            for index in range(len(DAY_SUMS)):
                self.values[_ALERTED + index] = -math.inf

    @property
    def days(self) -> int:
        """Active days learned into the entity's own history."""
        return int(self.values[_DAYS])

    def sum(self, index: int) -> float:
        return self.values[_SUMS + index]

    def today(self, index: int) -> float:
        return self.values[_TODAY + index]

    def advance(self, start: float, span: float) -> tuple[float, ...] | None:
        """Decay the sums to event time ``start``; at the first window of a later UTC day, hand back the totals of
        the day before (to learn) and start the new day's. ``None`` when still in the same day, or none was seen."""
        values = self.values
        elapsed = start - values[_UPDATED]
        if elapsed > 0:
            decay = math.exp(-elapsed / span)
            for index in range(len(DAY_SUMS)):
                values[_SUMS + index] *= decay
            values[_UPDATED] = start
        day = math.floor(start / 86400.0)
        if day <= values[_DAY]:
            return None
        finished = tuple(values[_TODAY : _TODAY + len(DAY_SUMS)])
        values[_DAY] = day
        for index in range(len(DAY_SUMS)):
            values[_TODAY + index] = 0.0
        return finished if any(finished) else None

    def add(self, amounts: tuple[float, ...]) -> None:
        """Count a window's tokens, requests and requests with extraction parameters."""
        for index, amount in enumerate(amounts):
            self.values[_SUMS + index] += amount
            self.values[_TODAY + index] += amount

    def learn_one(self, totals: tuple[float, ...], span_days: float) -> None:
        """Learn a finished day's totals into the entity's own history (EWMA of their logs over ``span_days``)."""
        values, alpha = self.values, 2.0 / (span_days + 1.0)
        for index, total in enumerate(totals):
            value = math.log1p(max(0.0, total))
            if not values[_DAYS]:
                values[_MEAN + index], values[_VAR + index] = value, 0.0
                continue
            delta = value - values[_MEAN + index]
            values[_MEAN + index] += alpha * delta
            values[_VAR + index] = (1.0 - alpha) * (values[_VAR + index] + delta * alpha * delta)
        values[_DAYS] += 1

    def score_one(self, index: int) -> float:
        """How many (floored) standard deviations the decayed sum is above the entity's own days; NaN with none."""
        if not self.values[_DAYS]:
            return math.nan
        std = math.sqrt(self.values[_VAR + index] + _DAY_LOG_FLOOR * _DAY_LOG_FLOOR)
        return (math.log1p(self.sum(index)) - self.values[_MEAN + index]) / std

    def typical(self, index: int) -> float:
        """The entity's typical day (the exponential of its mean log total)."""
        return math.expm1(self.values[_MEAN + index])

    def alerted(self, index: int) -> float:
        return self.values[_ALERTED + index]

    def mark(self, index: int, when: float) -> None:
        """A rule of this sum's category alerted on the entity at ``when`` (the day rules then wait a day)."""
        self.values[_ALERTED + index] = max(self.values[_ALERTED + index], when)

    def dump(self) -> list[Any]:
        return [self.new, [v if math.isfinite(v) else None for v in self.values]]

    @classmethod
    def load(cls, data: list[Any]) -> DaySums:
        new, values = data
        return cls(bool(new), [-math.inf if v is None else float(v) for v in values])


class DayPeers:
    """The identity-days of one peer group: for each of :data:`DAY_SUMS`, a histogram of the days' totals in
    half-octave bins, each sample's weight decaying by ``1 - 1 / span`` per sample learned after it (so about the
    last ``span`` identity-days count), from which a high quantile is read: what the heaviest identities take in a
    day. A log scale and a quantile, not a mean and a standard deviation: days are heavy-tailed, and an app that
    hands out a new user id per request fills a population with one-request days."""

    __slots__ = ("bins", "learned", "span")

    def __init__(self, span: float) -> None:
        self.span = span
        self.learned = 0
        self.bins = [array("d", bytes(8 * _DAY_BINS)) for _ in DAY_SUMS]

    @staticmethod
    def bin(total: float) -> int:
        if total < 1.0:
            return 0
        return min(_DAY_BINS - 1, 1 + math.floor(2.0 * math.log2(total)))

    def learn_one(self, totals: tuple[float, ...]) -> None:
        keep = 1.0 - 1.0 / self.span
        for bins, total in zip(self.bins, totals, strict=True):
            for index in range(_DAY_BINS):
                bins[index] *= keep
            bins[self.bin(total)] += 1.0
        self.learned += 1

    def quantile(self, index: int, q: float) -> float:
        """The upper edge of the bin holding the ``q`` quantile of the days' totals of ``DAY_SUMS[index]`` (at most
        x1.41 above it: a higher bar, never a lower one)."""
        bins = self.bins[index]
        target, seen = q * sum(bins), 0.0
        for number, weight in enumerate(bins):
            seen += weight
            if seen >= target and weight:
                return 2.0 ** (number / 2.0) if number else 1.0
        return 2.0 ** ((_DAY_BINS - 1) / 2.0)

    def dump(self) -> dict[str, Any]:
        return {"learned": self.learned, "bins": [list(bins) for bins in self.bins]}

    def load(self, data: dict[str, Any]) -> None:
        self.learned = int(data["learned"])
        self.bins = [array("d", [float(v) for v in bins]) for bins in data["bins"]]
