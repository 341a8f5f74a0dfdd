"""Convert signature rules to Elasticsearch queries (Lucene, ES|QL, EQL) with pySigma's Elasticsearch backend.

Analysts use the converted queries to hunt in the enriched-event index. A processing pipeline maps the ``llm``
product's fields to what the event documents index (:func:`detectors.documents.event_document`):

* text fields (``gen_ai.prompt``, ``gen_ai.completion``, ``gen_ai.system_instructions``, ``gen_ai.tool.call.*``,
  ``gen_ai.retrieval.documents.content``) go to their ``.lc`` sub-field, and string values are lower-cased. The
  sub-field must be ``keyword`` with the built-in ``lowercase`` normalizer, e.g.
  ``"gen_ai.prompt": {"type": "text", "fields": {"lc": {"type": "keyword", "normalizer": "lowercase",
  "ignore_above": 8191}}}``. That makes Lucene wildcards (``contains``/``startswith``/``endswith``) case-insensitive
  like the stream engine. Regexes (``re``) run on the lower-cased value, so write them in lower case. Texts longer
  than ``ignore_above`` are not searchable this way (the stream engine still scans them).
* metadata fields (``service.name``, ``user.id``...) are ECS keyword fields, matched as they are.

The queries do not fold homoglyphs, drop invisible characters or decode payloads: that happens only in the stream
engine, which is why alerts come from the engine and converted queries are for hunting. Constructs a backend cannot
express (``cased`` in Lucene, keyword searches in ES|QL) are reported per rule, not raised.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sigma.backends.elasticsearch import EqlBackend, ESQLBackend, LuceneBackend
from sigma.conversion.base import Backend
from sigma.exceptions import SigmaError
from sigma.processing.conditions import IncludeFieldCondition, LogsourceCondition
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import FieldMappingTransformation, SetStateTransformation
from sigma.processing.transformations.base import ValueTransformation
from sigma.rule import SigmaRule
from sigma.types import SigmaExpansion, SigmaRegularExpression, SigmaString, SigmaType

from detectors.event import TEXT_FIELDS
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


@dataclass
class LowercaseValues(ValueTransformation):
    """Lower-case string values, including expansions (``base64offset``), which pySigma's CaseTransformation skips."""

    def apply_value(self, field: str | None, val: SigmaString | SigmaExpansion) -> SigmaType | None:
        if isinstance(val, SigmaExpansion):
            return SigmaExpansion([v.lower() if isinstance(v, SigmaString) else v for v in val.values])
        return val.lower()


_LUCENE_INTERVAL = re.compile(r"(?<!\\)([<>])")
_LUCENE_CLASSES = {"w": "[a-z0-9_]", "W": "[^a-z0-9_]"}  # values are lower-cased, so ASCII lower case suffices


def _lucene_dialect(pattern: str) -> str:
    """Rewrite what Lucene reads differently from RE2: ``<``/``>`` are literals, ``\\w``/``\\W`` are classes."""
    out: list[str] = []
    in_class = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            escaped = pattern[index + 1]
            out.append(
                _LUCENE_CLASSES[escaped] if escaped in _LUCENE_CLASSES and not in_class else pattern[index : index + 2]
            )
            index += 2
            continue
        if char == "[":
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        out.append(char)
        index += 1
    return _LUCENE_INTERVAL.sub(r"\\\1", "".join(out))


# Lucene's regular expressions have no word boundary; a rule that uses one converts, but the query can match more
# (or, at a text edge, less) than the engine: hunting results for such rules need a look.
LUCENE_UNSUPPORTED = ("\\b",)


@dataclass
class UnanchoredRegex(ValueTransformation):
    """Lucene matches a regex against the whole term; Sigma's ``re`` searches. Pad with ``.{0,}`` unless anchored
    (the backend escapes a literal ``*`` next to the pattern's edge, so the padding avoids it)."""

    def apply_value(self, field: str | None, val: SigmaType) -> SigmaType | None:
        if not isinstance(val, SigmaRegularExpression):
            return None
        pattern = _lucene_dialect(str(val.regexp))
        start = not pattern.startswith("^")
        end = not (pattern.endswith("$") and not pattern.endswith("\\$"))
        core = pattern[0 if start else 1 : len(pattern) if end else -1]
        body = f"{'.{0,}' if start else ''}({core}){'.{0,}' if end else ''}"
        return SigmaRegularExpression(body, val.flags)


def llm_pipeline(target: str = "lucene") -> ProcessingPipeline:
    """Map the ``llm`` logsource to the indexed ECS fields and the events index."""

    def llm() -> list[LogsourceCondition]:  # pySigma binds each condition to one item: a new one per item
        return [LogsourceCondition(product="llm")]

    lucene = (
        [
            ProcessingItem(
                identifier="abusewatch_unanchored_regex",
                transformation=UnanchoredRegex(),
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
    backend = BACKENDS[target](processing_pipeline=llm_pipeline(target))
    conversions = []
    for rule in rules:
        try:
            # conversion rewrites the rule it is given: convert a fresh parse, never the running rule
            queries = backend.convert_rule(SigmaRule.from_yaml(rule.source), output_format)
        except (SigmaError, NotImplementedError) as error:
            conversions.append(Conversion(rule, target, error=f"{type(error).__name__}: {error}"))
            continue
        query = "\n".join(str(query) for query in queries)
        conversions.append(Conversion(rule, target, query=query))
    return conversions
