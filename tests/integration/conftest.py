"""Fixtures for integration tests against a real Kafka broker and Elasticsearch node.

The session fixture ``services`` reuses running services when ``ABW_KAFKA_BOOTSTRAP`` and
``ABW_ES_URL`` are set and both answer, or when ``deploy/local/services.sh status`` finds
its own pair healthy; otherwise it runs ``services.sh up`` once, and then ``down`` at the
end of the session (only in that case).

For the session it exports ``ABW_KAFKA_BOOTSTRAP`` and ``ABW_ES_URL``, so code under test
that takes its settings from the environment finds the same services.

Every test under tests/integration is marked ``integration``: deselect them with
``pytest -m "not integration"``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch
from kafka import KafkaAdminClient

from app.settings import Settings, load_settings
from app.sinks import es_setup

HERE = Path(__file__).resolve().parent
SERVICES_SH = HERE.parents[1] / "deploy" / "local" / "services.sh"

# A cold `up` downloads ~170 MB with Maven and then waits up to ABW_HEALTH_TIMEOUT (180 s).
UP_TIMEOUT_S = 900
# Restarting one service waits for its health; stopping may wait ABW_STOP_TIMEOUT (60 s).
SERVICE_TIMEOUT_S = 300
INTEGRATION_REDACTION_KEY = "integration-tests-redaction-key-7f3a9c"  # not weak: the worker refuses those


def _run_script(command: str, timeout: float) -> str:
    """Run services.sh COMMAND; return its stdout (its progress messages go to stderr)."""
    result = subprocess.run(
        ["bash", str(SERVICES_SH), command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{SERVICES_SH} {command} failed with exit code {result.returncode}")
    return result.stdout


def _parse_exports(text: str) -> dict[str, str]:
    """``export NAME=value`` lines -> {NAME: value}."""
    exports = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            name, value = line.removeprefix("export ").split("=", 1)
            exports[name] = value
    return exports


def _kafka_reachable(bootstrap: str) -> bool:
    """True if a broker at ``bootstrap`` answers a metadata request."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, bootstrap_timeout_ms=5000, request_timeout_ms=5000)
    except Exception:  # kafka-python raises NoBrokersAvailable, KafkaTimeoutError, ...
        return False
    try:
        return bool(admin.describe_cluster().get("brokers"))
    except Exception:
        return False
    finally:
        admin.close()


def _es_reachable(url: str) -> bool:
    """True if the cluster at ``url`` is at least yellow.

    Uses the cluster health API, not ``ping()``: the integ-test distribution has no
    ``GET /`` endpoint, so ``ping()`` is always False there.
    """
    with Elasticsearch(url, request_timeout=10) as es:
        try:
            health = es.cluster.health(wait_for_status="yellow", timeout="5s")
        except Exception:
            return False
    return health["status"] in ("yellow", "green") and not health["timed_out"]


class Services:
    """The Kafka and Elasticsearch the integration tests run against.

    ``managed`` is True when deploy/local/services.sh controls them (it started them, or
    its ``status`` reports exactly these endpoints healthy); only then can tests stop and
    restart them. The start methods return once the service is healthy again, on the
    same data directory.
    """

    def __init__(self, kafka_bootstrap: str, es_url: str, managed: bool) -> None:
        self.kafka_bootstrap = kafka_bootstrap
        self.es_url = es_url
        self.managed = managed

    def _control(self, command: str) -> None:
        if not self.managed:
            pytest.skip("services are not managed by deploy/local/services.sh; cannot stop/start them")
        _run_script(command, SERVICE_TIMEOUT_S)

    def stop_es(self) -> None:
        self._control("stop-es")

    def start_es(self) -> None:
        self._control("start-es")

    def stop_kafka(self) -> None:
        self._control("stop-kafka")

    def start_kafka(self) -> None:
        self._control("start-kafka")

    @contextlib.contextmanager
    def es_stopped(self) -> Iterator[None]:
        """Elasticsearch is down inside the block and healthy again after it, even on error."""
        self.stop_es()
        try:
            yield
        finally:
            self.start_es()

    @contextlib.contextmanager
    def kafka_stopped(self) -> Iterator[None]:
        """Kafka is down inside the block and healthy again after it, even on error."""
        self.stop_kafka()
        try:
            yield
        finally:
            self.start_kafka()


