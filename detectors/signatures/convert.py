"""Convert signature rules to Elasticsearch queries (Lucene, ES|QL, EQL) with pySigma's Elasticsearch backend.

Analysts use the converted queries to hunt in the enriched-event index. A processing pipeline maps the ``llm``
product's fields to what the event documents index (:func:`detectors.documents.event_document`):

* text fields (``gen_ai.prompt``, ``gen_ai.completion``, ``gen_ai.system_instructions``, ``gen_ai.tool.call.*``,
  ``gen_ai.retrieval.documents.content``) go to their ``.lc`` sub-field, and string values are lower-cased. The
  sub-field must be ``keyword`` with the built-in ``lowercase`` normalizer, e.g.
  ``"gen_ai.prompt": {"type": "text", "fields": {"lc": {"type": "keyword", "normalizer": "lowercase",
  "ignore_above": 8191}}}``. That makes Lucene wildcards (``contains``/``startswith``/``endswith``) case-insensitive
  like the stream engine. Regexes (``re``) are translated to Lucene's dialect on the lower-cased value
  (:mod:`detectors.signatures.lucene_regex`), one clause per top-level branch. A string value with a space becomes
  such a regex too, the space as ``\\s+``: the engine matches a space in a literal against any whitespace run
  (``you are  now``, ``you are\nnow``), a wildcard only against one space. Texts longer than ``ignore_above``
  are not searchable this way (the stream engine still scans them).
* metadata fields (``service.name``, ``user.id``...) are ECS keyword fields, matched as they are.

The queries do not fold homoglyphs, drop invisible characters or decode payloads: that happens only in the stream
engine, which is why alerts come from the engine and converted queries are for hunting. Constructs a backend cannot
express (``cased`` in Lucene, keyword searches in ES|QL) are reported per rule, not raised.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sigma.backends.elasticsearch import EqlBackend, ESQLBackend, LuceneBackend
from sigma.conditions import ConditionIdentifier, ConditionNOT, ConditionOR, ConditionSelector
from sigma.conversion.base import Backend
from sigma.exceptions import SigmaError
from sigma.processing.conditions import IncludeFieldCondition, LogsourceCondition
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import FieldMappingTransformation, SetStateTransformation
from sigma.processing.transformations.base import ValueTransformation
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaRule
from sigma.types import (
    SigmaExpansion,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaType,
    SpecialChars,
)

from detectors.event import TEXT_FIELDS
from detectors.signatures.lucene_regex import LuceneRegex, to_lucene
from detectors.signatures.parse import SignatureRule

EVENTS_INDEX_PATTERN = "logs-abusewatch.events-*"
TEXT_SUBFIELD = "lc"
BACKENDS: dict[str, type[Backend]] = {"lucene": LuceneBackend, "esql": ESQLBackend, "eql": EqlBackend}
# ES|QL's RLIKE and EQL's regex read Lucene's dialect against the whole value; the translation to it is checked on
# real Elasticsearch through query_string only (the integration cluster has neither language), so regex rules are
# refused for them rather than written as RE2, which they would silently misread
UNTRANSLATED_REGEX = (
    "regex: {target} reads regexes in Lucene's dialect against the whole value, and the translation to it is "
    "checked for the lucene target only; hunt with --target lucene"
)


@dataclass(frozen=True, slots=True)
class Conversion:
    """A rule's query for one target, or why the target cannot express it."""

    rule: SignatureRule
    target: str
    query: str | None = None
    error: str | None = None
    # Lucene only: where the query finds more than the engine (a regex written as a superset), and where it finds
    # fewer (a superset inside an exclusion the condition negates)
    finds_more: tuple[str, ...] = ()
    finds_fewer: tuple[str, ...] = ()


@dataclass
class LowercaseValues(ValueTransformation):
    """Lower-case string values, including expansions (``base64offset``), which pySigma's CaseTransformation skips."""

    def apply_value(self, field: str | None, val: SigmaString | SigmaExpansion) -> SigmaType | None:
        if isinstance(val, SigmaExpansion):
            return SigmaExpansion([v.lower() if isinstance(v, SigmaString) else v for v in val.values])
        return val.lower()


