"""Decoding of values that may hide data: URL-encoding, base64 / base64url, hex and base32, up to two layers deep;
and of host names written in a form a browser loads but a plain comparison misses (:func:`canonical_host`).

Base32 (RFC 4648) is the DNS-safe encoding: a DNS name is read without regard to case, so base64 does not survive
in one, while base32 in any case and without its padding does (``<base32>.attacker.example``)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import string
import urllib.parse

_B64 = frozenset(string.ascii_letters + string.digits + "+/=-_")
_HEX = frozenset(string.hexdigits)
_B32 = frozenset(string.ascii_letters + "234567=")
_B32_LENGTHS = frozenset({0, 2, 4, 5, 7})  # unpadded length mod 8 of whole bytes: 1, 3 and 6 are never valid
_PRINTABLE = frozenset(string.printable)
_MIN_ENCODED = 8
_DOTS = str.maketrans(dict.fromkeys("\u3002\uff0e\uff61", "."))  # ideographic, full-width, half-width full stops
_OCTAL = frozenset("01234567")


def _printable_text(raw: bytes) -> str | None:
    """``raw`` as text when it is (almost all) printable UTF-8; binary data is not text."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text:
        return None
    printable = sum(1 for ch in text if ch in _PRINTABLE or ch.isprintable())
    return text if printable / len(text) >= 0.95 else None


def from_base64(value: str) -> str | None:
    """Text hidden in ``value`` as base64 or base64url (padding optional), or None."""
    if len(value) < _MIN_ENCODED or not set(value) <= _B64:
        return None
    stripped = value.rstrip("=")
    padded = stripped + "=" * (-len(stripped) % 4)
    altchars = b"-_" if ("-" in value or "_" in value) else None
    try:
        raw = base64.b64decode(padded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return None
    return _printable_text(raw)


def from_hex(value: str) -> str | None:
    """Text hidden in ``value`` as hex, or None."""
    if len(value) < 2 * _MIN_ENCODED or len(value) % 2 or not set(value) <= _HEX:
        return None
    return _printable_text(bytes.fromhex(value))


def from_base32(value: str) -> str | None:
    """Text hidden in ``value`` as base32 (RFC 4648 alphabet, any case, padding optional), or None."""
    stripped = value.rstrip("=")
    if len(stripped) < _MIN_ENCODED or not set(value) <= _B32 or len(stripped) % 8 not in _B32_LENGTHS:
        return None
    try:
        raw = base64.b32decode(stripped + "=" * (-len(stripped) % 8), casefold=True)
    except (binascii.Error, ValueError):
        return None
    return _printable_text(raw)


ENCODINGS = ("base64", "hex", "base32")  # the transforms that hide a value (URL-encoding only escapes it)
_DECODERS = (("base64", from_base64), ("hex", from_hex), ("base32", from_base32))


def decoded_forms(value: str) -> list[tuple[str, tuple[str, ...]]]:
    """``value`` and every readable decoding of it, each with the transforms that produced it."""
    forms: list[tuple[str, tuple[str, ...]]] = [(value, ())]
    unquoted = urllib.parse.unquote_plus(value) if ("%" in value or "+" in value) else value
    if unquoted != value:
        forms.append((unquoted, ("url",)))
    for _ in range(2):
        for text, transforms in list(forms):
            for name, decoder in _DECODERS:
                decoded = decoder(text.strip())
                if decoded is not None and all(decoded != seen for seen, _ in forms):
                    forms.append((decoded, (*transforms, name)))
    return forms


def canonical_host(host: str) -> str | None:
    """``host`` as a browser resolves it (the WHATWG host parser, in short), or None when no browser would load it.

    Percent-escapes are decoded (``evil%2Eio``), the ideographic and full-width full stops are dots, a name with
    other than ASCII characters is mapped to its ASCII (punycode) form by IDNA (``еvil.io`` with a Cyrillic ``е``
    is ``xn--vil-...``), the result is in lower case, and a host that ends in a number is an IPv4 address however
    it is written (``3405803786``, ``0xcb.0.113.10``: ``203.0.113.10``). IPv6 literals are left as they are."""
    if host.startswith("["):
        return host.lower()
    if "%" in host:
        host = urllib.parse.unquote(host, errors="replace")
    host = host.translate(_DOTS)
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")  # nameprep folds case and full-width letters first
        except UnicodeError:
            return None
    host = host.lower()
    labels = host.removesuffix(".").split(".")
    if _ipv4_part(labels[-1]) is None:
        return host
    return _ipv4(labels)


def _ipv4(labels: list[str]) -> str | None:
    """Dotted IPv4 of the 1 to 4 numbers in ``labels`` (each decimal, octal with a leading 0, or hex with 0x; the
    last one fills the bytes the others leave), or None."""
    numbers = [_ipv4_part(label) for label in labels]
    if len(numbers) > 4 or any(number is None for number in numbers):
        return None
    *leading, last = [number for number in numbers if number is not None]
    if any(number > 255 for number in leading) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last + sum(number << (8 * (3 - position)) for position, number in enumerate(leading))
    return str(ipaddress.IPv4Address(value))


def _ipv4_part(label: str) -> int | None:
    """One number of an IPv4 host as WHATWG reads it, or None when the label is no number."""
    if label[:2] in ("0x", "0X"):
        digits, base = label[2:], 16
    elif len(label) > 1 and label.startswith("0"):
        digits, base = label[1:], 8
    else:
        digits, base = label, 10
    valid = {16: frozenset(string.hexdigits), 8: _OCTAL, 10: frozenset(string.digits)}[base]
    if not label or not set(digits) <= valid:
        return None
    return int(digits, base) if digits else 0
