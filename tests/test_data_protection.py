"""Data protection: rule and config files are data only, dead letters keep raw input only when asked, and no raw
secret or PII value from the sample traffic reaches any output file or log, in any common encoding.
"""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path

import orjson
import pytest
import yaml

from app.engine import build_pipeline
from app.replay import ReplaySummary, replay
from app.report import render_report
from app.settings import PACKAGE_ROOT, load_settings
from detectors.base import Detection, Findings
from detectors.correlation import load_correlations
from detectors.event import Event
from detectors.pipeline import BatchResult, Pipeline
from detectors.redact import encoded_forms
from detectors.signatures.ruleset import RuleSet

SAMPLES = sorted((PACKAGE_ROOT / "samples").glob("*.jsonl"))
AWS_KEY = re.compile(r"\bAKIA[A-Z2-7]{16}\b")  # test-side only: finds the fake keys planted in the samples
GITHUB_TOKEN = re.compile(r"\bghp_[A-Za-z0-9]{36}\b")


def unsafe_yaml(target: Path) -> str:
    """YAML that runs a shell command when loaded with an unsafe loader."""
    return f'title: pwned\nid: !!python/object/apply:os.system ["touch {target}"]\n'


def test_rule_file_with_python_tag_is_rejected_and_nothing_runs(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    (tmp_path / "evil.yml").write_text(unsafe_yaml(target))
    ruleset = RuleSet.load([tmp_path])
    assert not ruleset.rules
    assert len(ruleset.errors) == 1 and "invalid YAML" in str(ruleset.errors[0])
    assert not target.exists()


def test_settings_file_with_python_tag_is_rejected_and_nothing_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "pwned"
    config = tmp_path / "abusewatch.yaml"
    config.write_text(f'detection:\n  rules_dir: !!python/object/apply:os.system ["touch {target}"]\n')
    monkeypatch.setenv("ABW_CONFIG", str(config))
    with pytest.raises(yaml.YAMLError):
        load_settings()
    assert not target.exists()


def test_correlation_file_with_python_tag_is_rejected_and_nothing_runs(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    (tmp_path / "evil.yml").write_text(f'correlation: !!python/object/apply:os.system ["touch {target}"]\n')
    correlations, errors = load_correlations([tmp_path])
    assert correlations == []
    assert len(errors) == 1 and "invalid YAML" in errors[0]
    assert not target.exists()


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return build_pipeline(load_settings())


@pytest.mark.parametrize("keep_raw", [False, True])
def test_dead_letters_keep_the_raw_record_only_when_configured(
    tmp_path: Path, pipeline: Pipeline, keep_raw: bool
) -> None:
    line = '{"note": "no known format", "token": "ghp_notarealtokenbutsecretlookingvalue00"}'
    source = tmp_path / "in.jsonl"
    source.write_text(line + "\n")
    dead = tmp_path / "dead.jsonl"
    replay([str(source)], pipeline, alerts_out=None, dead_letter_out=dead, keep_raw=keep_raw)
    letters = [orjson.loads(row) for row in dead.read_bytes().splitlines()]
    assert [letter["reason"] for letter in letters] == ["unknown_format"]
    if keep_raw:
        assert orjson.loads(letters[0]["raw"]) == orjson.loads(line)
    else:
        assert letters[0]["raw"] is None
        assert "ghp_" not in dead.read_text()


def test_default_setting_does_not_keep_raw_dead_letters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ABW_CONFIG", raising=False)
    monkeypatch.delenv("ABW_DETECTION__KEEP_RAW_DEAD_LETTERS", raising=False)
    assert load_settings().detection.keep_raw_dead_letters is False


class SensitiveRecorder(Pipeline):
    """The production pipeline, also keeping every value a detector marked sensitive (what must never leak)."""

    def __init__(self, inner: Pipeline) -> None:
        super().__init__(inner.detectors, inner.redactor, inner.grouper)
        self.sensitive: set[str] = set()

    def render(self, events: list[Event], findings: list[Findings], detections: list[Detection]) -> BatchResult:
        for found in findings:
            self.sensitive.update(value.value for value in found.sensitive)
        return super().render(events, findings, detections)


def test_replay_of_the_samples_writes_no_raw_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    recorder = SensitiveRecorder(build_pipeline(load_settings()))
    outputs = {name: tmp_path / f"{name}.jsonl" for name in ("alerts", "events", "dead_letters", "shadow_alerts")}
    with caplog.at_level(logging.DEBUG):
        summary = replay(
            [str(path) for path in SAMPLES],
            recorder,
            alerts_out=outputs["alerts"],
            events_out=outputs["events"],
            dead_letter_out=outputs["dead_letters"],
            shadow_alerts_out=outputs["shadow_alerts"],
            keep_raw=False,
        )
    alerts = [orjson.loads(line) for line in outputs["alerts"].read_bytes().splitlines()]
    report = render_report(alerts, summary)
    planted = {
        m for path in SAMPLES for m in AWS_KEY.findall(path.read_text()) + GITHUB_TOKEN.findall(path.read_text())
    }
    assert planted, "the samples should carry the fake AWS key and GitHub token"
    assert planted <= recorder.sensitive, f"not marked sensitive: {planted - recorder.sensitive}"
    assert summary.alerts > 0 and summary.events > 0
    texts = {name: path.read_text() for name, path in outputs.items()}
    texts["report.html"] = report
    texts["logs"] = caplog.text
    leaks = [
        (where, value, form)
        for value in recorder.sensitive
        for form in encoded_forms(value) | {html.escape(value)}
        for where, text in texts.items()
        if form in text
    ]
    assert not leaks, leaks[:5]
    figures_for_doc(summary, len(recorder.sensitive))


def figures_for_doc(summary: ReplaySummary, sensitive: int) -> None:
    """Keep the figures of the sample replay for docs/reliability.md (out/ is not committed)."""
    folder = Path(__file__).resolve().parents[1] / "out" / "reliability"
    folder.mkdir(parents=True, exist_ok=True)
    figures = {"records": summary.records, "events": summary.events, "alerts": summary.alerts,
               "dead_letters": summary.dead_letters, "sensitive_values_checked": sensitive}  # fmt: skip
    (folder / "samples_no_raw_secret.json").write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
