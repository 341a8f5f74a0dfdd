"""Evidence snippets that never hold a raw secret or PII value, nor its common encodings, not even a piece of one.

The pipeline's Redactor scrubs every document by value as a final safety net, but it only recognises whole values:
a snippet window or a length cut that falls inside a value would leave the cut piece raw. Snippets are therefore
masked here first, on the whole text: every known value that overlaps the window is masked whole, however little
of it the window holds, and only then is the result cut to length.
"""

from __future__ import annotations

from collections.abc import Iterable

from detectors.redact import encoded_forms

SNIPPET_WINDOW = 40
MAX_SNIPPET = 240

Span = tuple[int, int, str]  # start, end, stand-in


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
        """The text around ``[start, end)``, masked; the span itself becomes ``[label]`` when a label is given."""
        forced = [(start, end, f"[{label}]")] if label else []
        return self.excerpt(text, max(0, start - SNIPPET_WINDOW), end + SNIPPET_WINDOW, forced=forced)

    def excerpt(self, text: str, start: int = 0, end: int = MAX_SNIPPET, *, forced: Iterable[Span] = ()) -> str:
        """``text[start:end]`` masked, at most :data:`MAX_SNIPPET` characters: a known value that overlaps the
        excerpt is masked whole even when the excerpt holds only a piece of it. ``forced`` spans are masked with
        their own stand-in and win over the values they overlap."""
        end = min(end, len(text))
        spans = [*forced, *self._occurrences(text, start, end)]
        return "".join(_render(text, start, end, spans))[:MAX_SNIPPET]

    def _occurrences(self, text: str, start: int, end: int) -> list[Span]:
        """Every occurrence of a known form that overlaps ``[start, end)``, longest forms first."""
        found = []
        for raw, label in self._pairs:
            position = max(0, start - len(raw) + 1)
            stop = min(len(text), end + len(raw) - 1)
            while (position := text.find(raw, position, stop)) >= 0:
                found.append((position, position + len(raw), label))
                position += 1
        return found


def _render(text: str, start: int, end: int, spans: list[Span]) -> Iterable[str]:
    """``text[start:end]`` with each group of overlapping spans replaced by one stand-in: that of the group's
    earliest span in ``spans`` (forced spans first, then longer forms before shorter ones)."""
    groups: list[tuple[int, int, int, str]] = []  # start, end, rank of the naming span, its stand-in
    for rank, (span_start, span_end, label) in sorted(enumerate(spans), key=lambda item: item[1][0]):
        if groups and span_start < groups[-1][1]:
            group_start, group_end, group_rank, group_label = groups[-1]
            named = (group_rank, group_label) if group_rank < rank else (rank, label)
            groups[-1] = (group_start, max(group_end, span_end), *named)
        else:
            groups.append((span_start, span_end, rank, label))
    position = start
    for group_start, group_end, _rank, label in groups:
        if group_end <= start or group_start >= end:
            continue
        yield text[position : max(position, group_start)]
        yield label
        position = max(position, group_end)
    if position < end:
        yield text[position:end]
