"""Embedded replay's own pieces: merging files by event time (the demo replays the samples that way)."""

from __future__ import annotations

from pathlib import Path

from app.replay import merge_by_time
from app.settings import PACKAGE_ROOT
from detectors.normalise import normalise_payload


def test_sample_files_merged_by_event_time_keep_every_line_in_time_order(tmp_path: Path) -> None:
    samples = sorted(str(path) for path in (PACKAGE_ROOT / "samples").glob("*.jsonl"))
    merged = merge_by_time(samples, tmp_path / "merged.jsonl", max_bytes=1 << 22, max_text_chars=1 << 18)
    lines = merged.read_bytes().splitlines()
    originals = [line for path in samples for line in Path(path).read_bytes().splitlines() if line.strip()]
    assert sorted(lines) == sorted(originals)
    firsts = [
        min(e.timestamp for e in normalise_payload(line, "t", max_bytes=1 << 22, max_text_chars=1 << 18)[0])
        for line in lines
    ]
    assert firsts == sorted(firsts)
    assert lines != originals, "the sample files interleave in time; merging must change their order"
