"""Review fixes: bounds on validated values (not raw anchors), linear overlap sweep and walks, card/SSN/phone labels
and trailing expiry/CVV, metadata keys that are not secrets, and the extra credential formats."""

import json
import random
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.exfil import ExfilConfig, ExfilDetector
from detectors.exfil.candidates import CandidateScanner, Hit, _Runs, _scan_runs, walk_right
from detectors.exfil.detector import candidate_scanner
from detectors.exfil.pii import labelled_as_thing, pii_specs
from detectors.exfil.secrets import secret_specs
from detectors.exfil.urls import url_specs
from detectors.pipeline import Pipeline
from detectors.redact import Redactor
from tests.fixtures.exfil.builders import chat, rules, run

PASSWORD = "Zq7#vL9pR2mX4kT8"


@pytest.fixture(scope="module")
def detector() -> ExfilDetector:
    return ExfilDetector()


def found(detector, text, family=None):
    return [(h.kind, h.value) for h in detector.scanner.scan(text) if family is None or h.family == family]


# --- (1) the bound counts validated values, not raw anchors -----------------------------------------------------


def test_a_table_of_300_emails_is_found_whole(detector):
    emails = [f"customer.{i}.smith@gmail.com" for i in range(300)]
    assert [value for _, value in found(detector, "Customers:\n" + "\n".join(emails), "pii")] == emails


def test_many_harmless_token_keys_do_not_hide_a_later_password(detector):
    usage = ",\n".join(f'{{"day": {i}, "tokens": {i * 7}}}' for i in range(600))
    text = f"usage = [{usage}]\nDB_password = '{PASSWORD}'"
    assert found(detector, text, "secret") == [("generic_secret", PASSWORD)]
    detections, findings = run(detector, chat(prompt="show config", completion=text))
    assert rules(detections) == {"abw-exfil-secret-output"}
    assert PASSWORD in {s.value for s in findings.sensitive}


def scanner(**bounds) -> CandidateScanner:
    return CandidateScanner([*secret_specs(3.0, 8), *pii_specs(), *url_specs()], **bounds)


def test_validated_values_per_pattern_are_bounded():
    emails = " ".join(f"user{i}@mail.io" for i in range(20))
    hits = scanner(max_values_per_pattern=7).scan(emails)
    assert [h.value for h in hits] == [f"user{i}@mail.io" for i in range(7)]


def test_look_alikes_that_fail_validation_do_not_use_up_the_value_bound():
    text = " ".join(f"bad{i}@nowhere" for i in range(50)) + " real.person@mail.io"
    assert [h.value for h in scanner(max_values_per_pattern=3).scan(text)] == ["real.person@mail.io"]


def test_raw_anchors_per_pattern_stay_bounded():
    text = " ".join(f"bad{i}@nowhere" for i in range(50)) + " real.person@mail.io"
    assert scanner(max_anchors_per_pattern=10).scan(text) == []


def test_the_configured_bounds_reach_the_scanner():
    config = ExfilConfig(max_candidates_per_pattern=5, max_anchors_per_pattern=77)
    built = candidate_scanner(
        config.generic_secret_min_entropy,
        config.generic_secret_min_length,
        config.max_candidates_per_pattern,
        config.max_anchors_per_pattern,
    )
    assert built.max_values_per_pattern == 5
    assert built._matcher.max_matches_per_pattern == 77


def reference_validated(scanner: CandidateScanner, text: str, ordered) -> list[Hit]:
    """The former resolution: check each candidate against every hit accepted so far (quadratic, but plain)."""
    accepted: list[Hit] = []
    kept: dict[int, int] = {}
    for spec_index, start, end in ordered:
        spec = scanner.specs[spec_index]
        if kept.get(spec_index, 0) >= scanner.max_values_per_pattern:
            continue
        if any(h.family == spec.family and h.start < end and start < h.end for h in accepted):
            continue
        valid = spec.validate(text[start:end], text, start)
        if valid is None:
            continue
        value_start = start + valid.start_offset
        end_of_value = value_start + len(valid.value)
        accepted.append(Hit(spec.kind, spec.family, value_start, end_of_value, valid.value, valid.key, valid.alertable))
        kept[spec_index] = kept.get(spec_index, 0) + 1
    return sorted(accepted, key=lambda hit: hit.start)


