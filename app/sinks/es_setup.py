"""Elasticsearch setup: templates, ILM policies, data streams or indices — installed idempotently.

The JSON in ``deploy/elasticsearch`` holds the mappings; index patterns come from the configured index names, so
each deployment (and each test) gets templates that match exactly its own indices, and the component templates
they are composed of are installed once per index template under its name (``<index template>@<component>``), so
bootstrapping one deployment never changes another's mappings on a shared cluster. Features are detected, not
assumed: the full distribution gets data streams and ILM, a cluster without them (e.g. the integ-test
distribution) gets plain indices from the same templates. Each installed object carries a hash of its content,
so running the setup again changes nothing and says so.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elastic_transport import ApiError
from elasticsearch import Elasticsearch

from app.settings import ElasticsearchSettings, Settings

HASH_KEY = "abusewatch_hash"
TEMPLATE_PREFIX = "abusewatch-"
DEAD_LETTER_POLICY_SUFFIX = "-dead-letter"


@dataclass(frozen=True, slots=True)
class Capabilities:
    data_streams: bool
    ilm: bool


def targets(es: ElasticsearchSettings) -> dict[str, str]:
    """Template kind (file name in ``index/``) -> index or data stream name."""
    return {
        "events": es.events_index,
        "alerts": es.alerts_index,
        "shadow_alerts": es.shadow_alerts_index,
        "dead_letter": es.dead_letter_index,
    }


# Alerts are updated in place (their group grows; analysts set a verdict on them), which data streams refuse.
UPDATED_IN_PLACE = frozenset({"alerts", "shadow_alerts"})


def index_template_name(target: str) -> str:
    return TEMPLATE_PREFIX + target


def component_template_name(target: str, component: str) -> str:
    """The copy of ``component`` (a file name in ``component/``) that ``target``'s index template is composed of."""
    return f"{index_template_name(target)}@{component}"


def detect_capabilities(client: Elasticsearch) -> Capabilities:
    """Which optional APIs the cluster has (the integ-test distribution answers 405 for both)."""
    return Capabilities(data_streams=_answers(client, "/_data_stream"), ilm=_answers(client, "/_ilm/policy"))


def use_data_streams(settings: ElasticsearchSettings, capabilities: Capabilities) -> bool:
    if settings.data_streams == "always" and not capabilities.data_streams:
        raise RuntimeError("elasticsearch.data_streams is 'always' but this cluster has no data stream API")
    return settings.data_streams == "always" or (settings.data_streams == "auto" and capabilities.data_streams)


def op_types(client: Elasticsearch, settings: ElasticsearchSettings) -> dict[str, str]:
    """Bulk op type per target: ``update`` for alerts (created, then grown in place; see
    :class:`app.sinks.elasticsearch.ElasticsearchSink`), ``create`` for everything else, data streams or plain
    indices alike.

    ``create`` makes the first write of a document final, as data streams do anyway: a record ingested twice (its
    raw partition moved before the ingest offset was committed) may reach an identity partition that no longer
    remembers it (older than the partition's share of ``worker.dedupe_capacity``, or no readable checkpoint),
    and is detected again with state that has moved on (its window already closed, "late"); that
    second rendering must not replace the document written when the event was first processed. Asks the cluster
    what each target is, so the sink matches whatever bootstrap (or an operator) created.
    """
    streams = _answers(client, "/_data_stream")  # not ILM: the worker's key need not read lifecycle policies
    result: dict[str, str] = {}
    for kind, target in targets(settings).items():
        stream = streams and _answers(client, f"/_data_stream/{target}")
        result[target] = "update" if kind in UPDATED_IN_PLACE and not stream else "create"
    return result


def load_json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def with_hash(body: dict[str, Any], meta_path: tuple[str, ...] = ("_meta",)) -> dict[str, Any]:
    """``body`` with a hash of its content stored under ``meta_path`` (so reinstalling can be skipped)."""
    body = copy.deepcopy(body)
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    node = body
    for key in meta_path:
        node = node.setdefault(key, {})
    node[HASH_KEY] = digest
    return body


def desired_index_template(
    kind: str, target: str, templates_dir: Path, *, data_stream: bool, ilm_policy: str | None
) -> dict[str, Any]:
    body = load_json(templates_dir / "index" / f"{kind}.json")
    body["index_patterns"] = [target]
    body["composed_of"] = [component_template_name(target, component) for component in body.get("composed_of", [])]
    if data_stream:
        body["data_stream"] = {}
    if ilm_policy:
        body.setdefault("template", {}).setdefault("settings", {})["index.lifecycle.name"] = ilm_policy
    return with_hash(body)


def dead_letter_policy(retention_days: int) -> dict[str, Any]:
    return {
        "policy": {
            "_meta": {"description": f"abusewatch dead letters: delete after {retention_days} days"},
            "phases": {
                "hot": {"actions": {"rollover": {"max_age": "1d", "max_primary_shard_size": "50gb"}}},
                "delete": {"min_age": f"{retention_days}d", "actions": {"delete": {}}},
            },
        }
    }


