"""Redaction: raw secrets and PII never leave the engine.

A sensitive value is replaced by a mask carrying its kind and a keyed hash (HMAC-SHA256), so analysts can still
see that two events hold the same secret without seeing it. Scrubbing is by value, so it covers every place the
value was copied to (event text, evidence snippets, decoded forms) whatever the offsets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
from collections.abc import Iterable
from typing import Any

from detectors.base import SensitiveValue

MIN_SCRUB_LENGTH = 4  # shorter values would mask ordinary text


_DERIVED_KEY_DOMAIN = b"\xffabusewatch derived key\x00"  # 0xFF: never in a fingerprinted (UTF-8) value


class Redactor:
    """Masks sensitive values. ``key`` keys the correlation hash; keep it secret and stable per deployment."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the redaction key must not be empty")
        self._key = key

    def fingerprint(self, value: str) -> str:
        """The keyed hash shown in masks: the same value always gives the same fingerprint."""
        return hmac.new(self._key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:12]

    def derive_key(self, purpose: str) -> bytes:
        """A 256-bit key for ``purpose``, derived from the redaction key (HMAC-SHA256 of a domain label), for other
        keyed hashes over raw text that must be stable per deployment and unguessable without the key.

        The label starts with a 0xFF byte, which no UTF-8 encoding of a string holds, so no fingerprint (shown in
        masks, of attacker-supplied values) is ever a prefix of a derived key."""
        label = _DERIVED_KEY_DOMAIN + purpose.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, label, hashlib.sha256).digest()

    def mask(self, kind: str, value: str) -> str:
        return f"[REDACTED:{kind}:{self.fingerprint(value)}]"

    def replacements(self, values: Iterable[SensitiveValue]) -> list[tuple[str, str]]:
        """``(raw form, mask)`` pairs for each value and its common encodings, longest first."""
        pairs: dict[str, str] = {}
        for item in values:
            if len(item.value) < MIN_SCRUB_LENGTH:
                continue
            mask = self.mask(item.kind, item.value)
            for form in encoded_forms(item.value):
                pairs.setdefault(form, mask)
        return sorted(pairs.items(), key=lambda pair: -len(pair[0]))

    def scrub(self, document: Any, values: Iterable[SensitiveValue]) -> Any:
        """Return ``document`` (str, list, dict, nested) with every sensitive value masked."""
        pairs = self.replacements(values)
        if not pairs:
            return document
        return substitute(document, pairs)


def encoded_forms(value: str) -> set[str]:
    """``value`` as written and in the encodings data is smuggled in (base64, base64url, URL-encoding)."""
    raw = value.encode("utf-8", "surrogatepass")
    forms = {
        value,
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        urllib.parse.quote(raw, safe=""),
        urllib.parse.quote_plus(raw),
    }
    return {form for form in forms if len(form) >= MIN_SCRUB_LENGTH}


def substitute(node: Any, pairs: list[tuple[str, str]]) -> Any:
    """``node`` (str, list, dict, nested) with each ``raw`` of ``pairs`` replaced by its stand-in, in order."""
    if isinstance(node, str):
        for raw, mask in pairs:
            if raw in node:
                node = node.replace(raw, mask)
        return node
    if isinstance(node, dict):
        return {key: substitute(value, pairs) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [substitute(value, pairs) for value in node]
    return node
