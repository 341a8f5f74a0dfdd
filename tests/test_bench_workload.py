"""The benchmark workload is fixed (same config, same bytes) and realistic; the suite's report has its shape."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import orjson
import pytest

from bench import __main__ as suite
from bench.workload import FORMATS, MAX_CHARS, MIN_CHARS, WorkloadConfig, load_records, normalise_records
from detectors.normalise import normalise_many

SMALL = WorkloadConfig(events=400, identities=50, attack_share=0.1, seed=3)


def test_same_config_gives_the_same_bytes(tmp_path: Path) -> None:
    first = load_records(SMALL, tmp_path / "a")
    second = load_records(SMALL, tmp_path / "b")
    assert SMALL.cache_path(tmp_path / "a").read_bytes() == SMALL.cache_path(tmp_path / "b").read_bytes()
    assert first == second


def test_the_cache_is_read_back_unchanged(tmp_path: Path) -> None:
    generated = load_records(SMALL, tmp_path)
    assert load_records(SMALL, tmp_path) == generated


def test_another_seed_gives_other_traffic(tmp_path: Path) -> None:
    other = WorkloadConfig(events=SMALL.events, identities=SMALL.identities, attack_share=0.1, seed=4)
    assert [r.raw for r in load_records(SMALL, tmp_path)] != [r.raw for r in load_records(other, tmp_path)]


def test_every_format_and_every_record_normalises_to_one_event(tmp_path: Path) -> None:
    records = load_records(SMALL, tmp_path)
    assert Counter(record.fmt for record in records) == dict.fromkeys(FORMATS, SMALL.events // len(FORMATS))
    for record in records:
        assert len(normalise_many(orjson.loads(record.raw))) == 1
    events = normalise_records(records)
    assert len({event.id for event in events}) == SMALL.events


def test_attack_share_identities_and_lengths(tmp_path: Path) -> None:
    records = load_records(SMALL, tmp_path)
    events = normalise_records(records)
    attacks = [record for record in records if record.attack]
    assert 0.05 * SMALL.events <= len(attacks) <= 0.15 * SMALL.events
    assert len({record.attack for record in attacks}) >= 4
    users = Counter(event.identity.user_id for event in events)
    assert 25 <= len(users) <= SMALL.identities
    assert users.most_common(1)[0][1] > 3 * (SMALL.events / SMALL.identities) / 2  # skewed: heavy users exist
    completions = [m.content for event in events for m in event.output_messages]
    assert all(MIN_CHARS <= len(text) <= MAX_CHARS for text in completions)
    assert min(map(len, completions)) < 1_000
    assert max(map(len, completions)) > 10_000


def test_unknown_part_is_refused() -> None:
    with pytest.raises(SystemExit):
        suite.main(["--only", "engine,nonsense"])


def test_target_verdicts_follow_the_figures() -> None:
    parts = {
        "engine": {"throughput": {"total": {"events_per_s_cpu": 12_000.0}}, "latency": {"total": {"p99_ms": 7.0}}},
        "scaling": {
            "rule_count": {"100": {"scan": {"us_per_event_cpu": 10.0}}, "10000": {"scan": {"us_per_event_cpu": 30.0}}}
        },
    }
    verdicts = {row[0]: (row[2], row[3]) for row in suite.targets(parts)}
    assert verdicts["engine events/s per core (CPU time)"] == (12_000.0, "met")
    assert verdicts["engine p99 per event (ms, wall)"] == (7.0, "NOT met")
    assert verdicts["scan cost max/min, 100 -> 10,000 rules"] == (3.0, "NOT met")
    assert verdicts["e2e sustained events/s"][1] == "not measured"


@pytest.mark.slow
def test_quick_suite_writes_a_report_of_the_expected_shape(tmp_path: Path) -> None:
    """A smoke run of every in-process part (e2e needs services: tests/integration/test_bench_e2e.py): structure
    only, never timings."""
    code = suite.main(["--quick", "--only", "engine,signatures,scaling,memory,peer", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "latest.json").read_text())
    assert code == 0, {name: part.get("failed") for name, part in report["parts"].items()}
    parts = report["parts"]
    assert set(parts) == {"engine", "signatures", "scaling", "memory", "peer"}
    engine = parts["engine"]
    assert {"normalise", "signatures", "exfil", "alerting+render"} <= set(engine["throughput"]["tiers"])
    for numbers in engine["latency"]["tiers"].values():
        assert 0 <= numbers["p50_ms"] <= numbers["p99_ms"] <= numbers["max_ms"]
    assert engine["workload"]["events"] == engine["workload"]["records"] > 0
    assert set(parts["scaling"]["prompt_length"]) == {"100", "1000", "4000", "20000"}
    assert [w["workers"] for w in parts["scaling"]["worker_processes"]] == [1, 2]
    for count, entry in parts["scaling"]["rule_count"].items():
        assert entry["rules_loaded"] == int(count)
        assert entry["rule_errors"] == 0
    memory = parts["memory"]
    assert memory["engine_rss_mb"] > memory["interpreter_rss_mb"] > 0
    assert memory["state_json_bytes"] == sum(memory["state_json_bytes_by_part"].values()) > 0
    assert parts["peer"]["python_re_loop"]["texts"] == parts["peer"]["texts"] > 0
    signatures = parts["signatures"]
    assert signatures["events"] == 300 and signatures["workload"]["events"] == 200  # the quick sizes
    assert {"engine", "python_re_loop", "pathological", "speedup_vs_python_re_mb_per_s"} <= set(signatures)
    table = (tmp_path / "latest.md").read_text()
    for heading in ("## Targets", "## Engine", "## Cost vs prompt length", "## Memory", "## Side by side"):
        assert heading in table
