"""Redaction: masks carry kind and keyed hash; scrubbing finds raw and encoded forms anywhere."""

import base64
import urllib.parse

import pytest

from detectors.base import SensitiveValue
from detectors.redact import Redactor

SECRET = "ghp_0123456789abcdefghijABCDEFGHIJ012345"


def test_mask_is_stable_per_key_and_differs_across_keys():
    one, other = Redactor(b"key-1"), Redactor(b"key-2")
    assert one.mask("github_token", SECRET) == one.mask("github_token", SECRET)
    assert one.mask("github_token", SECRET) != other.mask("github_token", SECRET)
    assert SECRET not in one.mask("github_token", SECRET)
    assert one.mask("github_token", SECRET).startswith("[REDACTED:github_token:")


def test_scrub_masks_raw_and_encoded_forms_in_nested_documents():
    redactor = Redactor(b"k")
    encoded = base64.b64encode(SECRET.encode()).decode().rstrip("=")
    document = {
        "a": f"token {SECRET} here",
        "b": [f"https://evil.example/?d={encoded}", {"c": urllib.parse.quote(SECRET, safe="")}],
        "n": 3,
    }
    scrubbed = redactor.scrub(document, [SensitiveValue(kind="github_token", value=SECRET)])
    flat = str(scrubbed)
    assert SECRET not in flat and encoded not in flat
    assert scrubbed["n"] == 3
    assert flat.count("[REDACTED:github_token:") == 3


def test_scrub_without_values_returns_document_unchanged():
    document = {"a": "b"}
    assert Redactor(b"k").scrub(document, []) is document


def test_empty_key_is_refused():
    with pytest.raises(ValueError, match="must not be empty"):
        Redactor(b"")


def test_values_with_lone_surrogates_are_scrubbed_without_error():
    value = "PASSWD=05A\ud8001234"
    scrubbed = Redactor(b"k").scrub({"a": f"x {value} y"}, [SensitiveValue(kind="password", value=value)])
    assert value not in scrubbed["a"] and "[REDACTED:password:" in scrubbed["a"]


def test_derived_keys_are_full_length_and_differ_per_purpose_and_redaction_key():
    one, other = Redactor(b"k1"), Redactor(b"k2")
    key = one.derive_key("event document id")
    assert len(key) == 32
    assert key == Redactor(b"k1").derive_key("event document id")
    assert key != one.derive_key("another purpose")
    assert key != other.derive_key("event document id")


@pytest.mark.parametrize("purpose", ["event document id", ""])
def test_no_fingerprint_shown_in_a_mask_reveals_part_of_a_derived_key(purpose: str) -> None:
    """Masks publish fingerprints of attacker-supplied values; no value may fingerprint to a derived key's prefix."""
    redactor = Redactor(b"k1")
    key = redactor.derive_key(purpose).hex()
    for value in (purpose, f"abusewatch derived key: {purpose}", f"abusewatch derived key\x00{purpose}"):
        assert not key.startswith(redactor.fingerprint(value))