def install(client: Elasticsearch, settings: Settings) -> list[str]:
    """Install everything; returns one line per object saying what was done (created, updated, unchanged)."""
    es = settings.elasticsearch
    capabilities = detect_capabilities(client)
    streams = use_data_streams(es, capabilities)
    report = [
        f"cluster: data streams {'available' if capabilities.data_streams else 'unavailable'}, "
        f"ILM {'available' if capabilities.ilm else 'unavailable'}; writing to "
        f"{'data streams' if streams else 'plain indices'}"
    ]
    dead_policy = es.ilm_policy + DEAD_LETTER_POLICY_SUFFIX
    if capabilities.ilm:
        policies = {
            es.ilm_policy: load_json(es.templates_dir / "ilm-policy.json"),
            dead_policy: dead_letter_policy(settings.detection.dead_letter_retention_days),
        }
        for name, policy in policies.items():
            report.append(_put_ilm_policy(client, name, with_hash(policy, ("policy", "_meta"))))
    for kind, target in targets(es).items():
        stream = streams and kind not in UPDATED_IN_PLACE
        policy = (dead_policy if kind == "dead_letter" else es.ilm_policy) if capabilities.ilm and stream else None
        body = desired_index_template(kind, target, es.templates_dir, data_stream=stream, ilm_policy=policy)
        for name in body["composed_of"]:  # this deployment's copies, named <index template>@<component file>
            component_body = with_hash(load_json(es.templates_dir / "component" / f"{name.partition('@')[2]}.json"))
            report.append(_put_component_template(client, name, component_body))
        report.append(_put_index_template(client, index_template_name(target), body))
    for kind, target in targets(es).items():
        report.append(_create_target(client, target, data_stream=streams and kind not in UPDATED_IN_PLACE))
    return report


def missing(client: Elasticsearch, settings: ElasticsearchSettings) -> list[str]:
    """Templates and targets that bootstrap should have created but are not there."""
    absent = []
    for target in targets(settings).values():
        name = index_template_name(target)
        if not client.indices.exists_index_template(name=name):
            absent.append(f"index template {name}")
        if not client.indices.exists(index=target):
            absent.append(f"index or data stream {target}")
    return absent


def _answers(client: Elasticsearch, path: str) -> bool:
    """Whether ``GET path`` finds something. A refusal (401, 403) is no answer: it is raised, so a key lacking
    ``view_index_metadata`` is reported as such instead of taking a data stream for a plain index (whose alert
    updates the stream would then refuse for ever)."""
    try:
        client.perform_request("GET", path, headers={"accept": "application/json"})
    except ApiError as error:
        if error.status_code in (401, 403):
            raise
        return False
    return True


def _stored_hash(meta: Any) -> str | None:
    return meta.get(HASH_KEY) if isinstance(meta, dict) else None


def _put_ilm_policy(client: Elasticsearch, name: str, body: dict[str, Any]) -> str:
    try:
        current = client.ilm.get_lifecycle(name=name)[name]["policy"].get("_meta")
    except ApiError as error:
        if error.status_code != 404:
            raise
        current = None
    if _stored_hash(current) == body["policy"]["_meta"][HASH_KEY]:
        return f"ILM policy {name}: unchanged"
    client.ilm.put_lifecycle(name=name, policy=body["policy"])
    return f"ILM policy {name}: {'updated' if current is not None else 'created'}"


def _put_component_template(client: Elasticsearch, name: str, body: dict[str, Any]) -> str:
    current = None
    if client.cluster.exists_component_template(name=name):
        found = client.cluster.get_component_template(name=name)["component_templates"][0]["component_template"]
        current = found.get("_meta", {})
    if _stored_hash(current) == body["_meta"][HASH_KEY]:
        return f"component template {name}: unchanged"
    client.cluster.put_component_template(name=name, template=body["template"], meta=body["_meta"])
    return f"component template {name}: {'updated' if current is not None else 'created'}"


def _put_index_template(client: Elasticsearch, name: str, body: dict[str, Any]) -> str:
    current = None
    if client.indices.exists_index_template(name=name):
        found = client.indices.get_index_template(name=name)["index_templates"][0]["index_template"]
        current = found.get("_meta", {})
    if _stored_hash(current) == body["_meta"][HASH_KEY]:
        return f"index template {name}: unchanged"
    client.indices.put_index_template(
        name=name, **{("meta" if key == "_meta" else key): value for key, value in body.items()}
    )
    verb = "updated (existing indices keep their mapping until rollover)" if current is not None else "created"
    return f"index template {name}: {verb}"


def _create_target(client: Elasticsearch, target: str, *, data_stream: bool) -> str:
    kind = "data stream" if data_stream else "index"
    if client.indices.exists(index=target):
        return f"{kind} {target}: exists"
    try:
        if data_stream:
            client.indices.create_data_stream(name=target)
        else:
            client.indices.create(index=target)
    except ApiError as error:
        if error.status_code == 400 and "already_exists" in str(error):
            return f"{kind} {target}: exists"
        raise
    return f"{kind} {target}: created"
