"""The signature tier: Sigma rules over every text of each event, in one linear-time pass per field.

Texts repeat a lot in real traffic (an application's system prompt, retrieved documents, prompt templates), so
what each text matched is kept in a bounded LRU :class:`VerdictCache` and reused while the rules stay the same.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence

from detectors.base import Detection, Detector, Evidence, Findings, RuleInfo
from detectors.event import PROMPT, SYSTEM, TEXT_FIELDS, Event
from detectors.signatures.compiler import CompiledRules, ItemMatch, MatchResult, RuleHit, snippet_span
from detectors.signatures.parse import SignatureRule
from detectors.signatures.ruleset import RuleSet, RuleSetWatcher
from detectors.signatures.textnorm import DECODINGS

MATCHES_FIELD = "gen_ai.security.signature_matches"
TRUNCATED_FIELD = "gen_ai.security.signature_scan_truncated"
DEFAULT_CACHE_SIZE = 10_000

# A cached match: item id, start and end in the text, transforms. Its snippet is cut again from the text.
_CachedMatch = tuple[int, int, int, tuple[str, ...]]
_Verdict = tuple[tuple[_CachedMatch, ...], bool]  # (the text's matches in scan order, whether it was truncated)


def rule_info(rule: SignatureRule) -> RuleInfo:
    """What alerts say about a signature rule."""
    return RuleInfo(
        id=rule.id,
        name=rule.title,
        category=rule.category,  # type: ignore[arg-type]  # checked against CATEGORIES at load
        level=rule.level,  # type: ignore[arg-type]  # checked against LEVELS at load
        description=rule.description,
        atlas=rule.atlas,
        owasp=rule.owasp,
        status=rule.status,
        folds_into=rule.folds_into,
    )


def event_metadata(event: Event) -> Iterator[tuple[str, str]]:
    """The event's scalar attributes under the metadata field names rules use."""
    identity = event.identity
    for field_name, value in (
        ("gen_ai.request.model", event.request_model),
        ("gen_ai.provider.name", event.provider),
        ("service.name", event.service_name),
        ("user.id", identity.user_id),
        ("source.ip", identity.source_ip),
        ("user_agent.original", identity.user_agent),
    ):
        if value:
            yield field_name, value


class VerdictCache:
    """What each text of a text field matched, for the ``size`` texts seen most recently (LRU), for one rule set.

    Entries are keyed by a keyed BLAKE2b hash of (field, text) and hold item ids, offsets and transform names, never
    text: a hit cuts the snippets again from the text being scanned, which is the same text. A text with a match in
    a decoded payload (whose snippet shows decoded text) is not kept. Metadata fields (user ids, addresses) are
    scanned each time: they are cheap and would only churn the cache. Not thread-safe (one per worker thread).
    """

    def __init__(self, size: int = DEFAULT_CACHE_SIZE) -> None:
        if size <= 0:
            raise ValueError("cache size must be positive")
        self.size = size
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[bytes, _Verdict] = OrderedDict()
        self._rules: CompiledRules | None = None
        self._key = os.urandom(16)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._rules = None

    def scan(self, compiled: CompiledRules, field_name: str, text: str) -> tuple[dict[int, ItemMatch], bool]:
        """``compiled.scan_text(field_name, text)``, from the cache when the text was seen before."""
        if field_name not in TEXT_FIELDS or not text:
            return compiled.scan_text(field_name, text)
        if compiled is not self._rules:
            self._entries.clear()
            self._rules = compiled
        key = self._digest(field_name, text)
        verdict = self._entries.get(key)
        if verdict is not None:
            self.hits += 1
            self._entries.move_to_end(key)
            return _restore(verdict, field_name, text[: compiled.limits.max_chars]), verdict[1]
        self.misses += 1
        found, truncated = compiled.scan_text(field_name, text)
        if not any(DECODINGS.intersection(match.transforms) for match in found.values()):
            self._entries[key] = (tuple((m.item, m.start, m.end, m.transforms) for m in found.values()), truncated)
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return found, truncated

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def _digest(self, field_name: str, text: str) -> bytes:
        digest = hashlib.blake2b(field_name.encode(), digest_size=16, key=self._key)
        digest.update(b"\0")
        digest.update(text.encode("utf-8", "surrogatepass"))
        return digest.digest()


