"""Alert exceptions wired into the campaign stage everywhere it runs (engine, embedded replay), and rule selectors
that match no known rule logged when the engine loads the exceptions (the worker's startup)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from app.engine import build_campaign_stage, build_exceptions
from app.settings import Settings
from app.traffic.simulate import SimulationConfig, simulate
from detectors.anomaly import AnomalyDetector
from detectors.partitioned import PartitionedPipeline
from detectors.pipeline import BatchResult, Pipeline
from detectors.redact import Redactor

CAMPAIGN_RULE = "abusewatch-anomaly-scraping-campaign"


def exceptions_file(tmp_path: Path, rules: list[str], identity_keys: list[str]) -> Path:
    path = tmp_path / "exceptions.yml"
    entry = {
        "id": "campaign-members",
        "rules": rules,
        "trust_client_fields": True,
        "match": {"abusewatch.identity_key": identity_keys},
        "reason": "test",
        "expires": "9999-12-31",  # never expired, whatever the clock: its load logs no expiry
    }
    path.write_text(yaml.safe_dump([entry]))
    return path


def settings_with(path: Path, monkeypatch) -> Settings:
    monkeypatch.delenv("ABW_CONFIG", raising=False)
    monkeypatch.setenv("ABW_DETECTION__EXCEPTIONS_PATH", str(path))
    return Settings()


@pytest.fixture(scope="module")
def campaign_traffic():
    simulation = simulate(
        SimulationConfig(hours=12, benign_users=12, attackers={"campaign": 1}, seed=9, campaign_size=6)
    )
    return simulation.events, sorted({label.identity for label in simulation.labels if label.kind == "campaign"})


def run(settings: Settings, events, partitions: int) -> BatchResult:
    redactor = Redactor(b"test")
    stage = build_campaign_stage(settings, sources=partitions)
    engine = PartitionedPipeline(Pipeline([AnomalyDetector()], redactor), partitions, stage)
    result = BatchResult()
    for start in range(0, len(events), 500):
        result.extend(engine.process(events[start : start + 500]))
    result.extend(engine.flush())
    return result


@pytest.mark.parametrize("partitions", [1, 4])
def test_embedded_replay_sends_an_excepted_campaign_to_the_shadow_alerts(
    tmp_path, monkeypatch, campaign_traffic, partitions
):
    events, members = campaign_traffic
    settings = settings_with(exceptions_file(tmp_path, [CAMPAIGN_RULE], members), monkeypatch)
    assert len(build_campaign_stage(settings).exceptions) == 1
    result = run(settings, events, partitions)
    assert not [a for a in result.alerts if a["rule"]["id"] == CAMPAIGN_RULE]
    shadow = [a for a in result.shadow_alerts if a["rule"]["id"] == CAMPAIGN_RULE]
    assert shadow and all(a["abusewatch"]["exception"]["id"] == "campaign-members" for a in shadow)
    assert result.suppressed_counts()[("campaign-members", CAMPAIGN_RULE)] >= 1

    one_short = settings_with(exceptions_file(tmp_path, [CAMPAIGN_RULE], members[1:]), monkeypatch)
    result = run(one_short, events, partitions)
    assert [a for a in result.alerts if a["rule"]["id"] == CAMPAIGN_RULE]
    assert not [a for a in result.shadow_alerts if a["rule"]["id"] == CAMPAIGN_RULE]


def test_loading_the_exceptions_logs_rule_selectors_that_match_no_rule(tmp_path, monkeypatch, caplog):
    path = exceptions_file(tmp_path, ["abusewatch-anomaly-scrapping-volume", CAMPAIGN_RULE], ["key:k"])
    with caplog.at_level(logging.WARNING, logger="app.engine"):
        build_exceptions(settings_with(path, monkeypatch))
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == [
        f"alert exception {path}: campaign-members: rule 'abusewatch-anomaly-scrapping-volume' matches no known "
        "rule (closest known rule: abusewatch-anomaly-scraping-volume)"
    ]
