"""Backtesting: per-rule precision and recall match the pipeline's own alerts; diffs between rule sets."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from app.backtest import BENIGN, LabelsError, load_labels
from app.cli import cli
from app.replay import replay
from app.traffic.samples import SAMPLES_DIR, sample_files
from detectors.pipeline import Pipeline
from detectors.redact import Redactor
from detectors.signatures.detector import SignatureDetector
from detectors.signatures.ruleset import BUILTIN_RULES_DIR, RuleSet

SAMPLES = [str(path) for path in sample_files().values()]
LABELS = SAMPLES_DIR / "labels.json"


def run_cli(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["backtest", *args])
    assert result.exit_code == 0, result.output
    return result


def backtest(tmp_path, *args: str) -> dict:
    out = tmp_path / "report.json"
    run_cli(*[arg for path in SAMPLES for arg in ("--input", path)], "--labels", str(LABELS), "--out", str(out), *args)
    return json.loads(out.read_text())


def test_precision_and_recall_match_the_pipelines_own_alerts(tmp_path):
    report = backtest(tmp_path, "--rules", str(BUILTIN_RULES_DIR))
    # the same rules through replay: alerts name the events they were raised on
    pipeline = Pipeline([SignatureDetector(RuleSet.load([BUILTIN_RULES_DIR]))], Redactor(b"k"))
    alerts_path = tmp_path / "alerts.jsonl"
    events_path = tmp_path / "events.jsonl"
    replay(SAMPLES, pipeline, alerts_out=alerts_path, shadow_alerts_out=tmp_path / "s.jsonl", events_out=events_path)
    alerts = [json.loads(line) for line in alerts_path.read_text().splitlines()]
    alerts += [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    caught = {event_id for alert in alerts for event_id in alert["abusewatch"]["event_ids"]}
    seen = [json.loads(line)["event"]["id"] for line in events_path.read_text().splitlines()]
    labels = load_labels(LABELS)
    attacks = [e for e in seen if labels.get(e, BENIGN) != BENIGN]
    assert report["events"] == len(seen)
    assert report["events_caught"] == len(caught)
    assert report["recall"]["all"] == sum(e in caught for e in attacks) / len(attacks)
    assert report["precision"] == sum(labels.get(e, BENIGN) != BENIGN for e in caught) / len(caught)
    for rule in report["rules"]:
        assert rule["true_positives"] + rule["false_positives"] == rule["events"]
        assert sum(rule["per_day"].values()) == rule["events"]


def test_diff_names_what_removing_a_rule_loses(tmp_path):
    candidate = tmp_path / "candidate"
    shutil.copytree(BUILTIN_RULES_DIR, candidate)
    baseline_report = backtest(tmp_path, "--rules", str(BUILTIN_RULES_DIR))
    busiest = max(baseline_report["rules"], key=lambda r: r["events"])
    removed = [p for p in candidate.rglob("*.yml") if busiest["rule_id"] in p.read_text()]
    assert len(removed) == 1
    removed[0].unlink()
    report = backtest(tmp_path, "--rules", str(candidate), "--baseline", str(BUILTIN_RULES_DIR))
    diff = report["diff"]
    assert diff["rules_silent"] == [busiest["rule_id"]]
    assert diff["newly_caught"] == 0
    assert diff["lost"] == baseline_report["events_caught"] - report["events_caught"]
    assert diff["lost"] > 0 and len(diff["lost_examples"]) == min(3, diff["lost"])


def test_labels_load_from_json_object_and_jsonl(tmp_path):
    as_object = tmp_path / "labels.json"
    as_object.write_text(json.dumps({"e1": {"category": "jailbreak"}, "e2": "benign", "e3": "scraping"}))
    as_lines = tmp_path / "labels.jsonl"
    as_lines.write_text('{"event_id": "e1", "category": "jailbreak"}\n{"event_id": "e3", "label": "scraping"}\n')
    assert load_labels(as_object) == {"e1": "jailbreak", "e2": "benign", "e3": "scraping"}
    assert load_labels(as_lines) == {"e1": "jailbreak", "e3": "scraping"}


def test_no_rules_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(cli, ["backtest", "--rules", str(tmp_path), "--input", SAMPLES[0]])
    assert result.exit_code != 0
    assert "no rules loaded" in result.output


def test_a_one_line_jsonl_labels_file_is_one_row_not_an_object_of_labels(tmp_path):
    row = '{"event_id": "evt-1", "category": "prompt_injection"}\n'
    for name in ("labels.jsonl", "labels.json", "labels.txt"):  # by suffix, else by the shape of the document
        (tmp_path / name).write_text(row, encoding="utf-8")
        assert load_labels(tmp_path / name) == {"evt-1": "prompt_injection"}, name
    (tmp_path / "object.jsonl").write_text('{"evt-1": "jailbreak"}\n', encoding="utf-8")
    with pytest.raises(LabelsError, match=r"object.jsonl:1: .*'event_id'"):
        load_labels(tmp_path / "object.jsonl")  # .jsonl is lines, whatever they hold


def test_a_malformed_labels_file_is_a_clear_error_naming_the_line(tmp_path):
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"event_id": "e1", "category": "jailbreak"}\n{not json\n', encoding="utf-8")
    with pytest.raises(LabelsError, match=r"labels.jsonl:2: not JSON"):
        load_labels(labels)
    result = CliRunner().invoke(cli, ["backtest", "--input", SAMPLES[0], "--labels", str(labels)])
    assert result.exit_code == 2 and "not JSON" in result.output  # a usage error, not a traceback


def test_engine_backtest_runs_the_candidate_rules_in_the_signature_tier(tmp_path):
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    override = BUILTIN_RULES_DIR / "prompt_injection" / "instruction_override_previous_instructions.yml"
    shutil.copy(override, candidate / "only.yml")
    signature_rules = {rule.title for rule in RuleSet.load([BUILTIN_RULES_DIR]).rules}
    configured = {r["name"] for r in backtest(tmp_path, "--engine")["rules"]} & signature_rules
    assert len(configured) > 1  # the deployment's rules: the built-in pack
    only = {r["name"] for r in backtest(tmp_path, "--engine", "--rules", str(candidate))["rules"]} & signature_rules
    assert only == {"Instruction override - ignore previous instructions"}
    with_pack = backtest(tmp_path, "--engine", "--rules", str(candidate), "--builtin")["rules"]
    assert {r["name"] for r in with_pack} & signature_rules == configured
