"""Evidence snippets that never hold a raw secret or PII value, nor its common encodings.

The pipeline's Redactor scrubs every document by value as a final safety net; snippets are masked here first
so that a detector bug cannot depend on that net alone.
"""

from __future__ import annotations

from collections.abc import Iterable

from detectors.redact import encoded_forms

SNIPPET_WINDOW = 40
MAX_SNIPPET = 240


class Masker:
    """Replaces known sensitive values (``(kind, value)`` pairs) and their encodings by ``[kind]``."""

    def __init__(self, values: Iterable[tuple[str, str]]) -> None:
        self.values = list(values)
        pairs: dict[str, str] = {}
        for kind, value in self.values:
            for form in encoded_forms(value):
                pairs.setdefault(form, f"[{kind}]")
        self._pairs = sorted(pairs.items(), key=lambda pair: -len(pair[0]))

    def mask(self, text: str) -> str:
        for raw, label in self._pairs:
            if raw in text:
                text = text.replace(raw, label)
        return text

    def snippet(self, text: str, start: int, end: int, *, label: str | None = None) -> str:
        """The text around ``[start, end)``; the span itself becomes ``[label]`` when a label is given."""
        before = text[max(0, start - SNIPPET_WINDOW) : start]
        after = text[end : end + SNIPPET_WINDOW]
        middle = f"[{label}]" if label else text[start:end]
        return self.mask(f"{before}{middle}{after}")[:MAX_SNIPPET]
