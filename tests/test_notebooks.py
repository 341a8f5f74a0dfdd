"""The notebooks run end to end in a fresh kernel, and alert grouping cuts detections without losing an attacker.

Each notebook ends with a cell of assertions on what it computed, so executing it is a test: a failing cell fails
it. The kernel is the ``python3`` kernelspec that ipykernel installs into ``sys.prefix``; jupyter_client starts it
with the interpreter running the tests, so a fresh clone needs no ``ipykernel install``.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell, new_notebook

from app.commands.replay import demo_command
from bench import corpora
from bench.eval_grouping import alert_names, measure, simulated
from detectors.anomaly import AnomalyConfig, AnomalyDetector
from detectors.anomaly.models import Baseline
from detectors.base import Detection, Detector, Findings, RuleInfo
from detectors.event import Event, Identity, Message
from detectors.pipeline import Pipeline
from detectors.redact import Redactor

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
sys.path.insert(0, str(NOTEBOOKS_DIR))
import nbhelpers  # noqa: E402  (the notebooks' helpers: found as the notebooks find them, in notebooks/)

OUT = nbhelpers.OUT  # where the notebooks write their files
KERNEL = "python3"
CELL_TIMEOUT_SECONDS = 600  # generous: a loaded CI runner compiles the rule pack in the first cells
# jupyter_client replaces these interpreter names with sys.executable when it starts the kernel
SELF_INTERPRETERS = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}


@pytest.fixture(scope="session")
def kernel_name() -> str:
    """The ``python3`` kernel, checked to run this interpreter (so it sees the project and its packages)."""
    spec = KernelSpecManager().get_kernel_spec(KERNEL)
    assert spec.argv[0] in SELF_INTERPRETERS | {sys.executable}, (
        f"kernelspec {KERNEL!r} at {spec.resource_dir} runs {spec.argv[0]!r}, not this interpreter ({sys.executable})"
    )
    return KERNEL


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The rule-tuning notebook reads the held-out corpus; build it here (once, cached) so notebooks stay offline."""
    return corpora.build()