@dataclass
class SpacedStringsAsRegex(ValueTransformation):
    r"""A string value holding whitespace as a regex whose whitespace is ``\s+``, as the engine reads a space in a
    literal (any whitespace run); wildcards keep their meaning (``*`` any text, ``?`` one character) and a value
    without a leading or trailing ``*`` stays anchored there. The regex is then translated like any other."""

    def apply_value(self, field: str | None, val: SigmaType) -> SigmaType | None:
        if not isinstance(val, SigmaString) or not any(isinstance(p, str) and _SPACE.search(p) for p in val.s):
            return None
        parts = list(val.s)
        pattern = "" if parts[0] == SpecialChars.WILDCARD_MULTI else "^"
        for position, part in enumerate(parts):
            if part == SpecialChars.WILDCARD_MULTI:
                pattern += "" if position in (0, len(parts) - 1) else ".*"
            elif part == SpecialChars.WILDCARD_SINGLE:
                pattern += "."
            elif isinstance(part, str):
                pattern += r"\s+".join(re.escape(piece) for piece in _SPACE.split(part.lower()))
            else:  # a placeholder: left to the backend as it is
                return None
        pattern += "" if parts[-1] == SpecialChars.WILDCARD_MULTI else "$"
        return SigmaRegularExpression(pattern, {SigmaRegularExpressionFlag.DOTALL})


_SPACE = re.compile(r"\s+")


@dataclass
class LuceneRegexTransformation(ValueTransformation):
    """Rewrite each regex for Lucene (:func:`~detectors.signatures.lucene_regex.to_lucene`): whole-term matches in
    Lucene's dialect that find what RE2's search finds, one value per top-level branch where values are OR-ed."""

    split: bool = True

    def apply_detection_item(self, detection_item: SigmaDetectionItem) -> SigmaDetectionItem | None:
        self.split = detection_item.value_linking is ConditionOR
        return super().apply_detection_item(detection_item)

    def apply_value(self, field: str | None, val: SigmaType) -> SigmaType | list[SigmaType] | None:
        if not isinstance(val, SigmaRegularExpression):
            return None
        lucene = _lucene(val)
        if not self.split:
            return SigmaRegularExpression(lucene.text, set())
        return [SigmaRegularExpression(text, set()) for text in lucene.alternatives]


def _lucene(value: SigmaRegularExpression) -> LuceneRegex:
    flags = value.flags
    return _translated(
        str(value.regexp), SigmaRegularExpressionFlag.DOTALL in flags, SigmaRegularExpressionFlag.MULTILINE in flags
    )


@functools.lru_cache(maxsize=1024)
def _translated(pattern: str, dotall: bool, multiline: bool) -> LuceneRegex:
    """One translation per regex, for both the query and the approximations it reports."""
    return to_lucene(pattern, dotall=dotall, multiline=multiline)


def regex_values(detection: SigmaDetection) -> Iterator[SigmaRegularExpression]:
    """Every regex value of a detection, nested ones included."""
    for item in detection.detection_items:
        if isinstance(item, SigmaDetection):
            yield from regex_values(item)
        else:
            yield from (value for value in item.value if isinstance(value, SigmaRegularExpression))


def _has_regex(rule: SigmaRule) -> bool:
    return any(True for detection in rule.detection.detections.values() for _ in regex_values(detection))


