"""What the caps on session-chain, correlation and campaign state cost when a client fills them on purpose.

Each tier is driven past its cap by hostile traffic: a new session id per request (chains, ``max_sessions``), a new
user id and IP per injection hit (correlations, ``max_groups``; the built-in rules keep two groups per hit: one per
identity, one per IP), and one-off prompt templates (campaigns, ``campaign_max_templates`` per window). Reported:
memory traced per session / group / template at the cap (tracemalloc), the tier's state as JSON, as msgpack and as
the stream checkpoints it (msgpack + zlib level 1, as ``app/stream/checkpoints.py``; the bench's ids are regular and
compress far better than real ones), and the CPU time per event while the cap evicts (one core). Also what the
campaign windows kept after they close cost at ``campaign_rejudge_max_members`` (``campaigns_kept``): windows that
alerted, of 200 members each, kept for their late members (memory traced with keeping on, less with it off).

Run: ``.venv/bin/python -m bench.bench_state_caps [--sessions 100000] [--groups 100000] [--templates 50000]
[--kept-members 50000]``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import msgspec

from detectors.anomaly.config import AnomalyConfig
from detectors.base import Findings
from detectors.campaigns import CampaignCandidate, CampaignDetector
from detectors.chains import SessionChainDetector
from detectors.correlation import BUILTIN_DIR, CorrelationDetector, load_correlations
from detectors.event import Event, Identity, Message

T0 = 1_767_600_000.0
RATE = 30.0  # requests per second of event time: the caps fill well before expiry (3 h) would


def chat(n: int, identity: Identity) -> Event:
    return Event(
        id=f"e{n}",
        timestamp=T0 + n / RATE,
        dataset="bench",
        input_messages=[Message(role="user", content="hi")],
        identity=identity,
    )


def injection() -> Findings:
    found = Findings()
    found.categories.add("prompt_injection")
    return found


def sizes(state: Any) -> dict[str, float]:
    as_json = json.dumps(state).encode()
    packed = msgspec.msgpack.encode(state)
    checkpoint = zlib.compress(packed, 1)
    return {
        "state_json_mib": round(len(as_json) / 2**20, 2),
        "msgpack_mib": round(len(packed) / 2**20, 2),  # the bound when keys do not compress (here they are regular)
        "checkpoint_mib": round(len(checkpoint) / 2**20, 2),
    }


def measure(fill: Callable[[int], None], count: int, probe: Callable[[int], None], probes: int) -> dict[str, float]:
    """Bytes traced for ``count`` entries made by ``fill``, then CPU microseconds per ``probe`` call at the cap."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(count):
        fill(n)
    traced = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    start = time.process_time()
    for n in range(probes):
        probe(count + n)
    cpu = time.process_time() - start
    return {"traced_mib": round(traced / 2**20, 1), "cpu_us_per_event_at_cap": round(cpu / probes * 1e6, 1)}


def chains(sessions: int, probes: int) -> dict[str, Any]:
    detector = SessionChainDetector(shingle_key=b"k" * 32, max_sessions=sessions)

    def step(n: int) -> None:
        detector.detect([chat(n, Identity(user_id="one-client", session_id=f"s-{n}"))], [Findings()])

    result: dict[str, Any] = {"max_sessions": sessions, **measure(step, sessions, step, probes)}
    result["bytes_per_session"] = round(result["traced_mib"] * 2**20 / sessions)
    return {**result, "evicted": detector.evictions.count, **sizes(detector.state())}


def correlations(groups: int, probes: int) -> dict[str, Any]:
    rules, errors = load_correlations([BUILTIN_DIR])
    if errors:
        raise SystemExit(f"cannot load the built-in correlations: {errors}")
    detector = CorrelationDetector(rules, max_groups=groups)

    def step(n: int) -> None:
        ip = f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
        detector.detect([chat(n, Identity(user_id=f"u{n}", source_ip=ip))], [injection()])

    result: dict[str, Any] = {"max_groups": groups, **measure(step, groups // 2, step, probes)}
    result["bytes_per_group"] = round(result["traced_mib"] * 2**20 / groups)
    return {**result, "evicted": detector.evictions.count, **sizes(detector.state())}


def campaigns(templates: int, probes: int) -> dict[str, Any]:
    detector = CampaignDetector(AnomalyConfig(campaign_max_templates=templates))

    def step(n: int) -> None:  # one-off templates within one window (600 s)
        candidate = CampaignCandidate(
            event_id=f"n{n}", timestamp=T0 + n * 300 / (templates + probes), identity=Identity(user_id=f"b{n}"),
            signature=f"{n:016x}", value_bucket=n % 256, slot_chars=8, context_tokens=20.0,
        )  # fmt: skip
        detector.campaigns([candidate])

    result: dict[str, Any] = {"campaign_max_templates": templates, **measure(step, templates, step, probes)}
    result["bytes_per_template"] = round(result["traced_mib"] * 2**20 / templates)
    return {**result, "evicted": detector.templates_evicted.count, **sizes(detector.state())}


def campaigns_kept(members: int) -> dict[str, Any]:
    """Campaigns of 200 identities (3 requests each) in one window on ``members / 200`` templates, closed: the
    windows kept for late members at ``campaign_rejudge_max_members = members``, traced against not keeping any
    (candidates made while tracing and let go after their batch, as decoded from the topic)."""
    per_window = AnomalyConfig().campaign_max_identities

    def window(w: int) -> list[CampaignCandidate]:
        return [
            CampaignCandidate(
                event_id=f"w{w}-{i}-{r}", timestamp=T0 + (r * per_window + i) * 500 / (3 * per_window),
                identity=Identity(api_key_hash=f"k{w}-{i}", source_ip=f"10.{w >> 8 & 255}.{w & 255}.{i}"),
                signature=f"{w:016x}", value_bucket=i % 256, slot_chars=8, context_tokens=20.0,
            )
            for r in range(3) for i in range(per_window)
        ]  # fmt: skip

    closing = CampaignCandidate(event_id="later", timestamp=T0 + 1900.0, identity=Identity(), signature="f" * 16)
    traced = {}
    for rejudge in (0.0, 1800.0):
        config = AnomalyConfig(campaign_rejudge_max_members=members, campaign_rejudge_seconds=rejudge)
        tracemalloc.start()
        detector = CampaignDetector(config)
        for w in range(max(1, members // per_window)):
            detector.campaigns(window(w))
        alerted = len(detector.campaigns([closing]))
        traced[rejudge] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    kept = detector.state()["closed"]
    kept_members = sum(len(row[2]) for row in kept)
    return {
        "campaign_rejudge_max_members": members,
        "campaigns_alerted": alerted,
        "windows_kept": len(kept),
        "members_kept": kept_members,
        "traced_mib": round((traced[1800.0] - traced[0.0]) / 2**20, 1),
        "bytes_per_member": round((traced[1800.0] - traced[0.0]) / max(1, kept_members)),
        **sizes(kept),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_state_caps", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=100_000)
    parser.add_argument("--templates", type=int, default=50_000)
    parser.add_argument("--probes", type=int, default=5_000)
    parser.add_argument("--kept-members", type=int, default=50_000)
    args = parser.parse_args(argv)
    result = {
        "chains": chains(args.sessions, args.probes),
        "correlation": correlations(args.groups, args.probes),
        "campaigns": campaigns(args.templates, args.probes),
        "campaigns_kept": campaigns_kept(args.kept_members),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