def test_there_are_notebooks():
    assert {path.stem for path in NOTEBOOKS} >= {"rule_tuning", "anomaly_baselines", "investigation"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_committed_clean_and_ends_with_checks(path: Path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), "clear the outputs"
    assert code and "assert " in code[-1].source, "the last code cell must assert on what the notebook computed"


def execute(notebook: nbformat.NotebookNode, kernel_name: str) -> None:
    """Run every cell in a fresh kernel started in ``notebooks/``; raises CellExecutionError on a failing cell."""
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_SECONDS,
        kernel_name=kernel_name,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    client.execute()


def test_the_kernel_is_this_venv_and_a_failing_cell_fails_the_run(kernel_name: str):
    cells = [
        f"import sys\nassert sys.prefix == {sys.prefix!r}, sys.prefix",
        "import nbhelpers  # found: the kernel starts in notebooks/",
        "assert nbhelpers.REPO is None, 'deliberate failure'",
    ]
    notebook = new_notebook(cells=[new_code_cell(source) for source in cells])
    with pytest.raises(CellExecutionError, match="deliberate failure"):
        execute(notebook, kernel_name)
    assert not notebook.cells[0].outputs and not notebook.cells[1].outputs  # the first two cells ran clean


@pytest.fixture(scope="session")
def executed(kernel_name: str, corpus: Path) -> Callable[[Path], nbformat.NotebookNode]:
    """Executes a notebook once per session (later asks get the executed notebook; its files are in ``OUT``)."""
    runs: dict[Path, nbformat.NotebookNode] = {}

    def run(path: Path) -> nbformat.NotebookNode:
        if path not in runs:
            notebook = nbformat.read(path, as_version=4)
            execute(notebook, kernel_name)
            runs[path] = notebook
        return runs[path]

    return run


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_executes(path: Path, executed: Callable[[Path], nbformat.NotebookNode]):
    last = [cell for cell in executed(path).cells if cell.cell_type == "code"][-1]
    printed = "".join(output.get("text", "") for output in last.outputs if output.output_type == "stream")
    assert "all checks passed" in printed


@pytest.mark.slow
def test_the_investigation_replays_the_samples_as_the_demo_does(
    executed: Callable[[Path], nbformat.NotebookNode], tmp_path: Path
):
    """Same input order (merged by event time) and same alerts as ``abusewatch demo``: read one file after another,
    the scraper's events are late for the anomaly tier and its alert is missing."""
    executed(NOTEBOOKS_DIR / "investigation.ipynb")
    demo_command(out=tmp_path)
    written = OUT / "investigation"
    assert (written / "samples.jsonl").read_bytes() == (tmp_path / "samples.jsonl").read_bytes()
    assert _alerts(written / "alerts.jsonl") == _alerts(tmp_path / "alerts.jsonl")


def _alerts(path: Path) -> dict[str, dict[str, Any]]:
    alerts = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    assert alerts, f"no alerts in {path}"
    return {alert["event"]["id"]: alert for alert in alerts}


def _bursty_day(identity: Identity, window: float) -> list[Event]:
    """One identity's requests over 30 windows: a few an hour, with bursts of 40-60 (a heavy user's meetings)."""
    counts = [2, 3, 40, 2, 1, 60, 3, 2, 45, 1] * 3
    events = []
    for number, count in enumerate(counts):
        for index in range(count):
            events.append(
                Event(
                    id=f"w{number}-{index}",
                    timestamp=1_800_000_000.0 + number * window + index * (window / (count + 1)),
                    dataset="test",
                    identity=identity,
                    input_messages=[Message(role="user", content=f"summarise chapter {index} of report {number}")],
                    input_tokens=50 + index,
                    output_tokens=200,
                )
            )
    return events


def test_the_plotted_baseline_is_the_anomaly_detectors_own():
    """``nbhelpers.judged_against`` (what anomaly_baselines.ipynb plots) ends where the detector's baseline is: an
    EWMA of log(1 + count), not of the counts (about 5 requests a window on this series, not 14)."""
    config = AnomalyConfig()
    detector, who = AnomalyDetector(config), Identity(user_id="heavy")
    events = _bursty_day(who, config.window_seconds)
    findings = [Findings() for _ in events]
    detections = detector.detect(events, findings) + detector.flush()
    points = nbhelpers.window_series(events, findings, who.key(), config.window_seconds)
    unlearned = {d.timestamp // config.window_seconds * config.window_seconds for d in detections}
    curves, replayed = nbhelpers.judged_against(points, config.baseline_span_windows, unlearned)
    held = Baseline.load(detector.state_for([who.key()])["entities"][who.key()]["baseline"])
    assert len(points) == 30 and held.windows == replayed.windows == 30 - len(unlearned) > 20
    for metric, value in nbhelpers.baseline_counts(held).items():
        assert value == pytest.approx(nbhelpers.baseline_counts(replayed)[metric], rel=1e-9)
    assert nbhelpers.baseline_counts(held)["requests"] < statistics.mean(p.requests for p in points) / 2
    assert math.isnan(curves["requests"][0]) and all(math.isfinite(v) for v in curves["requests"][1:])


class _EveryEvent(Detector):
    """Raises one detection per event, of one rule, for the event's identity."""

    name = "every-event"
    rule = RuleInfo(id="test-every-event", name="Every event", category="scraping", level="low")

    def detect(self, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        return [
            Detection(rule=self.rule, event_ids=[e.id], timestamp=e.timestamp, identity=e.identity, message="x")
            for e in events
        ]


def _event(number: int, identity: Identity) -> Event:
    return Event(id=f"e{number}", timestamp=1_800_000_000.0 + number, dataset="test", identity=identity)


def test_measure_counts_an_alert_updated_across_batches_once():
    mallory, bob = Identity(user_id="mallory"), Identity(api_key_hash="k-bob", source_ip="192.0.2.7")
    events = [_event(n, mallory if n % 3 else bob) for n in range(12)]
    pipeline = Pipeline([_EveryEvent()], Redactor(b"k"))
    result = measure(events, {"user:mallory": "user:mallory", "ip:192.0.2.7": "key:k-bob"}, pipeline, batch_size=5)
    assert result.detections == {"scraping": 12}
    assert result.alerts == {"scraping": 2}  # one per identity: same rule, same hour, three batches
    assert result.factor == 6.0
    assert result.named_by_alerts == result.named_by_detections == {"user:mallory", "key:k-bob"}
    assert not result.lost and not result.missing


def test_alert_names_read_identity_key_api_key_and_ips():
    document = {
        "abusewatch": {"identity_key": "user:u1", "api_key_hash": "h1"},
        "related": {"user": ["u1", "key:k2"], "ip": ["192.0.2.1"]},
        "source": {"ip": "192.0.2.9"},
    }
    names = alert_names(document)
    assert {"user:u1", "key:h1", "key:k2", "ip:192.0.2.1", "ip:192.0.2.9"} <= names


@pytest.mark.slow
def test_grouping_on_simulated_traffic_loses_no_attacker():
    result = simulated(hours=24, benign_users=10, seed=27)
    assert len(result.attacker_identities) >= 5  # one of every kind; a campaign is several identities
    assert len(result.named_by_detections) * 2 >= len(result.attacker_identities)  # the detectors found most ...
    assert not result.lost and result.named_by_alerts == result.named_by_detections  # ... and every one is alerted
    assert result.missing == result.attacker_identities - result.named_by_detections  # misses are the detectors'
    assert result.factor >= 1.0
    for category, alerts in result.alerts.items():
        assert 0 < alerts <= result.detections[category]
