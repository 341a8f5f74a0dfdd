"""How cost scales: with prompt length, with the number of signature rules, and with worker processes.

* Prompt length: prompts cut to 100 B, 1 KB, 4 KB and 20 KB from the workload's texts, through the signature tier
  alone and through the whole pipeline, each on texts its verdict cache has not seen; CPU microseconds per event
  (wall too).
* Rules: ``N`` synthetic Sigma rules in the product's format (distinct literals and a regex each, see
  :func:`synthetic_rule`) compiled with the engine (compile wall/CPU seconds, RSS growth) and scanned over the
  workload's texts (CPU per text): the engine should cost about the same with 100 or 10,000 rules.
* Workers: the workload split over 1 and 2 processes, each with its own pipeline (the per-core model the stream
  uses: one worker process per core, partitions spread over them); aggregate events/s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import time
import uuid
from collections.abc import Sequence
from typing import Any

from bench.bench_engine import machine, shared_pipeline
from bench.process_memory import rss_bytes
from bench.workload import WorkloadConfig, load_records, normalise_records
from detectors.base import Findings
from detectors.event import Event, Message
from detectors.pipeline import Pipeline
from detectors.signatures import RuleSet, SignatureDetector

LENGTHS = (100, 1_000, 4_000, 20_000)
RULE_COUNTS = (100, 1_000, 10_000)
PARTS = ("length", "rules", "workers")
WARM_UP_TEXTS, WARM_UP_LENGTH = 10, 500  # a length not in LENGTHS: no event id or text of the timed runs
_WORDS = (
    "ignore",
    "disregard",
    "override",
    "bypass",
    "reveal",
    "expose",
    "print",
    "dump",
    "leak",
    "forget",
    "pretend",
    "unlock",
    "disable",
    "escape",
    "repeat",
    "system",
    "hidden",
    "secret",
    "developer",
    "admin",
    "root",
    "internal",
    "confidential",
    "prior",
    "earlier",
    "above",
    "initial",
    "original",
    "policy",
    "filter",
    "guard",
    "safety",
    "moderation",
    "persona",
    "mode",
    "character",
    "roleplay",
    "token",
    "prompt",
    "instruction",
    "directive",
    "rule",
)


def synthetic_rule(index: int, regex: bool = True) -> str:
    """One Sigma rule in the product format: two distinct phrases and (``regex``) a distinct regex, unique to ``index``.

    Literal values share one matcher per field; each ``re`` value is compiled into its rule's own matcher, so the
    two kinds scale differently with the number of rules: both are measured.
    """
    rng = random.Random(index)
    words = rng.sample(_WORDS, 6)
    tag = f"{index:05d}"
    rule_id = uuid.UUID(int=random.Random(f"rule-{index}").getrandbits(128), version=4)
    return f"""title: Synthetic rule {tag}
id: {rule_id}
status: stable
description: Generated for the rule-count benchmark.
tags:
  - atlas.aml.t0051.000
  - owasp.llm01
logsource:
  product: llm
  category: prompt
detection:
  selection_phrase:
    gen_ai.prompt|contains:
      - '{words[0]} the {words[1]} {words[2]} k{tag}'
      - '{words[3]} all {words[4]} q{tag}'
  selection_regex:
    gen_ai.prompt|re: '{words[5]}\\s+(now|please)\\s+x{tag}\\b'
  condition: {"selection_phrase or selection_regex" if regex else "selection_phrase"}
level: medium
abusewatch:
  category: prompt_injection
