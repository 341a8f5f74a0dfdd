"""Judge alternative operating points of the text classifier on grouped cross-validation of the train split only.

    python -m bench.cv_oppoint [--cache-dir DIR] [--boot N]

Fits the shipped recipe (``bench.train_classifier.fit_train_split``, about 8 minutes on the loaded two-core machine)
and, from its out-of-fold injection scores, compares the shipped threshold rule (at most 0.75 % of out-of-fold
corpus benign prompts and of synthetic benign prompts alert) with

- per-length thresholds (buckets of ``--edges`` characters) chosen jointly under the same two budgets;
- a stacker (logistic regression / gradient boosting) over the score and cheap meta-features, fitted on the same
  grouped folds, so the stacker that scores a text never saw its fold;
- smoothed estimates of the threshold (bootstrap median, Harrell-Davis, peaks over threshold, a per-source weight
  cap), by the spread of the threshold over bootstrap resamples of the benign texts and of their source files;
- per-source out-of-fold FPR, and the FPR of the tenth fold at a threshold chosen on the other nine.

Each rule is also "cross-fitted": chosen on nine folds' out-of-fold scores and applied to the tenth, which is how a
threshold meets held-out sources. Differences come with a paired bootstrap over texts and over source files. The
held-out hard benign templates (``task_templates(held_out=True)``) filled with train-split benign pieces, scored
by the shipped model, stand in for the test split's hard benign prompts. No test text is read: the test split's
records are dropped after loading, keeping only their source names, which the folds need (as ``--cv-only``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import genpareto
from scipy.stats.mstats import hdquantiles
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bench import corpora
from bench import train_classifier as tc
from detectors.textclf.concepts import word_concepts
from detectors.textclf.features import FeatureConfig
from detectors.textclf.model import TextClassifier
from detectors.textclf.synthetic import instruction_prompts
from detectors.textclf.training import TrainingOptions, strictest_threshold, threshold_for_fpr

TARGET = TrainingOptions().target_fpr
# (data, scores, fit mask, lengths) -> the threshold of a text of each length, chosen on the fit texts
Rule = Callable[["OutOfFold", np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True, slots=True)
class OutOfFold:
    """Out-of-fold scores of the shipped recipe with what the rules need to know of each training text."""

    score: np.ndarray  # calibrated injection probability
    jailbreak: np.ndarray
    fold: np.ndarray
    length: np.ndarray
    source: np.ndarray
    corpus_benign: np.ndarray  # the rule's first population (prompts)
    synthetic_benign: np.ndarray  # the rule's second population: synthetic benign prompts (task and hard)
    attack: np.ndarray  # corpus attacks as prompts: the recall figure
    prompt_attack: np.ndarray  # every attack prompt (corpus and synthetic), the stacker's positives
    hard: np.ndarray  # composed hard benign prompts (training templates)
    concepts: np.ndarray
    non_ascii: np.ndarray

    @property
    def prompts(self) -> np.ndarray:
        return self.corpus_benign | self.synthetic_benign | self.prompt_attack


def out_of_fold(run: tc.TrainingRun) -> OutOfFold:
    """The arrays of a fitted run (prompts only matter: documents keep their own threshold)."""
    samples = run.samples
    words = word_concepts()
    word = re.compile(r"\w+")
    corpus = np.array([s.origin == "corpus" for s in samples])
    document = np.array([tc.is_document(s) for s in samples])
    attack = np.array([s.label == "attack" for s in samples])
    return OutOfFold(
        score=run.result.out_of_fold[tc.INJECTION],
        jailbreak=run.result.out_of_fold[tc.JAILBREAK],
        fold=np.array([s.fold for s in samples]),
        length=np.array([len(s.text) for s in samples]),
        source=np.array([s.source for s in samples]),
        corpus_benign=~attack & corpus & ~document,
        synthetic_benign=~attack & ~corpus & ~document,
        attack=attack & corpus,
        prompt_attack=attack & ~document,
        hard=np.array([s.origin == tc.HARD_PROMPT for s in samples]),
        concepts=np.array([sum(w in words for w in word.findall(s.text.lower())) for s in samples]),
        non_ascii=np.array([sum(ord(c) > 127 for c in s.text) / max(1, len(s.text)) for s in samples]),
    )


# ------------------------------------------------------------------------------------------------ rules


def single_rule(data: OutOfFold, scores: np.ndarray, fit: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The shipped rule: one threshold, the strictest of the two populations' quantiles."""
    threshold = strictest_threshold([scores[data.corpus_benign & fit], scores[data.synthetic_benign & fit]], TARGET)
    return np.full(len(lengths), threshold)


