"""Database URL passwords: the userinfo ends at the last ``@`` a host follows, reserved characters included, and
no part of a password is left readable in the alert's evidence or in a scrubbed document."""

import pytest

from detectors.exfil import ExfilDetector
from detectors.redact import Redactor
from tests.fixtures.exfil.builders import chat, run

HOST = "db.prod.acme-corp.com:5432/billing"


@pytest.fixture(scope="module")
def detector() -> ExfilDetector:
    return ExfilDetector()


def secrets(detector: ExfilDetector, text: str) -> list[tuple[str, str]]:
    return [(h.kind, h.value) for h in detector.scanner.scan(text) if h.family == "secret"]


@pytest.mark.parametrize(
    "password",
    ["Vx8@qLm2Rt9zKp4W", "Vx8#qLm2Rt9zKp4W", "Vx8/qLm2Rt9zKp4W", "Vx8qLm2Rt9?zKp4W", "Xk9@Lm/2Rt#q@Zp"],
    ids=["at", "hash", "slash", "question-mark", "several"],
)
def test_a_password_with_reserved_characters_is_found_whole(detector, password):
    """urlsplit would end the password at the first ``@`` of a later one, or find none after a ``#``, ``/``, ``?``."""
    assert secrets(detector, f"DATABASE_URL=postgres://billing:{password}@{HOST}") == [("database_password", password)]


def test_no_part_of_a_password_with_an_at_sign_is_left_in_the_evidence_or_the_document(detector):
    text = f"DATABASE_URL=postgres://billing:Vx8@qLm2Rt9zKp4W@{HOST}"
    detections, findings = run(detector, chat(prompt="check my config", tool_results=[text]))
    snippet = detections[0].evidence[0].snippet
    scrubbed = Redactor(b"k").scrub({"content": text}, findings.sensitive)["content"]
    for shown in (snippet, scrubbed):
        assert "Vx8" not in shown and "qLm2Rt9zKp4W" not in shown
        assert shown.endswith("@db.prod.acme-corp.com:5432/billing")


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("postgres://app:pw12Xk9q@db.prod.com/app?notify=ops@acme.com", "pw12Xk9q"),  # an e-mail in the query
        ("postgres://db.prod.com:5432/app?user=ops@acme.com", None),  # no userinfo: a port and a path
        ("postgres://db.prod.com:5432/app/ops@acme.com", None),
        ("mongodb://u:Xk9vQ2mLp7Rt@h1:27017,h2:27017/db", "Xk9vQ2mLp7Rt"),
        ("postgres://u:Xk9vQ2mLp7Rt@[fd00::5]:5432/db", "Xk9vQ2mLp7Rt"),
    ],
    ids=["query-email", "port-and-query", "port-and-path", "mongo-hosts", "ipv6"],
)
def test_an_at_sign_after_the_host_is_not_the_userinfo(detector, url, password):
    assert secrets(detector, url) == ([("database_password", password)] if password else [])


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:a1Z@cache.prod:6379/0", ":a1Z"),
        ("postgres://u:Vx8@qLm?a=b@db.prod.com/app", "u:Vx8@qLm?a=b"),  # a password that reads as a query
    ],
    ids=["short-password", "cut-short"],
)
def test_a_password_too_short_to_mask_alone_is_masked_with_the_whole_userinfo(detector, url, masked):
    """The redactor leaves values under MIN_SCRUB_LENGTH alone: the found value is then the userinfo, as far as an
    ``@`` with a host after it reaches."""
    assert secrets(detector, url) == [("database_password", masked)]
    _, findings = run(detector, chat(prompt="check", tool_results=[url]))
    assert masked not in Redactor(b"k").scrub(url, findings.sensitive)
