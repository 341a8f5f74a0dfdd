"""Alert exceptions: the cost of matching each detection against the configured exception list.

``python -m bench.bench_exceptions [--exceptions 100] [--detections 200000]``
    CPU time per detection of :meth:`detectors.exceptions.ExceptionList.match` with ``--exceptions`` entries over
    20 rules (each entry names one rule and a glob, a user list and two networks), on detections from 150 users
    and 250 IPs, about a third of which an entry suppresses. Matching runs once per detection, after the
    detectors, so its cost adds to alerting only, never to per-event scoring.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from detectors.base import Detection, RuleInfo
from detectors.event import Identity
from detectors.exceptions import load_exceptions


def run(n_exceptions: int, n_detections: int) -> dict[str, float]:
    entries = [
        {
            "id": f"bench-{i}",
            "rules": [f"rule-{i % 20}", "abusewatch-anomaly-*"],
            "trust_forwarded_ip": True,
            "match": {"user.id": [f"u{i}", f"v{i}"], "source.ip|cidr": ["10.0.0.0/8", "2001:db8::/32"]},
            "reason": "benchmark",
            "expires": "2099-01-01",
        }
        for i in range(n_exceptions)
    ]
    rules = [RuleInfo(id=f"rule-{i}", name="rule", category="scraping", level="high") for i in range(20)]
    detections = [
        Detection(
            rule=rules[i % 20],
            event_ids=[str(i)],
            timestamp=1.8e9,
            identity=Identity(user_id=f"u{i % 150}", source_ip=f"10.1.{i % 250}.1"),
            message="benchmark",
        )
        for i in range(n_detections)
    ]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "exceptions.yml"
        path.write_text(yaml.safe_dump(entries), encoding="utf-8")
        exceptions = load_exceptions(path)
    start = time.process_time()
    suppressed = sum(1 for detection in detections if exceptions.match(detection) is not None)
    elapsed = time.process_time() - start
    return {
        "exceptions": n_exceptions,
        "detections": n_detections,
        "suppressed": suppressed,
        "us_per_detection": round(elapsed / n_detections * 1e6, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exceptions", type=int, default=100)
    parser.add_argument("--detections", type=int, default=200_000)
    args = parser.parse_args(argv)
    result = run(args.exceptions, args.detections)
    print(
        f"{result['detections']:,} detections, {result['exceptions']} exceptions: "
        f"{result['us_per_detection']} CPU-µs per detection ({result['suppressed']:,} suppressed)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
