"""Structural checks of deploy/k8s: every object is listed, wired to the others, and agrees with the settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from app.settings import Settings

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
NAMESPACE = "abusewatch"


def _documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


DOCS = _documents()


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in DOCS if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def config() -> dict[str, Any]:
    return yaml.safe_load(one("ConfigMap")["data"]["config.yaml"])


def worker_container() -> dict[str, Any]:
    return one("Deployment")["spec"]["template"]["spec"]["containers"][0]


def test_kustomization_lists_every_manifest_and_nothing_missing() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def test_every_object_is_namespaced_and_typed() -> None:
    kinds = {d["kind"] for d in DOCS}
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "PodDisruptionBudget", "Job", "ScaledObject"} <= kinds
    for doc in DOCS:
        assert doc["apiVersion"] and doc["metadata"]["name"]
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]


def test_configmap_is_valid_product_settings() -> None:
    settings = Settings(**config())  # every section forbids extras: a misspelt key, at any depth, fails here
    assert settings.worker.web_host == "0.0.0.0"  # probes come from the kubelet, not localhost
    assert settings.worker.web_port == 6066


@pytest.mark.parametrize(("section", "typo"), [("kafka", "bootstrap_servers"), ("detection", "rule_dir")])
def test_a_misspelt_key_in_the_configmap_would_fail(section: str, typo: str) -> None:
    data = config()
    data[section][typo] = "x"
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Settings(**data)


def test_secret_keys_are_settings_that_exist() -> None:
    for secret in (d for d in DOCS if d["kind"] == "Secret" and d["metadata"]["name"] == "abusewatch"):
        for key, value in secret["stringData"].items():
            section, _, name = key.removeprefix("ABW_").lower().partition("__")
            assert name in Settings.model_fields[section].annotation.model_fields, key
            assert "CHANGE-ME" in value  # placeholders only, never a real credential


def test_worker_probes_restart_on_a_crash_only_and_hold_traffic_while_unready() -> None:
    """Liveness and start-up on /live (fails only when the consumer or an agent crashed), readiness on /health
    (also fails while Elasticsearch is down): an Elasticsearch outage must not restart every worker."""
    container = worker_container()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["web"] == config()["worker"]["web_port"]
    paths = {
        probe: container[probe]["httpGet"]["path"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert paths == {"startupProbe": "/live", "readinessProbe": "/health", "livenessProbe": "/live"}
    for probe in paths:
        port = container[probe]["httpGet"]["port"]
        assert ports.get(port, port) == 6066


def writable_mounts(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """Mount path -> volume name of the container's writable emptyDir volumes."""
    scratch = {volume["name"] for volume in pod["volumes"] if "emptyDir" in volume}
    return {
        mount["mountPath"]: mount["name"]
        for mount in container["volumeMounts"]
        if mount["name"] in scratch and not mount.get("readOnly")
    }


@pytest.mark.parametrize("kind", ["Job", "Deployment"])
def test_pods_meet_the_restricted_pod_security_standard(kind: str) -> None:
    pod = one(kind)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert context["readOnlyRootFilesystem"] is True
        assert "/tmp" in writable_mounts(pod, container)  # the only writable place Python's tempfile looks at


def test_the_compiled_rule_pack_cache_is_on_a_writable_volume() -> None:
    """The root filesystem is read-only: without ABW_CACHE_DIR on a volume every start compiles the pack cold."""
    pod, container = one("Deployment")["spec"]["template"]["spec"], worker_container()
    env = {item["name"]: item.get("value") for item in container["env"]}
    cache = Path(env["ABW_CACHE_DIR"])
    assert any(cache.is_relative_to(mount) for mount in writable_mounts(pod, container))


def test_keda_owns_the_worker_replica_count() -> None:
    """A fixed `replicas` would be reset on every `kubectl apply` and moved back by KEDA: two rebalances."""
    deployment = one("Deployment")
    assert one("ScaledObject")["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert "replicas" not in deployment["spec"]


def test_the_docs_say_how_to_run_the_bootstrap_job_again() -> None:
    """A Job's pod template is immutable: re-applying a changed one fails unless the Job is deleted first."""
    name = one("Job")["metadata"]["name"]
    scaling = (K8S.parent.parent / "docs" / "scaling.md").read_text()
    assert f"kubectl -n {NAMESPACE} delete job {name} --ignore-not-found" in scaling
    assert f"kubectl -n {NAMESPACE} wait --for=condition=complete job/{name}" in scaling


def test_worker_resources_and_graceful_shutdown() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    resources = worker_container()["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert worker_container()["args"] == ["worker"]
    env = {item["name"]: item["value"] for item in worker_container()["env"]}
    mounts = {m["name"]: m["mountPath"] for m in worker_container()["volumeMounts"]}
    assert env["ABW_CONFIG"].startswith(mounts["config"])
    assert config()["worker"]["data_dir"] == mounts["data"]


def test_selectors_match_the_worker_pods() -> None:
    deployment = one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        one("Service")["spec"]["selector"],
    ]
    for selector in selectors:
        assert selector.items() <= pod_labels.items()


def test_scrape_annotations_point_at_metrics_once() -> None:
    """On the pods only: on the Service too, the usual kubernetes-pods and kubernetes-service-endpoints jobs would
    both scrape every worker, and sums of counters across jobs would double."""
    scrape = one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert scrape["prometheus.io/scrape"] == "true"
    assert scrape["prometheus.io/port"] == str(config()["worker"]["web_port"])
    assert scrape["prometheus.io/path"] == "/metrics"
    service = one("Service")["metadata"].get("annotations", {})
    assert not [key for key in service if key.startswith("prometheus.io/")]


@pytest.mark.parametrize("kind", ["Job", "Deployment"])
def test_the_ca_the_config_names_is_a_required_secret_the_kustomization_never_overwrites(kind: str) -> None:
    """configmap.yaml names /etc/abusewatch/tls/ca.crt: a pod must not start without it (an optional mount let pods
    start and fail on their first connection), and ``kubectl apply -k`` must not replace the operator's CA with a
    placeholder, so the Secret is created by hand, as the kustomization's header says."""
    settings = config()
    spec = one(kind)["spec"]["template"]["spec"]
    (tls,) = [volume for volume in spec["volumes"] if "secret" in volume and volume["name"] == "tls"]
    assert not tls["secret"].get("optional", False)
    (mount,) = [mount for mount in spec["containers"][0]["volumeMounts"] if mount["name"] == "tls"]
    name = tls["secret"]["secretName"]
    assert not [d for d in DOCS if d["kind"] == "Secret" and d["metadata"]["name"] == name]
    for path in (settings["kafka"]["ssl_cafile"], settings["elasticsearch"]["ca_certs"]):
        assert path == f"{mount['mountPath'].rstrip('/')}/ca.crt"
    assert f"create secret generic {name} --from-file=ca.crt=" in (K8S / "kustomization.yaml").read_text()


@pytest.mark.parametrize("kind", ["Job", "Deployment"])
def test_containers_read_config_and_secret(kind: str) -> None:
    container = one(kind)["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": "abusewatch"}} in container["envFrom"]
    assert container["image"] == "abusewatch"  # rewritten by the kustomization's images entry
    volumes = one(kind)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": one("ConfigMap")["metadata"]["name"]}} in volumes


def test_bootstrap_job_runs_bootstrap() -> None:
    job = one("Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["bootstrap"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")
