"""bench.cv_oppoint: per-length thresholds under the shipped rule's budgets, clustered bootstrap, capped quantile."""

from __future__ import annotations

import itertools

import numpy as np

from bench.cv_oppoint import (
    OutOfFold,
    alerts,
    joint_thresholds,
    paired_bootstrap,
    single_rule,
    source_capped_quantile,
)
from detectors.textclf.training import strictest_threshold, threshold_for_fpr


def _example(seed: int) -> tuple[np.ndarray, ...]:
    """Two length buckets: benign corpus / synthetic texts and attacks with bucket-dependent score shifts."""
    rng = np.random.default_rng(seed)
    n = 400
    bucket = rng.integers(0, 2, n)
    kind = rng.choice(3, n, p=[0.45, 0.35, 0.2])  # 0 corpus benign, 1 synthetic benign, 2 attack
    scores = np.round(rng.random(n) * 0.6 + 0.35 * (kind == 2) + 0.15 * bucket * (kind == 0), 3)
    return scores, bucket, kind == 0, kind == 1, kind == 2


def _brute_force(scores, bucket, corpus, synthetic, attacks, fpr):
    """Most attacks caught over every pair of candidate thresholds within both budgets."""
    budget = (np.floor(fpr * corpus.sum()), np.floor(fpr * synthetic.sum()))
    candidates = [np.concatenate([[0.0], np.nextafter(np.unique(scores[bucket == b]), np.inf)]) for b in (0, 1)]
    best = -1
    for pair in itertools.product(*candidates):
        flagged = scores >= np.asarray(pair)[bucket]
        if flagged[corpus].sum() <= budget[0] and flagged[synthetic].sum() <= budget[1]:
            best = max(best, int(flagged[attacks].sum()))
    return best


def test_joint_thresholds_find_the_best_pair_within_both_budgets() -> None:
    for seed in range(3):
        scores, bucket, corpus, synthetic, attacks = _example(seed)
        thresholds = joint_thresholds(scores, bucket, corpus, synthetic, attacks, 2, fpr=0.05)
        flagged = scores >= thresholds[bucket]
        assert flagged[corpus].sum() <= np.floor(0.05 * corpus.sum())
        assert flagged[synthetic].sum() <= np.floor(0.05 * synthetic.sum())
        assert flagged[attacks].sum() == _brute_force(scores, bucket, corpus, synthetic, attacks, 0.05)
        single = strictest_threshold([scores[corpus], scores[synthetic]], 0.05)
        assert flagged[attacks].sum() > (scores[attacks] >= single).sum()  # the buckets' shift is worth using


def test_paired_bootstrap_over_sources_widens_a_gain_held_by_one_source() -> None:
    before = np.zeros(200, dtype=bool)
    after = before.copy()
    after[:20] = True  # every gain in source 0 of ten
    sources = np.repeat(np.arange(10), 20)
    point, low_texts, _ = paired_bootstrap(before, after)
    _, low_sources, _ = paired_bootstrap(before, after, sources)
    assert point == 0.1
    assert low_texts > 0.0
    assert low_sources == 0.0  # a third of the resamples leave source 0 out


def test_source_capped_quantile_down_weights_a_dominant_source() -> None:
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.random(500) * 0.5, 0.6 + rng.random(40) * 0.4])  # the tail: one source
    sources = np.array(["many"] * 100 + [f"s{i}" for i in range(400)] + ["tail"] * 40)
    assert source_capped_quantile(scores, sources, 0.05, cap=1.0) == threshold_for_fpr(scores, 0.05)
    capped = source_capped_quantile(scores, sources, 0.05, cap=0.01)
    assert capped < threshold_for_fpr(scores, 0.05)
    assert capped < 0.6  # the tail source weighs 5.4 of 410.8: under 5 %, so the threshold reaches below it


def test_cross_fitted_alerts_take_each_folds_threshold_from_the_other_folds() -> None:
    """Fold 1's benign texts score high, fold 0's low: each fold is judged at the threshold the other one sets."""
    benign = np.linspace(0.1, 0.3, 100)
    scores = np.concatenate([benign, benign + 0.6, [0.5, 0.5]])  # fold 0 benign, fold 1 benign, one attack each
    fold = np.array([0] * 100 + [1] * 100 + [0, 1])
    attack = np.arange(len(scores)) >= 200
    none = np.zeros(len(scores), dtype=bool)
    data = OutOfFold(
        score=scores, jailbreak=scores, fold=fold, length=np.full(len(scores), 50), source=fold.astype(str),
        corpus_benign=~attack, synthetic_benign=none, attack=attack, prompt_attack=attack, hard=none,
        concepts=np.zeros(len(scores)), non_ascii=np.zeros(len(scores)),
    )  # fmt: skip
    assert not alerts(data, scores, single_rule, cross_fitted=False)[attack].any()  # 0.9 is over both attacks
    crossed = alerts(data, scores, single_rule, cross_fitted=True)
    assert crossed[attack].tolist() == [False, True]  # fold 0 at fold 1's 0.9, fold 1 at fold 0's 0.3
