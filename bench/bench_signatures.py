"""Signature engine throughput on one core, against a plain Python ``re`` loop over the same patterns.

A deterministic mix of prompts (100 B - 20 KB of benign-ish generated text, a few with attack strings taken from the
rules' own ``match`` examples inserted) runs through :class:`SignatureDetector` with the whole rule set (built-in
pack plus the engine fixtures when the pack is small). The baseline is what one would write without the engine:
for every text, ``re.search`` with each pattern in turn, on the raw text only (no evasion views), so the comparison
favours the baseline; it runs for ``--baseline-budget`` seconds over a prefix of the same texts. The pathological
input ``"a" * 100_000 + "!"`` is timed for the engine, and for the baseline in a child process that is killed after
``--pathological-timeout`` seconds.

``python -m bench.bench_signatures [--events N] [--out results.json]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

from detectors.base import Findings
from detectors.event import Event, Message
from detectors.signatures import BUILTIN_RULES_DIR, RuleSet, SignatureDetector
from detectors.signatures.ruleset import rule_files

FIXTURE_RULES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "rules" / "valid"
SMALL_PACK = 40
PATHOLOGICAL = "a" * 100_000 + "!"
BATCH = 100

_VOCABULARY = (
    "the of and to in is that for it as with was on be by this are from or have an they which one you had not but "
    "what all were when we there can your more if will about how up out them then she many some so these would "
    "other into has her two like him see time could no make than first been its who now people my made over did "
    "down only way find use may water long little very after words called just where most know get through back "
    "much before go good new write our used me man too any day same right look think also around another came come "
    "work three word must because does part even place well such here take why things help put years different "
    "away again off went old number great tell men say small every found still between name should home big give "
    "air line set own under read last never us left end along while might next sound below saw something thought "
    "both few those always looked show large often together asked house world going want school important until "
    "form food keep children feet land side without boy once animals life enough took sometimes four head above "
    "kind began almost live page got earth need far hand high year mother light parts country father let night "
    "report invoice customer order shipping refund account password reset login error server deploy function "
    "python code query table column summary translate email draft meeting schedule budget quarterly revenue"
)
_WORDS = tuple(_VOCABULARY.split())
_PUNCTUATION = (". ", ", ", "? ", "! ", "\n", ": ", "; ")


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 18))]
    words[0] = words[0].capitalize()
    return " ".join(words) + rng.choice(_PUNCTUATION)


def generate_texts(count: int, attacks: list[str], seed: int = 7, attack_share: float = 0.05) -> list[str]:
    """``count`` texts with log-uniform lengths in 100 B - 20 KB; ``attack_share`` of them carry an attack."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        target = int(10 ** rng.uniform(2, 4.3))
        parts: list[str] = []
        size = 0
        while size < target:
            parts.append(_sentence(rng))
            size += len(parts[-1])
        if attacks and rng.random() < attack_share:
            parts.insert(rng.randrange(len(parts) + 1), " " + rng.choice(attacks) + " ")
        texts.append("".join(parts)[: max(target, 100)])
    return texts


def load_rules() -> RuleSet:
    directories = [BUILTIN_RULES_DIR]
    if len(rule_files([BUILTIN_RULES_DIR])) < SMALL_PACK:
        directories.append(FIXTURE_RULES)
    return RuleSet.load(directories)


def attack_examples(ruleset: RuleSet) -> list[str]:
    return [
        text
        for rule in ruleset.rules
        for case in rule.tests
        if case.expect_match
        for field, text in case.fields.items()
        if field == "gen_ai.prompt"
    ]


def python_re_patterns(ruleset: RuleSet) -> tuple[list[re.Pattern[str]], int]:
    """The engine's item expressions compiled with Python ``re`` (those ``re`` cannot compile are skipped)."""
    compiled, skipped = [], 0
    for item in ruleset.compiled.items.values():
        flags = (0 if item.cased else re.IGNORECASE) | (re.DOTALL if item.dotall else 0)
        flags |= re.MULTILINE if item.multiline else 0
        try:
            compiled.append(re.compile(item.expression, flags))
        except re.error:
            skipped += 1
    return compiled, skipped


def _python_re_scan(patterns: list[re.Pattern[str]], texts: list[str], budget: float = float("inf")) -> int:
    """Search every text with every pattern; stop after the text that exhausts ``budget`` seconds. Texts done."""
    deadline = time.perf_counter() + budget
    for done, text in enumerate(texts, 1):
        for pattern in patterns:
            pattern.search(text)
        if time.perf_counter() > deadline:
            return done
    return len(texts)


def _baseline_pathological(expressions: list[tuple[str, int]], queue: Any) -> None:
    patterns = [re.compile(expression, flags) for expression, flags in expressions]
    start = time.perf_counter()
    _python_re_scan(patterns, [PATHOLOGICAL])
    queue.put(time.perf_counter() - start)