def _bucket_table(
    scores: np.ndarray, corpus: np.ndarray, synthetic: np.ndarray, attacks: np.ndarray, budget: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """best[c, s]: most attacks caught in a bucket with at most c corpus / s synthetic false alerts; thr[c, s] the
    highest threshold that does it (scores here are of one bucket; masks select the populations)."""
    benign = np.unique(scores[corpus | synthetic])
    candidates = np.concatenate([[0.0], np.nextafter(benign, np.inf)])
    counts = [
        len(ranked) - np.searchsorted(ranked, candidates, side="left")
        for ranked in (np.sort(scores[corpus]), np.sort(scores[synthetic]), np.sort(scores[attacks]))
    ]
    best = np.full((budget[0] + 1, budget[1] + 1), -1)
    thr = np.full(best.shape, np.inf)
    fits = (counts[0] <= budget[0]) & (counts[1] <= budget[1])
    for c, s, caught, t in zip(counts[0][fits], counts[1][fits], counts[2][fits], candidates[fits], strict=True):
        best[c, s], thr[c, s] = max((best[c, s], thr[c, s]), (caught, t))
    for c in range(best.shape[0]):  # more false alerts allowed never catches fewer
        for s in range(best.shape[1]):
            for c2, s2 in ((c - 1, s), (c, s - 1)):
                if min(c2, s2) >= 0 and (best[c2, s2], thr[c2, s2]) > (best[c, s], thr[c, s]):
                    best[c, s], thr[c, s] = best[c2, s2], thr[c2, s2]
    return best, thr


def joint_thresholds(
    scores: np.ndarray,
    bucket: np.ndarray,
    corpus: np.ndarray,
    synthetic: np.ndarray,
    attacks: np.ndarray,
    n_buckets: int,
    fpr: float = TARGET,
) -> np.ndarray:
    """One threshold per bucket, catching the most ``attacks`` while the false alerts of ``corpus`` and of
    ``synthetic`` negatives, summed over the buckets, each stay within the shipped rule's ``floor(fpr * n)``."""
    budget = (int(np.floor(fpr * corpus.sum())), int(np.floor(fpr * synthetic.sum())))
    tables = [
        _bucket_table(scores, corpus & (bucket == b), synthetic & (bucket == b), attacks & (bucket == b), budget)
        for b in range(n_buckets)
    ]
    total, choices = tables[0][0], []
    for best, _ in tables[1:]:  # knapsack over buckets on the two budgets
        merged = np.full_like(total, -1)
        choice = np.zeros((*total.shape, 2), dtype=int)
        for c, s in zip(*np.nonzero(best >= 0), strict=True):
            previous = total[: budget[0] + 1 - c, : budget[1] + 1 - s]
            candidate = np.where(previous >= 0, previous + best[c, s], -1)
            better = candidate > merged[c:, s:]
            merged[c:, s:][better] = candidate[better]
            choice[c:, s:][better] = (c, s)
        total = merged
        choices.append(choice)
    c, s, out = budget[0], budget[1], []
    for b in range(n_buckets - 1, 0, -1):
        used_c, used_s = choices[b - 1][c, s]
        out.append(tables[b][1][used_c, used_s])
        c, s = c - used_c, s - used_s
    out.append(tables[0][1][c, s])
    return np.array(out[::-1])


def length_rule(edges: Sequence[int]) -> Rule:
    """Per-length thresholds (buckets split at ``edges`` characters) chosen jointly on the fit texts."""

    def rule(data: OutOfFold, scores: np.ndarray, fit: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        bucket = np.searchsorted(np.asarray(edges), data.length, side="right")
        by_bucket = joint_thresholds(
            scores,
            bucket,
            data.corpus_benign & fit,
            data.synthetic_benign & fit,
            data.attack & fit,
            len(edges) + 1,
        )
        return by_bucket[np.searchsorted(np.asarray(edges), lengths, side="right")]

    return rule


def worst_sources_rule(min_texts: int) -> Rule:
    """The lowest threshold (no lower than the shipped rule's) at which the 90th percentile of the per-source
    corpus benign FPR, over sources of ``min_texts`` or more fit texts, is at most the target."""

    def rule(data: OutOfFold, scores: np.ndarray, fit: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        rows = data.corpus_benign & fit
        _, owner, counts = np.unique(data.source[rows], return_inverse=True, return_counts=True)
        large = counts >= min_texts
        if not large.any():  # no source is large enough to judge: the shipped rule stands
            return single_rule(data, scores, fit, lengths)
        candidates = np.unique(np.nextafter(scores[rows], np.inf))
        candidates = candidates[candidates >= single_rule(data, scores, fit, lengths[:1])[0]]
        for threshold in candidates:  # ascending: the first that holds is the lowest
            rate = np.bincount(owner, weights=(scores[rows] >= threshold).astype(float)) / counts
            if np.percentile(rate[large], 90) <= TARGET:
                return np.full(len(lengths), threshold)
        return np.full(len(lengths), 1.0)

    return rule


def alerts(data: OutOfFold, scores: np.ndarray, rule: Rule, cross_fitted: bool) -> np.ndarray:
    """Which prompts alert: the rule chosen on all folds, or (``cross_fitted``) on the nine other folds."""
    if not cross_fitted:
        return (scores >= rule(data, scores, np.ones(len(scores), dtype=bool), data.length)) & data.prompts
    flagged = np.zeros(len(scores), dtype=bool)
    for fold in np.unique(data.fold):
        held = data.fold == fold
        flagged |= held & (scores >= rule(data, scores, ~held, data.length))
    return flagged & data.prompts


def paired_bootstrap(
    before: np.ndarray, after: np.ndarray, clusters: np.ndarray | None = None, n_boot: int = 2000, seed: int = 1
) -> tuple[float, float, float]:
    """Mean of ``after - before`` and its 95 % interval, resampling texts or whole ``clusters`` (source files)."""
    diff = after.astype(float) - before.astype(float)
    rng = np.random.default_rng(seed)
    if clusters is None:
        boots = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    else:
        _, owner = np.unique(clusters, return_inverse=True)
        sums, counts = np.bincount(owner, weights=diff), np.bincount(owner)
        pick = rng.integers(0, len(sums), size=(n_boot, len(sums)))
        boots = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    low, high = np.percentile(boots, [2.5, 97.5])
    return float(diff.mean()), float(low), float(high)


# ---------------------------------------------------------------------------------------------- stacker


def stacked_scores(data: OutOfFold, kind: str) -> np.ndarray:
    """Out-of-fold stacker scores of prompts: for each fold, a stacker fitted on the other folds' prompts."""

    def logit(p: np.ndarray) -> np.ndarray:
        p = np.clip(p, 1e-9, 1 - 1e-9)
        return np.log(p / (1 - p))

    features = np.column_stack(
        [
            logit(data.score),
            logit(data.jailbreak),
            np.log1p(data.length),
            np.log1p(data.concepts),
            data.non_ascii,
            100 * data.concepts / np.maximum(data.length, 1),
        ]
    )
    target = data.prompt_attack.astype(int)
    out = np.full(len(target), np.nan)
    for fold in np.unique(data.fold):
        train, held = data.prompts & (data.fold != fold), data.prompts & (data.fold == fold)
        if kind == "logistic":
            model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))
        else:
            model = HistGradientBoostingClassifier(
                max_iter=150, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=40, l2_regularization=1.0,
                class_weight="balanced", random_state=0,
            )  # fmt: skip
        model.fit(features[train], target[train])
        out[held] = model.predict_proba(features[held])[:, 1]
    return out


# -------------------------------------------------------------------------------------- threshold steadiness


def pot_quantile(scores: np.ndarray, fpr: float = TARGET, tail: float = 0.10) -> float:
    """The (1 - fpr) quantile of a generalised Pareto fit to the logit scores above their (1 - tail) quantile."""
    z = np.log(np.clip(scores, 1e-9, 1 - 1e-9) / np.clip(1 - scores, 1e-9, 1))
    base = np.quantile(z, 1 - tail)
    shape, _, scale = genpareto.fit(z[z > base] - base, floc=0)
    return float(1 / (1 + np.exp(-(base + genpareto.ppf(1 - fpr / tail, shape, loc=0, scale=scale)))))


def source_capped_quantile(scores: np.ndarray, sources: np.ndarray, fpr: float = TARGET, cap: float = 0.05) -> float:
    """Weighted quantile: a source holding more than ``cap`` of the texts weighs only ``cap`` in all."""
    _, owner, counts = np.unique(sources, return_inverse=True, return_counts=True)
    weights = np.minimum(1.0, cap * len(scores) / counts)[owner]
    order = np.argsort(-scores)
    first_out = int(np.searchsorted(np.cumsum(weights[order]) / weights.sum(), fpr, side="right"))
    return 0.0 if first_out >= len(scores) else float(np.nextafter(scores[order][first_out], np.inf))


def bagged_quantile(scores: np.ndarray, fpr: float = TARGET, n: int = 100) -> float:
    """Median of the order-statistic threshold over ``n`` bootstrap resamples (smooths the tail's discreteness)."""
    rng = np.random.default_rng(0)
    return float(
        np.median([threshold_for_fpr(scores[rng.integers(0, len(scores), len(scores))], fpr) for _ in range(n)])
    )


ESTIMATORS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "order statistic (shipped)": lambda s, _: threshold_for_fpr(s, TARGET),
    "bootstrap median of 100": lambda s, _: bagged_quantile(s),
    "Harrell-Davis": lambda s, _: float(hdquantiles(s, prob=[1 - TARGET])[0]),
    "peaks over threshold (10 % tail)": lambda s, _: pot_quantile(s),
    "source weight capped at 5 %": source_capped_quantile,
}


