"""The engine is assembled from settings: every tier runs, in order, configured from the environment."""

import shutil

from app.engine import build_pipeline
from app.settings import load_settings
from detectors.signatures.ruleset import BUILTIN_RULES_DIR


def test_every_tier_runs_in_order():
    pipeline = build_pipeline(load_settings())
    assert [d.name for d in pipeline.detectors] == [
        "signatures",
        "exfil",
        "classifier",
        "anomaly",
        "correlation",
        "chains",
    ]


def test_tiers_take_their_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("ABW_DETECTION__CLASSIFIER__THRESHOLD", "0.42")
    monkeypatch.setenv("ABW_DETECTION__ALERTING__WINDOW_SECONDS", "900")
    pipeline = build_pipeline(load_settings())
    classifier = next(d for d in pipeline.detectors if d.name == "classifier")
    assert classifier.config.threshold == 0.42
    assert pipeline.grouper.policy.window_seconds == 900


def test_the_caps_on_client_chosen_state_are_settings(monkeypatch):
    monkeypatch.setenv("ABW_DETECTION__CHAIN_MAX_SESSIONS", "123")
    monkeypatch.setenv("ABW_DETECTION__CORRELATION_MAX_GROUPS", "456")
    detectors = {detector.name: detector for detector in build_pipeline(load_settings()).detectors}
    assert (detectors["chains"].max_sessions, detectors["correlation"].max_groups) == (123, 456)


def test_rules_dir_replaces_or_extends_the_builtin_pack(monkeypatch, tmp_path):
    one_rule = next(BUILTIN_RULES_DIR.rglob("*.yml"))
    shutil.copy(one_rule, tmp_path / one_rule.name)
    monkeypatch.setenv("ABW_DETECTION__RULES_DIR", str(tmp_path))
    monkeypatch.setenv("ABW_DETECTION__BUILTIN_RULES", "false")
    signatures = build_pipeline(load_settings()).detectors[0]
    assert len(signatures.ruleset.rules) == 1
