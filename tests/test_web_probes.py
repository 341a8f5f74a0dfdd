"""``/live`` and ``/health``: liveness fails only on a crash, readiness also on Elasticsearch; the probes answer from
the first second of ``abusewatch worker``, before it waits for Elasticsearch; a 401/403 from the health probe is a
privilege problem of a reachable cluster, not an outage."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from elasticsearch import AsyncElasticsearch
from typer.testing import CliRunner

import app.commands.stream as stream_commands
from app.cli import cli
from app.settings import DetectionSettings, Settings, WorkerSettings
from app.stream.topics import topic_names
from app.stream.web import StartingServer, health_report, liveness_report, probe_elasticsearch, register_web
from app.stream.worker import StreamWorker, WorkerState
from tests.fixtures.http import JsonHandler, serving

STRONG_KEY = "a-test-key-of-more-than-sixteen-bytes"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def port_is_free(port: int) -> bool:
    """Whether a server can listen on ``port``, binding as asyncio's (Faust's) does: with SO_REUSEADDR."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- liveness and readiness of a running worker ---------------------------------------------------------------------


def stand_in(*, started: bool = True, consumer_crashed: bool = False, crashed_agent: str = "", es: bool = True) -> Any:
    """What ``health_report`` reads of a StreamWorker: the Faust app's consumer and agents, and the worker state."""
    consumer = SimpleNamespace(started=started, crashed=consumer_crashed, assignment=lambda: {0, 1})
    agents = {name: SimpleNamespace(crashed=name == crashed_agent) for name in ("ingest", "detect")}
    state = WorkerState(es_reachable=es, es_error=None if es else "ConnectionError: refused")
    return SimpleNamespace(app=SimpleNamespace(consumer=consumer, agents=agents), state=state)


def test_an_elasticsearch_outage_makes_the_worker_unready_but_never_dead() -> None:
    worker = stand_in(es=False)
    assert liveness_report(worker)["live"] is True
    assert health_report(worker)["status"] == "unavailable"


def test_a_worker_still_starting_is_live() -> None:
    worker = stand_in(started=False)
    assert liveness_report(worker)["live"] is True
    assert health_report(worker)["status"] == "unavailable"


@pytest.mark.parametrize(
    ("worker", "why"),
    [
        (stand_in(consumer_crashed=True), {"consumer_crashed": True, "agents_crashed": []}),
        (stand_in(crashed_agent="detect"), {"consumer_crashed": False, "agents_crashed": ["detect"]}),
    ],
)
def test_a_crash_fails_liveness_and_says_what_crashed(worker: Any, why: dict[str, Any]) -> None:
    assert liveness_report(worker) == {"live": False, **why}
    assert health_report(worker)["status"] == "unavailable"


def test_the_faust_web_server_serves_live_health_and_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ABW_CONFIG", raising=False)
    worker = StreamWorker(
        Settings(detection=DetectionSettings(builtin_rules=False)), internal_partitions=1, op_types={}
    )
    register_web(worker)
    assert {"/live", "/health", "/metrics"} <= set(worker.app.web.views)


def test_a_consuming_worker_with_elasticsearch_is_live_and_ready() -> None:
    worker = stand_in()
    assert liveness_report(worker)["live"] is True
    assert health_report(worker)["status"] == "ok"


# -- while starting ---------------------------------------------------------------------------------------------------


def test_the_starting_server_answers_live_and_not_ready_then_frees_the_port() -> None:
    port = free_port()
    with StartingServer(WorkerSettings(web_host="127.0.0.1", web_port=port)) as status:
        status.waiting_for = "Elasticsearch"
        status.retrying("cannot reach Elasticsearch at http://es:9200")
        live, health, metrics, other = (get(port, path) for path in ("/live", "/health", "/metrics", "/nope"))
    assert live[0] == 200 and json.loads(live[1])["live"] is True
    assert health[0] == 503
    assert json.loads(health[1]) == {
        "status": "starting",
        "live": True,
        "consuming": False,
        "waiting_for": "Elasticsearch",
        "error": "cannot reach Elasticsearch at http://es:9200",
    }
    assert metrics[0] == 200 and b"# TYPE" in metrics[1]
    assert other[0] == 404
    assert port_is_free(port)  # Faust's web server binds it next


def test_a_port_in_use_is_an_error_the_worker_reports() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            StartingServer(WorkerSettings(web_host="127.0.0.1", web_port=taken.getsockname()[1]))