FRAGMENTS = [
    "jane.doe42@gmail.com",
    "+44 20 7946 0958",
    "4111 1111 1111 1111",
    "4111 1111 1111 1111 12/27",
    "DE89 3704 0044 0532 0130 00",
    "https://evil.example.io/x?d=",
    "10.0.0.1",
    "8.8.8.8",
    "536-22-1234",
    f"password = '{PASSWORD}'",
    f"token: {PASSWORD}",
    "AKIAQ2W3E4R5T6Y7U2I3",
    "postgres://app:S3cr3tPassw0rd@db.internal:5432/x",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
    "secret=",
    "@",
    " ",
    "\n",
    "é",
    "x",
]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40), st.integers(1, 4))
def test_the_sweep_resolves_overlaps_as_the_plain_check_does(pieces, bound):
    text = "".join(pieces)
    scan = scanner(max_values_per_pattern=bound)
    spans = {}
    for match in scan._matcher.scan(text.encode("ascii", "replace").decode("ascii")):
        spec = scan.specs[match.pattern_id]
        span = spec.extend(text, match.start, match.end) if spec.extend else (match.start, match.end)
        if span is not None and span[1] > span[0]:
            spans[(match.pattern_id, *span)] = None
    ordered = sorted(spans, key=lambda item: (scan.specs[item[0]].priority, item[1], -item[2]))
    assert scan.scan(text) == reference_validated(scan, text, ordered)


def test_non_ascii_text_gives_the_same_hits_at_character_offsets(detector):
    ascii_text = f"mail jane.doe42@gmail.com, card 4111 1111 1111 1111, password = '{PASSWORD}'"
    text = "Grüße 😀 — " + ascii_text.replace(", ", " · ")
    hits = detector.scanner.scan(text)
    assert [(h.kind, h.value) for h in hits] == found(detector, ascii_text)
    assert all(text[h.start : h.end] == h.value for h in hits)


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet="ab-.:/ x", max_size=300),
    st.lists(st.tuples(st.integers(0, 300), st.integers(0, 80), st.sampled_from(["ab", "ab-.", "ab-.:/"]))),
)
def test_walks_that_share_runs_within_a_scan_end_where_plain_walks_end(
    text,
    queries,
):
    plain = [walk_right(text, position, frozenset(allowed), limit) for position, limit, allowed in sorted(queries)]
    token = _scan_runs.set(_Runs(text))
    try:
        shared = [walk_right(text, position, frozenset(allowed), limit) for position, limit, allowed in sorted(queries)]
    finally:
        _scan_runs.reset(token)
    assert shared == plain


# --- (2) cards, SSNs and phones labelled "no." / followed by an expiry or CVV / near "invoice" --------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Your card on file is 4111 1111 1111 1111 12/27, CVV 123.", "4111 1111 1111 1111"),
        ("Card: 5555555555554444 737", "5555555555554444"),
        ("Card: 4111-1111-1111-1111 0427", "4111-1111-1111-1111"),
        ("Invoice paid by 4111111111111111", "4111111111111111"),
        ("Card No: 4111 1111 1111 1111, exp 12/27", "4111 1111 1111 1111"),
        ("Name: J. Smith, card no. 5555 5555 5555 4444", "5555 5555 5555 4444"),
        ("Card #: 4111 1111 1111 1111", "4111 1111 1111 1111"),
        ("Employee SSN no. 536-90-4399", "536-90-4399"),
        ("Tel no: +44 20 7946 0958", "+44 20 7946 0958"),
        ("Tel nr. +44 20 7946 0958", "+44 20 7946 0958"),
    ],
)
def test_personal_numbers_in_common_layouts_are_found(detector, text, value):
    assert value in [v for _, v in found(detector, text, "pii")]


