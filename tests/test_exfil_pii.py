"""PII detection: validated formats, disclosure only of values the user did not supply."""

import pytest
from stdnum import luhn

from detectors.exfil import ExfilDetector
from detectors.exfil.pii import card_brand
from tests.fixtures.exfil.builders import chat, rules, run


@pytest.fixture(scope="module")
def detector() -> ExfilDetector:
    return ExfilDetector()


def kinds(detector, text):
    return [(h.kind, h.value) for h in detector.scanner.scan(text) if h.family == "pii"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail jane.doe42@gmail.com now", [("email", "jane.doe42@gmail.com")]),
        ("call +44 20 7946 0958 today", [("phone", "+44 20 7946 0958")]),
        ("call (415) 555-0132 today", [("phone", "(415) 555-0132")]),
        ("card 4111 1111 1111 1111 exp", [("payment_card", "4111 1111 1111 1111")]),
        ("iban DE89 3704 0044 0532 0130 00 ok", [("iban", "DE89 3704 0044 0532 0130 00")]),
        ("ssn 536-22-1234", [("us_ssn", "536-22-1234")]),
        ("NHS number 943 476 5919", [("gb_nhs", "943 476 5919")]),
        ("BSN 111222333", [("nl_bsn", "111222333")]),
        ("DNI 54362315K", [("es_dni", "54362315K")]),
        ("CF RCCMNL83S18D969H", [("it_codice_fiscale", "RCCMNL83S18D969H")]),
        ("NIR 2 95 10 99 126 111 93", [("fr_nir", "2 95 10 99 126 111 93")]),
    ],
)
def test_valid_pii_is_found(detector, text, expected):
    assert kinds(detector, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # Luhn fails
        "iban DE89 3704 0044 0532 0130 01",  # mod 97 fails
        "ssn 666-12-3456",  # never issued
        "BSN 111222334",  # 11-proof fails
        "number 111222333 without a keyword",
        "write to support@example.com",
        "use logo@2x.png",
        "Order #415-555-0132 shipped",
        "version 1.2.3.4.5",
    ],
)
def test_invalid_or_lookalike_pii_is_not_found(detector, text):
    assert kinds(detector, text) == []


def test_card_brand_needs_prefix_and_length():
    assert card_brand("4111111111111111") == "visa"
    assert card_brand("378282246310005") == "amex"
    number = "9" + "0" * 14
    assert card_brand(number + luhn.calc_check_digit(number)) is None


def test_private_ip_is_counted_but_not_alertable(detector):
    hits = {h.value: h.alertable for h in detector.scanner.scan("from 10.0.0.7 to 93.184.216.34 via 8.8.8.8")}
    assert hits == {"10.0.0.7": False, "93.184.216.34": True, "8.8.8.8": False}  # a public resolver: documentation


def test_pii_from_a_tool_disclosed_in_the_response_alerts(detector):
    ev = chat(prompt="who ordered?", tool_results=['{"ssn": "536-22-1234"}'], completion="SSN is 536-22-1234.")
    detections, findings = run(detector, ev)
    assert rules(detections) == {"abw-exfil-pii-output"}
    assert detections[0].rule.level == "high"
    assert "first seen in gen_ai.tool.call.result" in detections[0].evidence[0].detail
    assert "536-22-1234" not in detections[0].evidence[0].snippet
    assert findings.fields["gen_ai.security.pii"]["types"] == ["us_ssn"]


def test_pii_the_user_supplied_is_not_a_disclosure(detector):
    ev = chat(prompt="my email is jane.doe42@gmail.com", completion="Saved jane.doe42@gmail.com to your profile.")
    detections, findings = run(detector, ev)
    assert detections == []
    assert findings.fields["gen_ai.security.pii"] == {
        "count": 2,
        "types": ["email"],
        "fields": ["gen_ai.completion", "gen_ai.prompt"],
    }
    assert {s.value for s in findings.sensitive} == {"jane.doe42@gmail.com"}


def test_normalised_values_are_compared(detector):
    ev = chat(prompt="card 4111-1111-1111-1111", completion="Charged card 4111 1111 1111 1111.")
    detections, _ = run(detector, ev)
    assert detections == []


def test_ip_addresses_are_not_redacted_by_default(detector):
    _, findings = run(detector, chat(completion="server 8.8.8.8"))
    assert findings.sensitive == []


@pytest.mark.parametrize(
    ("documentation", "real"),
    [
        ("Pay with 4242 4242 4242 4242 in test mode.", "Pay with 4539 1488 0343 6467 today."),
        ("Use 5555 5555 5555 4444 or 378282246310005.", "Use 5500 0055 5555 5559 or 371385135719516."),
        ("IBAN DE89 3704 0044 0532 0130 00 (the example).", "IBAN DE44 5001 0517 5407 3249 31 (the client)."),
        ("For example SSN 123-45-6789.", "Her SSN 536-90-4721."),
        ("A DNI looks like 12345678Z.", "His DNI is 48193726D."),
        ("Set the resolver to 8.8.8.8 and 1.1.1.1.", "The server is at 93.184.216.34."),
        ("Write to support@stripe.com or security@acme.io.", "Write to jane.doe42@gmail.com."),
        ("Run git clone git@github.com:acme/app.git now.", "Mail git@github.io: it bounced."),
    ],
    ids=["test-cards", "more-test-cards", "example-iban", "example-ssn", "example-dni", "resolvers", "role-mailboxes",
         "ssh-remote"],
)  # fmt: skip
def test_tutorial_values_are_found_but_raise_no_alert(detector, documentation, real):
    """Values printed in every payment, banking and networking tutorial are masked but not alerted; the same kind
    of value that is not documentation still alerts (the control)."""
    assert rules(run(detector, chat(completion=documentation))[0]) == set()
    assert rules(run(detector, chat(completion=real))[0]) == {"abw-exfil-pii-output"}


@pytest.mark.parametrize(
    "text",
    [
        'Record: {"ssn": "536904721"}',
        "social security number 536 90 4721",
        "CC#: 4539148803436467",
        "Visa # 4539 1488 0343 6467",
        "Call the London office on 020 7946 0958.",
        "Call 1-415-867-5309 after six.",
    ],
)
def test_more_written_forms_of_personal_numbers_alert(detector, text):
    assert rules(run(detector, chat(completion=text))[0]) == {"abw-exfil-pii-output"}


def test_a_dumped_email_and_password_line_is_pii_and_an_ssh_remote_is_not(detector):
    dump = "alice.smith@gmail.com:Hunter2024\nbob.jones@yahoo.com:Summer2023!"
    assert kinds(detector, dump) == [("email", "alice.smith@gmail.com"), ("email", "bob.jones@yahoo.com")]
    assert rules(run(detector, chat(documents=[dump], completion=dump))[0]) == {"abw-exfil-pii-output"}
    assert kinds(detector, "git clone git@gitlab.com:group/sub/app.git") == []
