"""Replay judges a record's time against the records around it, not only against the wall clock (app.neighbour_times).

A file has no Kafka timestamp: the only other clock is the wall clock, a month after the logs were written. One
record dated hours ahead of its neighbours would turn every later record of its partition late (not counted by the
anomaly windows), and a first record without a time would be taken at the wall clock, ahead of everything after it.
"""

from __future__ import annotations

import functools
import random
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.engine import build_pipeline
from app.neighbour_times import LOOKAHEAD, Line, NeighbourTimes
from app.replay import ReplaySummary, decoded_lines, read_lines, replay
from app.settings import PACKAGE_ROOT, Settings
from detectors.documents import iso_time
from detectors.event import Event, Identity
from detectors.normalise import normalise_payload
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


def test_a_record_without_a_time_is_stamped_as_the_stream_stamps_it(tmp_path: Path) -> None:
    """At ingestion (the stream: its Kafka timestamp; replay: the wall clock), then moved by the pipeline to the
    newest time its partition gave; a partition's first record keeps the ingestion time, in the stream too."""
    before = time.time()
    lines = [weather(None), *scraper(DAY)]
    lines.insert(50, weather(DAY + 100, 1))
    lines.insert(80, weather(None, 2))
    summary, documents = run(tmp_path, lines)
    first, timed_one, second = stamped(documents, "skewed")
    assert iso_time(before) <= first and timed_one == iso_time(DAY + 100)
    assert second == iso_time(DAY + 4 * 77)  # the newest time given before it: the scraper's 78th record
    assert (summary.times_missing, summary.times_not_believed) == (2, 0)


def test_the_times_judged_do_not_depend_on_the_batch_size(tmp_path: Path) -> None:
    lines = [weather(DAY), *scraper(DAY)]
    lines.insert(20, weather(None, 3))
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
    assert "event times not believed (too far ahead)" in result.stdout  # the summary is the report asked for


