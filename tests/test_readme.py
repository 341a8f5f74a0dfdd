"""README.md says what the code does: the worker's agents, topics and indices in the data-flow diagram, the module
of every detector in "Where to look", and how an alert's risk score is computed."""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from pathlib import Path

from app.engine import build_pipeline
from app.settings import Settings
from detectors.base import Detection, Detector, Findings, RuleInfo
from detectors.campaigns import CampaignDetector
from detectors.event import Event, Identity
from detectors.pipeline import Pipeline
from detectors.redact import Redactor

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end >= 0 else None]


def test_the_data_flow_shows_every_agent_topic_and_index_of_the_worker():
    flow = section("How data flows")
    worker = (ROOT / "app" / "stream" / "worker.py").read_text(encoding="utf-8")
    agents = re.findall(r'\.agent\([^()]*name="(\w+)"\)', worker)
    assert {"ingest", "detect", "campaigns", "archive_dead_letters"} <= set(agents)
    assert [agent for agent in agents if not re.search(rf"\b{agent}\b", flow)] == []
    settings = Settings()
    kafka, es = settings.kafka, settings.elasticsearch
    topics = [kafka.raw_topic, kafka.internal_topic, kafka.state_topic, kafka.campaign_topic]
    topics += [kafka.campaign_state_topic, kafka.dead_letter_topic, kafka.events_topic, kafka.alerts_topic]
    assert [topic for topic in topics if not re.search(rf"(?<![\w-]){re.escape(topic)}(?![\w-])", flow)] == []
    indices = [es.events_index, es.alerts_index, es.shadow_alerts_index, es.dead_letter_index]
    assert [index for index in indices if index.rsplit("-", 1)[0] + "-*" not in flow] == []


def test_where_to_look_names_the_module_of_every_detector_the_engine_runs():
    row = next(line for line in README.splitlines() if line.startswith("| each detector |"))
    pipeline = build_pipeline(Settings())
    parts = [*pipeline.detectors, pipeline.history, CampaignDetector()]
    modules = {Path(inspect.getfile(type(part))).relative_to(ROOT) for part in parts}
    named = {module for module in modules if f"`{module}`" in row or f"`{module.parent}/`" in row}
    assert modules - named == set()
    assert {"correlation.py", "chains.py", "campaigns.py", "history.py"} <= {module.name for module in named}


class _OneDetection(Detector):
    """One detection per event, of a rule of ``level``, with ``score``."""

    name = "one"

    def __init__(self, level: str, score: float) -> None:
        self.rule = RuleInfo(id="test-one", name="One", category="prompt_injection", level=level)
        self.score = score

    def detect(self, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        return [
            Detection(rule=self.rule, event_ids=[e.id], timestamp=e.timestamp, identity=e.identity, message="x",
                      score=self.score)
            for e in events
        ]  # fmt: skip


def test_the_alert_table_gives_the_risk_score_the_engine_writes():
    row = next(line for line in section("Alerts").splitlines() if line.startswith("| `event.risk_score` |"))
    example = re.search(r"e\.g\. ([\d.]+) for an? (\w+) alert scored ([\d.]+)", row)
    assert example, row
    risk, level, score = float(example[1]), example[2], float(example[3])
    event = Event(id="e1", timestamp=1_800_000_000.0, dataset="test", identity=Identity(user_id="u1"))
    alert = Pipeline([_OneDetection(level, score)], Redactor(b"k")).process([event]).alerts[0]
    assert alert["event"]["risk_score"] == risk
    assert alert["event"]["risk_score"] not in {21, 47, 73, 99}  # not the severity, as the README once said
