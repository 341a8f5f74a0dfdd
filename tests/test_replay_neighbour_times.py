"""Replay judges a record's time against the records around it, not only against the wall clock (app.neighbour_times).

A file has no Kafka timestamp: the only other clock is the wall clock, a month after the logs were written. One
record dated hours ahead of its neighbours would turn every later record of its partition late (not counted by the
anomaly windows), and a first record without a time would be taken at the wall clock, ahead of everything after it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.engine import build_pipeline
from app.neighbour_times import Line, NeighbourTimes
from app.replay import ReplaySummary, replay
from app.settings import Settings
from detectors.documents import iso_time
from detectors.event import Event
from detectors.pipeline import Pipeline

DAY = (time.time() - 30 * 86400) // 600 * 600  # last month's logs, replayed now
SKEW = 6 * 3600.0


def record(number: int, user: str, at: float | None, prompt: str, ip: str = "203.0.113.7") -> str:
    """An OpenAI-envelope record; ``at=None`` gives one without any time."""
    response: dict = {
        "id": f"r{user}{number}",
        "object": "chat.completion",
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Here it is."}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 40},
    }
    document: dict = {
        "request_id": f"req-{user}-{number}",
        "user": user,
        "client_ip": ip,
        "request": {"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]},
        "response": response,
    }
    if at is not None:
        document["timestamp"] = at
        response["created"] = int(at)
    return orjson.dumps(document).decode()


def scraper(start: float, count: int = 120) -> list[str]:
    """A scraper enumerating item ids, one request every 4 s: the enumeration rule catches it if its records count."""
    return [record(n, "scraper", start + 4 * n, f"Full description of item {10_000 + n}") for n in range(count)]


def weather(at: float | None, number: int = 0) -> str:
    return record(number, "skewed", at, "what is the weather", ip="198.51.100.9")  # not the scraper's IP


@functools.cache
def template() -> Pipeline:
    return build_pipeline(Settings())


def run(tmp_path: Path, lines: list[str], batch_size: int = 500) -> tuple[ReplaySummary, list[dict]]:
    """The replay summary and the enriched events of ``lines`` replayed as one file."""
    source, events = tmp_path / "in.jsonl", tmp_path / "events.jsonl"
    source.write_text("\n".join(lines) + "\n")
    summary = replay(
        [str(source)], template().fresh(), alerts_out=None, events_out=events, batch_size=batch_size, flush=True
    )
    return summary, [orjson.loads(line) for line in events.read_bytes().splitlines()]


def late(documents: list[dict]) -> int:
    return sum(bool(doc["abusewatch"].get("identity", {}).get("late")) for doc in documents)


def stamped(documents: list[dict], user: str) -> list[str]:
    return [doc["@timestamp"] for doc in documents if doc["event"]["id"].startswith(f"req-{user}-")]


def test_one_record_dated_hours_ahead_in_a_replayed_day_turns_nothing_late(tmp_path: Path) -> None:
    reference, _ = run(tmp_path, scraper(DAY))
    assert reference.alerts and reference.times_not_believed == 0
    lines = scraper(DAY)
    lines.insert(30, weather(DAY + 100 + SKEW))  # a broken client clock: 6 h ahead, a month behind the wall clock
    summary, documents = run(tmp_path, lines)
    assert late(documents) == 0
    assert summary.alerts_by_rule == reference.alerts_by_rule  # the scraper's records all counted
    assert summary.times_not_believed == 1
    assert stamped(documents, "skewed") == [iso_time(DAY + 4 * 29)]  # the newest time believed before it


def test_a_real_jump_forward_is_believed(tmp_path: Path) -> None:
    """Logs resuming after a quiet night: the records after the jump confirm it."""
    evening = [record(n, "evening", DAY + 60 * n, f"summarise meeting {n}") for n in range(60)]
    morning = DAY + 60 * 60 + SKEW
    summary, documents = run(tmp_path, evening + scraper(morning))
    assert summary.times_not_believed == 0 and late(documents) == 0
    assert stamped(documents, "scraper") == [iso_time(morning + 4 * n) for n in range(120)]
    assert summary.alerts_by_rule == run(tmp_path, scraper(morning))[0].alerts_by_rule


def test_records_going_back_in_time_neither_confirm_nor_deny_a_jump(tmp_path: Path) -> None:
    """Two files replayed one after the other, the second older: the first one's last records (after a quiet
    hour) are followed by records late whatever is believed, which say nothing about them."""
    evening = [record(n, "evening", DAY + 60 * n, f"summarise meeting {n}") for n in range(60)]
    night = [record(n, "night", DAY + 3 * 3600 + 60 * n, f"translate line {n}", ip="192.0.2.1") for n in range(5)]
    summary, documents = run(tmp_path, [*evening, *night, *scraper(DAY - 3600)])
    assert summary.times_not_believed == 0
    assert stamped(documents, "night") == [iso_time(DAY + 3 * 3600 + 60 * n) for n in range(5)]


@pytest.mark.parametrize("forged_next", [False, True], ids=["then honest records", "then a forged one"])
def test_an_untimed_first_record_takes_the_first_time_believed_after_it(tmp_path: Path, forged_next: bool) -> None:
    reference, _ = run(tmp_path, scraper(DAY))
    lines = [weather(None), *([weather(DAY + SKEW, 1)] if forged_next else []), *scraper(DAY)]
    summary, documents = run(tmp_path, lines)
    assert stamped(documents, "skewed") == [iso_time(DAY)] * len(lines[:-120])
    assert (summary.times_missing, summary.times_not_believed) == (1, int(forged_next))
    assert late(documents) == 0 and summary.alerts_by_rule == reference.alerts_by_rule


def test_the_times_judged_do_not_depend_on_the_batch_size(tmp_path: Path) -> None:
    lines = [weather(None), *scraper(DAY)]
    lines.insert(40, weather(DAY + SKEW, 1))
    lines.insert(90, weather(DAY + 2 * SKEW, 2))
    outputs = []
    for batch_size in (1, 7, 500):
        summary, documents = run(tmp_path, lines, batch_size)
        outputs.append(
            (
                [(doc["event"]["id"], doc["@timestamp"], doc["abusewatch"].get("identity", {})) for doc in documents],
                summary.alerts_by_rule,
                summary.times_not_believed,
                summary.times_missing,
            )
        )
    assert outputs[0][2:] == (2, 1) and late(documents) == 0
    assert outputs[1] == outputs[0] and outputs[2] == outputs[0]


def test_the_summary_and_the_report_count_the_times_not_believed(tmp_path: Path) -> None:
    lines = scraper(DAY)
    lines.insert(30, weather(DAY + SKEW))  # ahead of its neighbours
    lines.insert(60, weather(time.time() + 7 * 86400, 1))  # ahead of the wall clock too
    lines.insert(90, weather(None, 2))  # no time at all
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    summary, report = tmp_path / "summary.json", tmp_path / "report.html"
    outputs = ["--alerts-out", str(tmp_path / "a.jsonl"), "--summary-out", str(summary), "--report", str(report)]
    result = CliRunner().invoke(cli, ["replay", str(source), *outputs], env={"ABW_CONFIG": ""})
    assert result.exit_code == 0, result.output
    counts = orjson.loads(summary.read_bytes())
    assert (counts["times_not_believed"], counts["times_missing"]) == (2, 1)
    assert 'data-kpi="times not believed"><b>2</b>' in report.read_text()
    assert "event times not believed (too far ahead)" in result.stderr


def timed(*times: float | None) -> list[Line]:
    """One line per time, each with one event (``None``: the record had none); the size numbers the line."""
    return [
        (
            [
                Event(
                    id=str(n),
                    dataset="openai",
                    timestamp=at if at is not None else time.time(),
                    timestamp_assumed=at is None,
                )
            ],
            [],
            n,
        )
        for n, at in enumerate(times)
    ]


def test_the_last_records_are_judged_against_the_records_there_are() -> None:
    """At the end of the input fewer records follow: the last one is judged against the believed time and the
    wall clock only, since nothing follows that it could turn late."""
    judge = NeighbourTimes(900.0)
    out = [events[0] for events, _, _ in judge.judged(timed(DAY, DAY + 1, DAY + SKEW, DAY + 2, DAY + SKEW))]
    assert [event.timestamp for event in out] == [DAY, DAY + 1, DAY + 1, DAY + 2, DAY + SKEW]
    assert [event.timestamp_assumed for event in out] == [False, False, True, False, False]
    assert judge.not_believed == 1
    judge = NeighbourTimes(900.0)
    out = [events[0] for events, _, _ in judge.judged(timed(DAY, DAY + 1, time.time() + 7 * 86400))]
    assert [event.timestamp for event in out] == [DAY, DAY + 1, DAY + 1]  # a week ahead of the wall clock
    assert judge.not_believed == 1


def test_the_look_ahead_is_bounded_and_loses_no_line() -> None:
    """Memory does not grow with the input, even when no time is believed for long: records without a time that
    none believed follows within the look-ahead take the wall clock."""
    judge = NeighbourTimes(900.0, lookahead=8)
    read = 0

    def counted(lines: list[Line]) -> Iterator[Line]:
        nonlocal read
        for line in lines:
            read += 1
            yield line

    before = time.time()
    held, sizes = [], []
    for events, _, size in judge.judged(counted(timed(*[None] * 500, *[DAY + n for n in range(500)]))):
        held.append(read - len(sizes))
        sizes.append(size)
        assert events[0].timestamp_assumed is (size < 500)
        if size < 500 - 8:  # no time believed within the look-ahead after it
            assert events[0].timestamp >= before
        elif size < 500:  # the first time believed after it
            assert events[0].timestamp == DAY
    assert sizes == list(range(1000))
    assert max(held) <= 2 * 8 + 1
    assert (judge.missing, judge.not_believed) == (500, 0)
