"""Rule conversion: what ``abusewatch rules convert`` costs (detectors/signatures/convert.py, lucene_regex.py).

``python -m bench.bench_convert [--runs 5] [--target lucene] [--top 5] [--rules DIR]``
    Median wall time to convert the built-in pack (or the rules in ``DIR``), each run with the regex-translation
    cache cleared as a fresh ``rules convert`` process starts; the same with the cache warm; and the rules slowest to
    convert on their own. First, the one-time cost of a process's first translation (``[^a]``: a negated class over
    the whole of Unicode, which builds RE2's case tables). Conversion runs offline (hunting queries, CI), never on
    the detection path.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from detectors.signatures import BUILTIN_RULES_DIR, RuleSet
from detectors.signatures.convert import BACKENDS, _translated, convert
from detectors.signatures.lucene_regex import to_lucene


def _median_seconds(work: Callable[[], object], runs: int, before: Callable[[], None] = lambda: None) -> float:
    times = []
    for _ in range(runs):
        before()
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--target", choices=tuple(BACKENDS), default="lucene")
    parser.add_argument("--top", type=int, default=5, help="how many of the slowest rules to list")
    parser.add_argument("--rules", type=Path, default=BUILTIN_RULES_DIR, help="rule directory (default: the pack)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    to_lucene("[^a]")
    print(f"first translation in the process ([^a], builds the case tables): {time.perf_counter() - started:.2f} s")
    rules = RuleSet.load([args.rules]).rules
    cold = _median_seconds(lambda: convert(rules, args.target), args.runs, before=_translated.cache_clear)
    warm = _median_seconds(lambda: convert(rules, args.target), args.runs)
    converted = sum(conversion.query is not None for conversion in convert(rules, args.target))
    print(f"{args.target}: {len(rules)} rules, {converted} converted")
    print(f"  whole pack, cold cache: {cold:.2f} s (median of {args.runs})")
    print(f"  whole pack, warm cache: {warm:.2f} s")

    each = []
    for rule in rules:
        seconds = _median_seconds(lambda rule=rule: convert([rule], args.target), 1, before=_translated.cache_clear)
        each.append((seconds, rule.title))
    print(f"  slowest {args.top} rules on their own (cold cache):")
    for seconds, title in sorted(each, reverse=True)[: args.top]:
        print(f"    {seconds * 1000:8.1f} ms  {title}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
