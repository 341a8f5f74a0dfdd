"""Side by side: our signature and exfil tiers against a plain Python ``re`` loop and against LLM Guard.

The same texts (a fixed sample of the workload's texts: prompts, documents, completions, 100 B - 20 KB) go to:

* ours: the built-in rule pack through the signature engine (``CompiledRules.match``, every evasion view), and
  the exfil tier (secrets, PII, leakage) on a one-text event;
* the ``re`` loop: the pack's own expressions compiled with Python ``re`` (``bench.bench_signatures``), one
  ``search`` per pattern per text, on the raw text only (so it does less work than the engine);
* LLM Guard (``bench/peer/setup.sh`` installs it in ``.cache/bench/peer-venv``): its offline input scanners,
  Regex with the same expressions, BanSubstrings with the pack's literals, Secrets and InvisibleText, run by
  ``bench/peer/run_llm_guard.py`` in the peer's own interpreter, with a time budget per scanner.

Every side is timed in CPU seconds (the machine is shared) and reported per text; ratios are ours / theirs
throughput (higher is better for us).
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.bench_signatures import python_re_patterns
from bench.workload import CACHE_DIR, ROOT, WorkloadConfig, load_records, normalise_records, texts
from detectors.base import Findings
from detectors.event import Event, Message
from detectors.signatures import BUILTIN_RULES_DIR, RuleSet

PEER_VENV = CACHE_DIR / "peer-venv"
PEER_SETUP = ROOT / "bench" / "peer" / "setup.sh"
PEER_RUNNER = ROOT / "bench" / "peer" / "run_llm_guard.py"


def sample_texts(count: int, seed: int = 5) -> list[str]:
    """A fixed sample of the workload's texts."""
    events = normalise_records(load_records(WorkloadConfig(events=2_000)))
    everything = texts(events)
    return random.Random(seed).sample(everything, min(count, len(everything)))


def pack_literals(ruleset: RuleSet) -> list[str]:
    """The pack's literal values back from their expressions (whitespace runs become one space)."""
    literals = []
    for item in ruleset.compiled.items.values():
        if not item.regex:
            chunks = item.expression.split(r"\s+")
            literals.append(" ".join(re.sub(r"\\(.)", r"\1", chunk) for chunk in chunks))
    return sorted(set(literals))


def _inline_flags(pattern: re.Pattern[str]) -> str:
    """The pattern with its flags inline: LLM Guard's Regex scanner takes pattern strings only."""
    flags = "".join(
        letter for flag, letter in ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s")) if pattern.flags & flag
    )
    return f"(?{flags}){pattern.pattern}" if flags else pattern.pattern


def _rate(count: int, cpu: float, wall: float) -> dict[str, float]:
    return {
        "texts": count,
        "texts_per_s_cpu": round(count / cpu, 1) if cpu else None,
        "texts_per_s_wall": round(count / wall, 1) if wall else None,
        "ms_per_text_cpu": round(cpu / count * 1000, 3),
    }


def _clock(call: Any, items: list[Any]) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for item in items:
        call(item)
    return _rate(len(items), time.process_time() - cpu, time.perf_counter() - wall)


def ours(ruleset: RuleSet, sample: list[str]) -> dict[str, Any]:
    from bench.bench_engine import shared_pipeline

    exfil = next(d for d in shared_pipeline()[0].detectors if d.name == "exfil")
    events = [
        Event(id=f"peer-{i}", timestamp=0.0, dataset="bench", input_messages=[Message(role="user", content=t)])
        for i, t in enumerate(sample)
    ]
    return {
        "signatures": _clock(lambda text: ruleset.compiled.match([("gen_ai.prompt", text)]), sample),
        "exfil": _clock(lambda event: exfil.detect([event], [Findings()]), events),
    }


def re_loop(ruleset: RuleSet, sample: list[str]) -> dict[str, Any]:
    patterns, skipped = python_re_patterns(ruleset)
    rate = _clock(lambda text: [pattern.search(text) for pattern in patterns], sample)
    return {**rate, "patterns": len(patterns), "patterns_skipped": skipped}


def llm_guard(ruleset: RuleSet, sample: list[str], budget_s: float) -> dict[str, Any]:
    """LLM Guard's scanners in the peer venv; ``{"skipped": reason}`` when it cannot run."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        return {"skipped": f"no peer venv at {PEER_VENV}: run {PEER_SETUP.relative_to(ROOT)}"}
    patterns, _ = python_re_patterns(ruleset)
    texts_file, patterns_file = CACHE_DIR / "peer-texts.json", CACHE_DIR / "peer-patterns.json"
    texts_file.write_text(json.dumps(sample), encoding="utf-8")
    patterns_file.write_text(
        json.dumps({"regexes": [_inline_flags(p) for p in patterns], "literals": pack_literals(ruleset)}),
        encoding="utf-8",
    )
    done = subprocess.run(
        [str(python), str(PEER_RUNNER), str(texts_file), str(patterns_file), str(budget_s)],
        check=False,
        capture_output=True,
        text=True,
        timeout=budget_s * 8 + 300,
    )
    if done.returncode != 0:
        return {"skipped": f"peer failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}"}
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["scanners"] = {
        name: {**_rate(s["texts"], s["seconds_cpu"], s["seconds_wall"]), "flagged": s["flagged"]}
        for name, s in report["scanners"].items()
    }
    return report


def _ratio(mine: dict[str, Any], theirs: dict[str, Any] | None) -> float | None:
    if not theirs or not theirs.get("texts_per_s_cpu") or not mine.get("texts_per_s_cpu"):
        return None
    return round(mine["texts_per_s_cpu"] / theirs["texts_per_s_cpu"], 2)


def run(quick: bool = False) -> dict[str, Any]:
    ruleset = RuleSet.load([Path(BUILTIN_RULES_DIR)])
    sample = sample_texts(20 if quick else 300)
    mine = ours(ruleset, sample)
    loop = re_loop(ruleset, sample)
    peer = llm_guard(ruleset, sample, budget_s=10.0 if quick else 120.0)
    scanners = peer.get("scanners", {})
    return {
        "texts": len(sample),
        "text_chars_mean": round(sum(map(len, sample)) / len(sample)),
        "rules": len(ruleset.rules),
        "ours": mine,
        "python_re_loop": loop,
        "llm_guard": peer,
        "ratios": {
            "signatures_vs_re_loop": _ratio(mine["signatures"], loop),
            "signatures_vs_llm_guard_regex": _ratio(mine["signatures"], scanners.get("Regex")),
            "signatures_vs_llm_guard_ban_substrings": _ratio(mine["signatures"], scanners.get("BanSubstrings")),
            "exfil_vs_llm_guard_secrets": _ratio(mine["exfil"], scanners.get("Secrets")),
        },
    }
