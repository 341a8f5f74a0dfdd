"""Read one rule file: pySigma parses and validates the Sigma part, this module checks what the engine supports.

A rule the engine cannot run exactly as written is rejected with :class:`RuleLoadError`, whose message names the
file, the rule (title and id), the offending item and, when PyYAML's node marks give it, the line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sigma.exceptions import SigmaError
from sigma.modifiers import (
    SigmaAllModifier,
    SigmaBase64Modifier,
    SigmaBase64OffsetModifier,
    SigmaCaseSensitiveModifier,
    SigmaContainsModifier,
    SigmaEndswithModifier,
    SigmaRegularExpressionDotAllFlagModifier,
    SigmaRegularExpressionIgnoreCaseFlagModifier,
    SigmaRegularExpressionModifier,
    SigmaRegularExpressionMultilineFlagModifier,
    SigmaStartswithModifier,
    modifier_mapping,
)
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaRule

from detectors.base import CATEGORIES, LEVELS
from detectors.event import PROMPT, TEXT_FIELDS

# Metadata fields a rule may test; matched against the Event's scalar attributes.
METADATA_FIELDS = (
    "gen_ai.request.model",
    "gen_ai.provider.name",
    "service.name",
    "user.id",
    "source.ip",
    "user_agent.original",
)
FIELDS = (*TEXT_FIELDS, *METADATA_FIELDS)
STATUSES = ("stable", "test", "experimental")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: rule packs load faster
_MODIFIER_KEYWORDS = {modifier: keyword for keyword, modifier in reversed(modifier_mapping.items())}

SUPPORTED_MODIFIERS = {
    SigmaContainsModifier: "contains",
    SigmaStartswithModifier: "startswith",
    SigmaEndswithModifier: "endswith",
    SigmaAllModifier: "all",
    SigmaRegularExpressionModifier: "re",
    SigmaRegularExpressionIgnoreCaseFlagModifier: "i",
    SigmaRegularExpressionMultilineFlagModifier: "m",
    SigmaRegularExpressionDotAllFlagModifier: "s",
    SigmaBase64Modifier: "base64",
    SigmaBase64OffsetModifier: "base64offset",
    SigmaCaseSensitiveModifier: "cased",
}


class RuleLoadError(ValueError):
    """A rule file that cannot be loaded; ``str()`` is the full message for the rule author."""

    def __init__(self, path: Path | None, rule: str, problem: str, line: int | None = None) -> None:
        self.path = path
        self.rule = rule
        self.problem = problem
        self.line = line
        where = f"{path or '<string>'}" + (f":{line}" if line else "")
        super().__init__(f"{where}: rule {rule}: {problem}")


class NotASignatureRuleError(RuleLoadError):
    """A Sigma correlation rule: it belongs to the correlation detector, which reads the same directories."""


@dataclass(frozen=True, slots=True)
class TestCase:
    """One example from the rule's ``abusewatch.tests``: texts (and metadata) by field."""

    fields: dict[str, str]
    expect_match: bool

    __test__ = False  # not a pytest class


@dataclass(frozen=True, slots=True)
class SignatureRule:
    """A loaded rule: the pySigma rule plus the product metadata the engine and alerts need."""

    sigma: SigmaRule
    id: str
    title: str
    status: str
    level: str
    category: str
    description: str
    atlas: tuple[str, ...]
    owasp: tuple[str, ...]
    tests: tuple[TestCase, ...]
    folds_into: tuple[str, ...] = ()
    path: Path | None = None
    source: str = field(default="", repr=False)

    @property
    def label(self) -> str:
        return f"{self.title!r} ({self.id})"