def _restore(verdict: _Verdict, field_name: str, scanned: str) -> dict[int, ItemMatch]:
    """The scan result a cached verdict stands for, snippets cut from the ``scanned`` text as the scan cut them."""
    found = {}
    for item_id, start, end, transforms in verdict[0]:
        first, last = snippet_span(start, end)
        found[item_id] = ItemMatch(item_id, field_name, start, end, scanned[first:last], transforms)
    return found


class SignatureDetector(Detector):
    """One detection per (rule, event). Built from a :class:`RuleSetWatcher`, it keeps it as ``watcher``: the
    worker's reloader (``app/stream/reload.py``) polls it and swaps changed rules in with :meth:`use_rules`.

    ``cache_size`` texts' verdicts are cached (see :class:`VerdictCache`); 0 disables the cache. With
    ``judge_system_messages`` the client-written system text (:meth:`Event.system_texts`) is judged by the rules of
    the prompt field too, its evidence naming ``gen_ai.system_instructions``.
    """

    name = "signatures"

    def __init__(
        self,
        rules: RuleSet | RuleSetWatcher,
        cache_size: int = DEFAULT_CACHE_SIZE,
        *,
        judge_system_messages: bool = False,
    ) -> None:
        self.judge_system_messages = judge_system_messages
        self.watcher = rules if isinstance(rules, RuleSetWatcher) else None
        self.ruleset = rules.current if isinstance(rules, RuleSetWatcher) else rules
        self.cache = VerdictCache(cache_size) if cache_size > 0 else None
        self._infos: dict[str, RuleInfo] = {}

    def use_rules(self, ruleset: RuleSet) -> None:
        """Run ``ruleset`` from the next batch on (call between batches, on the thread that runs them)."""
        self.ruleset = ruleset
        self._infos = {}
        if self.cache is not None:
            self.cache.clear()

    def scan_text(self, field: str, text: str) -> MatchResult:
        """The rules one text of ``field`` matches on its own, with their evidence (rule tests, benchmarks, tools)."""
        return self.ruleset.compiled.match([(field, text)])

    def detect(self, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        compiled = self.ruleset.compiled  # one read: a reload mid-batch does not mix two sets
        cache = self.cache
        scan = None if cache is None else lambda field, text: cache.scan(compiled, field, text)
        detections: list[Detection] = []
        for event, found in zip(events, findings, strict=True):
            system = [(PROMPT, text, SYSTEM) for text in event.system_texts()] if self.judge_system_messages else []
            result = compiled.match([*event.texts(), *event_metadata(event)], scan, system)
            if result.truncated:
                found.fields[TRUNCATED_FIELD] = True
            if not result.hits:
                continue
            found.fields[MATCHES_FIELD] = len(result.hits)
            for hit in result.hits:
                found.rule_ids.append(hit.rule.id)
                detections.append(self._detection(event, hit))
        return detections

    def _detection(self, event: Event, hit: RuleHit) -> Detection:
        info = self._infos.get(hit.rule.id)
        if info is None:
            info = self._infos[hit.rule.id] = rule_info(hit.rule)
        transforms = sorted({t for match in hit.evidence for t in match.transforms})
        message = hit.rule.title + (f" (after {', '.join(transforms)})" if transforms else "")
        return Detection(
            rule=info,
            event_ids=[event.id],
            timestamp=event.timestamp,
            identity=event.identity,
            message=message,
            evidence=[_evidence(match) for match in hit.evidence],
        )


def _evidence(match: ItemMatch) -> Evidence:
    detail = f"matched after {', '.join(match.transforms)}" if match.transforms else None
    return Evidence(
        field=match.field,
        snippet=match.snippet,
        start=match.start,
        end=match.end,
        transforms=match.transforms,
        detail=detail,
    )
