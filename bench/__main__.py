"""``python -m bench`` (``make bench``): the one entry point of the benchmark suite.

Runs the selected parts (``--only engine,signatures,scaling,memory,peer,e2e``; default: all) and writes
``bench/results/latest.json`` and the markdown table ``bench/results/latest.md``. A part that is not selected
keeps its previous result in ``latest.json`` (with its own timestamp), so parts can be refreshed one at a time;
the update is done under a file lock. ``--quick`` runs every part on a small workload (a smoke run: its figures
are not meant to be quoted) and writes to ``--out`` only (default ``.cache/bench/quick``).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import bench_e2e, bench_engine, bench_memory, bench_peer, bench_scaling
from bench.workload import CACHE_DIR, ROOT

RESULTS = ROOT / "bench" / "results"


def _signatures(quick: bool) -> dict[str, Any]:
    """The signature helper's own benchmark (``bench.bench_signatures``): engine vs ``re`` loop on its texts."""
    from bench import bench_signatures

    return bench_signatures.run(
        events=300 if quick else 3_000,
        pathological_timeout=5.0 if quick else 30.0,
        baseline_budget=10.0 if quick else 60.0,  # seconds for its re loop
        workload_events=200 if quick else 2_000,
    )


PARTS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "engine": lambda quick: bench_engine.run(quick=quick),
    "signatures": _signatures,
    "scaling": lambda quick: bench_scaling.run(quick=quick),
    "memory": lambda quick: bench_memory.run(quick=quick),
    "peer": lambda quick: bench_peer.run(quick=quick),
    "e2e": lambda quick: bench_e2e.run(quick=quick),
}


def run_part(name: str, quick: bool, profile_to: Path | None = None) -> dict[str, Any]:
    """One part's result, stamped; a part that fails is reported as failed, the others still run.

    With ``profile_to``, the part runs under pyinstrument (sampling, in-process parts only) and the call tree is
    written there as text.
    """
    started = time.perf_counter()
    profiler = None
    if profile_to is not None:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.005)
        profiler.start()
    try:
        result = PARTS[name](quick)
    except Exception as error:  # a broken part must not lose the others' results
        traceback.print_exc()
        result = {"failed": f"{type(error).__name__}: {error}"}
    if profiler is not None and profile_to is not None:
        profiler.stop()
        profile_to.parent.mkdir(parents=True, exist_ok=True)
        profile_to.write_text(profiler.output_text(unicode=False, color=False), encoding="utf-8")
    result["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["part_seconds"] = round(time.perf_counter() - started, 1)
    return result


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _numeric(mapping: dict[str, Any]) -> list[tuple[str, Any]]:
    """Items keyed by numbers-as-strings in numeric order (the JSON report sorts its keys as text)."""
    return sorted(mapping.items(), key=lambda item: int(item[0]))


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]


def _verdict(value: float | None, ok: bool | None) -> str:
    return "not measured" if value is None or ok is None else ("met" if ok else "NOT met")


def targets(parts: dict[str, Any]) -> list[list[Any]]:
    """The issue's targets against the latest figures."""
    engine_rate = _get(parts, "engine", "throughput", "total", "events_per_s_cpu")
    engine_p99 = _get(parts, "engine", "latency", "total", "p99_ms")
    runs = _get(parts, "e2e", "runs") or []
    best = max(runs, key=lambda run: run.get("sustained_events_per_s") or 0, default={})
    e2e_rate, e2e_p99 = best.get("sustained_events_per_s"), _get(best, "alert_latency", "p99_ms")
    loss = all(run.get("zero_loss") for run in runs) if runs else None
    re_ratio = _get(parts, "peer", "ratios", "signatures_vs_re_loop")
    scans = [_get(entry, "scan", "us_per_event_cpu") for entry in (_get(parts, "scaling", "rule_count") or {}).values()]
    scans = [value for value in scans if value]
    flatness = round(max(scans) / min(scans), 2) if len(scans) > 1 else None
    return [
        [
            "engine events/s per core (CPU time)",
            ">= 10,000",
            engine_rate,
            _verdict(engine_rate, engine_rate and engine_rate >= 10_000),
        ],
        [
            "engine p99 per event (ms, wall)",
            "< 5",
            engine_p99,
            _verdict(engine_p99, engine_p99 is not None and engine_p99 < 5),
        ],
        ["e2e sustained events/s", ">= 3,000", e2e_rate, _verdict(e2e_rate, e2e_rate and e2e_rate >= 3_000)],
        ["e2e p99 alert latency (ms)", "< 2,000", e2e_p99, _verdict(e2e_p99, e2e_p99 is not None and e2e_p99 < 2_000)],
        ["e2e zero loss", "yes", loss, _verdict(loss, loss)],
        ["signatures vs plain re loop (x)", ">= 100", re_ratio, _verdict(re_ratio, re_ratio and re_ratio >= 100)],
        [
            "scan cost max/min, 100 -> 10,000 rules",
            "flat (<= 1.5)",
            flatness,
            _verdict(flatness, flatness and flatness <= 1.5),
        ],
    ]


