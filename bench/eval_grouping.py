"""How much alert grouping cuts raw detections down to alerts, and proof that no attacker is lost on the way.

    python -m bench.eval_grouping [--hours 48] [--benign-users 120] [--seeds 0,1] [--samples] [--json]

Simulated traffic (:mod:`app.traffic.simulate`, every attacker kind) or the bundled samples (``--samples``,
``app/samples/labels.json``) go through the engine's detectors, plus the anomaly detector if the engine does not
run it yet, in batches. The *grouping factor* is raw detections / distinct alert documents (alerts are updated in
place, so an alert id counts once however often it was rewritten). Entity-risk alerts come from the grouper, not
from a detection, so they are counted apart; shadow (``status: test``) detections and
alerts are left out of both. An attacker is *named* by a detection or an alert through its identity key, its
API-key hash or its source IP; grouping must not lose one: every attacker a raw detection named is named by an
alert too.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.engine import build_detectors
from app.replay import decoded_lines
from app.settings import Settings
from app.traffic.samples import read_labels, sample_files
from app.traffic.simulate import ATTACK_KINDS, SimulationConfig, simulate
from detectors.alerting import RISK_RULE_ID
from detectors.anomaly import AnomalyDetector
from detectors.base import Detection
from detectors.campaigns import CampaignDetector, campaign_candidates
from detectors.event import Event, Identity
from detectors.pipeline import Pipeline
from detectors.redact import Redactor

BATCH_SIZE = 500


@dataclass(slots=True)
class GroupingResult:
    """Counts of one run; ``attackers`` maps every name of an attacker (identity, key, IP) to its identity key."""

    events: int = 0
    detections: Counter[str] = field(default_factory=Counter)  # per category
    alerts: Counter[str] = field(default_factory=Counter)  # per category, distinct alert ids of detections
    risk_alerts: int = 0  # entity-risk alerts: raised by the grouper itself, so not in the factor
    attackers: dict[str, str] = field(default_factory=dict)
    named_by_detections: set[str] = field(default_factory=set)
    named_by_alerts: set[str] = field(default_factory=set)

    @property
    def factor(self) -> float:
        """Raw detections per alert (1.0 when there is nothing to group)."""
        alerts = sum(self.alerts.values())
        return sum(self.detections.values()) / alerts if alerts else 1.0

    @property
    def attacker_identities(self) -> set[str]:
        return set(self.attackers.values())

    @property
    def lost(self) -> set[str]:
        """Attackers some raw detection named that no alert names: what grouping must never produce."""
        return self.named_by_detections - self.named_by_alerts

    @property
    def missing(self) -> set[str]:
        """Labelled attackers no alert names (missed by the detectors or lost by grouping)."""
        return self.attacker_identities - self.named_by_alerts

    def as_dict(self) -> dict[str, Any]:
        categories = sorted(set(self.detections) | set(self.alerts))
        return {
            "events": self.events,
            "detections": sum(self.detections.values()),
            "alerts": sum(self.alerts.values()),
            "risk_alerts": self.risk_alerts,
            "factor": round(self.factor, 2),
            "per_category": {
                c: {
                    "detections": self.detections[c],
                    "alerts": self.alerts[c],
                    "factor": round(self.detections[c] / self.alerts[c], 2) if self.alerts[c] else None,
                }
                for c in categories
            },
            "attackers": len(self.attacker_identities),
            "attackers_in_detections": len(self.named_by_detections),
            "attackers_in_alerts": len(self.named_by_alerts),
            "lost_by_grouping": sorted(self.lost),
            "missing_from_alerts": sorted(self.missing),
        }


def identity_names(identity: Identity) -> set[str]:
    """The names an identity can be recognised by: its key, its API-key hash and its source IP."""
    names = {identity.key()}
    if identity.api_key_hash:
        names.add(f"key:{identity.api_key_hash}")
    if identity.source_ip:
        names.add(f"ip:{identity.source_ip}")
    return names


def detection_names(detection: Detection) -> set[str]:
    """Every identity, key and IP a raw detection names (related users are identity keys or user ids)."""
    names = identity_names(detection.identity)
    names.update(detection.related_users)
    names.update(f"user:{user}" for user in detection.related_users)
    names.update(f"ip:{ip}" for ip in detection.related_ips)
    return names


def alert_names(document: dict[str, Any]) -> set[str]:
    """Every identity, key and IP an alert document names, read back from its ECS fields."""
    own = document.get("abusewatch", {})
    names = {own["identity_key"]} if own.get("identity_key") else set()
    if own.get("api_key_hash"):
        names.add(f"key:{own['api_key_hash']}")
    related = document.get("related", {})
    names.update(related.get("user", []))
    names.update(f"user:{user}" for user in related.get("user", []))
    names.update(f"ip:{ip}" for ip in [*related.get("ip", []), document.get("source", {}).get("ip")] if ip)
    return names


def grouping_pipeline(settings: Settings | None = None) -> Pipeline:
    """The engine's detectors (:func:`app.engine.build_detectors`, the anomaly tier included)."""
    settings = settings or Settings()
    detectors = build_detectors(settings)
    redactor = Redactor(settings.detection.redaction_key.get_secret_value().encode("utf-8"))
    return Pipeline(detectors, redactor)


