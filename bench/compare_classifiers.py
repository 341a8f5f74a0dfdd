"""Compare classifier artifacts on the corpus's held-out split, alone and beside the signature rules.

``python -m bench.compare_classifiers DIR [DIR ...] [--also-held-out-in OLD_CORPUS.jsonl]``
    For each artifact directory (``textclf.json`` + ``textclf.npz``, e.g. ``detectors/models`` or one extracted
    from an older commit with ``git show <rev>:detectors/models/textclf.json``): recall on held-out in-scope
    attacks and FPR on held-out benign texts at the artifact's own prompt threshold, recall at a threshold picked
    on the test set for 1 % FPR (for reference only), the rate at which the held-out hard benign prompts alert
    (the test split's synthetic instruction prompts, exactly as ``bench.train_classifier`` builds them), and
    recall / FPR when a stable signature rule may also flag the prompt. ``--also-held-out-in`` restricts the
    attacks to those that were held out in another corpus build too, so an artifact trained on that build is
    scored only on text it never saw. The model card's version comparisons come from this command.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench import corpora
from bench import train_classifier as trainer
from detectors.event import PROMPT
from detectors.signatures import BUILTIN_RULES_DIR, RuleSet
from detectors.signatures.compiler import CompiledRules
from detectors.textclf.model import TextClassifier
from detectors.textclf.training import threshold_for_fpr


def held_out_texts(old_corpus: Path) -> set[str]:
    with old_corpus.open(encoding="utf-8") as handle:
        return {record["text"] for record in map(json.loads, handle) if record["split"] == "test"}


def _stable_rule_hit(rules: CompiledRules, text: str) -> bool:
    """Whether a stable signature rule flags ``text`` as a user prompt."""
    return any(hit.rule.status == "stable" for hit in rules.match([(PROMPT, text)]).hits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="artifact directories")
    parser.add_argument("--also-held-out-in", type=Path, help="another corpus build's corpus.jsonl")
    args = parser.parse_args(argv)
    records = corpora.load()
    train = [r for r in records if r.split == "train"]
    test = sorted(r for r in records if r.split == "test")
    test_in_scope = [r for r in test if trainer.in_scope(r)]
    attacks = [r for r in test_in_scope if r.label == "attack"]
    if args.also_held_out_in:
        before = held_out_texts(args.also_held_out_in)
        attacks = [r for r in attacks if r.text in before]
    benign = [r for r in test_in_scope if r.label == "benign"]
    split_sources = frozenset({r.source for r in train} & {r.source for r in test})
    folds = {trainer.fold_key(r, split_sources): 0 for r in test}
    samples = trainer.with_synthetic(test, folds, f"{trainer.SEED}:test", 1.2, split_sources, 1.0, True)
    hard = [s.text for s in samples if s.origin == trainer.TASK_PROMPT]
    rules = RuleSet.load([BUILTIN_RULES_DIR]).compiled
    stable = {r.text: _stable_rule_hit(rules, r.text) for r in attacks + benign}
    print(f"held-out attacks {len(attacks)}, benign texts {len(benign)}, hard benign prompts {len(hard)}")
    for directory in args.models:
        model = TextClassifier.load(directory)
        threshold = model.head(trainer.INJECTION).threshold
        column = model.head_names.index(trainer.INJECTION)
        attack_scores = model.score([r.text for r in attacks])[:, column]
        benign_scores = model.score([r.text for r in benign])[:, column]
        hard_scores = model.score(hard)[:, column]
        at_one_percent = threshold_for_fpr(benign_scores, 0.01)
        caught = attack_scores >= threshold
        alerted = benign_scores >= threshold
        with_rules = caught | np.array([stable[r.text] for r in attacks])
        alerted_with_rules = alerted | np.array([stable[r.text] for r in benign])
        print(
            f"{directory} (v{model.version}): recall {caught.mean():.1%} at FPR {alerted.mean():.2%}; "
            f"recall at a test-picked 1 % FPR {np.mean(attack_scores >= at_one_percent):.1%}; "
            f"hard benign prompts alerting {np.mean(hard_scores >= threshold):.1%}; "
            f"with stable rules {with_rules.mean():.1%} at FPR {alerted_with_rules.mean():.2%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