def _script_endpoints() -> tuple[str, str] | None:
    """(bootstrap, url) of the services services.sh runs, if both are up and healthy."""
    try:
        _run_script("status", 120)
        exports = _parse_exports(_run_script("env", 60))
    except (RuntimeError, subprocess.TimeoutExpired):
        return None
    return exports["ABW_KAFKA_BOOTSTRAP"], exports["ABW_ES_URL"]


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    kafka_bootstrap = os.environ.get("ABW_KAFKA_BOOTSTRAP")
    es_url = os.environ.get("ABW_ES_URL")
    started = False
    if kafka_bootstrap and es_url and _kafka_reachable(kafka_bootstrap) and _es_reachable(es_url):
        managed = _script_endpoints() == (kafka_bootstrap, es_url)
    elif (endpoints := _script_endpoints()) is not None:
        # Started earlier by hand (`services.sh up`): use them, leave them running.
        kafka_bootstrap, es_url = endpoints
        managed = True
    else:
        try:
            exports = _parse_exports(_run_script("up", UP_TIMEOUT_S))
        except BaseException:
            _run_script("down", SERVICE_TIMEOUT_S)  # do not leave a half-started pair behind
            raise
        kafka_bootstrap, es_url = exports["ABW_KAFKA_BOOTSTRAP"], exports["ABW_ES_URL"]
        started = managed = True
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("ABW_KAFKA_BOOTSTRAP", kafka_bootstrap)
            env.setenv("ABW_ES_URL", es_url)
            env.setenv("ABW_DETECTION__REDACTION_KEY", INTEGRATION_REDACTION_KEY)  # the worker refuses a weak key
            yield Services(kafka_bootstrap, es_url, managed)
    finally:
        if started:
            _run_script("down", SERVICE_TIMEOUT_S)


@pytest.fixture(scope="session")
def kafka_bootstrap(services: Services) -> str:
    """Bootstrap servers, e.g. ``127.0.0.1:19092``."""
    return services.kafka_bootstrap


@pytest.fixture(scope="session")
def es_url(services: Services) -> str:
    """Elasticsearch base URL, e.g. ``http://127.0.0.1:19200``."""
    return services.es_url


@pytest.fixture
def es_client(es_url: str) -> Iterator[Elasticsearch]:
    with Elasticsearch(es_url, request_timeout=30) as client:
        yield client


@contextlib.contextmanager
def product_indices(es_client: Elasticsearch, es_url: str, name: str) -> Iterator[Settings]:
    """Settings whose targets are fresh ``logs-<name>.<kind>-<random>`` indices with the product's templates
    installed; the ``ABW_ELASTICSEARCH__*`` variables naming them stay set (for commands run in-process) until the
    block ends, and then the targets and their templates are deleted."""
    suffix = uuid.uuid4().hex[:10]
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("ABW_CONFIG", raising=False)
        patch.setenv("ABW_ELASTICSEARCH__URL", es_url)
        for kind in ("events", "alerts", "shadow_alerts", "dead_letter"):
            patch.setenv(f"ABW_ELASTICSEARCH__{kind.upper()}_INDEX", f"logs-{name}.{kind}-{suffix}")
        settings = load_settings()
        es_setup.install(es_client, settings)
        try:
            yield settings
        finally:
            for target in es_setup.targets(settings.elasticsearch).values():
                with contextlib.suppress(Exception):
                    es_client.indices.delete(index=target, ignore_unavailable=True)
                with contextlib.suppress(Exception):
                    es_client.indices.delete_index_template(name=es_setup.index_template_name(target))
                with contextlib.suppress(Exception):
                    es_client.cluster.delete_component_template(name=es_setup.index_template_name(target) + "@*")


@pytest.hookimpl(tryfirst=True)  # before -m deselection, so `-m "not integration"` sees the mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)
