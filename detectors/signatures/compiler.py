"""Compile Sigma rules into one linear-time pass per field, and evaluate their conditions.

pySigma resolves the detection into a condition tree whose leaves are ``field = value`` tests with every modifier
already applied (``contains`` as wildcards, ``base64offset`` as an expansion, ``all`` as an AND). Each leaf value
becomes one *item*: a regex for a :class:`~detectors.matching.MultiMatcher` of its field.
A text is scanned once per view (see :mod:`detectors.signatures.textnorm`), and RE2 locates only the items still
missing; a fold that differs from its text only in ASCII case is scanned just for the few caseless items that can
tell case apart (inline ``(?-i:...)``). The condition of a rule is evaluated only when one of its items matched,
which is sound because conditions that hold with no positive match are rejected at load.

Literal and wildcard items of all rules share one matcher per field. ``re`` items are compiled per rule and field
instead: Hyperscan's compile time with start-of-match tracking grows much faster than linearly with the number of
complex regexes (97 regexes of the pack: about a minute as one database, ~10 s one rule at a time), and a per-rule
matcher is cached by its patterns, so a hot reload recompiles only the rules that changed.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionItem,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.modifiers import SigmaBase64Modifier, SigmaBase64OffsetModifier, SigmaCaseSensitiveModifier
from sigma.rule import SigmaDetectionItem
from sigma.types import (
    SigmaCasedString,
    SigmaExpansion,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SpecialChars,
)

from detectors.event import TEXT_FIELDS
from detectors.matching import MultiMatcher, Pattern, PatternError, check_pattern
from detectors.signatures.parse import METADATA_FIELDS, RuleLoadError, SignatureRule
from detectors.signatures.textnorm import DEFAULT_LIMITS, Limits, View, explain, fold, text_views

SNIPPET_CONTEXT = 40
MAX_SNIPPET_MATCH = 200
MIN_VARIANT_LITERAL = 6  # shorter literals are too likely to appear by chance in leet / rot13 / joined variants
MAX_EVIDENCE = 3

# A condition node: ("item", id) | ("and", (nodes...)) | ("or", (nodes...)) | ("not", node)
Node = tuple


@dataclass(frozen=True, slots=True)
class Item:
    """One value to look for: a regex in the matcher of ``field`` (``None``: a keyword, every text field)."""

    id: int
    rule: int
    field: str | None
    expression: str
    cased: bool = False  # matched on the text as written (``cased``, ``base64`` values), not on the fold
    variants: bool = True  # also looked for in the leet / rot13 / spaced-letters variants
    dotall: bool = True
    multiline: bool = False
    regex: bool = False  # an ``re`` value (validated with RE2 at load)

    def pattern(self, pattern_id: int) -> Pattern:
        return Pattern(
            pattern_id, self.expression, caseless=not self.cased, dotall=self.dotall, multiline=self.multiline
        )


@dataclass(frozen=True, slots=True)
class ItemMatch:
    """Where an item matched: ``start``/``end`` are offsets in the original text."""

    item: int
    field: str
    start: int
    end: int
    snippet: str
    transforms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RuleHit:
    rule: SignatureRule
    evidence: tuple[ItemMatch, ...]


# What one text of a field matched: item id -> first match, and whether the text was cut to the scan budget.
TextScan = Callable[[str, str], tuple[dict[int, ItemMatch], bool]]


@dataclass(slots=True)
class MatchResult:
    """The rules that matched a set of texts, and whether any text was cut to the scan budget."""

    hits: list[RuleHit] = field(default_factory=list)
    truncated: bool = False
    matches: dict[int, ItemMatch] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule: SignatureRule
    items: tuple[Item, ...]
    condition: Node
    positive: tuple[int, ...]  # items not under a NOT: the ones that make evidence


def compile_rule(rule: SignatureRule, index: int, first_id: int) -> CompiledRule:
    """Compile one rule; raise :class:`RuleLoadError` for anything the engine cannot run exactly."""
    builder = _RuleBuilder(rule, index, first_id)
    tree = rule.sigma.detection.parsed_condition[0].parse()
    condition = builder.node(tree)
    if evaluate(condition, frozenset()):
        raise RuleLoadError(
            rule.path,
            rule.label,
            "the condition is true for an event where nothing matched (e.g. a bare 'not'); add a positive selection",
        )
    _check_regexes(builder)
    return CompiledRule(rule, tuple(builder.items), condition, tuple(_positive(condition)))


def _check_regexes(builder: _RuleBuilder) -> None:
    """Reject the rule if any of its ``re`` values has no linear-time engine (checked with RE2, which is fast)."""
    for item in builder.items:
        if item.regex:
            try:
                check_pattern(item.expression, caseless=not item.cased)
            except PatternError as error:
                raise builder.fail(
                    f"regex {item.expression!r} on {item.field or 'keywords'} is rejected: {error}"
                ) from None


@lru_cache(maxsize=4096)
def _cached_matcher(patterns: tuple[Pattern, ...]) -> MultiMatcher:
    return MultiMatcher(patterns, max_matches_per_pattern=1)


def evaluate(node: Node, matched: frozenset[int] | set[int] | dict[int, ItemMatch]) -> bool:
    kind = node[0]
    if kind == "item":
        return node[1] in matched
    if kind == "and":
        return all(evaluate(child, matched) for child in node[1])
    if kind == "or":
        return any(evaluate(child, matched) for child in node[1])
    return not evaluate(node[1], matched)


def _positive(node: Node, negated: bool = False) -> list[int]:
    kind = node[0]
    if kind == "item":
        return [] if negated else [node[1]]
    if kind == "not":
        return _positive(node[1], not negated)
    return [item for child in node[1] for item in _positive(child, negated)]


class _RuleBuilder:
    def __init__(self, rule: SignatureRule, index: int, first_id: int) -> None:
        self.rule = rule
        self.index = index
        self.next_id = first_id
        self.items: list[Item] = []

    def fail(self, problem: str) -> RuleLoadError:
        return RuleLoadError(self.rule.path, self.rule.label, problem)

    def node(self, tree: object) -> Node:
        if isinstance(tree, ConditionAND):
            return ("and", tuple(self.node(arg) for arg in tree.args))
        if isinstance(tree, ConditionOR):
            return ("or", tuple(self.node(arg) for arg in tree.args))
        if isinstance(tree, ConditionNOT):
            return ("not", self.node(tree.args[0]))
        if isinstance(tree, ConditionFieldEqualsValueExpression):
            return self.leaf(tree.field, tree.value, _detection_item(tree), keyword=False)
        if isinstance(tree, ConditionValueExpression):
            return self.leaf(None, tree.value, _detection_item(tree), keyword=True)
        raise self.fail(f"unsupported condition element {type(tree).__name__}")

    def leaf(self, field_name: str | None, value: object, item: SigmaDetectionItem | None, keyword: bool) -> Node:
        modifiers = set(item.modifiers) if item is not None else set()
        if isinstance(value, SigmaExpansion):
            return ("or", tuple(self.leaf(field_name, v, item, keyword) for v in value.values))
        encoded = bool(modifiers & {SigmaBase64Modifier, SigmaBase64OffsetModifier})
        cased = encoded or SigmaCaseSensitiveModifier in modifiers or isinstance(value, SigmaCasedString)
        if isinstance(value, SigmaRegularExpression):
            expression = value.regexp.original if value.regexp.original is not None else str(value.regexp)
            return self.add(
                field_name,
                expression,
                cased=cased,
                variants=not cased,
                dotall=SigmaRegularExpressionFlag.DOTALL in value.flags,
                multiline=SigmaRegularExpressionFlag.MULTILINE in value.flags,
                regex=True,
            )
        if isinstance(value, SigmaNumber):
            value = SigmaString(str(value))
        if not isinstance(value, SigmaString):
            raise self.fail(f"value type {type(value).__name__} on {field_name or 'keywords'} is not supported")
        expression, literal_length = self.string_expression(value, cased=cased, keyword=keyword)
        return self.add(
            field_name, expression, cased=cased, variants=not cased and literal_length >= MIN_VARIANT_LITERAL
        )

    def string_expression(self, value: SigmaString, cased: bool, keyword: bool) -> tuple[str, int]:
        """A Sigma string (with ``*``/``?`` wildcards) as a regex on the folded (or, if cased, written) text."""
        parts = list(value.s)
        anchored_start = not keyword and not (parts and parts[0] == SpecialChars.WILDCARD_MULTI)
        anchored_end = not keyword and not (parts and parts[-1] == SpecialChars.WILDCARD_MULTI)
        while parts and parts[0] == SpecialChars.WILDCARD_MULTI:
            parts.pop(0)
        while parts and parts[-1] == SpecialChars.WILDCARD_MULTI:
            parts.pop()
        pieces: list[str] = []
        literal_length = 0
        for part in parts:
            if part == SpecialChars.WILDCARD_MULTI:
                pieces.append(".*")
            elif part == SpecialChars.WILDCARD_SINGLE:
                pieces.append(".")
            elif isinstance(part, str):
                text = part if cased else fold(part)
                literal_length += len(text.strip())
                pieces.append(_literal_regex(text))
            else:
                raise self.fail(f"placeholder {part!r} is not supported")
        if literal_length == 0:
            raise self.fail(f"value {value!s} has no literal text to match")
        return ("^" if anchored_start else "") + "".join(pieces) + ("$" if anchored_end else ""), literal_length

    def add(self, field_name: str | None, expression: str, **options: bool) -> Node:
        try:
            expression.encode("utf-8")
        except UnicodeEncodeError:
            raise self.fail(
                f"value {expression!r} on {field_name or 'keywords'} holds a lone surrogate; write astral characters "
                "as one escape (\\U000E0041), not as a UTF-16 surrogate pair"
            ) from None
        item = Item(self.next_id, self.index, field_name, expression, **options)
        self.next_id += 1
        self.items.append(item)
        return ("item", item.id)


def _detection_item(tree: ConditionItem | object) -> SigmaDetectionItem | None:
    for parent in tree.parent_chain():  # type: ignore[attr-defined]
        if isinstance(parent, SigmaDetectionItem):
            return parent
    return None


# Syntax that can make part of a caseless pattern case-sensitive: inline flag groups ("(?-i:...)"), Unicode classes.
_CASE_SYNTAX = re.compile(r"\(\?[-imsU]|\\[pP]")


def _tells_case(item: Item) -> bool:
    """Whether a caseless item may match a text and its ASCII-lower-cased copy differently (conservative)."""
    return item.regex and _CASE_SYNTAX.search(item.expression) is not None


def _literal_regex(text: str) -> str:
    """Escape a literal; any whitespace in it matches any whitespace run (texts are not collapsed)."""
    return r"\s+".join(re.escape(chunk) for chunk in re.split(r"\s+", text))


class CompiledRules:
    """Compiled rules: per field, one matcher for every literal and regex of every rule. Thread-safe."""

    def __init__(self, compiled: Sequence[CompiledRule], limits: Limits = DEFAULT_LIMITS) -> None:
        self.compiled = list(compiled)
        self.rules = [c.rule for c in self.compiled]
        self.limits = limits
        self.items: dict[int, Item] = {item.id: item for c in self.compiled for item in c.items}
        self._rule_of = {item.id: item.rule for item in self.items.values()}
        self._skip_on_cased = frozenset(item.id for item in self.items.values() if item.cased)
        self._skip_on_variants = self._skip_on_cased | {item.id for item in self.items.values() if not item.variants}
        self.matchers: dict[str, MultiMatcher] = {}  # per field: every item's pattern, id = item id
        self.case_matchers: dict[str, MultiMatcher] = {}  # per field: the caseless items that can tell case apart
        for field_name in (*TEXT_FIELDS, *METADATA_FIELDS):
            items = [
                item
                for item in self.items.values()
                if item.field == field_name or (item.field is None and field_name in TEXT_FIELDS)
            ]
            if items:
                self.matchers[field_name] = _cached_matcher(tuple(item.pattern(item.id) for item in items))
            telling = tuple(item.pattern(item.id) for item in items if not item.cased and _tells_case(item))
            if telling:
                self.case_matchers[field_name] = _cached_matcher(telling)

    @property
    def pattern_count(self) -> int:
        return len(self.items)

    def scan_text(self, field_name: str, text: str) -> tuple[dict[int, ItemMatch], bool]:
        """Items found in one text of ``field_name`` (first, plainest match each) and whether it was truncated."""
        matcher = self.matchers.get(field_name)
        if matcher is None or not text:
            return {}, False
        views, truncated = text_views(text, self.limits, keep_case=field_name in self.case_matchers)
        found: dict[int, ItemMatch] = {}
        for view in views:
            scanner = matcher
            # A case-only fold: caseless items match it as they matched the text as written, scanned just before; the
            # cased fold: only items that tell case match it otherwise than the fold.
            if view.case_only or view.case_kept:
                scanner = self.case_matchers.get(field_name)
                if scanner is None:
                    continue
            # Skip before RE2 locates: items found in a plainer view, cased items on folds, fixed ones on variants.
            skip = self._skip_on_variants if view.variant else self._skip_on_cased if not view.cased else frozenset()
            for match in scanner.scan(view.text, exclude=skip.union(found) if found else skip):
                found[match.pattern_id] = _item_match(match.pattern_id, field_name, view, match.start, match.end)
        return found, truncated

    def evaluate(self, matches: dict[int, ItemMatch]) -> list[RuleHit]:
        """The rules whose condition holds given the matched items, with their evidence."""
        candidates = sorted({self._rule_of[item_id] for item_id in matches})
        hits = []
        for index in candidates:
            compiled = self.compiled[index]
            if evaluate(compiled.condition, matches):
                evidence = tuple(matches[i] for i in compiled.positive if i in matches)[:MAX_EVIDENCE]
                hits.append(RuleHit(compiled.rule, evidence))
        return hits

    def match(
        self,
        texts: Iterable[tuple[str, str]],
        scan: TextScan | None = None,
        judged_as: Iterable[tuple[str, str, str]] = (),
    ) -> MatchResult:
        """Scan every ``(field, text)`` (text and metadata fields) and evaluate the rules over all of them.

        ``scan`` stands in for :meth:`scan_text` (a verdict cache in front of it). ``judged_as`` holds
        ``(field, text, source)``: a text the rules of ``field`` judge whose matches name ``source``, the field it
        came from (client-written system text judged as a prompt), after the ``texts``.
        """
        scan = scan or self.scan_text
        result = MatchResult()
        for field_name, text, source in itertools.chain(((f, t, f) for f, t in texts), judged_as):
            found, truncated = scan(field_name, text)
            result.truncated = result.truncated or truncated
            for item_id, item_match in found.items():
                if item_id not in result.matches:
                    result.matches[item_id] = item_match if source == field_name else replace(item_match, field=source)
        result.hits = self.evaluate(result.matches)
        return result


def _item_match(item_id: int, field_name: str, view: View, start: int, end: int) -> ItemMatch:
    source_start, source_end = view.source_span(start, end)
    transforms = view.transforms
    if not view.cased:
        folds = explain(view.source[source_start:source_end])
        transforms = (*folds, *transforms)
    first, last = snippet_span(source_start, source_end)
    original = view.origin or (source_start, source_end)
    return ItemMatch(
        item_id, field_name, original[0], original[1], view.source[first:last], tuple(dict.fromkeys(transforms))
    )


def snippet_span(start: int, end: int) -> tuple[int, int]:
    """Where the snippet of a match at ``start:end`` of its source is cut: the match, capped, with context."""
    return max(0, start - SNIPPET_CONTEXT), min(end, start + MAX_SNIPPET_MATCH) + SNIPPET_CONTEXT
