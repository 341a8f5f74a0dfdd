"""``/live``, ``/health`` and ``/metrics`` on the worker's Faust web server, and the periodic Elasticsearch probe.

``/live`` (liveness) answers 200 unless the consumer or an agent crashed: only then would a restart help. An
Elasticsearch outage does not count, the worker holds its batch and retries (docs/reliability.md).
``/health`` (readiness, and for humans) answers 200 with a JSON body when the worker consumes (consumer and agents
running) and Elasticsearch answered its last probe; 503 with the same body otherwise. ``elasticsearch.write_error``
says why documents are being retried (a refused write, throttling): it does not make the worker unhealthy, as a
restart would not help, but an operator sees the cause there.

Faust's web server starts with the Faust worker, after the rule pack is compiled and Elasticsearch answered;
:class:`StartingServer` answers the same paths until then, so the probes see a starting worker, not a dead one.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from elasticsearch import AuthenticationException, AuthorizationException
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.settings import WorkerSettings
from app.stream import metrics
from app.stream.worker import StreamWorker

_PROBE_TIMEOUT = "2s"
_MONITOR_PRIVILEGE = (
    "The health probe needs the `monitor` cluster privilege (deploy/elasticsearch/README.md, Privileges)"
)


def liveness_report(worker: StreamWorker) -> dict[str, Any]:
    """``live`` is False only when the consumer or an agent crashed; a worker still starting is live."""
    app = worker.app
    agents_crashed = sorted(name for name, agent in app.agents.items() if agent.crashed)
    consumer_crashed = bool(app.consumer.crashed)
    return {
        "live": not consumer_crashed and not agents_crashed,
        "consumer_crashed": consumer_crashed,
        "agents_crashed": agents_crashed,
    }


def health_report(worker: StreamWorker) -> dict[str, Any]:
    consumer = worker.app.consumer
    liveness = liveness_report(worker)
    agents_crashed = liveness["agents_crashed"]
    consuming = consumer.started and liveness["live"]
    state = worker.state
    return {
        "status": "ok" if consuming and state.es_reachable else "unavailable",
        "consuming": consuming,
        "assigned_partitions": len(consumer.assignment()),
        "agents_crashed": agents_crashed,
        "elasticsearch": {
            "reachable": state.es_reachable,
            "error": state.es_error,
            "write_error": state.es_write_error,  # documents refused (e.g. 403) and being retried
        },
        "seconds_since_batch": {agent: round(time.time() - at, 1) for agent, at in state.last_batch_at.items()},
    }


def update_consumer_lag(worker: StreamWorker) -> None:
    """Lag per partition from Faust's monitor: end offset minus the last offset read."""
    monitor = worker.app.monitor
    read = monitor.tp_read_offsets or {}
    for tp, end in (monitor.tp_end_offsets or {}).items():
        if tp in read:
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, end - read[tp] - 1))


def register_web(worker: StreamWorker) -> None:
    app = worker.app

    @app.page("/live")
    class Live(View):
        async def get(self, request: Request) -> Response:
            report = liveness_report(worker)
            return self.json(report, status=200 if report["live"] else 503)

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            report = health_report(worker)
            return self.json(report, status=200 if report["status"] == "ok" else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            update_consumer_lag(worker)
            return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.task
    async def probe_elasticsearch_at_start() -> None:
        await probe_elasticsearch(worker)

    @app.timer(worker.settings.worker.health_check_interval_s)
    async def probe_elasticsearch_periodically() -> None:
        await probe_elasticsearch(worker)


async def probe_elasticsearch(worker: StreamWorker) -> None:
    """Ask the cluster for its health; the result goes to ``/health`` and the ``elasticsearch_up`` gauge.

    A 403 means the cluster answered but the worker's key lacks the ``monitor`` cluster privilege this probe needs:
    Elasticsearch is reachable (writes may well succeed), and ``elasticsearch.error`` names the missing privilege.
    A 401 (credentials refused) also comes from a reachable cluster, but nothing can be written: not ready.
    """
    state = worker.state
    try:
        health = await worker.es.options(request_timeout=5, max_retries=0).cluster.health(timeout=_PROBE_TIMEOUT)
    except AuthorizationException as error:
        state.es_reachable, state.es_error = True, f"privilege missing: {_refusal(error)}. {_MONITOR_PRIVILEGE}"
    except AuthenticationException as error:
        state.es_reachable = False
        state.es_error = f"credentials rejected: {_refusal(error)}; check elasticsearch.api_key or username/password"
    except Exception as error:  # any other failure means "not reachable"; the reason goes to /health
        state.es_reachable, state.es_error = False, f"{type(error).__name__}: {error}"[:300]
    else:
        reachable = health.get("status") in ("green", "yellow")
        state.es_reachable = reachable
        state.es_error = None if reachable else f"cluster status {health.get('status')}"
    metrics.ES_UP.set(1 if state.es_reachable else 0)


def _refusal(error: AuthenticationException | AuthorizationException) -> str:
    """The status code and Elasticsearch's reason, on one short line."""
    reason = error.body.get("error", {}).get("reason") if isinstance(error.body, dict) else None
    return " ".join(f"HTTP {error.status_code} {reason or error.message}".split())[:300]


@dataclass(slots=True)
class StartupStatus:
    """What a worker still starting waits for, and the last error while waiting (shown by ``/health``)."""

    waiting_for: str = "start-up"
    error: str | None = None

    def retrying(self, problem: str) -> None:
        self.error = problem

    def report(self) -> dict[str, Any]:
        return {
            "status": "starting",
            "live": True,
            "consuming": False,
            "waiting_for": self.waiting_for,
            "error": self.error,
        }


class StartingServer:
    """Answers ``/live`` (200), ``/health`` (503) and ``/metrics`` on the worker's web port while the worker starts.

    Binds the port when created (``OSError`` if it cannot); a ``with`` block yields the :class:`StartupStatus` it
    reports and frees the port when it ends, for Faust's server.
    """

    def __init__(self, settings: WorkerSettings) -> None:
        self.status = StartupStatus()
        self._server = ThreadingHTTPServer((settings.web_host, settings.web_port), _starting_handler(self.status))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="abusewatch-starting-web", daemon=True)
        self._thread.start()

    def __enter__(self) -> StartupStatus:
        return self.status

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _starting_handler(status: StartupStatus) -> type[BaseHTTPRequestHandler]:
    class StartingHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif path in ("/live", "/health"):
                body = json.dumps(status.report()).encode()
                self._answer(200 if path == "/live" else 503, body, "application/json")
            else:
                self._answer(404, b"not found", "text/plain")

        def _answer(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Probes every few seconds would flood the log."""

    return StartingHandler
