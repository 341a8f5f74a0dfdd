"""Static checks of deploy/docker-compose.yml and deploy/Dockerfile (no Docker engine needed).

The versions of Kafka and Elasticsearch come from deploy/local/pom.xml, the single source
of truth shared with deploy/local/services.sh.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"
POM = ROOT / "deploy" / "local" / "pom.xml"
MAVEN_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
DEPENDS_ON_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def _pom_property(name: str) -> str:
    value = ET.parse(POM).getroot().findtext(f"m:properties/m:{name}", namespaces=MAVEN_NS)
    assert value, f"<{name}> missing from {POM}"
    return value.strip()


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def _image_tag(service: dict[str, Any]) -> tuple[str, str]:
    repository, _, tag = service["image"].rpartition(":")
    return repository, tag


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    depends_on = service.get("depends_on", {})
    return {name: {} for name in depends_on} if isinstance(depends_on, list) else depends_on


def test_every_service_has_an_image_or_a_build(services: dict[str, dict[str, Any]]) -> None:
    assert {"kafka", "elasticsearch", "kibana", "worker", "bootstrap"} <= services.keys()
    for name, service in services.items():
        assert "image" in service or "build" in service, name


def test_infrastructure_services_have_health_checks(services: dict[str, dict[str, Any]]) -> None:
    for name in ("kafka", "elasticsearch", "kibana"):
        test = services[name].get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name


def test_depends_on_refers_to_existing_services_with_valid_conditions(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        for dependency, options in _depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            condition = options.get("condition", "service_started")
            assert condition in DEPENDS_ON_CONDITIONS, (name, dependency, condition)
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health"


def test_versions_match_the_local_services(services: dict[str, dict[str, Any]]) -> None:
    es_version = _pom_property("elasticsearch.version")
    assert _image_tag(services["elasticsearch"]) == ("docker.elastic.co/elasticsearch/elasticsearch", es_version)
    assert _image_tag(services["kibana"]) == ("docker.elastic.co/kibana/kibana", es_version)
    assert _image_tag(services["kafka"]) == ("apache/kafka", _pom_property("kafka.version"))


def test_worker_scales_and_points_at_the_compose_services(services: dict[str, dict[str, Any]]) -> None:
    for name in ("worker", "bootstrap"):
        service = services[name]
        assert (ROOT / "deploy" / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        assert service["environment"]["ABW_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert service["environment"]["ABW_ES_URL"] == "http://elasticsearch:9200"
    # Fixed names or host ports would make `--scale worker=N` fail.
    assert "container_name" not in services["worker"]
    assert "ports" not in services["worker"]
    assert services["bootstrap"]["command"] == ["bootstrap"]
    assert _depends_on(services["worker"])["bootstrap"]["condition"] == "service_completed_successfully"


def test_dockerfile_installs_the_package_and_runs_the_worker() -> None:
    instructions = [line.strip() for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines() if line.strip()]
    assert "FROM python:3.11-slim" in instructions
    assert any(line.startswith("RUN pip install -c constraints.txt .") for line in instructions)  # the tested versions
    assert 'ENTRYPOINT ["abusewatch"]' in instructions
    assert 'CMD ["worker"]' in instructions


def _docker_compose_available() -> bool:
    """The docker CLI can exist without its compose plugin (as on the dev machines)."""
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False, timeout=60)
    return probe.returncode == 0


def test_docker_compose_accepts_the_file() -> None:
    if not _docker_compose_available():
        pytest.skip("`docker compose` is not installed; the checks above still ran")
    # `config` only parses, validates and interpolates: it needs no Docker engine.
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
