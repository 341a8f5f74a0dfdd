"""Data-flow tracing: does a value the model emitted (URL parameter, tool argument) carry conversation data?

A value is decoded (URL-encoding, base64/base64url, hex, two layers deep) and each readable form is checked for
secrets and PII that reached the model, registered canaries, and passages of the conversation (earlier turns,
retrieved documents, tool results, the system prompt) by word-shingle overlap or verbatim substring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from detectors.event import PROMPT
from detectors.exfil.candidates import CandidateScanner
from detectors.exfil.context import EventContext, Segment
from detectors.exfil.decoding import decoded_forms
from detectors.exfil.measures import shingles, words
from detectors.exfil.registry import AppRegistry


@dataclass(frozen=True, slots=True)
class Flow:
    """Conversation data found in an emitted value. ``what`` is secret | pii | canary | conversation."""

    what: str
    kind: str
    source_field: str | None  # where it was first seen; None when it reached the output from nowhere we saw
    transforms: tuple[str, ...]
    key: str | None = None  # family:kind:normalised value, to compare with what the user typed in
    earlier: bool = False  # first seen in an earlier event of the session (not resent in this one)

    def origin(self) -> str:
        if self.source_field is None:
            return "not seen in the input"
        return f"first seen in {self.source_field}" + (" of an earlier event" if self.earlier else "")


class ConversationIndex:
    """The inputs of one event, indexed for flow tracing. Built only when an output carries opaque data."""

    def __init__(
        self, context: EventContext, shingle_size: int, earlier: Callable[[str], str | None] = lambda _key: None
    ) -> None:
        self.shingle_size = shingle_size
        self.values = context.input_values()
        self.earlier = earlier  # where an earlier event of the session held a value, by value key
        self._shingles: dict[str, Segment] = {}
        self.texts: list[tuple[str, Segment]] = []
        for segment in context.segments:
            if segment.side != "input":
                continue
            self.texts.append((segment.text.lower(), segment))
            for shingle in shingles(words(segment.text), shingle_size):
                self._shingles.setdefault(shingle, segment)

    def passage_source(self, text: str, min_chars: int, min_share: float) -> Segment | None:
        """The input segment ``text`` was copied from (reformatting aside), or None."""
        if len(text) < min_chars:
            return None
        tokens = words(text)
        if len(tokens) >= self.shingle_size:
            found = [self._shingles[s] for s in shingles(tokens, self.shingle_size) if s in self._shingles]
            total = len(tokens) - self.shingle_size + 1
            if found and len(found) / total >= min_share:
                return found[0]
        lowered = text.lower().strip()
        if len(lowered) >= min_chars:
            for haystack, segment in self.texts:
                if lowered in haystack:
                    return segment
        return None


class FlowTracer:
    """Finds conversation data in emitted values; shared by the URL and tool-call checks."""

    def __init__(
        self, scanner: CandidateScanner, registry: AppRegistry, *, min_chars: int, shingle_words: int, min_share: float
    ) -> None:
        self.scanner = scanner
        self.registry = registry
        self.min_chars = min_chars
        self.shingle_words = shingle_words
        self.min_share = min_share

    def index(
        self, context: EventContext, earlier: Callable[[str], str | None] = lambda _key: None
    ) -> ConversationIndex:
        return ConversationIndex(context, self.shingle_words, earlier)

    def trace(self, value: str, index: ConversationIndex, *, passages: bool = True) -> list[Flow]:
        """Every flow into ``value``; passages copied from the user's own current prompt do not count."""
        flows: list[Flow] = []
        seen: set[tuple[str, str]] = set()
        for text, transforms in decoded_forms(value):
            for hit in self.scanner.scan(text, families=("secret", "pii")):
                key = f"{hit.family}:{hit.kind}:{hit.key}"
                origin = index.values.get(key)
                source = origin[0].field if origin else index.earlier(key)
                if (hit.family, hit.key) in seen or (hit.family == "pii" and (source is None or not hit.alertable)):
                    continue
                seen.add((hit.family, hit.key))
                flows.append(Flow(hit.family, hit.kind, source, transforms, key, earlier=origin is None))
            flows.extend(self._known_secrets(text, transforms, index, seen))
            for canary, _start, _end in self.registry.canary_hits(text):
                if ("canary", canary) not in seen:
                    seen.add(("canary", canary))
                    flows.append(Flow("canary", "canary_token", None, transforms))
            if passages and not any(f.what == "conversation" for f in flows):
                segment = index.passage_source(text, self.min_chars, self.min_share)
                if segment is not None and segment.field != PROMPT:
                    flows.append(Flow("conversation", "passage", segment.field, transforms))
        return flows

    def _known_secrets(
        self, text: str, transforms: tuple[str, ...], index: ConversationIndex, seen: set[tuple[str, str]]
    ) -> list[Flow]:
        """Secrets of the input found verbatim in ``text`` although the scan alone does not know them there: an AWS
        secret key without its label, a password without its ``password=``, as a decoded DNS label holds them."""
        flows = []
        for key, (segment, hit) in index.values.items():
            known = hit.family == "secret" and len(hit.value) >= self.min_chars
            if known and ("secret", hit.key) not in seen and hit.value in text:
                seen.add(("secret", hit.key))
                flows.append(Flow("secret", hit.kind, segment.field, transforms, key))
        return flows
