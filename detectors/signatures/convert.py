"""Convert signature rules to Elasticsearch queries (Lucene, ES|QL, EQL) with pySigma's Elasticsearch backend.

Analysts use the converted queries to hunt in the enriched-event index. A processing pipeline maps the ``llm``
product's fields to what the event documents index (:func:`detectors.documents.event_document`):

* text fields (``gen_ai.prompt``, ``gen_ai.completion``, ``gen_ai.system_instructions``, ``gen_ai.tool.call.*``,
  ``gen_ai.retrieval.documents.content``) go to their ``.lc`` sub-field, and string values are lower-cased. The
  sub-field must be ``keyword`` with the built-in ``lowercase`` normalizer, e.g.
  ``"gen_ai.prompt": {"type": "text", "fields": {"lc": {"type": "keyword", "normalizer": "lowercase",
  "ignore_above": 8191}}}``. That makes Lucene wildcards (``contains``/``startswith``/``endswith``) case-insensitive
  like the stream engine. Regexes (``re``) are translated to Lucene's dialect on the lower-cased value
  (:mod:`detectors.signatures.lucene_regex`), one clause per top-level branch. Texts longer than ``ignore_above``
  are not searchable this way (the stream engine still scans them).
* metadata fields (``service.name``, ``user.id``...) are ECS keyword fields, matched as they are.

The queries do not fold homoglyphs, drop invisible characters or decode payloads: that happens only in the stream
engine, which is why alerts come from the engine and converted queries are for hunting. Constructs a backend cannot
express (``cased`` in Lucene, keyword searches in ES|QL) are reported per rule, not raised.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sigma.backends.elasticsearch import EqlBackend, ESQLBackend, LuceneBackend
from sigma.conditions import ConditionOR
from sigma.conversion.base import Backend
from sigma.exceptions import SigmaError
from sigma.processing.conditions import IncludeFieldCondition, LogsourceCondition
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import FieldMappingTransformation, SetStateTransformation
from sigma.processing.transformations.base import ValueTransformation
from sigma.rule import SigmaDetectionItem, SigmaRule
from sigma.types import (
    SigmaExpansion,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaType,
)

from detectors.event import TEXT_FIELDS
from detectors.signatures.lucene_regex import to_lucene
from detectors.signatures.parse import SignatureRule

EVENTS_INDEX_PATTERN = "logs-abusewatch.events-*"
TEXT_SUBFIELD = "lc"
BACKENDS: dict[str, type[Backend]] = {"lucene": LuceneBackend, "esql": ESQLBackend, "eql": EqlBackend}


@dataclass(frozen=True, slots=True)
class Conversion:
    """A rule's query for one target, or why the target cannot express it."""

    rule: SignatureRule
    target: str
    query: str | None = None
    error: str | None = None
    approximations: tuple[str, ...] = ()  # where the query finds more than the engine's regexes (Lucene only)


@dataclass
class LowercaseValues(ValueTransformation):
    """Lower-case string values, including expansions (``base64offset``), which pySigma's CaseTransformation skips."""

    def apply_value(self, field: str | None, val: SigmaString | SigmaExpansion) -> SigmaType | None:
        if isinstance(val, SigmaExpansion):
            return SigmaExpansion([v.lower() if isinstance(v, SigmaString) else v for v in val.values])
        return val.lower()


@dataclass
class LuceneRegexTransformation(ValueTransformation):
    """Rewrite each regex for Lucene (:func:`~detectors.signatures.lucene_regex.to_lucene`): a whole-term match in
    Lucene's dialect that finds what RE2's search finds; what it can only approximate is kept in ``approximations``
    (:func:`convert` collects them per rule)."""

    approximations: list[str] = field(default_factory=list)
    split: bool = True

    def apply_detection_item(self, detection_item: SigmaDetectionItem) -> SigmaDetectionItem | None:
        self.split = detection_item.value_linking is ConditionOR  # one value per branch only where values are OR-ed
        return super().apply_detection_item(detection_item)

    def apply_value(self, field: str | None, val: SigmaType) -> SigmaType | list[SigmaType] | None:
        if not isinstance(val, SigmaRegularExpression):
            return None
        flags = val.flags
        lucene = to_lucene(
            str(val.regexp),
            dotall=SigmaRegularExpressionFlag.DOTALL in flags,
            multiline=SigmaRegularExpressionFlag.MULTILINE in flags,
        )
        self.approximations.extend(lucene.approximations)
        if not self.split:
            return SigmaRegularExpression(lucene.text, set())
        return [SigmaRegularExpression(text, set()) for text in lucene.alternatives]


def llm_pipeline(target: str = "lucene", regexes: LuceneRegexTransformation | None = None) -> ProcessingPipeline:
    """Map the ``llm`` logsource to the indexed ECS fields and the events index (``regexes``: the Lucene regex
    rewriting, to read its approximations after each rule)."""

    def llm() -> list[LogsourceCondition]:  # pySigma binds each condition to one item: a new one per item
        return [LogsourceCondition(product="llm")]

    lucene = (
        [
            ProcessingItem(
                identifier="abusewatch_lucene_regex",
                transformation=regexes or LuceneRegexTransformation(),
                rule_conditions=llm(),
            )
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
    regexes = LuceneRegexTransformation()
    backend = BACKENDS[target](processing_pipeline=llm_pipeline(target, regexes))
    conversions = []
    for rule in rules:
        regexes.approximations.clear()
        try:
            # conversion rewrites the rule it is given: convert a fresh parse, never the running rule
            queries = backend.convert_rule(SigmaRule.from_yaml(rule.source), output_format)
        except (SigmaError, NotImplementedError) as error:
            conversions.append(Conversion(rule, target, error=f"{type(error).__name__}: {error}"))
            continue
        query = "\n".join(str(query) for query in queries)
        approximations = tuple(dict.fromkeys(regexes.approximations))
        conversions.append(Conversion(rule, target, query=query, approximations=approximations))
    return conversions
