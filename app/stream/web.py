"""``/health`` and ``/metrics`` on the worker's Faust web server, and the periodic Elasticsearch probe.

``/health`` answers 200 with a JSON body when the worker consumes (consumer and agents running, not crashed) and
Elasticsearch answered its last probe; 503 with the same body otherwise, so an orchestrator can restart or drain.
``elasticsearch.write_error`` says why documents are being retried (a refused write, throttling): it does not make
the worker unhealthy, as a restart would not help, but an operator sees the cause there.
"""

from __future__ import annotations

import time
from typing import Any

from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.stream import metrics
from app.stream.worker import StreamWorker

_PROBE_TIMEOUT = "2s"


def health_report(worker: StreamWorker) -> dict[str, Any]:
    app = worker.app
    consumer = app.consumer
    agents_crashed = sorted(name for name, agent in app.agents.items() if agent.crashed)
    consuming = consumer.started and not consumer.crashed and not agents_crashed
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
    """Ask the cluster for its health; the result goes to ``/health`` and the ``elasticsearch_up`` gauge."""
    try:
        health = await worker.es.options(request_timeout=5, max_retries=0).cluster.health(timeout=_PROBE_TIMEOUT)
    except Exception as error:  # any failure means "not reachable"; the reason goes to /health
        worker.state.es_reachable, worker.state.es_error = False, f"{type(error).__name__}: {error}"[:300]
    else:
        reachable = health.get("status") in ("green", "yellow")
        worker.state.es_reachable = reachable
        worker.state.es_error = None if reachable else f"cluster status {health.get('status')}"
    metrics.ES_UP.set(1 if worker.state.es_reachable else 0)
