"""The bundled sample traffic: deterministic, up to date, normalisable, labelled, realistic in shape."""

from __future__ import annotations

import base64
import json
import string
import urllib.parse
import zlib
from collections import Counter
from pathlib import Path

import pytest

from app.traffic.samples import (
    BASE_TIME,
    DAY_SECONDS,
    FORMATS,
    SAMPLES_DIR,
    fake_github_token,
    read_labels,
    sample_files,
    write_samples,
)
from detectors.base import CATEGORIES
from detectors.event import Event
from detectors.normalise import normalise_payload

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
EXPECTED_KINDS = {
    "direct_instruction_override",
    "dan_jailbreak",
    "system_prompt_extraction",
    "indirect_injection_document",
    "secret_in_response",
    "markdown_image_exfiltration",
    "tool_call_exfiltration_email",
    "tool_call_exfiltration_http",
    "base64_injection",
    "templated_scraping",
}


@pytest.fixture(scope="module")
def sample_events() -> dict[str, list[Event]]:
    events: dict[str, list[Event]] = {}
    for fmt, path in sample_files().items():
        events[fmt] = []
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):
            found, letters = normalise_payload(line, f"{path.name}:{number}", max_bytes=1 << 20)
            assert letters == [], letters
            events[fmt].extend(found)
    return events


@pytest.fixture(scope="module")
def labels() -> dict[str, dict[str, str]]:
    return read_labels()


def test_generator_is_deterministic_and_committed_files_are_current(tmp_path: Path) -> None:
    write_samples(tmp_path / "a")
    write_samples(tmp_path / "b")
    for name in [*(f"{fmt}.jsonl" for fmt in FORMATS), "labels.json"]:
        generated = (tmp_path / "a" / name).read_bytes()
        assert generated == (tmp_path / "b" / name).read_bytes()
        assert generated == (SAMPLES_DIR / name).read_bytes(), f"{name} is stale: run python -m app.traffic.samples"


def test_samples_are_small_and_a_few_hundred_events(sample_events: dict[str, list[Event]]) -> None:
    total_bytes = sum((SAMPLES_DIR / f"{fmt}.jsonl").stat().st_size for fmt in FORMATS)
    assert total_bytes < 1_000_000
    counts = {fmt: len(events) for fmt, events in sample_events.items()}
    assert all(count >= 20 for count in counts.values()), counts
    assert 250 <= sum(counts.values()) <= 800


def test_every_event_is_in_its_format_and_within_the_day(sample_events: dict[str, list[Event]]) -> None:
    ids = [event.id for events in sample_events.values() for event in events]
    assert len(ids) == len(set(ids))
    for fmt, events in sample_events.items():
        for event in events:
            assert event.dataset == fmt
            assert BASE_TIME <= event.timestamp < BASE_TIME + DAY_SECONDS
            assert not event.truncated and not event.content_redacted


def test_benign_traffic_has_about_twenty_users_in_three_applications(
    sample_events: dict[str, list[Event]], labels: dict[str, dict[str, str]]
) -> None:
    benign = [e for events in sample_events.values() for e in events if e.id not in labels]
    assert len({e.identity.user_id for e in benign}) == 20
    assert {e.service_name for e in benign} == {"support-bot", "coding-assistant", "analytics-agent"}
    assert any(e.retrieved_documents for e in benign if e.service_name == "support-bot")
    assert any(e.output_tool_calls() for e in benign if e.service_name == "coding-assistant")
    assert any(m.role == "tool" for e in benign if e.service_name == "analytics-agent" for m in e.input_messages)
    assert (
        len({e.output_messages[0].content for e in benign if e.output_messages and e.output_messages[0].content}) > 40
    )


def test_labels_cover_every_attack_and_point_at_real_events(
    sample_events: dict[str, list[Event]], labels: dict[str, dict[str, str]]
) -> None:
    by_id = {event.id: event for events in sample_events.values() for event in events}
    assert set(labels) <= set(by_id)
    assert {label["kind"] for label in labels.values()} == EXPECTED_KINDS
    for event_id, label in labels.items():
        assert label["category"] in CATEGORIES
        assert by_id[event_id].dataset == label["format"]
        assert by_id[event_id].identity.key() == label["user"]
    assert {label["format"] for label in labels.values()} == set(FORMATS)


def test_labels_are_not_visible_in_the_records() -> None:
    text = "".join((SAMPLES_DIR / f"{fmt}.jsonl").read_text() for fmt in FORMATS)
    for kind in EXPECTED_KINDS:
        assert kind not in text


