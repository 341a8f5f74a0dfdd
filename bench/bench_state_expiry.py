"""What keeping session and correlation state bounded costs per batch when many sessions are live.

The chain and correlation tiers forget state long over on event time. Small batches (a quiet partition, a
one-event poll) are where a scan of all state per batch would show: this fills each tier with ``--sessions`` live
sessions (or correlation groups) over the 2.7 hours before the probe, then times one-event batches.

Run: ``.venv/bin/python -m bench.bench_state_expiry [--sessions 100000] [--probes 500]``; prints one JSON object
(CPU milliseconds per one-event batch, one core).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

from detectors.base import Detector, Findings
from detectors.chains import SessionChainDetector
from detectors.correlation import BUILTIN_DIR, CorrelationDetector, load_correlations
from detectors.event import Event, Identity, Message

T0 = 1_767_225_600.0
SPAN_S = 3 * 3600 * 0.9  # inside the chains' three-window horizon: every session is live at the probe


def chat(n: int, timestamp: float, user: str) -> Event:
    return Event(
        id=f"e{n}",
        timestamp=timestamp,
        dataset="bench",
        input_messages=[Message(role="user", content="hello")],
        output_messages=[Message(role="assistant", content="hi")],
        identity=Identity(user_id=user, session_id="s"),
    )


def marked(events: Sequence[Event]) -> list[Findings]:
    """Findings as if an earlier tier had flagged every event as a prompt injection (what correlations count)."""
    findings = [Findings() for _ in events]
    for found in findings:
        found.categories.add("prompt_injection")
    return findings


def per_batch_ms(detector: Detector, sessions: int, probes: int, findings=marked) -> float:
    fill = [chat(i, T0 + i * SPAN_S / sessions, f"u{i}") for i in range(sessions)]
    detector.detect(fill, findings(fill))
    probe = [chat(10**8 + i, T0 + SPAN_S + i, f"p{i}") for i in range(probes)]
    start = time.process_time()
    for event in probe:
        detector.detect([event], findings([event]))
    return (time.process_time() - start) / probes * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_state_expiry", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--probes", type=int, default=500)
    args = parser.parse_args(argv)
    correlations, errors = load_correlations([BUILTIN_DIR])
    if errors:
        raise SystemExit(f"cannot load the built-in correlations: {errors}")
    result: dict[str, object] = {"sessions": args.sessions, "probes": args.probes}
    result["chains_ms_per_batch"] = round(per_batch_ms(SessionChainDetector(), args.sessions, args.probes), 4)
    result["correlation_ms_per_batch"] = round(
        per_batch_ms(CorrelationDetector(correlations), args.sessions, args.probes), 4
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
