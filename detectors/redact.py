"""Redaction: raw secrets and PII never leave the engine.

A sensitive value is replaced by a mask carrying its kind and a keyed hash (HMAC-SHA256), so analysts can still
see that two events hold the same secret without seeing it. Scrubbing is by value, so it covers every place the
value was copied to (event text, evidence snippets, decoded forms, dictionary keys) whatever the offsets; and a
piece of a value left at either end of a string, where a snippet window or a truncation cut it, is masked too. A
secret's pieces are masked wherever they sit (:class:`SecretPieces`): a secret split over two URLs or two tool
arguments cannot be joined again from the stored documents.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import string
import urllib.parse
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import re2

from detectors.base import SensitiveValue

MIN_SCRUB_LENGTH = 4  # shorter values would mask ordinary text
MIN_EDGE_LENGTH = 6  # a piece of a value cut off at a string's end is masked from this length on
MIN_PIECE_LENGTH = 10  # a piece of a secret this long is masked wherever it sits in a string
_BLOCK = (MIN_PIECE_LENGTH + 1) // 2  # any MIN_PIECE_LENGTH characters of a value hold one of its aligned blocks
# Personal data is masked whole and at a string's ends only: a piece of an address, a name or an e-mail domain
# (``@gmail.com``) is ordinary text in other people's data too. Every other kind (secrets, canaries, encoded data)
# is machine-made, and a random piece of it is found in no other text.
PII_KINDS = frozenset(
    {"email", "phone", "payment_card", "iban", "us_ssn", "gb_nhs", "de_idnr", "pl_pesel", "nl_bsn", "fr_nir"}
    | {"es_dni", "it_codice_fiscale", "ip_address"}
)
_CHARACTER_CLASSES = (frozenset(string.ascii_lowercase), frozenset(string.ascii_uppercase), frozenset(string.digits))
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.encoding = re2.Options.Encoding.LATIN1
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.max_mem = 64 << 20  # a long value (a private key, an encoded blob) makes thousands of blocks


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
        """Return ``document`` (str, list, dict, nested) with every sensitive value masked, and every piece of a
        secret (:data:`MIN_PIECE_LENGTH` characters or more) with the mask of its value."""
        values = list(values)
        pairs = self.replacements(values)
        if not pairs:
            return document
        return substitute(document, pairs, ValueEdges(pairs), SecretPieces(self._piece_sources(values)))

    def _piece_sources(self, values: Iterable[SensitiveValue]) -> list[tuple[str, str]]:
        """``(form, mask)`` for the values whose pieces are masked anywhere (all but :data:`PII_KINDS`): each as
        written and URL-encoded (a value split over URL parameters is encoded there)."""
        sources: dict[str, str] = {}
        for item in values:
            if item.kind in PII_KINDS or len(item.value) <= MIN_PIECE_LENGTH:
                continue
            mask = self.mask(item.kind, item.key or item.value)
            for form in (item.value, urllib.parse.quote(_utf8(item.value), safe="")):
                sources.setdefault(form, mask)
        return list(sources.items())


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


def substitute(
    node: Any,
    pairs: list[tuple[str, str]],
    edges: ValueEdges | None = None,
    pieces: SecretPieces | None = None,
) -> Any:
    """``node`` (str, list, dict, nested; keys too) with each ``raw`` of ``pairs`` replaced by its stand-in, in
    order; then the ``pieces`` of secrets it still holds; then a part of a value cut off at either end of it
    (``edges``)."""
    if isinstance(node, str):
        for raw, mask in pairs:
            if raw in node:
                node = node.replace(raw, mask)
        if pieces:
            node = pieces.mask(node)
        return edges.mask(node) if edges else node
    if isinstance(node, dict):
        return {
            substitute(key, pairs, edges, pieces): substitute(value, pairs, edges, pieces)
            for key, value in node.items()
        }
    if isinstance(node, list | tuple):
        return [substitute(value, pairs, edges, pieces) for value in node]
    return node


class SecretPieces:
    """Finds the pieces of known secrets in a text, wherever they sit, and masks each with its secret's mask.

    A piece is a run of :data:`MIN_PIECE_LENGTH` characters or more of a secret that mixes letters and digits or
    both cases (:func:`_random_piece`): a format's fixed words (``-----BEGIN``, ``PRIVATE KEY``) are no piece of
    one key. Each secret is cut into aligned blocks of :data:`_BLOCK` characters, and any piece that long holds a
    whole block (``2 * _BLOCK - 1 <= MIN_PIECE_LENGTH``): one RE2 alternation of the blocks, compiled once per
    scrub, finds them in a text in one linear pass whatever their number (a private key makes hundreds), and a
    block found is grown both ways along the secret it was cut from. RE2 reads UTF-8 bytes, encoded with lone
    surrogates kept, as Latin-1: byte for byte, so no text or value fails to encode.
    """

    def __init__(self, sources: Iterable[tuple[str, str]]) -> None:
        self._sources = list(sources)  # (secret as written, its mask)
        self._blocks: dict[bytes, list[tuple[int, int]]] = defaultdict(list)  # block -> (source, offset in it)
        for index, (raw, _mask) in enumerate(self._sources):
            for offset in range(0, len(raw) - _BLOCK + 1, _BLOCK):
                self._blocks[_utf8(raw[offset : offset + _BLOCK])].append((index, offset))
        self._finder = re2.compile(b"|".join(map(re.escape, self._blocks)), _RE2_OPTIONS) if self._blocks else None

    def __bool__(self) -> bool:
        return self._finder is not None

    def mask(self, text: str) -> str:
        """``text`` with each piece masked (overlapping pieces as one, under the mask of the one that starts first)."""
        if self._finder is None or len(text) < MIN_PIECE_LENGTH:
            return text
        out, position = [], 0
        for start, end, mask in _merged(sorted(self._pieces(text, self._finder))):
            out += (text[position:start], mask)
            position = end
        return "".join(out) + text[position:] if out else text

    def _pieces(self, text: str, finder: re2._Regexp) -> Iterator[tuple[int, int, str]]:
        """Each piece of a source in ``text``. The search resumes past a piece found, not at its next block: a
        match costs microseconds in the RE2 binding, and a private key's half holds a hundred blocks."""
        data = _utf8(text)
        ascii_only = len(data) == len(text)
        at_byte = at_char = 0  # a byte offset of ``data`` and the character offset of ``text`` it is at
        position = 0  # the byte offset the search resumes at
        while (match := finder.search(data, position)) is not None:
            found = match.start()
            if not ascii_only:
                at_char += len(data[at_byte:found].decode("utf-8", "surrogatepass"))
                at_byte, found = found, at_char
            resume = found + 1
            for index, offset in self._blocks[match.group()]:
                raw, mask = self._sources[index]
                start, end = _grown(text, found, raw, offset)
                if end - start >= MIN_PIECE_LENGTH and _random_piece(text[start:end]):
                    yield start, end, mask
                    resume = max(resume, end)
            position = resume if ascii_only else at_byte + len(_utf8(text[found:resume]))


