"""Bad or hostile input never crashes the exfiltration detector."""

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.base import Findings
from detectors.exfil import ExfilDetector
from tests.fixtures.exfil.builders import chat

DETECTOR = ExfilDetector()
ALPHABET = st.sampled_from([*string.printable, "é", "€", "\u200b", "\ud800", "😀"])
TEXT = st.text(alphabet=ALPHABET, max_size=400)
PIECES = st.sampled_from(
    [
        "https://",
        "![x](",
        "](",
        "@",
        "password=",
        "-----BEGIN PRIVATE KEY-----",
        "eyJ",
        "ghp_",
        "%",
        "=",
        "&",
        "?",
        "<img src=",
        "[1]: ",
        "4111 1111",
        "+1 ",
        "\\n",
        '"',
        "AKIA",
    ]
)
HOSTILE = st.lists(st.one_of(TEXT, PIECES), max_size=30).map("".join)


@settings(max_examples=100, deadline=None)
@given(prompt=HOSTILE, completion=HOSTILE, result=HOSTILE, arguments=HOSTILE)
def test_any_text_in_any_field_is_handled(prompt, completion, result, arguments):
    event = chat(prompt=prompt, completion=completion, tool_results=[result], calls=[("send_email", arguments)])
    findings = Findings()
    detections = DETECTOR.detect([event], [findings])
    assert all(d.event_ids == [event.id] for d in detections)
    assert "abusewatch.errors" not in findings.fields


def test_pathological_repetitions_complete():
    for unit in (
        "a@",
        "password=",
        "https://x.io/?a=",
        "![",
        "eyJhbGciOiJIUzI1NiJ9.",
        "1234 ",
        "-----BEGIN PRIVATE KEY-----",
    ):
        text = unit * (200_000 // len(unit))
        event = chat(prompt=text, completion=text, calls=[("http_post", text)])
        DETECTOR.detect([event], [Findings()])