def parse_rule(text: str, path: Path | None = None) -> SignatureRule:
    """Parse and check one rule document; raise :class:`RuleLoadError` saying what is wrong and where."""
    try:
        documents = list(yaml.load_all(text, Loader=_LOADER))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise RuleLoadError(path, "?", f"invalid YAML: {error}", mark.line + 1 if mark else None) from None
    except (ValueError, TypeError, RecursionError) as error:  # a value PyYAML cannot build (date: 2026-13-01)
        raise RuleLoadError(path, "?", f"invalid YAML value: {error}") from None
    documents = [doc for doc in documents if doc is not None]
    correlations = sum(isinstance(doc, dict) and "correlation" in doc for doc in documents)
    if correlations == len(documents) > 0:
        raise NotASignatureRuleError(path, "?", "holds correlation rules (loaded by the correlation detector)")
    if correlations:
        raise RuleLoadError(path, "?", "a file of correlation rules must not hold other documents: move them out")
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise RuleLoadError(path, "?", "a rule file must hold exactly one YAML mapping (one rule)")
    raw: dict[str, Any] = documents[0]
    label = f"{raw.get('title', '?')!r} ({raw.get('id', '?')})"
    lines = _key_lines(text)
    for unsupported in ("action", "filter"):
        if unsupported in raw:
            raise RuleLoadError(path, label, f"'{unsupported}' rules are not supported", lines.get(unsupported))
    _check_types(raw, path, label, lines)
    try:
        sigma = SigmaRule.from_dict(raw, collect_errors=False)
        conditions = [condition.parse() for condition in sigma.detection.parsed_condition]
    except SigmaError as error:
        line = lines.get("condition") if "condition" in str(error).lower() else None
        raise RuleLoadError(path, label, f"invalid Sigma: {error}", line) from None
    except Exception as error:  # pySigma assumes well-typed fields (condition: 1, id: 1234): still this file's error
        raise RuleLoadError(path, label, f"malformed rule: {type(error).__name__}: {error}") from None
    if len(conditions) != 1:
        raise RuleLoadError(path, label, "exactly one condition is supported", lines.get("condition"))
    for name, item in _detection_items(sigma):
        _check_item(item, name, path, label, lines)
    product = raw.get("abusewatch")
    if not isinstance(product, dict):
        raise RuleLoadError(path, label, "missing the 'abusewatch' block (category, tests)", lines.get("abusewatch"))
    category = product.get("category")
    if category not in CATEGORIES:
        raise RuleLoadError(
            path,
            label,
            f"abusewatch.category {category!r} is not one of {', '.join(CATEGORIES)}",
            lines.get("category"),
        )
    status = str(sigma.status) if sigma.status else "experimental"
    level = str(sigma.level) if sigma.level else "medium"
    if status not in STATUSES or level not in LEVELS:
        raise RuleLoadError(path, label, f"status {status!r} / level {level!r} not supported", lines.get("status"))
    if sigma.id is None:
        raise RuleLoadError(path, label, "the rule has no id (a UUID)", lines.get("id"))
    tags = [(tag.namespace.lower(), tag.name.lower()) for tag in sigma.tags]
    return SignatureRule(
        sigma=sigma,
        id=str(sigma.id),
        title=sigma.title,
        status=status,
        level=level,
        category=category,
        description=sigma.description or "",
        atlas=tuple(name.upper() for namespace, name in tags if namespace == "atlas"),
        owasp=tuple(owasp_id(name) for namespace, name in tags if namespace == "owasp"),
        tests=_test_cases(product.get("tests"), _first_text_field(sigma), path, label, lines),
        folds_into=_folds_into(product.get("folds_into"), str(sigma.id), path, label, lines),
        path=path,
        source=text,
    )


def _folds_into(value: Any, rule_id: str, path: Path | None, label: str, lines: dict[str, int]) -> tuple[str, ...]:
    """``abusewatch.folds_into``: the rule ids (one, or a list) whose detection on the same event is the same
    finding as this rule's."""
    if value is None:
        return ()
    ids = [value] if isinstance(value, str) else value
    if not isinstance(ids, list) or not ids or not all(isinstance(one, str) and one for one in ids):
        raise RuleLoadError(
            path,
            label,
            f"abusewatch.folds_into must be a rule id or a list of them, not {value!r}",
            lines.get("folds_into"),
        )
    if rule_id in ids:
        raise RuleLoadError(path, label, "abusewatch.folds_into names the rule itself", lines.get("folds_into"))
    return tuple(ids)