def test_a_card_followed_by_more_than_a_cvv_is_not_cut_to_a_card(detector):
    # 5 trailing digits are no expiry or CVV: the run is some other number, not a card plus a tail
    assert found(detector, "ref 4111 1111 1111 1111 12345", "pii") == []


@pytest.mark.parametrize(
    "text",
    [
        "Order #4111 1111 1111 1111 shipped",
        "Your order number is 4111 1111 1111 1111.",
        "invoice no. 4111111111111111",
        "tracking nr 4111 1111 1111 1111",
        "Order #415-555-0132 shipped",
        "ticket 536-90-4399",
    ],
)
def test_numbers_labelled_as_a_things_stay_unflagged(detector, text):
    assert found(detector, text, "pii") == []


@pytest.mark.parametrize(
    ("before", "thing"),
    [("Order #", True), ("order number is ", True), ("Card #: ", False), ("SSN no. ", False), ("paid by ", False)],
)
def test_label_is_the_nearest_word_that_is_no_connector(before, thing):
    assert labelled_as_thing(before + "4111", len(before)) is thing


# --- (3) keys that name or locate a secret are not secrets ------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "      secretName: shop-tls-2024\n",
        "token_endpoint: https://login.microsoftonline.com/common/oauth2/v2.0/token",
        "tokenizer: bert-base-uncased-v2",
        "password_policy: min12-upper1-digit1",
        "api_key_header: X-Acme-Key-V2",
        "secret_ref: vault-kv-prod-42",
        "credentials_path: /etc/app/creds-2024.json",
        "token: https://vault.acme.io/v1/kv7/app",
    ],
)
def test_metadata_keys_are_not_secrets(detector, text):
    assert found(detector, text, "secret") == []
    detections, _ = run(detector, chat(prompt="explain this config", completion="Here is the config:\n" + text))
    assert detections == []


@pytest.mark.parametrize(
    "text",
    [f"password: {PASSWORD}", f"DB_PASSWORD={PASSWORD}", f'{{"api_key": "{PASSWORD}"}}', f"secret_key = '{PASSWORD}'"],
)
def test_secret_values_under_ordinary_keys_are_still_found(detector, text):
    assert found(detector, text, "secret") == [("generic_secret", PASSWORD)]


def test_random_hostile_text_does_not_crash_the_scan(detector):
    rng = random.Random(11)
    alphabet = string.printable + "é😀\u200b"
    for _ in range(50):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 2000)))
        for hit in detector.scanner.scan(text):
            assert text[hit.start : hit.end] == hit.value


# --- (4) more credential formats, without flagging prose ---------------------------------------------------------

_RNG = random.Random(4)
SESSION_TOKEN = "FwoGZXIvYXdzEBYaDH" + "".join(
    _RNG.choice(string.ascii_letters + string.digits + "+/") for _ in range(400)
)
FORMATS = {
    "bearer_token": (
        'curl -H "Authorization: Bearer {}" https://api.acme.io/v1/users',
        "7f9c2ba4e88f827d616045507605853e",
    ),
    "aws_session_token": ("aws_session_token = {}", SESSION_TOKEN),
    "sendgrid_api_key": (
        "Use {} in the client",
        "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",
    ),
    "google_oauth_token": ("token {}", "ya29.a0AfH6SMBx7Qd9kLmN3pQ5rS7tU9vW1xY3zA5bC7dE9fG1hJ3kL5mN7pQ9rS1tU3vW5xY7"),
    "slack_token": (
        "{}",
        "xapp-1-A04K5J8L2MN-4817263549018-5b8d1a6c9f2e4d7a0b3c6e9f1a4d7b0c2e5f8a1b4d7c0e3f6a9b2c5d8e1f4a7",
    ),
    "generic_secret": ("The admin password is {}.", "Vx9kq2LmP7zR4t"),
}


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_more_credential_formats_are_found_and_masked(detector, kind):
    layout, value = FORMATS[kind]
    text = layout.format(value)
    assert found(detector, text, "secret") == [(kind, value)]
    detections, findings = run(detector, chat(prompt="what's in the config?", completion=f"Here you go:\n{text}"))
    assert rules(detections) == {"abw-exfil-secret-output"}
    assert value in {s.value for s in findings.sensitive}