def threshold_spread(data: OutOfFold, n_boot: int) -> None:
    """Each estimator's threshold, recall, and spread over resamples of the corpus benign texts / source files."""
    rng = np.random.default_rng(42)
    corpus, synthetic = np.flatnonzero(data.corpus_benign), np.flatnonzero(data.synthetic_benign)
    keys = np.unique(data.source[corpus])
    members = {key: corpus[data.source[corpus] == key] for key in keys}
    resamples = {
        "texts": [rng.choice(corpus, len(corpus)) for _ in range(n_boot)],
        "sources": [np.concatenate([members[k] for k in rng.choice(keys, len(keys))]) for _ in range(n_boot)],
    }
    synthetic_threshold = threshold_for_fpr(data.score[synthetic], TARGET)  # never binds (0.16 vs 0.34)
    print("\n| estimator | threshold | recall | corpus FPR | sd over texts | sd over sources | 5-95 % over sources |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, estimate in ESTIMATORS.items():

        def rule(rows: np.ndarray, estimate: Callable[[np.ndarray, np.ndarray], float] = estimate) -> float:
            return max(estimate(data.score[rows], data.source[rows]), synthetic_threshold)

        threshold = rule(corpus)
        spread = {k: np.array([rule(rows) for rows in v]) for k, v in resamples.items()}
        low, high = np.percentile(spread["sources"], [5, 95])
        print(
            f"| {name} | {threshold:.3f} | {_pct((data.score >= threshold)[data.attack])} | "
            f"{_pct((data.score >= threshold)[data.corpus_benign])} | {spread['texts'].std():.4f} | "
            f"{spread['sources'].std():.4f} | {low:.3f}-{high:.3f} |"
        )


# ------------------------------------------------------------------------------------------------ report


def _pct(flags: np.ndarray) -> str:
    """Share of true flags, in per cent (two decimals under 10 %)."""
    rate = 100 * float(np.mean(flags))
    return f"{rate:.1f} %" if rate >= 10 else f"{rate:.2f} %"


def compare(
    data: OutOfFold, held_out_scores: np.ndarray, held_out_length: np.ndarray, edges: Sequence[int], min_texts: int
) -> None:
    """The table of rules: recall, corpus FPR, hard benign alerts in-sample and cross-fitted, held-out templates."""
    base = alerts(data, data.score, single_rule, cross_fitted=True)
    candidates: dict[str, tuple[np.ndarray, Rule]] = {
        "one threshold (shipped)": (data.score, single_rule),
        f"per-length thresholds, edges {list(edges)}": (data.score, length_rule(edges)),
        "90th-percentile source FPR at most the target": (data.score, worst_sources_rule(min_texts)),
        "stacker, logistic regression": (stacked_scores(data, "logistic"), single_rule),
        "stacker, gradient boosting": (stacked_scores(data, "gbm"), single_rule),
    }
    print(
        "| rule | recall | FPR | hard benign | recall, cross-fitted | FPR, cross-fitted | hard, cross-fitted "
        "| Δ recall vs shipped, over texts / over sources | held-out templates alerting |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for name, (scores, rule) in candidates.items():
        inside, crossed = alerts(data, scores, rule, False), alerts(data, scores, rule, True)
        deltas = [
            paired_bootstrap(base[data.attack], crossed[data.attack], c) for c in (None, data.source[data.attack])
        ]
        held_out = "n/a"
        if scores is data.score:  # the shipped model's scores of the proxy prompts, at the rule's thresholds
            everything = np.ones(len(scores), dtype=bool)
            held_out = _pct(held_out_scores >= rule(data, scores, everything, held_out_length))
        print(
            f"| {name} | {_pct(inside[data.attack])} | {_pct(inside[data.corpus_benign])} | "
            f"{inside[data.hard].sum()} | "
            f"{_pct(crossed[data.attack])} | {_pct(crossed[data.corpus_benign])} | {crossed[data.hard].sum()} | "
            + " / ".join(f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]" for d, lo, hi in deltas)
            + f" | {held_out} |"
        )


def per_source(data: OutOfFold, min_texts: int) -> None:
    """Per-source FPR at the shipped threshold (sources of ``min_texts`` or more texts); FPR of each fold at the
    threshold chosen on the other nine."""
    threshold = single_rule(data, data.score, np.ones(len(data.score), dtype=bool), data.length[:1])[0]
    rows = data.corpus_benign
    keys, owner, n = np.unique(data.source[rows], return_inverse=True, return_counts=True)
    false = np.bincount(owner, weights=(data.score[rows] >= threshold).astype(float))
    rate = (false / n)[n >= min_texts]
    print(
        f"\nthreshold {threshold:.4f}: {len(keys)} benign sources, {int(false.sum())} false alerts; "
        f"sources of {min_texts}+ texts: {len(rate)}, FPR median / 90th percentile / max "
        f"{np.percentile(rate, 50):.2%} / {np.percentile(rate, 90):.2%} / {rate.max():.2%}, "
        f"source mean {rate.mean():.2%}"
    )
    observed, predicted = [], []
    for fold in np.unique(data.fold):  # does the nine folds' worst-source FPR predict the tenth fold's FPR?
        held = data.fold == fold
        t = single_rule(data, data.score, ~held, data.length[:1])[0]
        fit = rows & ~held
        _, fit_owner, fit_n = np.unique(data.source[fit], return_inverse=True, return_counts=True)
        fit_rate = np.bincount(fit_owner, weights=(data.score[fit] >= t).astype(float)) / fit_n
        observed.append((data.score[rows & held] >= t).mean())
        predicted.append(np.percentile(fit_rate[fit_n >= min_texts], 90))
        print(f"  fold {fold}: threshold {t:.3f}, held-out FPR {observed[-1]:.2%}, nine folds' p90 {predicted[-1]:.2%}")
    error = np.array(observed) - np.array(predicted)
    print(
        f"  root-mean-square error per fold: p90 source {np.sqrt(np.mean(error**2)):.2%}, "
        f"the rule's target {np.sqrt(np.mean((np.array(observed) - TARGET) ** 2)):.2%}"
    )
    rng = np.random.default_rng(3)
    draws = []
    for _ in range(5000):  # sets of whole sources as large as the test split's benign corpus texts
        order = rng.permutation(len(keys))
        pick = order[: np.searchsorted(np.cumsum(n[order]), 1376) + 1]
        draws.append(false[pick].sum() / n[pick].sum())
    print(
        f"  random sets of sources, >= 1,376 texts: FPR 5-95 % {np.percentile(draws, 5):.2%}-"
        f"{np.percentile(draws, 95):.2%}; at or above the held-out 1.16 %: {np.mean(np.array(draws) >= 0.0116):.0%}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cv_oppoint", description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=corpora.DEFAULT_CACHE, help="corpus folder")
    parser.add_argument("--edges", default="100,500", help="length buckets' edges in characters (%(default)s)")
    parser.add_argument("--boot", type=int, default=200, help="bootstrap resamples of the benign set (%(default)s)")
    parser.add_argument(
        "--min-source-texts", type=int, default=20, help="benign texts a source needs to be judged (%(default)s)"
    )
    args = parser.parse_args(argv)
    records = corpora.load(cache_dir=args.cache_dir)
    test_sources = {r.source for r in records if r.split == "test"}
    train = [r for r in records if r.split == "train"]
    del records  # no test text is kept
    run = tc.fit_train_split(train, test_sources, FeatureConfig(), TrainingOptions())
    data = out_of_fold(run)
    pieces = sorted({s.text for s in run.samples if s.origin == "corpus" and s.label == "benign"})
    proxy = instruction_prompts(pieces, 3000, "cv_oppoint:held-out-templates", held_out=True)
    model = TextClassifier.load()
    proxy_scores = model.score(proxy)[:, model.head_names.index(tc.INJECTION)]
    edges = [int(e) for e in args.edges.split(",")]
    compare(data, proxy_scores, np.array([len(p) for p in proxy]), edges, args.min_source_texts)
    threshold_spread(data, args.boot)
    per_source(data, args.min_source_texts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
