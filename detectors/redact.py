"""Redaction: raw secrets and PII never leave the engine.

A sensitive value is replaced by a mask carrying its kind and a keyed hash (HMAC-SHA256), so analysts can still
see that two events hold the same secret without seeing it. Scrubbing is by value, so it covers every place the
value was copied to (event text, evidence snippets, decoded forms, dictionary keys) whatever the offsets; and a
piece of a value left at either end of a string, where a snippet window or a truncation cut it, is masked too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

from detectors.base import SensitiveValue

MIN_SCRUB_LENGTH = 4  # shorter values would mask ordinary text
MIN_EDGE_LENGTH = 6  # a piece of a value cut off at a string's end is masked from this length on


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
            mask = self.mask(item.kind, item.key or item.value)
            for form in encoded_forms(item.value):
                pairs.setdefault(form, mask)
        return sorted(pairs.items(), key=lambda pair: -len(pair[0]))

    def scrub(self, document: Any, values: Iterable[SensitiveValue]) -> Any:
        """Return ``document`` (str, list, dict, nested) with every sensitive value masked."""
        pairs = self.replacements(values)
        if not pairs:
            return document
        return substitute(document, pairs, [(raw, mask) for raw, mask in pairs if len(raw) > MIN_EDGE_LENGTH])


def encoded_forms(value: str) -> set[str]:
    """``value`` as written and in the encodings data is smuggled in: hex, URL-encoding, and base64 / base64url at
    each of the three byte offsets a value can start at inside a longer encoded blob (the characters that only
    the value's own bytes determine: a value encoded alone or followed by other data gives those same characters)."""
    raw = value.encode("utf-8", "surrogatepass")
    forms = {value, raw.hex(), raw.hex().upper(), urllib.parse.quote(raw, safe=""), urllib.parse.quote_plus(raw)}
    for offset in range(3):
        first, last = -(-8 * offset // 6), 8 * (offset + len(raw)) // 6  # characters of the value's bits only
        padded = bytes(offset) + raw
        for encoded in (base64.b64encode(padded).decode(), base64.urlsafe_b64encode(padded).decode()):
            forms.add(encoded[first:last])
            if offset == 0:
                forms.add(encoded.rstrip("="))  # the value alone: its last, partly padded character too
    return {form for form in forms if len(form) >= MIN_SCRUB_LENGTH}


def substitute(node: Any, pairs: list[tuple[str, str]], edges: Sequence[tuple[str, str]] = ()) -> Any:
    """``node`` (str, list, dict, nested; keys too) with each ``raw`` of ``pairs`` replaced by its stand-in, in
    order; then, for each of ``edges``, a string that starts with the end of its ``raw`` or ends with the start of
    it (:data:`MIN_EDGE_LENGTH` characters or more) has that part replaced too."""
    if isinstance(node, str):
        for raw, mask in pairs:
            if raw in node:
                node = node.replace(raw, mask)
        return _masked_edges(node, edges) if edges else node
    if isinstance(node, dict):
        return {substitute(key, pairs, edges): substitute(value, pairs, edges) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [substitute(value, pairs, edges) for value in node]
    return node


def _masked_edges(text: str, edges: Sequence[tuple[str, str]]) -> str:
    """``text`` with a part of a sensitive value cut off at either end masked: what is left of a value when an
    evidence snippet or a truncated field cut it (scrubbing by whole value would leave the piece raw)."""
    for raw, mask in edges:
        if len(text) >= MIN_EDGE_LENGTH and text[:MIN_EDGE_LENGTH] in raw:
            for size in range(min(len(raw) - 1, len(text)), MIN_EDGE_LENGTH - 1, -1):
                if raw.endswith(text[:size]):
                    text = mask + text[size:]
                    break
        if len(text) >= MIN_EDGE_LENGTH and text[-MIN_EDGE_LENGTH:] in raw:
            for size in range(min(len(raw) - 1, len(text)), MIN_EDGE_LENGTH - 1, -1):
                if raw.startswith(text[-size:]):
                    text = text[:-size] + mask
                    break
    return text