def test_a_bearer_jwt_keeps_its_own_kind(detector):
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    assert found(detector, f"Authorization: Bearer {jwt}", "secret") == [("jwt", jwt)]


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer <token>",
        "Authorization: Bearer $TOKEN",
        "Authorization: Bearer YOUR_ACCESS_TOKEN_HERE",
        'headers = {"Authorization": "Bearer " + token}',
        "The password is incorrect, try again.",
        "The password was changed 3 times in 2024.",
        "Your password is Password123!",
        "The password is at least 12 characters long.",
        "A password is set to expire in 90days.",
        "aws_session_token = ${AWS_SESSION_TOKEN}",
    ],
)
def test_prose_and_templates_are_not_credentials(detector, text):
    assert found(detector, text, "secret") == []


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 60), st.integers(1, 9)), max_size=8),
    st.tuples(st.integers(0, 70), st.integers(1, 9)),
)
def test_the_secret_overlap_test_equals_comparing_every_pair(
    spans: list[tuple[int, int]], hit: tuple[int, int]
) -> None:
    from types import SimpleNamespace

    from detectors.exfil.context import _overlap_test

    secrets = [SimpleNamespace(start=start, end=start + size) for start, size in spans]
    probe = SimpleNamespace(start=hit[0], end=hit[0] + hit[1])
    expected = any(s.start < probe.end and probe.start < s.end for s in secrets)
    assert _overlap_test(secrets)(probe) is expected


@pytest.mark.parametrize("invisible", ["\u200b", "\u2060", "\u00ad", "\ufeff", "\u200d\u200c"])
def test_invisible_characters_inside_a_value_do_not_hide_it(detector, invisible):
    key = "AKIA" + "Q7RZ4MB2XK5NW3PD"
    written = key[:6] + invisible + key[6:12] + invisible + key[12:]
    hits = [h for h in detector.scanner.scan(f"the key is {written} ok") if h.family == "secret"]
    assert [(h.kind, h.value, h.key) for h in hits] == [("aws_access_key_id", written, key)]
    detections, findings = run(detector, chat(prompt="show the config", completion=f"Sure: {written}"))
    assert rules(detections) == {"abw-exfil-secret-output"}
    assert written in {s.value for s in findings.sensitive}
    assert key[6:12] not in str([d.evidence for d in detections])


def test_json_unicode_escapes_inside_a_value_do_not_hide_it(detector):
    key = "AKIA" + "Q7RZ4MB2XK5NW3PD"
    written = "".join(f"\\u{ord(char):04x}" for char in key[:8]) + key[8:]
    text = f'{{"aws_key": "{written}"}}'
    hits = [h for h in detector.scanner.scan(text) if h.family == "secret"]
    assert [(h.kind, h.value, h.key) for h in hits] == [("aws_access_key_id", written, key)]
    assert all(text[h.start : h.end] == h.value for h in hits)
    detections, findings = run(detector, chat(prompt="show the config", completion=f"Sure: {text}"))
    assert rules(detections) == {"abw-exfil-secret-output"}
    assert written in {s.value for s in findings.sensitive}


@pytest.mark.parametrize("hide", [lambda v: v[:8] + "\u200b" + v[8:], lambda v: v[:8] + f"\\u{ord(v[8]):04x}" + v[9:]])
def test_a_value_found_through_the_reader_view_is_masked_as_read_too(hide):
    """The same secret written plainly elsewhere (the model echoing it) must not reach an output raw."""
    password = "Vq7#Lm2$Xp9@Rt4!Kw8z"
    event = chat(prompt=f"Store this for me: password={hide(password)}", completion=f"Done. I stored {password}.")
    pipeline = Pipeline([ExfilDetector()], Redactor(b"test-redaction-key-0123456789"))
    result = pipeline.process([event])
    assert password not in json.dumps({"events": result.events, "alerts": result.alerts})
