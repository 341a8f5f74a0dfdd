"""Fuzz target: raw payload bytes through decoding, normalisation, text views and redaction.

Checks, for any input: nothing but the documented outcomes happens (events or dead letters with a reason, never an
exception), every text of every event folds and yields views, and a sensitive value taken from an event's text is
gone from the scrubbed event document.

Run with atheris (libFuzzer flags pass through; the first directory receives new corpus entries)::

    .venv/bin/python fuzz/fuzz_decode.py -runs=20000 -max_total_time=60 /tmp/new-corpus fuzz/corpus

Without atheris the same checks run over mutated seeds and random bytes: ``--runs N`` and corpus directories.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

try:
    import atheris
except ImportError:  # the fallback driver below still exercises the checks
    atheris = None

if atheris is not None:
    with atheris.instrument_imports(include=["detectors"]):
        from detectors.base import Findings, SensitiveValue
        from detectors.documents import event_document
        from detectors.event import Event
        from detectors.normalise import decode_payload, normalise_payload
        from detectors.redact import Redactor
        from detectors.signatures.textnorm import fold, text_views
else:
    from detectors.base import Findings, SensitiveValue
    from detectors.documents import event_document
    from detectors.event import Event
    from detectors.normalise import decode_payload, normalise_payload
    from detectors.redact import Redactor
    from detectors.signatures.textnorm import fold, text_views

MAX_BYTES = 256 * 1024
MAX_TEXT_CHARS = 16 * 1024
REDACTOR = Redactor(b"fuzz-key")
SECRET_MIN = 6
KIND = "key"


def test_one_input(data: bytes) -> None:
    """The property checks for one payload; any exception is a finding."""
    records, letters = decode_payload(data, "fuzz", max_bytes=MAX_BYTES)
    assert all(isinstance(record, dict) for record in records)
    assert all(letter.reason for letter in letters)
    events, letters = normalise_payload(data, "fuzz", max_bytes=MAX_BYTES, max_text_chars=MAX_TEXT_CHARS)
    assert all(letter.reason and letter.detail for letter in letters)
    for event in events:
        for _field, text in event.texts():
            fold(text)
            views, _ = text_views(text)
            assert views and views[0].text == text[: len(views[0].text)]
        check_redaction(event)


def check_redaction(event: Event) -> None:
    """A value marked sensitive must not survive in the event document, in any of its encodings."""
    secret = next((word for _f, text in event.texts() for word in text.split() if _secret_like(word)), None)
    if secret is None or secret in REDACTOR.mask(KIND, secret):
        return
    findings = Findings()
    findings.sensitive.append(SensitiveValue(kind=KIND, value=secret))
    document = event_document(event, findings, REDACTOR)
    leaked = [value for value in _strings(document) if secret in value]
    assert not leaked, f"sensitive value {secret!r} survived redaction in {leaked[:1]!r}"


def _secret_like(word: str) -> bool:
    """An alphanumeric token long enough to be masked."""
    return len(word) >= SECRET_MIN and word.isascii() and word.isalnum()


def _strings(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return []


def fallback(argv: list[str]) -> None:
    """Plain-Python driver: mutated seeds and random bytes, ``--runs N`` (default 2000), seed dirs as arguments."""
    runs = int(argv[argv.index("--runs") + 1]) if "--runs" in argv else 2000
    seeds = [p.read_bytes() for arg in argv if Path(arg).is_dir() for p in sorted(Path(arg).iterdir()) if p.is_file()]
    rng = random.Random(0)
    for _ in range(runs):
        data = bytearray(rng.choice(seeds) if seeds and rng.random() < 0.8 else rng.randbytes(rng.randint(0, 512)))
        for _ in range(rng.randint(0, 8)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        test_one_input(bytes(data))
    print(f"Done {runs} runs (fallback driver)")


def main() -> None:
    if atheris is None:
        fallback(sys.argv[1:])
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
