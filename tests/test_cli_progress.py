"""Long replays and backtests show progress where no bar can be drawn (a log, a pipe, CI): a line every interval."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

from rich.console import Console

from app.commands.replay import ProgressLines, bytes_progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_interval_says_how_much_how_fast_and_how_long() -> None:
    out, clock = io.StringIO(), FakeClock()
    progress = ProgressLines(Console(file=out, width=200), "replay", total=40_000_000, interval=15, clock=clock)
    clock.now += 10
    progress(6_000_000)
    assert out.getvalue() == ""  # not yet 15 s
    clock.now += 10
    progress(6_000_000)
    assert out.getvalue().splitlines() == ["replay: 12.0 of 40.0 MB (30 %), 0.6 MB/s, about 47 s left"]


def test_stdin_lines_say_what_was_read() -> None:
    out, clock = io.StringIO(), FakeClock()
    progress = ProgressLines(Console(file=out, width=200), "replay", total=None, interval=15, clock=clock)
    clock.now += 20
    progress(3_000_000)
    assert out.getvalue().splitlines() == ["replay: 3.0 MB, 0.1 MB/s"]


def test_without_a_terminal_the_progress_is_lines(tmp_path: Path) -> None:
    data = tmp_path / "logs.jsonl"
    data.write_bytes(b"{}\n" * 1000)
    console = Console(file=io.StringIO(), force_terminal=False)
    with bytes_progress(console, [str(data)], "replay", passes=2) as advance:
        assert isinstance(advance, ProgressLines) and advance.total == 6000


def test_a_gzip_input_shows_what_was_read_not_a_share_of_its_compressed_size(tmp_path: Path) -> None:
    """Progress counts inflated bytes; against the compressed size it read "19.2 of 0.1 MB (29401 %)"."""
    data = tmp_path / "logs.jsonl.gz"
    data.write_bytes(gzip.compress(b"{}\n" * 1000))
    console = Console(file=io.StringIO(), force_terminal=True)
    with bytes_progress(console, [str(data)], "replay") as advance:
        assert isinstance(advance, ProgressLines) and advance.total is None