def _check_types(raw: dict[str, Any], path: Path | None, label: str, lines: dict[str, int]) -> None:
    """The mistakes pySigma reports only as a Python exception (``id: 1234``, ``condition: 1``), said plainly."""
    for key in ("id", "title"):
        if key in raw and not isinstance(raw[key], str):
            raise RuleLoadError(path, label, f"'{key}' must be text, not {raw[key]!r}", lines.get(key))
    detection = raw.get("detection")
    condition = detection.get("condition") if isinstance(detection, dict) else None
    if condition is not None and not (
        isinstance(condition, str) or (isinstance(condition, list) and all(isinstance(c, str) for c in condition))
    ):
        raise RuleLoadError(
            path,
            label,
            f"detection.condition must be text such as 'selection', not {condition!r}",
            lines.get("condition"),
        )


def owasp_id(tag_name: str) -> str:
    """``llm01`` -> ``LLM01:2025`` (OWASP Top 10 for LLM Applications 2025)."""
    return f"{tag_name.upper()}:2025"


def _detection_items(sigma: SigmaRule) -> Iterator[tuple[str, SigmaDetectionItem]]:
    def walk(node: SigmaDetection | SigmaDetectionItem) -> Iterator[SigmaDetectionItem]:
        if isinstance(node, SigmaDetectionItem):
            yield node
        else:
            for child in node.detection_items:
                yield from walk(child)

    for name, detection in sigma.detection.detections.items():
        for item in walk(detection):
            yield name, item


def _check_item(item: SigmaDetectionItem, name: str, path: Path | None, label: str, lines: dict[str, int]) -> None:
    key = item.field or name
    for modifier in item.modifiers:
        if modifier not in SUPPORTED_MODIFIERS:
            keyword = _MODIFIER_KEYWORDS.get(modifier, modifier.__name__)
            raise RuleLoadError(
                path,
                label,
                f"detection '{name}': modifier '{keyword}' on {key!r} is not supported "
                f"(supported: {', '.join(sorted(set(SUPPORTED_MODIFIERS.values())))})",
                _line_of(lines, key, name, f"|{keyword}"),
            )
    if item.field is not None and item.field not in FIELDS:
        raise RuleLoadError(
            path,
            label,
            f"detection '{name}': field {item.field!r} is not a field the engine knows ({', '.join(FIELDS)})",
            _line_of(lines, key, name),
        )
    if not item.value:
        raise RuleLoadError(path, label, f"detection '{name}': {key!r} has no value", _line_of(lines, key, name))


def _line_of(lines: dict[str, int], key: str, name: str, hint: str = "") -> int | None:
    for candidate, line in lines.items():
        if candidate.split("|")[0] == key and hint in candidate:
            return line
    return lines.get(name)


def _key_lines(text: str) -> dict[str, int]:
    """1-based line of the first occurrence of each mapping key in the document (from PyYAML node marks)."""
    lines: dict[str, int] = {}
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError:
        return lines
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    lines.setdefault(str(key.value), key.start_mark.line + 1)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return lines


def _first_text_field(sigma: SigmaRule) -> str:
    for _, item in _detection_items(sigma):
        if item.field in TEXT_FIELDS:
            return item.field
    return PROMPT


def _test_cases(
    tests: Any, default_field: str, path: Path | None, label: str, lines: dict[str, int]
) -> tuple[TestCase, ...]:
    if tests is None:
        return ()
    if not isinstance(tests, dict):
        raise RuleLoadError(
            path, label, "abusewatch.tests must be a mapping of match/nomatch lists", lines.get("tests")
        )
    cases: list[TestCase] = []
    for key, expect in (("match", True), ("nomatch", False)):
        examples = tests.get(key) or []
        if not isinstance(examples, list):  # a bare string would otherwise be read as one example per character
            raise RuleLoadError(path, label, f"abusewatch.tests.{key} must be a list of examples", lines.get(key))
        for example in examples:
            if isinstance(example, str):
                cases.append(TestCase({default_field: example}, expect))
            elif isinstance(example, dict) and all(k in FIELDS and isinstance(v, str) for k, v in example.items()):
                cases.append(TestCase(dict(example), expect))
            else:
                raise RuleLoadError(
                    path,
                    label,
                    f"abusewatch.tests.{key}: {example!r} must be a string or a mapping of known fields to strings",
                    lines.get(key),
                )
    return tuple(cases)