def test_a_backtest_reports_the_times_it_did_not_believe(tmp_path: Path) -> None:
    """Backtests read history the way replay does, so their report says how many times were not believed."""
    lines = scraper(DAY)
    lines.insert(30, weather(DAY + SKEW))
    lines.insert(90, weather(None, 2))
    source, out = tmp_path / "in.jsonl", tmp_path / "report.json"
    source.write_text("\n".join(lines) + "\n")
    args = ["backtest", "--builtin", "--input", str(source), "--out", str(out)]
    result = CliRunner().invoke(cli, args, env={"ABW_CONFIG": ""}, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert orjson.loads(out.read_bytes())["event_times"] == {"not_believed": 1, "missing": 1}
    assert "Event times not believed (far ahead of the records around them): 1" in result.output


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
    """At the end of the input fewer records follow: the last one is judged against the present and the wall
    clock only, since nothing follows that it could turn late."""
    judge = NeighbourTimes(900.0)
    given = (DAY, DAY + 1, DAY + SKEW, DAY + 2, DAY + 3, DAY + 4, DAY + SKEW)
    out = [events[0] for events, _, _ in judge.judged(timed(*given))]
    assert [event.timestamp for event in out] == [DAY, DAY + 1, DAY + 1, DAY + 2, DAY + 3, DAY + 4, DAY + SKEW]
    assert [event.timestamp_assumed for event in out] == [False, False, True, False, False, False, False]
    assert judge.not_believed == 1
    judge = NeighbourTimes(900.0)
    out = [events[0] for events, _, _ in judge.judged(timed(DAY, DAY + 1, time.time() + 7 * 86400))]
    assert [event.timestamp for event in out] == [DAY, DAY + 1, DAY + 1]  # a week ahead of the wall clock
    assert judge.not_believed == 1


class CountedDeque(deque):
    """A deque counting the items its iterators hand out: the followers a judge looks at."""

    looked_at = 0

    def __iter__(self) -> Iterator:
        for item in super().__iter__():
            CountedDeque.looked_at += 1
            yield item


def test_the_look_ahead_is_bounded_and_loses_no_line() -> None:
    """Memory does not grow with the input and each event looks at most at ``lookahead`` followers, even when one
    line holds thousands of events: far-ahead times followed by records without one (review, session 11, cost
    quadratic in the line's events); records without a time are passed on untouched."""
    judge = NeighbourTimes(900.0, lookahead=8)
    judge._unjudged = CountedDeque()
    read = 0

    def counted(lines: list[Line]) -> Iterator[Line]:
        nonlocal read
        for line in lines:
            read += 1
            yield line

    given = timed(*[None] * 500, *[DAY + n for n in range(500)])
    held, sizes = [], []
    for events, _, size in judge.judged(counted(given)):
        held.append(read - len(sizes))
        sizes.append(size)
        assert events == given[size][0]
    assert sizes == list(range(1000))
    assert max(held) <= 8 + 1
    assert (judge.missing, judge.not_believed) == (500, 0)
    one_line = [event for events, _, _ in timed(DAY, *[DAY + SKEW] * 2000, *[None] * 2000) for event in events]
    CountedDeque.looked_at = 0
    judge = NeighbourTimes(900.0)
    judge._unjudged = CountedDeque()
    assert len(list(judge.judged([(one_line, [], 1)]))) == 1
    assert CountedDeque.looked_at <= LOOKAHEAD * len(one_line)


# -- the stream's own traffic: every time the stream believes, replay believes --------------------------------


def test_files_whose_times_never_go_back_are_believed_whole() -> None:
    """Sparse traffic of many identities, with quiet hours and one identity alone for the last hours of each file,
    in files of overlapping times one after the other (as the bundled samples): nothing is disbelieved."""
    rng = random.Random(5)
    judge, files = NeighbourTimes(900.0), []
    for number in range(4):
        at, lines = DAY + rng.uniform(0, 3600), []
        for n in range(rng.randrange(40, 300)):
            at += rng.choice((5.0, 60.0, 600.0, 3 * 3600.0)) * rng.random()
            users = [f"user-{number}-{rng.randrange(9)}" for _ in range(rng.choice((1, 1, 1, 3)))]
            events = [
                Event(id=f"{number}-{n}-{u}", dataset="openai", timestamp=at, identity=Identity(user_id=u))
                for u in users
            ]
            lines.append((events, [], n))
        tail = Identity(user_id=f"night-{number}")  # after the others: alone, jumping hours ahead
        lines += [
            ([Event(id=f"{number}-t{n}", dataset="openai", timestamp=at + 5400 * (n + 1), identity=tail)], [], 0)
            for n in range(3)
        ]
        files.append(lines)
    for lines in files:
        out = [event for events, _, _ in judge.judged(list(lines)) for event in events]
        assert out == [event for events, _, _ in lines for event in events]
    assert judge.not_believed == 0


def test_replay_believes_the_bundled_samples_as_the_stream_does(tmp_path: Path) -> None:
    """The samples and synthetic traffic of tests/integration/test_stream.py, as the stream decodes them when
    they are produced now (judged against their Kafka timestamp): the same events, so the same document ids. One
    bedrock identity ends its file 1.5 h after the others, which a judge by the next file's records disbelieved."""
    synthetic = tmp_path / "synthetic.jsonl"
    synthetic.write_text(
        "\n".join(record(n, f"user-{n % 12}", DAY + 86400 + 7 * n, f"Translate agenda {n}") for n in range(400))
    )
    sources = [*map(str, sorted((PACKAGE_ROOT / "samples").glob("*.jsonl"))), str(synthetic)]
    limits = {"max_bytes": 4 * 1024 * 1024, "max_text_chars": 256 * 1024}
    judge = NeighbourTimes(900.0)
    replayed = [event for events, _, _ in decoded_lines(sources, **limits, times=judge) for event in events]
    produced = time.time()
    streamed = [
        event
        for source in sources
        for line, origin in read_lines(source, limits["max_bytes"])
        for event in normalise_payload(line, origin, **limits, received_at=produced)[0]
    ]
    assert len(replayed) == len(streamed) > 700
    assert [(e.id, e.timestamp) for e in replayed] == [(e.id, e.timestamp) for e in streamed]
    assert judge.not_believed == judge.missing == 0


# -- one identity forging many times (review, session 11) ------------------------------------------------------


def test_a_burst_of_forged_times_does_not_confirm_itself(tmp_path: Path) -> None:
    """A scraper dating its first 40 records 6 h ahead, alone or among other users: its later records still count
    (the judge by the 32 nearest records believed such a burst, which turned all 120 late)."""
    burst = [record(900 + n, "scraper", DAY + SKEW + n, "hi") for n in range(40)]
    others = [record(n, f"user-{n % 5}", DAY - 100 + 10 * n, f"translate line {n}", ip="192.0.2.9") for n in range(60)]
    honest = sorted([*scraper(DAY), *others[10:]], key=lambda line: orjson.loads(line)["timestamp"])
    alone, among = [*burst, *scraper(DAY)], [*others[:5], *burst[:20], *others[5:10], *burst[20:], *honest]
    for lines, unforged in ((alone, scraper(DAY)), (among, [*others[:10], *honest])):
        reference, _ = run(tmp_path, unforged)
        summary, documents = run(tmp_path, lines)
        assert summary.times_not_believed == 40 and late(documents) == 0
        assert summary.alerts_by_rule == reference.alerts_by_rule and reference.alerts


@pytest.mark.parametrize("among_others", [False, True], ids=["alone", "among other users"])
def test_a_ratchet_of_forged_times_stays_within_the_tolerance(among_others: bool) -> None:
    """One identity stepping its clock 14 min a record, each step within ``max_future_s`` of its last: once past
    the tolerance of the others' present (or, alone, of the median of its recent times) it is not believed."""
    forger = Identity(user_id="forger")
    steps = [Event(id=f"r{n}", dataset="openai", timestamp=DAY + 840 * n, identity=forger) for n in range(27)]
    honest = [
        Event(id=f"h{n}", dataset="openai", timestamp=DAY + 4 * n, identity=Identity(user_id=f"user-{n % 7}"))
        for n in range(120)
    ]
    if among_others:
        lines = [[event] for pair in zip(steps, honest, strict=False) for event in pair] + [[e] for e in honest[27:]]
    else:
        lines = [[event] for event in [*steps, *honest]]
    judge = NeighbourTimes(900.0)
    out = {event.id: event for events, _, _ in judge.judged([(events, [], 1) for events in lines]) for event in events}
    believed = [out[f"r{n}"].timestamp for n in range(27) if not out[f"r{n}"].timestamp_assumed]
    assert max(believed) <= DAY + 900 + 4 * 120 and judge.not_believed >= 25


def test_stale_records_do_not_outvote_honest_ones_after_a_quiet_night() -> None:
    """Honest users resuming 8 h after the evening, one forger interleaving records dated at the evening's last
    time one to one with theirs: the honest identities outvote the one forger."""
    evening = [
        Event(id=f"e{n}", dataset="openai", timestamp=DAY + 60 * n, identity=Identity(user_id=f"user-{n % 5}"))
        for n in range(60)
    ]
    last, forger = DAY + 60 * 59, Identity(user_id="forger")
    morning = []
    for n in range(320):
        user = Identity(user_id=f"user-{n % 6}")
        morning.append(Event(id=f"m{n}", dataset="openai", timestamp=DAY + 8 * 3600 + 4 * n, identity=user))
        if n < 300:
            morning.append(Event(id=f"x{n}", dataset="openai", timestamp=last - 60, identity=forger))
    judge = NeighbourTimes(900.0)
    out = [events[0] for events, _, _ in judge.judged([([event], [], 1) for event in [*evening, *morning]])]
    honest = [event for event in out if event.id.startswith("m")]
    assert len(honest) == 320 and not any(event.timestamp_assumed for event in honest)
    assert judge.not_believed == 0
