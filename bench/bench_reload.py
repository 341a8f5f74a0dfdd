"""Hot reload: what the stream worker pays to pick up changed rules and exceptions (app/stream/reload.py).

``python -m bench.bench_reload [--runs 5] [--partitions 8]``
    Median wall time of ``Reloader.load`` (runs beside detection, on the event loop's executor) and
    ``Reloader.apply`` (the swap, on the detector thread, between batches) when nothing changed, when one rule's
    literal changes (the built-in pack plus that rule: a new pattern set for Hyperscan to compile), when a
    correlation rule's threshold changes (the rule directory's signature rules reload too, from the compiled-database
    cache) and when the exceptions file changes (checked against the rules already loaded, as the worker does).
    Each rule change compiles a new database into the compiled-database cache (``~/.cache/abusewatch``), several
    MB a run; the cache keeps the most recently used (``ABW_CACHE_MAX_DATABASES``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from app.engine import build_exceptions
from app.settings import Settings
from app.stream.reload import ExceptionsWatcher, Reloader
from detectors.catalogue import running_rules
from detectors.correlation import BUILTIN_DIR as BUILTIN_CORRELATIONS
from detectors.correlation import CorrelationDetector, CorrelationWatcher
from detectors.pipeline import Pipeline
from detectors.redact import Redactor
from detectors.signatures import RuleSetWatcher, SignatureDetector, default_directories

RULE = """title: Reload benchmark rule
id: 6f1c2a0e-0000-4000-8000-00000000be{n:02d}
status: stable
description: a rule whose literal changes on every run
author: bench
date: 2026-11-22
tags:
  - atlas.aml.t0051.000
  - owasp.llm01
logsource:
  product: llm
detection:
  selection:
    gen_ai.prompt|contains: word{stamp}
  condition: selection
level: low
abusewatch:
  category: prompt_injection
  tests:
    match: ['say word{stamp}']
    nomatch: ['hello']
"""
CORRELATION = """title: Reload benchmark correlation
id: 6f1c2a0e-0000-4000-8000-00000000c0{n:02d}
status: stable
correlation:
  type: event_count
  rules: [category:prompt_injection]
  group-by: [abusewatch.identity_key]
  timespan: 10m
  condition: {{gte: {threshold}}}
level: high
tags: [atlas.aml.t0051.000, owasp.llm01]
abusewatch: {{category: prompt_injection}}
"""
KINDS = ("none", "rules", "correlations", "exceptions")
EXCEPTIONS = (
    "- {id: bench, rules: ['abusewatch-anomaly-scraping-*'], trust_forwarded_ip: true, "
    "match: {source.ip: ['10.0.0.1']}, reason: benchmark, expires: '2099-01-01'}\n"
)


def run(runs: int, partitions: int) -> dict[str, dict[str, float]]:
    """Median load and apply seconds per kind of change (:data:`KINDS`)."""
    rules_dir, exceptions_dir = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
    rule, exceptions = rules_dir / "bench.yml", exceptions_dir / "bench.yml"
    correlation = rules_dir / "correlation.yml"
    stamp = time.time_ns()
    rule.write_text(RULE.format(n=0, stamp=stamp), encoding="utf-8")
    correlation.write_text(CORRELATION.format(n=0, threshold=5), encoding="utf-8")
    exceptions.write_text(EXCEPTIONS, encoding="utf-8")
    os.environ["ABW_DETECTION__RULES_DIR"], os.environ["ABW_DETECTION__EXCEPTIONS_PATH"] = (
        str(rules_dir),
        str(exceptions),
    )
    settings = Settings()
    watcher = RuleSetWatcher(default_directories(rules_dir))
    correlations = CorrelationWatcher([BUILTIN_CORRELATIONS, rules_dir])
    template = Pipeline([SignatureDetector(watcher), CorrelationDetector(correlations)], Redactor(b"bench"))
    stages = [template, *(template.fresh() for _ in range(partitions))]
    reloader = Reloader(
        lambda: stages,
        rules=watcher,
        correlations=correlations,
        exceptions=ExceptionsWatcher(exceptions, lambda: build_exceptions(settings, running_rules(template.detectors))),
    )
    changed = {"rules": rule, "correlations": correlation, "exceptions": exceptions}
    out: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        loads, applies = [], []
        for n in range(runs):
            stamp += 10**9
            if kind == "rules":
                rule.write_text(RULE.format(n=n, stamp=stamp), encoding="utf-8")
            if kind == "correlations":
                correlation.write_text(CORRELATION.format(n=0, threshold=6 + n), encoding="utf-8")
            if kind != "none":
                os.utime(changed[kind], ns=(stamp, stamp))
            started = time.perf_counter()
            changes = reloader.load()
            loads.append(time.perf_counter() - started)
            started = time.perf_counter()
            reloader.apply(changes)
            applies.append(time.perf_counter() - started)
        out[kind] = {"load_s": statistics.median(loads), "apply_s": statistics.median(applies)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_reload", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="changes timed per kind (default: %(default)s)")
    parser.add_argument("--partitions", type=int, default=8, help="partition stages swapped (default: %(default)s)")
    args = parser.parse_args(argv)
    for kind, figures in run(args.runs, args.partitions).items():
        print(f"{kind:12s} load {figures['load_s'] * 1000:9.1f} ms   apply {figures['apply_s'] * 1000:7.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