def time_baseline_pathological(patterns: list[re.Pattern[str]], timeout: float) -> float | None:
    """Seconds the ``re`` loop takes on the pathological input, or ``None`` if it had to be killed."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(
        target=_baseline_pathological, args=([(p.pattern, p.flags) for p in patterns], queue), daemon=True
    )
    process.start()
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()
        return None
    return queue.get() if not queue.empty() else None


def run(events: int, pathological_timeout: float, baseline_budget: float) -> dict[str, Any]:
    started = time.perf_counter()
    ruleset = load_rules()
    load_seconds = time.perf_counter() - started
    texts = generate_texts(events, attack_examples(ruleset))
    batch = [
        Event(id=str(i), timestamp=0.0, dataset="bench", input_messages=[Message(role="user", content=text)])
        for i, text in enumerate(texts)
    ]
    megabytes = sum(len(text.encode("utf-8")) for text in texts) / 1e6
    detector = SignatureDetector(ruleset)

    start = time.perf_counter()
    detections = 0
    for offset in range(0, len(batch), BATCH):
        chunk = batch[offset : offset + BATCH]
        detections += len(detector.detect(chunk, [Findings() for _ in chunk]))
    engine_seconds = time.perf_counter() - start

    patterns, skipped = python_re_patterns(ruleset)
    lowered = [text.lower() for text in texts]
    start = time.perf_counter()
    baseline_events = _python_re_scan(patterns, lowered, baseline_budget)
    baseline_seconds = time.perf_counter() - start
    baseline_megabytes = sum(len(text.encode("utf-8")) for text in lowered[:baseline_events]) / 1e6
    engine_rate = megabytes / engine_seconds
    baseline_rate = baseline_megabytes / baseline_seconds

    start = time.perf_counter()
    pathological_hits = ruleset.compiled.match([("gen_ai.prompt", PATHOLOGICAL)]).hits
    engine_pathological = time.perf_counter() - start
    baseline_pathological = time_baseline_pathological(patterns, pathological_timeout)

    return {
        "rules": len(ruleset.rules),
        "patterns": ruleset.compiled.pattern_count,
        "rule_load_seconds": round(load_seconds, 2),
        "events": len(texts),
        "megabytes": round(megabytes, 2),
        "detections": detections,
        "engine": {
            "seconds": round(engine_seconds, 3),
            "events_per_second": round(len(texts) / engine_seconds, 1),
            "mb_per_second": round(megabytes / engine_seconds, 2),
        },
        "python_re_loop": {
            "patterns": len(patterns),
            "patterns_skipped": skipped,
            "events_measured": baseline_events,
            "seconds": round(baseline_seconds, 3),
            "events_per_second": round(baseline_events / baseline_seconds, 1),
            "mb_per_second": round(baseline_rate, 2),
        },
        "speedup_vs_python_re_mb_per_s": round(engine_rate / baseline_rate, 2),
        "pathological": {
            "input": "'a' * 100_000 + '!'",
            "engine_seconds": round(engine_pathological, 4),
            "engine_hits": len(pathological_hits),
            "python_re_seconds": None if baseline_pathological is None else round(baseline_pathological, 4),
            "python_re_killed_after_seconds": pathological_timeout if baseline_pathological is None else None,
        },
    }


def print_table(result: dict[str, Any]) -> None:
    engine, baseline, pathological = result["engine"], result["python_re_loop"], result["pathological"]
    print(f"rules {result['rules']}, patterns {result['patterns']}, load {result['rule_load_seconds']} s")
    print(f"events {result['events']} ({result['megabytes']} MB), detections {result['detections']}")
    print(f"{'':24}{'events/s':>12}{'MB/s':>10}{'seconds':>10}")
    print(
        f"{'signature engine':24}{engine['events_per_second']:>12}{engine['mb_per_second']:>10}{engine['seconds']:>10}"
    )
    print(
        f"{'python re loop (raw)':24}{baseline['events_per_second']:>12}{baseline['mb_per_second']:>10}"
        f"{baseline['seconds']:>10}"
    )
    print(f"speed-up vs python re (MB/s): {result['speedup_vs_python_re_mb_per_s']}x")
    killed = pathological["python_re_killed_after_seconds"]
    baseline_text = f"killed after {killed} s" if killed else f"{pathological['python_re_seconds']} s"
    print(f"pathological {pathological['input']}: engine {pathological['engine_seconds']} s, python re {baseline_text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--pathological-timeout", type=float, default=5.0)
    parser.add_argument("--baseline-budget", type=float, default=10.0, help="seconds for the python re loop")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    result = run(args.events, args.pathological_timeout, args.baseline_budget)
    print_table(result)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