def _tier_order(tier: str) -> int:
    return bench_engine.TIERS.index(tier) if tier in bench_engine.TIERS else len(bench_engine.TIERS)


def _rule_table(kind: str, entries: dict[str, Any]) -> list[str]:
    header = ["rules", "loaded", "patterns", "compile s (CPU)", "compile RSS MB", "scan us/event (CPU)"]
    rows = [
        [count, v["rules_loaded"], v["patterns"], v["compile_seconds_cpu"], v["compile_rss_growth_mb"],
         v["scan"]["us_per_event_cpu"]]
        for count, v in _numeric(entries)
    ]  # fmt: skip
    return ["", f"## Cost vs number of rules ({kind}; workload prompts)", "", *_table(header, rows)]


def markdown(report: dict[str, Any]) -> str:
    """The human-readable table of ``report`` (``latest.md``)."""
    parts, machine = report["parts"], report["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"`{report['command']}` on {machine['cpu']} ({machine['cpus']} CPUs), Python {machine['python']}; "
        f"load average when written {machine['load_average']}. Per-core figures use CPU time (the machine is "
        "shared); wall-clock figures are given next to them. Each part records its own time and load average in "
        "latest.json.",
        "",
        "## Targets",
        "",
        *_table(["target", "wanted", "measured", "verdict"], targets(parts)),
    ]
    engine = parts.get("engine", {})
    if "throughput" in engine:
        latency = engine["latency"]["tiers"]
        rows = [
            [tier, numbers["events_per_s_cpu"], numbers["events_per_s_wall"], numbers["us_per_event_cpu"],
             _get(latency, tier, "p50_ms"), _get(latency, tier, "p99_ms")]
            for tier, numbers in sorted(engine["throughput"]["tiers"].items(), key=lambda item: _tier_order(item[0]))
        ]  # fmt: skip
        total = engine["throughput"]["total"]
        rows.append(["**whole pipeline**", total["events_per_s_cpu"], total["events_per_s_wall"], None,
                     engine["latency"]["total"]["p50_ms"], engine["latency"]["total"]["p99_ms"]])  # fmt: skip
        lines += ["", f"## Engine, one core ({engine['workload']['events']:,} events, batches of "
                  f"{engine['workload']['batch_size']}; load {engine['load_average']['before']})", ""]  # fmt: skip
        lines += _table(["tier", "events/s (CPU)", "events/s (wall)", "us/event (CPU)", "p50 ms", "p99 ms"], rows)
        lines += ["", f"Notes: {engine.get('notes') or 'none'}"]
    scaling = parts.get("scaling", {})
    if "prompt_length" in scaling:
        rows = [[length, _get(v, "signatures", "us_per_event_cpu"), _get(v, "pipeline", "us_per_event_cpu")]
                for length, v in _numeric(scaling["prompt_length"])]  # fmt: skip
        lines += ["", "## Cost vs prompt length (CPU us per event)", ""]
        lines += _table(["prompt chars", "signatures", "whole pipeline"], rows)
        lines += _rule_table("2 literals + 1 regex per rule", scaling["rule_count"])
        if "rule_count_literals_only" in scaling:
            lines += _rule_table("2 literals per rule, no regex", scaling["rule_count_literals_only"])
        rows = [
            [w["workers"], w["events_per_s_wall"], w["events_per_s_cpu_per_worker"]]
            for w in scaling["worker_processes"]
        ]
        lines += ["", "## Worker processes (engine only)", ""]
        lines += _table(["processes", "aggregate events/s (wall)", "events/s per process (CPU)"], rows)
    memory = parts.get("memory", {})
    if "engine_rss_mb" in memory:
        load = f"; load {memory['load_average']['before']}" if "load_average" in memory else ""
        lines += ["", f"## Memory ({memory['identities']:,} identities driven, scaled to 100,000{load})", ""]
        lines += _table(
            ["engine RSS MB", "RSS growth MB / 100k identities", "state JSON MB / 100k identities", "largest state",
             "checkpoint MB / 100k identities", "checkpoint CPU s / 100k identities"],
            [[memory["engine_rss_mb"], memory["rss_growth_mb_per_100k_identities"],
              memory["state_json_mb_per_100k_identities"],
              max(memory["state_json_bytes_by_part"], key=memory["state_json_bytes_by_part"].get),
              memory.get("checkpoint_mb_per_100k_identities"),
              memory.get("checkpoint_cpu_seconds_per_100k_identities")]],
        )  # fmt: skip
    peer = parts.get("peer", {})
    if "ours" in peer:
        rows = [
            [f"ours: {name}", v["texts"], v["texts_per_s_cpu"], v["ms_per_text_cpu"]]
            for name, v in peer["ours"].items()
        ]
        loop = peer["python_re_loop"]
        rows.append(
            [
                f"plain re loop ({loop['patterns']} patterns)",
                loop["texts"],
                loop["texts_per_s_cpu"],
                loop["ms_per_text_cpu"],
            ]
        )
        for name, v in (_get(peer, "llm_guard", "scanners") or {}).items():
            rows.append([f"LLM Guard {name}", v["texts"], v["texts_per_s_cpu"], v["ms_per_text_cpu"]])
        lines += ["", f"## Side by side ({peer['texts']} workload texts, mean {peer['text_chars_mean']:,} chars)", ""]
        lines += _table(["scanner", "texts", "texts/s (CPU)", "ms/text (CPU)"], rows)
        lines += ["", *_table(["ratio (ours / theirs, throughput)", "x"], [[k, v] for k, v in peer["ratios"].items()])]
        if "skipped" in peer.get("llm_guard", {}):
            lines += ["", f"LLM Guard not run: {peer['llm_guard']['skipped']}"]
    e2e = parts.get("e2e", {})
    if e2e.get("runs"):
        rows = [[r["workers"], r["events_produced"], r["sustained_events_per_s"], _get(r, "alert_latency", "p50_ms"),
                 _get(r, "alert_latency", "p99_ms"), r["consumer_lag_max"], r["lost"], r["dead_letters"],
                 r["worker_rss_mb"]] for r in e2e["runs"]]  # fmt: skip
        lines += ["", "## End to end (Kafka + Elasticsearch)", ""]
        lines += _table(["workers", "events", "sustained events/s", "alert p50 ms", "alert p99 ms", "max lag", "lost",
                         "dead letters", "worker RSS MB"], rows)  # fmt: skip
    elif "skipped" in e2e:
        lines += ["", f"## End to end: skipped - {e2e['skipped']}"]
    failed = [f"{name}: {part['failed']}" for name, part in parts.items() if "failed" in part]
    if failed:
        lines += ["", "## Failed parts", "", *[f"- {line}" for line in failed]]
    return "\n".join(lines) + "\n"


