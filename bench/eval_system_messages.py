"""What judging client-written system messages (``detection.judge_system_messages``) costs and catches.

    python -m bench.eval_system_messages [--split test|train] [--timing]

Benign side: the system prompts of the bundled sample applications (``app.traffic.pools``, the prompts of
``app/samples/``), each judged as the option judges it: the prompt rules (the built-in pack) and the classifier,
against its system thresholds (unset: the document thresholds) and, for comparison, its prompt thresholds. Attack
side: each corpus attack of the injection and jailbreak families (``bench.corpora``) placed in a system message after
the analytics assistant's benign prompt (its lowest-scoring one), scored by the classifier at both operating points.
The rules judge a system text exactly as a prompt, so their recall and false-positive rate are
``bench.eval_rules``'s. ``--timing``: the signature tier over the bundled samples' chat events with the option off
and on, verdict cache off and no session history (every event judges its system prompt: the worst case), median of 7
passes. How many more alerts the option raises on the bundled traffic: ``abusewatch demo`` with and without
``ABW_DETECTION__JUDGE_SYSTEM_MESSAGES=true`` (docs/rules.md, "Client-written system messages").
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from app.commands.replay import SAMPLES_DIR
from app.traffic.pools import ANALYTICS_SYSTEM, CODING_SYSTEM, SUPPORT_SYSTEM
from bench.corpora import SPLITS, load
from detectors.base import Findings
from detectors.event import PROMPT, Event
from detectors.normalise import NormaliseError, normalise
from detectors.signatures import BUILTIN_RULES_DIR, RuleSet, SignatureDetector
from detectors.textclf.detector import INJECTION_HEAD, TextClassifierDetector

APPLICATIONS = {"support": SUPPORT_SYSTEM, "coding": CODING_SYSTEM, "analytics": ANALYTICS_SYSTEM}
FAMILIES = ("prompt_injection", "jailbreak_persona", "system_prompt_extraction", "jailbreak_other")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=SPLITS, default="test")
    parser.add_argument("--timing", action="store_true", help="also time the signature tier, option off and on")
    args = parser.parse_args(argv)
    rules = RuleSet.load([BUILTIN_RULES_DIR])
    if args.timing:
        events = sample_events()
        for judge in (False, True):
            seconds = signature_seconds(SignatureDetector(rules, cache_size=0, judge_system_messages=judge), events)
            print(
                f"signature tier, option {'on' if judge else 'off'}: {seconds * 1000:.1f} ms for {len(events)} events"
            )
    classifier = TextClassifierDetector()
    head = classifier.model.head_names.index(INJECTION_HEAD)
    system, prompt = classifier.system_threshold, classifier.threshold
    print(f"classifier thresholds: system {system:.4f}, prompt {prompt:.4f}")
    print("\nbenign sample-application system prompts (score, rules matched):")
    scores = classifier.model.analyse(list(APPLICATIONS.values())).scores[:, head]
    for (name, text), score in zip(APPLICATIONS.items(), scores, strict=True):
        matched = sorted(hit.rule.title for hit in rules.compiled.match([(PROMPT, text)]).hits)
        print(
            f"  {name:10} {score:.3f}  alerts at system threshold: {score >= system!s:5}  at prompt threshold: "
            f"{score >= prompt!s:5}  rules: {matched or 'none'}"
        )
    print(f"\n{args.split}-split attacks in a system message, share the classifier flags:")
    corpus = load(args.split)
    for family in FAMILIES:
        texts = [f"{ANALYTICS_SYSTEM}\n\n{record.text}" for record in corpus if record.family == family]
        family_scores = classifier.model.analyse(texts).scores[:, head]
        print(
            f"  {family:26} n={len(texts):4}  system threshold {np.mean(family_scores >= system):.2f}  "
            f"prompt threshold {np.mean(family_scores >= prompt):.2f}"
        )


def sample_events() -> list[Event]:
    """The bundled samples' records that normalise one by one (each file's chat records)."""
    events = []
    for path in sorted(SAMPLES_DIR.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                events.append(normalise(json.loads(line)))
            except NormaliseError:
                continue
    return events


def signature_seconds(detector: SignatureDetector, events: list[Event], passes: int = 7) -> float:
    """Median seconds of one pass of ``detector`` over ``events`` (after a warm-up pass)."""
    detector.detect(events, [Findings() for _ in events])
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        detector.detect(events, [Findings() for _ in events])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


if __name__ == "__main__":
    main()
