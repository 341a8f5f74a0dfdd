"""Runs the fuzz target (fuzz/fuzz_decode.py) for a bounded number of inputs; a crash or failed check fails the test.

New corpus entries go to a temporary directory: the committed corpus (fuzz/corpus) is the seed only. The run's
figures go to ``out/reliability/fuzz_decode.json`` for docs/reliability.md.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "fuzz" / "fuzz_decode.py"
CORPUS = ROOT / "fuzz" / "corpus"
FIGURES_DIR = ROOT / "out" / "reliability"
RUNS = 20_000
MAX_CORPUS_BYTES = 200 * 1024


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_seed_corpus_is_small_and_covers_every_format() -> None:
    seeds = list(CORPUS.iterdir())
    assert sum(seed.stat().st_size for seed in seeds) < MAX_CORPUS_BYTES
    for fmt in ("bedrock", "litellm", "openai", "otel", "hostile"):
        assert any(seed.name.startswith(fmt) for seed in seeds), fmt


def test_fuzz_target_survives_bounded_run(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    before = sorted(p.name for p in CORPUS.iterdir())
    args = [
        str(TARGET),
        f"-runs={RUNS}",
        "-max_total_time=60",
        f"-artifact_prefix={tmp_path}/",
        str(tmp_path),
        str(CORPUS),
    ]
    result = run(args)
    assert result.returncode == 0, result.stderr[-4000:]
    done = re.search(r"Done (\d+) runs in (\d+) second", result.stderr)
    assert done, result.stderr[-2000:]
    assert sorted(p.name for p in CORPUS.iterdir()) == before, "the committed seed corpus must not change"
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    coverage = re.findall(r"cov: (\d+)", result.stderr)
    figures = {
        "runs": int(done.group(1)),
        "seconds": int(done.group(2)),
        "coverage_edges": int(coverage[-1]) if coverage else None,
        "new_corpus_entries": sum(1 for _ in tmp_path.iterdir()),
    }
    (FIGURES_DIR / "fuzz_decode.json").write_text(json.dumps(figures, indent=2) + "\n")


def test_fallback_driver_runs_without_atheris() -> None:
    """The target must also run where atheris cannot be installed (plain Python, mutated seeds)."""
    code = (
        "import runpy, sys; sys.modules['atheris'] = None; "
        f"sys.argv = [{str(TARGET)!r}, '--runs', '500', {str(CORPUS)!r}]; "
        f"runpy.run_path({str(TARGET)!r}, run_name='__main__')"
    )
    result = run(["-c", code])
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Done 500 runs (fallback driver)" in result.stdout