def measure(
    events: Sequence[Event], attackers: dict[str, str], pipeline: Pipeline, batch_size: int = BATCH_SIZE
) -> GroupingResult:
    """Run ``events`` through ``pipeline`` in batches and count raw detections, alerts and attackers named."""
    result = GroupingResult(events=len(events), attackers=attackers)
    alerts: dict[str, dict[str, Any]] = {}

    def record(detections: Iterable[Detection], documents: Iterable[dict[str, Any]]) -> None:
        for detection in detections:
            if detection.rule.status == "test":
                continue
            result.detections[detection.rule.category] += 1
            result.named_by_detections.update(attackers[n] for n in detection_names(detection) if n in attackers)
        for document in documents:
            alerts[document["event"]["id"]] = document

    campaigns = CampaignDetector()  # the cross-identity stage, fed what the anomaly tier wrote on each event
    for offset in range(0, len(events), batch_size):
        batch = events[offset : offset + batch_size]
        output = pipeline.process(batch)
        record(output.detections, output.alerts)
        found = campaigns.detect(campaign_candidates(batch, output.events))
        record(found, pipeline.render([], [], found).alerts)
    for detector in [*pipeline.detectors, campaigns]:
        if isinstance(detector, AnomalyDetector | CampaignDetector):  # the end of the traffic closes open windows
            flushed = detector.flush()
            record(flushed, pipeline.render([], [], flushed).alerts)
    for document in alerts.values():
        if document["rule"]["id"] == RISK_RULE_ID:
            result.risk_alerts += 1
        else:
            result.alerts[document["rule"]["category"]] += 1
        result.named_by_alerts.update(attackers[n] for n in alert_names(document) if n in attackers)
    return result


def simulated(hours: float, benign_users: int, seed: int, pipeline: Pipeline | None = None) -> GroupingResult:
    """One simulation with one attacker of every kind (a campaign is several identities)."""
    simulation = simulate(
        SimulationConfig(hours=hours, benign_users=benign_users, attackers=dict.fromkeys(ATTACK_KINDS, 1), seed=seed)
    )
    attackers: dict[str, str] = {}
    for label in simulation.labels:
        attackers[label.identity] = label.identity
        if label.api_key_hash:
            attackers[f"key:{label.api_key_hash}"] = label.identity
        if label.source_ip:
            attackers[f"ip:{label.source_ip}"] = label.identity
    return measure(simulation.events, attackers, pipeline or grouping_pipeline())


def samples(pipeline: Pipeline | None = None) -> GroupingResult:
    """The bundled sample traffic; its labelled attack events name the attacking identity keys."""
    limits = Settings().detection
    events: list[Event] = []
    for batch, _, _ in decoded_lines(
        [str(path) for path in sample_files().values()],
        max_bytes=limits.max_record_bytes,
        max_text_chars=limits.max_text_chars,
    ):
        events.extend(batch)
    events.sort(key=lambda event: event.timestamp)
    # identity keys only: the support widget's API key and office IPs are shared with benign users
    attackers = {label["user"]: label["user"] for label in read_labels().values()}
    return measure(events, attackers, pipeline or grouping_pipeline())


def merge(results: Iterable[GroupingResult]) -> GroupingResult:
    """Several runs added up (attacker names are unique per seed)."""
    total = GroupingResult()
    for result in results:
        total.events += result.events
        total.detections.update(result.detections)
        total.alerts.update(result.alerts)
        total.risk_alerts += result.risk_alerts
        total.attackers.update(result.attackers)
        total.named_by_detections |= result.named_by_detections
        total.named_by_alerts |= result.named_by_alerts
    return total


def markdown(title: str, report: dict[str, Any]) -> str:
    lines = [
        f"**{title}**: {report['events']:,} events, {report['detections']:,} raw detections, "
        f"{report['alerts']:,} alerts (plus {report['risk_alerts']} entity-risk alerts): "
        f"grouping factor **{report['factor']}**",
        "",
        "| category | raw detections | alerts | factor |",
        "|---|---:|---:|---:|",
    ]
    for category, row in report["per_category"].items():
        lines.append(f"| {category} | {row['detections']:,} | {row['alerts']:,} | {row['factor'] or '-'} |")
    lines += [
        "",
        f"Attackers: {report['attackers']} labelled, {report['attackers_in_detections']} named by raw detections, "
        f"{report['attackers_in_alerts']} named by alerts; lost by grouping: {report['lost_by_grouping'] or 'none'}; "
        f"in no alert: {report['missing_from_alerts'] or 'none'}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=48.0, help="Event-time span per seed.")
    parser.add_argument("--benign-users", type=int, default=120)
    parser.add_argument("--seeds", default="0,1", help="Comma-separated simulator seeds.")
    parser.add_argument("--samples", action="store_true", help="Measure the bundled samples instead.")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of Markdown.")
    args = parser.parse_args(argv)
    if args.samples:
        title, result = "Bundled samples", samples()
    else:
        seeds = [int(seed) for seed in args.seeds.split(",")]
        title = f"Simulated traffic ({args.hours:g} h, {args.benign_users} benign users, seeds {args.seeds})"
        result = merge(simulated(args.hours, args.benign_users, seed) for seed in seeds)
    report = result.as_dict()
    print(json.dumps(report, indent=1) if args.json else markdown(title, report))
    return 1 if result.lost else 0


if __name__ == "__main__":
    sys.exit(main())