def test_worker_answers_the_probes_while_it_waits_for_elasticsearch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The command's own Kafka check and look-up and Elasticsearch wait are replaced: the first two by a broker
    that answers and has the topics, the third by a look at the probes at that moment (then the command stops)."""
    port = free_port()
    env = {
        "ABW_CONFIG": "",
        "ABW_DETECTION__REDACTION_KEY": STRONG_KEY,
        "ABW_WORKER__WEB_HOST": "127.0.0.1",
        "ABW_WORKER__WEB_PORT": str(port),
    }
    seen: dict[str, tuple[int, bytes]] = {}

    def waiting_for_elasticsearch(settings: Any, on_retry: Any) -> dict[str, str]:
        on_retry("cannot reach Elasticsearch at http://es:9200: ConnectionError")
        seen.update({path: get(port, path) for path in ("/live", "/health")})
        raise typer.Exit(7)

    monkeypatch.setattr(stream_commands, "diagnose", lambda kafka, timeout_s: None)
    monkeypatch.setattr(
        stream_commands, "_topic_counts", lambda settings: dict.fromkeys(topic_names(settings.kafka), 1)
    )
    monkeypatch.setattr(stream_commands, "_wait_for_op_types", waiting_for_elasticsearch)
    result = CliRunner().invoke(cli, ["worker"], env=env)
    assert result.exit_code == 7, result.output
    assert seen["/live"][0] == 200
    assert seen["/health"][0] == 503
    health = json.loads(seen["/health"][1])
    assert (health["waiting_for"], health["error"]) == (
        "Elasticsearch",
        "cannot reach Elasticsearch at http://es:9200: ConnectionError",
    )
    assert port_is_free(port)


def test_the_worker_says_why_it_cannot_serve_the_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"ABW_CONFIG": "", "ABW_DETECTION__REDACTION_KEY": STRONG_KEY, "ABW_WORKER__WEB_PORT": str(port)}
        result = CliRunner().invoke(cli, ["worker"], env=env | {"ABW_WORKER__WEB_HOST": "127.0.0.1"})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.stderr.startswith(f"error: cannot serve /live and /health on 127.0.0.1:{port}: "), result.stderr


# -- the Elasticsearch probe against a cluster that refuses ---------------------------------------------------------

REFUSALS = {
    403: {
        "error": {
            "type": "security_exception",
            "reason": "action [cluster:monitor/health] is unauthorized for API key id [k1] of user [abusewatch]",
        },
        "status": 403,
    },
    401: {"error": {"type": "security_exception", "reason": "unable to authenticate with provided credentials"}},
}


@pytest.fixture
def elasticsearch() -> Iterator[dict[str, Any]]:
    """An HTTP server answering ``GET /_cluster/health`` as Elasticsearch does: ``answer`` is (status, body)."""
    state: dict[str, Any] = {"answer": (200, {"status": "green"})}

    class Handler(JsonHandler):
        def do_GET(self) -> None:
            code, body = state["answer"]
            self.reply_json(code, body, {"X-Elastic-Product": "Elasticsearch"})

    with serving(Handler) as url:
        state["url"] = url
        yield state


def probed(url: str) -> WorkerState:
    async def probe() -> WorkerState:
        client = AsyncElasticsearch(url)
        worker: Any = SimpleNamespace(es=client, state=WorkerState())
        try:
            await probe_elasticsearch(worker)
        finally:
            await client.close()
        return worker.state

    return asyncio.run(probe())


def test_a_key_without_monitor_is_a_missing_privilege_of_a_reachable_cluster(elasticsearch: dict[str, Any]) -> None:
    elasticsearch["answer"] = (403, REFUSALS[403])
    state = probed(elasticsearch["url"])
    assert state.es_reachable is True
    assert state.es_error is not None
    assert state.es_error.startswith("privilege missing: HTTP 403 action [cluster:monitor/health] is unauthorized")
    assert "`monitor` cluster privilege" in state.es_error
    assert health_report(with_state(state))["status"] == "ok"  # writes may well succeed: ready


def with_state(state: WorkerState) -> Any:
    worker = stand_in()
    worker.state = state
    return worker


def test_rejected_credentials_are_named_and_make_the_worker_unready(elasticsearch: dict[str, Any]) -> None:
    elasticsearch["answer"] = (401, REFUSALS[401])
    state = probed(elasticsearch["url"])
    assert state.es_reachable is False
    assert state.es_error == (
        "credentials rejected: HTTP 401 unable to authenticate with provided credentials; check "
        "elasticsearch.api_key or username/password"
    )
    assert health_report(with_state(state))["status"] == "unavailable"


@pytest.mark.parametrize(
    ("health", "reachable", "error"),
    [("green", True, None), ("yellow", True, None), ("red", False, "cluster status red")],
)
def test_cluster_status_decides_when_the_probe_is_allowed(
    elasticsearch: dict[str, Any], health: str, reachable: bool, error: str | None
) -> None:
    elasticsearch["answer"] = (200, {"status": health})
    state = probed(elasticsearch["url"])
    assert (state.es_reachable, state.es_error) == (reachable, error)


def test_a_closed_port_is_unreachable() -> None:
    state = probed(f"http://127.0.0.1:{free_port()}")
    assert state.es_reachable is False
    assert state.es_error is not None and state.es_error.startswith("ConnectionError")
