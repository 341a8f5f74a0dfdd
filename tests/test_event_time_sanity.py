"""One record dated hours ahead must not move its partition's event time (review 9i, finding 1).

Every event-time tier (anomaly windows, correlations, chains, alert groups) takes the newest time it saw as the
present. Taken at its word, one record dated 20 h ahead would turn every later record of its partition late and
forget every open group. The normaliser judges a record's time against when it was logged (the Kafka record's
timestamp in the stream), so a backlog read hours later is judged as logged.
"""

from __future__ import annotations

import functools
import time

import orjson
import pytest

from app.engine import build_pipeline
from app.settings import Settings
from detectors.normalise import DEFAULT_MAX_FUTURE_SECONDS, normalise_payload
from detectors.pipeline import Pipeline


def record(number: int, user: str, at: float, prompt: str) -> bytes:
    return orjson.dumps(
        {
            "request_id": f"req-{user}-{number}",
            "timestamp": at,
            "user": user,
            "client_ip": "203.0.113.7",
            "request": {"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]},
            "response": {
                "id": f"r{number}",
                "object": "chat.completion",
                "created": int(at),
                "model": "gpt-4o",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Here it is."}}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 40},
            },
        }
    )


@functools.cache
def template() -> Pipeline:
    return build_pipeline(Settings())


def scraper_run(skewed_hours: float) -> tuple[set[str], int]:
    """A scraper in a backlog logged two days ago and read now, one record per batch, with one record of another
    client dated ``skewed_hours`` ahead of when it was logged; the anomaly rules raised and the events marked late."""
    logged = (time.time() - 2 * 86400) // 600 * 600
    lines = [
        (record(n, "scraper", logged + 4 * n, f"Full description of item {10_000 + n}"), logged + 4 * n)
        for n in range(120)
    ]
    if skewed_hours:
        at = logged + 100
        lines.insert(30, (record(0, "skewed", at + skewed_hours * 3600, "what is the weather"), at))
    pipeline = template().fresh()
    rules: set[str] = set()
    late = 0
    for line, received_at in lines:
        events, letters = normalise_payload(line, "test", max_bytes=1 << 20, received_at=received_at)
        assert not letters
        result = pipeline.process(events)
        rules |= {detection.rule.id for detection in result.detections}
        late += sum(bool(doc["abusewatch"].get("identity", {}).get("late")) for doc in result.events)
    rules |= {detection.rule.id for detection in pipeline.flush().detections}
    return {rule for rule in rules if "anomaly" in rule or "scraping" in rule}, late


def test_one_record_dated_hours_ahead_of_when_it_was_logged_blinds_nothing() -> None:
    reference, late = scraper_run(0)
    assert reference and late == 0  # the scraper is caught ...
    assert scraper_run(20) == (reference, 0)  # ... and still is, with the forged record in the backlog


@pytest.mark.parametrize(
    ("ahead", "believed"), [(DEFAULT_MAX_FUTURE_SECONDS - 60, True), (DEFAULT_MAX_FUTURE_SECONDS + 60, False)]
)
def test_a_time_is_judged_against_when_the_record_was_logged_not_the_wall_clock(ahead: float, believed: bool) -> None:
    logged = time.time() - 10 * 3600  # a backlog: read ten hours after it was logged
    [event], _ = normalise_payload(record(1, "u", logged + ahead, "hi"), "t", max_bytes=1 << 20, received_at=logged)
    assert event.timestamp_assumed is (not believed)
    assert event.timestamp == pytest.approx(logged + ahead if believed else logged)


@pytest.mark.parametrize(
    "received_at",
    [
        pytest.param(time.time() / 1000, id="seconds written where Kafka wants milliseconds: 1970"),
        pytest.param(time.time() + 30 * 86400, id="a producer clock a month ahead"),
        pytest.param(-1.0, id="no timestamp"),
    ],
)
def test_an_implausible_kafka_timestamp_gives_way_to_the_wall_clock(received_at: float) -> None:
    now = time.time()
    [honest], _ = normalise_payload(record(1, "u", now - 5, "hi"), "t", max_bytes=1 << 20, received_at=received_at)
    [forged], _ = normalise_payload(
        record(2, "u", now + 7 * 86400, "hi"), "t", max_bytes=1 << 20, received_at=received_at
    )
    assert (honest.timestamp, honest.timestamp_assumed) == (pytest.approx(now - 5), False)
    assert forged.timestamp_assumed and forged.timestamp == pytest.approx(time.time(), abs=5)
