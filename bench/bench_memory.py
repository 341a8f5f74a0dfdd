"""Memory: RSS of a process holding the engine, and state per 100,000 identities.

Runs in a fresh child interpreter (``python -m bench.bench_memory --child N``) so the figures are that process's
alone. The child builds the full pipeline (RSS = the engine's fixed footprint: rule databases, classifier
weights, interpreter), then drives the stateful tiers - signatures (to raise detections), exfil session memory,
anomaly, correlation, session chains and the alert grouper - with two short events for each of ``N`` identities
(5 % carry an attack so alert groups and chains hold state), and reports the RSS growth and the size of
``json.dumps(pipeline.state())`` (by part: each stateful detector, the alert groups, the history ledger) and of the
stream's checkpoint of it (msgpack + zlib, with the CPU time to take it), scaled to 100,000 identities. The load
average before and after the child ran is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from app.traffic import pools
from bench.process_memory import rss_bytes
from bench.workload import START
from detectors.event import Event, Identity, Message

PER_IDENTITIES = 100_000
STATELESS = {"classifier"}


def identity_events(identities: int) -> list[Event]:
    """Two events per identity over one hour of event time; every 20th event is a direct injection."""
    asks = [exchange.prompt for exchange in pools.SUPPORT_EXCHANGES]
    events = []
    for index in range(identities * 2):
        user = index % identities
        prompt = pools.DIRECT_OVERRIDE if index % 20 == 0 else asks[index % len(asks)]
        events.append(
            Event(
                id=f"mem-{index:08d}",
                timestamp=START + index * 3600.0 / (identities * 2),
                dataset="bench",
                system_instructions=pools.SUPPORT_SYSTEM,
                input_messages=[Message(role="user", content=prompt)],
                output_messages=[Message(role="assistant", content="Sure, here is what I found.")],
                identity=Identity(
                    user_id=f"user-{user:06d}",
                    source_ip=f"10.{user // 65536 % 256}.{user // 256 % 256}.{user % 256}",
                    session_id=f"s-{user:06d}",
                ),
                input_tokens=40,
                output_tokens=12,
                outcome="success",
            )
        )
    return events


def measure(identities: int) -> dict[str, Any]:
    """In this process: engine RSS, then state growth after ``identities`` identities."""
    from app.stream.checkpoints import Checkpoint, CheckpointCodec
    from bench.bench_engine import full_pipeline
    from detectors.pipeline import Pipeline

    start = rss_bytes()
    full, _ = full_pipeline()
    engine_rss = rss_bytes()
    pipeline = Pipeline([d for d in full.detectors if d.name not in STATELESS], full.redactor)
    events = identity_events(identities)
    before = rss_bytes()
    started = time.perf_counter()
    for offset in range(0, len(events), 500):
        pipeline.process(events[offset : offset + 500])
    driven = time.perf_counter() - started
    del events
    grown = rss_bytes() - before
    state = pipeline.state()
    sizes = {name: len(json.dumps(part, default=str)) for name, part in state["detectors"].items()}
    sizes["alerting"] = len(json.dumps(state["alerting"], default=str))
    sizes["history"] = len(json.dumps(state["history"], default=str))  # the pipeline's history ledger
    scale = PER_IDENTITIES / identities
    encoding = time.process_time()
    checkpoint = CheckpointCodec(b"bench").encode(
        Checkpoint(topic="bench", partition=0, offset=0, partitions=1, created=0.0, state=pipeline.state())
    )
    encode_seconds = time.process_time() - encoding
    return {
        "identities": identities,
        "events": identities * 2,
        "interpreter_rss_mb": round(start / 2**20, 1),
        "engine_rss_mb": round(engine_rss / 2**20, 1),
        "stateful_detectors": [d.name for d in pipeline.detectors],
        "drive_seconds_wall": round(driven, 1),
        "rss_growth_mb": round(grown / 2**20, 1),
        "rss_growth_mb_per_100k_identities": round(grown * scale / 2**20, 1),
        "state_json_bytes": sum(sizes.values()),
        "state_json_mb_per_100k_identities": round(sum(sizes.values()) * scale / 2**20, 2),
        "state_json_bytes_by_part": sizes,
        "checkpoint_mb_per_100k_identities": round(len(checkpoint) * scale / 2**20, 2),
        "checkpoint_cpu_seconds_per_100k_identities": round(encode_seconds * scale, 2),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Measure in a fresh child interpreter and return its report."""
    identities = 300 if quick else 20_000
    before = [round(value, 2) for value in os.getloadavg()]
    output = subprocess.run(
        [sys.executable, "-m", "bench.bench_memory", "--child", str(identities)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    report = json.loads(output.strip().splitlines()[-1])
    report["load_average"] = {"before": before, "after": [round(value, 2) for value in os.getloadavg()]}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", type=int, required=True, help="identities to drive (in this process)")
    print(json.dumps(measure(parser.parse_args(argv).child)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