def approximations(rule: SigmaRule) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What the rule's Lucene query finds more of, and fewer of, than the engine: a regex written as a superset
    finds more where the condition asks for it, and fewer where the condition negates it (``not filter``)."""
    more: dict[str, None] = {}
    fewer: dict[str, None] = {}
    negated = _negated_detections(rule)
    for name, detection in rule.detection.detections.items():
        for value in regex_values(detection):
            for note in _lucene(value).approximations:
                if name in negated:
                    fewer[f"{note}, in {name}, which the condition excludes"] = None
                if name not in negated or negated[name]:
                    more[note] = None
    return tuple(more), tuple(fewer)


def _negated_detections(rule: SigmaRule) -> dict[str, bool]:
    """Detections the condition negates, each mapped to whether it is also used plainly."""
    polarity: dict[str, set[bool]] = {}
    names = list(rule.detection.detections)

    def walk(node: object, negative: bool) -> None:
        if isinstance(node, ConditionNOT):
            negative = not negative
        if isinstance(node, ConditionIdentifier):
            polarity.setdefault(node.identifier, set()).add(negative)
        elif isinstance(node, ConditionSelector):
            pattern = "*" if node.pattern == "them" else node.pattern
            for name in fnmatch.filter(names, pattern):
                polarity.setdefault(name, set()).add(negative)
        for child in getattr(node, "args", ()):
            walk(child, negative)

    for condition in rule.detection.parsed_condition:
        walk(condition.parse(postprocess=False), False)
    return {name: False in signs for name, signs in polarity.items() if True in signs}


def llm_pipeline(target: str = "lucene") -> ProcessingPipeline:
    """Map the ``llm`` logsource to the indexed ECS fields and the events index."""

    def llm() -> list[LogsourceCondition]:  # pySigma binds each condition to one item: a new one per item
        return [LogsourceCondition(product="llm")]

    lucene = (
        [
            ProcessingItem(
                identifier="abusewatch_spaced_strings",
                transformation=SpacedStringsAsRegex(),
                rule_conditions=llm(),
                field_name_conditions=[IncludeFieldCondition(fields=list(TEXT_FIELDS))],
            ),
            ProcessingItem(
                identifier="abusewatch_lucene_regex",
                transformation=LuceneRegexTransformation(),
                rule_conditions=llm(),
            ),
        ]
        if target == "lucene"
        else []
    )
    return ProcessingPipeline(
        name="abusewatch llm events",
        priority=20,
        items=[
            *lucene,
            ProcessingItem(
                identifier="abusewatch_lowercase_text_values",
                transformation=LowercaseValues(),
                rule_conditions=llm(),
                field_name_conditions=[IncludeFieldCondition(fields=list(TEXT_FIELDS))],
            ),
            ProcessingItem(
                identifier="abusewatch_text_fields",
                transformation=FieldMappingTransformation({field: f"{field}.{TEXT_SUBFIELD}" for field in TEXT_FIELDS}),
                rule_conditions=llm(),
            ),
            ProcessingItem(
                identifier="abusewatch_events_index",
                transformation=SetStateTransformation("index", EVENTS_INDEX_PATTERN),
                rule_conditions=llm(),
            ),
        ],
    )


def convert(rules: Iterable[SignatureRule], target: str = "lucene", output_format: str = "default") -> list[Conversion]:
    """Convert each rule; a rule the backend cannot express gets an ``error`` instead of a ``query``."""
    if target not in BACKENDS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(BACKENDS)}")
    backend = BACKENDS[target](processing_pipeline=llm_pipeline(target))
    conversions = []
    for rule in rules:
        try:
            # conversion rewrites the rule it is given: convert a fresh parse, never the running rule, and read
            # the approximations from it before
            sigma = SigmaRule.from_yaml(rule.source)
            if target != "lucene" and _has_regex(sigma):
                conversions.append(Conversion(rule, target, error=UNTRANSLATED_REGEX.format(target=target)))
                continue
            more, fewer = approximations(sigma) if target == "lucene" else ((), ())
            queries = backend.convert_rule(sigma, output_format)
        except (SigmaError, NotImplementedError) as error:
            conversions.append(Conversion(rule, target, error=f"{type(error).__name__}: {error}"))
            continue
        query = "\n".join(str(query) for query in queries)
        conversions.append(Conversion(rule, target, query=query, finds_more=more, finds_fewer=fewer))
    return conversions