"""


def _prompt_events(texts: Sequence[str], length: int) -> list[Event]:
    events = []
    for index, text in enumerate(texts):
        body = (text * (length // max(len(text), 1) + 1))[:length]
        events.append(
            Event(
                id=f"len-{length}-{index}",
                timestamp=0.0,
                dataset="bench",
                input_messages=[Message(role="user", content=body)],
            )
        )
    return events


def _cost(call: Any, events: Sequence[Event], batch: int = 100) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for offset in range(0, len(events), batch):
        call(events[offset : offset + batch])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "us_per_event_cpu": round(cpu / len(events) * 1e6, 1),
        "us_per_event_wall": round(wall / len(events) * 1e6, 1),
    }


def by_length(texts: Sequence[str], count: int, pipeline: Pipeline | None = None) -> dict[str, Any]:
    """CPU and wall per event at each of :data:`LENGTHS`: the signature tier alone, then the whole ``pipeline``
    (default: the engine's), each on the same events with the signature tier's verdict cache emptied first.

    Both are timed cold: were the cache left holding the texts the tier alone has just scanned, the whole
    pipeline would skip their scans and come out cheaper than its signature tier on long prompts. A warm-up batch
    of other prompts first takes the one-time costs (lazy tables, matcher scratch space) out of the first length.
    """
    pipeline = pipeline or shared_pipeline()[0]
    signatures = next(d for d in pipeline.detectors if isinstance(d, SignatureDetector))
    pipeline.process(_prompt_events(texts[:WARM_UP_TEXTS], WARM_UP_LENGTH))
    results = {}
    for length in LENGTHS:
        events = _prompt_events(texts[:count], length)
        _forget_verdicts(signatures)
        alone = _cost(lambda batch: signatures.detect(batch, [Findings() for _ in batch]), events)
        _forget_verdicts(signatures)
        results[str(length)] = {"signatures": alone, "pipeline": _cost(pipeline.process, events)}
    return results


def _forget_verdicts(signatures: SignatureDetector) -> None:
    if signatures.cache is not None:
        signatures.cache.clear()


def by_rules(texts: Sequence[str], counts: Sequence[int], regex: bool = True) -> dict[str, Any]:
    events = [
        Event(id=f"r-{i}", timestamp=0.0, dataset="bench", input_messages=[Message(role="user", content=text)])
        for i, text in enumerate(texts)
    ]
    results = {}
    for count in counts:
        sources = [synthetic_rule(index, regex) for index in range(count)]
        rss, wall, cpu = rss_bytes(), time.perf_counter(), time.process_time()
        ruleset = RuleSet.from_texts(sources)
        compile_wall, compile_cpu = time.perf_counter() - wall, time.process_time() - cpu
        grown = rss_bytes() - rss
        detector = SignatureDetector(ruleset)
        scan = _cost(lambda batch, d=detector: d.detect(batch, [Findings() for _ in batch]), events)
        results[str(count)] = {
            "rules_loaded": len(ruleset.rules),
            "rule_errors": len(ruleset.errors),
            "patterns": ruleset.compiled.pattern_count,
            "compile_seconds_wall": round(compile_wall, 2),
            "compile_seconds_cpu": round(compile_cpu, 2),
            "compile_rss_growth_mb": round(grown / 2**20, 1),
            "scan": scan,
        }
        del ruleset, detector
    return results


def _worker(events: list[Event], ready: Any, go: Any, out: Any) -> None:
    pipeline, _ = shared_pipeline()  # built by the parent before the fork
    ready.put(True)
    go.wait()
    wall, cpu = time.perf_counter(), time.process_time()
    for offset in range(0, len(events), 500):
        pipeline.process(events[offset : offset + 500])
    out.put((time.perf_counter() - wall, time.process_time() - cpu, len(events)))


def by_workers(events: Sequence[Event], workers: int) -> dict[str, Any]:
    """Events split by identity over ``workers`` processes, started together once each has built its pipeline."""
    shared_pipeline()
    context = multiprocessing.get_context("fork")
    ready, out, go = context.Queue(), context.Queue(), context.Event()
    shares: list[list[Event]] = [[] for _ in range(workers)]
    for event in events:
        shares[hash(event.identity.key()) % workers].append(event)
    processes = [context.Process(target=_worker, args=(share, ready, go, out)) for share in shares]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get()
    go.set()
    results = [out.get() for _ in processes]
    for process in processes:
        process.join()
    slowest = max(wall for wall, _, _ in results)
    return {
        "workers": workers,
        "events_per_s_wall": round(len(events) / slowest, 1),
        "events_per_s_cpu_per_worker": [round(n / cpu, 1) for _, cpu, n in results],
    }


def run(quick: bool = False, parts: Sequence[str] = PARTS) -> dict[str, Any]:
    """The ``parts`` (all by default, as ``python -m bench`` runs them) on the seeded workload."""
    records = load_records(WorkloadConfig(events=300 if quick else 5_000))
    events = normalise_records(records)
    prompts = [m.content for e in events for m in e.input_messages if m.content]
    rule_counts = (10, 100) if quick else RULE_COUNTS
    before = machine()["load_average"]
    result: dict[str, Any] = {}
    if "length" in parts:
        result["prompt_length"] = by_length(prompts, 5 if quick else 100)
    if "rules" in parts:
        result["rule_count"] = by_rules(prompts[: 20 if quick else 300], rule_counts)
        result["rule_count_literals_only"] = by_rules(prompts[: 20 if quick else 300], rule_counts, regex=False)
    if "workers" in parts:
        result["worker_processes"] = [by_workers(events[: 40 if quick else 2_000], n) for n in (1, 2)]
    result["load_average"] = {"before": before, "after": machine()["load_average"]}
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=PARTS, action="append", help="run only this part (repeatable; default all)")
    parser.add_argument("--quick", action="store_true", help="small workloads: a smoke run, figures not quotable")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.quick, args.part or PARTS), indent=2))


if __name__ == "__main__":
    main()