def update(out: Path, results: dict[str, dict[str, Any]], quick: bool) -> dict[str, Any]:
    """Merge ``results`` into ``out/latest.json`` under a lock, rewrite ``latest.md``; returns the merged report."""
    out.mkdir(parents=True, exist_ok=True)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with (CACHE_DIR / "results.lock").open("w") as lock:  # parts run as separate processes may finish together
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = out / "latest.json"
        report = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"parts": {}}
        report["parts"].update(results)
        report["machine"] = bench_engine.machine()
        report["quick"] = quick
        report["command"] = "python -m bench" + (" --quick" if quick else "")
        path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (out / "latest.md").write_text(markdown(report), encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {', '.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="small workloads: a smoke run, figures not quotable")
    parser.add_argument("--profile", action="store_true", help="write OUT/profile-PART.txt (needs pyinstrument)")
    parser.add_argument("--out", type=Path, default=None, help="results directory (default: bench/results)")
    args = parser.parse_args(argv)
    parts = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in parts if name not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    out = args.out or (CACHE_DIR / "quick" if args.quick else RESULTS)
    results = {}
    for name in parts:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        results[name] = run_part(name, args.quick, out / f"profile-{name}.txt" if args.profile else None)
    update(out, results, args.quick)
    print(f"bench: wrote {out / 'latest.json'} and {out / 'latest.md'}", file=sys.stderr)
    return 1 if any("failed" in result for result in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