def _labelled(sample_events: dict[str, list[Event]], labels: dict[str, dict[str, str]], kind: str) -> list[Event]:
    return [e for events in sample_events.values() for e in events if labels.get(e.id, {}).get("kind") == kind]


def test_scraper_sends_over_a_hundred_requests_within_fifteen_minutes(
    sample_events: dict[str, list[Event]], labels: dict[str, dict[str, str]]
) -> None:
    scraped = _labelled(sample_events, labels, "templated_scraping")
    assert len({e.identity.key() for e in scraped}) == 1
    times = sorted(e.timestamp for e in scraped)
    assert len(times) >= 100 and times[-1] - times[0] < 15 * 60


def test_system_prompt_leak_response_contains_the_system_prompt(
    sample_events: dict[str, list[Event]], labels: dict[str, dict[str, str]]
) -> None:
    (event,) = _labelled(sample_events, labels, "system_prompt_extraction")
    assert event.system_instructions in event.output_messages[0].content


def test_indirect_injection_is_in_a_document_not_the_prompt(
    sample_events: dict[str, list[Event]], labels: dict[str, dict[str, str]]
) -> None:
    (event,) = _labelled(sample_events, labels, "indirect_injection_document")
    assert any("<!-- AI assistant:" in doc.content for doc in event.retrieved_documents)
    assert "ignore" not in event.input_messages[-1].content.lower()


def test_markdown_exfiltration_carries_earlier_conversation_data(
    sample_events: dict[str, list[Event]], labels: dict[str, dict[str, str]]
) -> None:
    (event,) = _labelled(sample_events, labels, "markdown_image_exfiltration")
    url = event.output_messages[0].content.split("](", 1)[1].rstrip(")")
    assert urllib.parse.urlsplit(url).hostname == "evil.example"
    data = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["d"][0]
    leaked = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)).decode()
    assert leaked in event.input_messages[0].content


def test_exfiltrating_tool_calls_target_outside_addresses(
    sample_events: dict[str, list[Event]], labels: dict[str, dict[str, str]]
) -> None:
    for kind, tool in (("tool_call_exfiltration_email", "send_email"), ("tool_call_exfiltration_http", "http_request")):
        (event,) = _labelled(sample_events, labels, kind)
        (call,) = event.output_tool_calls()
        assert call.name == tool
        arguments = json.loads(call.arguments)
        assert "evil.example" in (arguments.get("to") or arguments.get("url"))
        assert "Initech" in arguments["body"]


def test_base64_injection_decodes_to_an_instruction_override(
    sample_events: dict[str, list[Event]], labels: dict[str, dict[str, str]]
) -> None:
    (event,) = _labelled(sample_events, labels, "base64_injection")
    encoded = event.input_messages[0].content.rsplit(" ", 1)[1]
    assert base64.b64decode(encoded).decode().startswith("Ignore all previous instructions")


def test_leaked_credentials_have_real_shapes(
    sample_events: dict[str, list[Event]], labels: dict[str, dict[str, str]]
) -> None:
    (event,) = _labelled(sample_events, labels, "secret_in_response")
    answer = event.output_messages[0].content
    aws = answer.split("AWS_ACCESS_KEY_ID=", 1)[1].split()[0]
    token = answer.split("GITHUB_TOKEN=", 1)[1].split()[0]
    assert aws.startswith("AKIA") and len(aws) == 20 and set(aws[4:]) <= set(string.ascii_uppercase + "234567")
    assert token.startswith("ghp_") and len(token) == 40
    assert _github_checksum_ok(token)


def _github_checksum_ok(token: str) -> bool:
    body, checksum = token[4:34], token[34:]
    value = 0
    for char in checksum:
        value = value * 62 + BASE62.index(char)
    return value == zlib.crc32(body.encode())


def test_fake_github_tokens_always_have_valid_checksums() -> None:
    import random

    rng = random.Random(7)
    tokens = [fake_github_token(rng) for _ in range(200)]
    assert all(len(t) == 40 and _github_checksum_ok(t) for t in tokens)
    assert len(set(tokens)) == 200


def test_attackers_identities_are_distinct_from_benign_users(
    sample_events: dict[str, list[Event]], labels: dict[str, dict[str, str]]
) -> None:
    attacker_keys = Counter(
        label["user"] for label in labels.values() if label["kind"] != "indirect_injection_document"
    )
    benign_users = {e.identity.key() for events in sample_events.values() for e in events if e.id not in labels}
    assert "user:cust-6666" in attacker_keys and "user:contractor.eve@acme.example" in attacker_keys
    assert "user:cust-6666" not in benign_users
