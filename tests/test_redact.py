"""Redaction: masks carry kind and keyed hash; scrubbing finds raw and encoded forms anywhere."""

import base64
import contextlib
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


@pytest.mark.parametrize("prefix", [b"", b"u", b"us", b"user=admin&pass="])
@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
def test_a_value_inside_a_longer_base64_blob_is_masked_at_any_byte_offset(prefix: bytes, encode) -> None:
    blob = encode(prefix + SECRET.encode() + b"&next=1").decode()
    scrubbed = Redactor(b"k").scrub(f"payload {blob}", [SensitiveValue(kind="github_token", value=SECRET)])
    pieces = scrubbed.removeprefix("payload ").split("[REDACTED:github_token:")
    assert len(pieces) == 2
    assert all(SECRET[:6] not in decoded_anyhow(piece.split("]")[-1]) for piece in pieces)


def decoded_anyhow(text: str) -> str:
    """``text`` decoded as base64 from each of its first four characters, in both alphabets (a leak check)."""
    out = ""
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        for start in range(4):
            chunk = text.rstrip("=")[start:]
            with contextlib.suppress(ValueError):
                out += decode(chunk[: len(chunk) - len(chunk) % 4]).decode("latin-1")
    return out


def test_hex_forms_are_masked() -> None:
    redactor, value = Redactor(b"k"), [SensitiveValue(kind="github_token", value=SECRET)]
    for form in (SECRET.encode().hex(), SECRET.encode().hex().upper()):
        assert redactor.scrub(f"x={form};", value) == f"x={redactor.mask('github_token', SECRET)};"


def test_a_piece_of_a_value_cut_off_at_a_string_end_is_masked_and_keys_are_scrubbed() -> None:
    redactor, value = Redactor(b"k"), [SensitiveValue(kind="github_token", value=SECRET)]
    mask = redactor.mask("github_token", SECRET)
    snippets = {"head": f"...the key was {SECRET[:17]}", "tail": f"{SECRET[-9:]} was the key", f"k {SECRET}": 1}
    assert redactor.scrub(snippets, value) == {
        "head": f"...the key was {mask}",
        "tail": f"{mask} was the key",
        f"k {mask}": 1,
    }
    short = f"ends in {SECRET[:5]}"  # under MIN_EDGE_LENGTH: ordinary text is not masked on 5 characters
    assert redactor.scrub(short, value) == short
    assert redactor.scrub("nothing here at all", value) == "nothing here at all"
