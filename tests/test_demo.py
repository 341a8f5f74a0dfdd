"""The README's first command: ``abusewatch demo`` replays the bundled samples and writes alerts and a report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from app.cli import cli
from app.commands.replay import SAMPLES_DIR


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_demo_writes_consistent_outputs_and_alerts_on_every_labelled_attack_kind(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "Replay summary" in result.stdout and "Top alerts" in result.stdout  # the report: stdout
    assert result.stderr.startswith("Replaying ") and "Replay summary" not in result.stderr  # progress: stderr
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    alerts, events = jsonl(tmp_path / "alerts.jsonl"), jsonl(tmp_path / "events.jsonl")
    assert summary["records"] == len(jsonl(tmp_path / "samples.jsonl"))
    assert summary["events"] == len(events) and summary["dead_letters"] == len(jsonl(tmp_path / "dead_letters.jsonl"))
    assert summary["alerts"] == len(alerts) > 0
    assert summary["shadow_alerts"] == len(jsonl(tmp_path / "shadow_alerts.jsonl"))
    assert "<html" in (tmp_path / "report.html").read_text(encoding="utf-8").lower()
    for alert in alerts:  # what an analyst triages on
        assert alert["event"]["kind"] == "alert" and alert["event"]["risk_score"] > 0
        assert alert["threat"] and alert["abusewatch"]["event_ids"]
    labels = json.loads((SAMPLES_DIR / "labels.json").read_text(encoding="utf-8"))
    alerted = {event_id for alert in alerts for event_id in alert["abusewatch"]["event_ids"]}
    kinds = {label["kind"] for label in labels.values()}
    caught = {label["kind"] for event_id, label in labels.items() if event_id in alerted}
    assert caught == kinds, f"attack kinds with no alert on any of their events: {sorted(kinds - caught)}"
