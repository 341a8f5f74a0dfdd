"""What the caps on session-chain, correlation and campaign state cost when a client fills them on purpose.

Each tier is driven past its cap by hostile traffic: a new session id per request (chains, ``max_sessions``), a new
user id and IP per injection hit (correlations, ``max_groups``; the built-in rules keep two groups per hit: one per
identity, one per IP), and one-off prompt templates (campaigns, ``campaign_max_templates`` per window). Reported:
memory traced per session / group / template at the cap (tracemalloc), the tier's state as JSON, as msgpack and as
the stream checkpoints it (msgpack + zlib level 1, as ``app/stream/checkpoints.py``; the bench's ids are regular and
compress far better than real ones), and the CPU time per event while the cap evicts (one core).

Run: ``.venv/bin/python -m bench.bench_state_caps [--sessions 100000] [--groups 100000] [--templates 50000]``;
prints one JSON object.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_state_caps", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=100_000)
    parser.add_argument("--templates", type=int, default=50_000)
    parser.add_argument("--probes", type=int, default=5_000)
    args = parser.parse_args(argv)
    result = {
        "chains": chains(args.sessions, args.probes),
        "correlation": correlations(args.groups, args.probes),
        "campaigns": campaigns(args.templates, args.probes),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
