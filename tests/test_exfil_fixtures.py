"""The exfiltration fixtures: reproducible, split train / held-out, and the detectors' quality floor on them."""

import functools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.bench_exfil import FAMILY_RULES, quality

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "exfil"
CASES = json.loads((FIXTURES / "cases.json").read_text(encoding="utf-8"))


def test_committed_fixtures_are_what_the_generator_writes(tmp_path):
    subprocess.run(
        [sys.executable, str(FIXTURES / "generate.py"), "--out", str(tmp_path)], check=True, capture_output=True
    )
    assert (tmp_path / "cases.json").read_text(encoding="utf-8") == (FIXTURES / "cases.json").read_text(
        encoding="utf-8"
    )
    assert (tmp_path / "registry.yaml").read_text(encoding="utf-8") == (FIXTURES / "registry.yaml").read_text(
        encoding="utf-8"
    )


def test_every_family_has_attacks_and_benign_cases_in_both_splits():
    counts = Counter((case["family"], case["label"], case["split"]) for case in CASES)
    for family in FAMILY_RULES:
        for label in ("attack", "benign"):
            for split in ("train", "test"):
                assert counts[(family, label, split)] > 0, (family, label, split)
    test_share = sum(1 for case in CASES if case["split"] == "test") / len(CASES)
    assert 0.2 < test_share < 0.4


def test_case_ids_are_unique_and_attacks_name_their_rules():
    assert len({case["id"] for case in CASES}) == len(CASES)
    for case in CASES:
        assert bool(case["expect"]) == (case["label"] == "attack")
        assert all(rule.startswith("abw-exfil-") for rule in case["expect"])


@functools.cache
def held_out() -> dict[str, dict[str, float]]:
    return quality("test")


@pytest.mark.parametrize("family", sorted(FAMILY_RULES))
def test_held_out_quality_floor(family):
    row = held_out()[family]
    assert row["recall"] >= 0.8
    assert row["false_positive_rate"] <= 0.05