class ValueEdges:
    """Masks a part of a sensitive value cut off at either end of a text (:data:`MIN_EDGE_LENGTH` characters or
    more): what is left of a value when an evidence snippet or a truncated field cut it, which scrubbing by whole
    value would leave raw. A text's first and last characters are looked up in all the values joined first, two
    searches whatever their number, so a text that starts and ends with none of them is passed over at once."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._pairs = [(raw, mask) for raw, mask in pairs if len(raw) > MIN_EDGE_LENGTH]
        self._joined = "\x00".join(raw for raw, _mask in self._pairs)

    def __bool__(self) -> bool:
        return bool(self._pairs)

    def mask(self, text: str) -> str:
        if len(text) < MIN_EDGE_LENGTH or (
            text[:MIN_EDGE_LENGTH] not in self._joined and text[-MIN_EDGE_LENGTH:] not in self._joined
        ):
            return text
        return _masked_edges(text, self._pairs)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _grown(text: str, found: int, raw: str, offset: int) -> tuple[int, int]:
    """The longest span of ``text`` around the block of ``raw`` at ``offset``, found at ``found``, that is also a
    part of ``raw`` at the same alignment."""
    before = 0
    while before < min(found, offset) and text[found - before - 1] == raw[offset - before - 1]:
        before += 1
    after, limit = _BLOCK, min(len(text) - found, len(raw) - offset)
    while after < limit and text[found + after] == raw[offset + after]:
        after += 1
    return found - before, found + after


def _random_piece(piece: str) -> bool:
    """A piece with letters and digits or both cases of letters: random, where a format's words are not."""
    present = set(piece)
    return sum(1 for characters in _CHARACTER_CLASSES if not present.isdisjoint(characters)) >= 2


def _merged(spans: list[tuple[int, int, str]]) -> Iterator[tuple[int, int, str]]:
    """Sorted ``spans`` with overlapping ones joined under the first one's mask."""
    current: tuple[int, int, str] | None = None
    for start, end, mask in spans:
        if current is not None and start < current[1]:
            current = (current[0], max(current[1], end), current[2])
            continue
        if current is not None:
            yield current
        current = (start, end, mask)
    if current is not None:
        yield current


def _masked_edges(text: str, edges: Sequence[tuple[str, str]]) -> str:
    """``text`` with a part of each ``raw`` of ``edges`` cut off at either end of it masked (:class:`ValueEdges`)."""
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
