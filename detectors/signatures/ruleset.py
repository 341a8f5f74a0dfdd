"""Rule sets: load rule directories, compile them, lint them, run their examples, and reload them when they change.

Loading never fails as a whole: a file that does not parse, uses something unsupported or repeats the id of another
rule of its directory is reported in :attr:`RuleSet.errors` and the other rules still run. Directories load in the
order given, and a rule of a later one overrides an earlier one's rule with the same id (a deployment's
``detection.rules_dir`` tunes a built-in rule that way). Hidden files and directories (``.git/``, ``.github/``) are
not rule files.
"""

from __future__ import annotations

import enum
import logging
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from sigma.collection import SigmaCollection
from sigma.validation import SigmaValidator
from sigma.validators.core import validators as core_validators

from detectors.base import CATEGORIES, LEVELS
from detectors.documents import ATLAS_TECHNIQUES
from detectors.event import DOCUMENT, PROMPT, TOOL_DEFINITION, TOOL_RESULT
from detectors.signatures.compiler import CompiledRule, CompiledRules, compile_rule
from detectors.signatures.parse import NotASignatureRuleError, RuleLoadError, SignatureRule, TestCase, parse_rule
from detectors.signatures.textnorm import DEFAULT_LIMITS, Limits

log = logging.getLogger(__name__)

BUILTIN_RULES_DIR = Path(__file__).resolve().parent.parent / "rules"
RULE_SUFFIXES = (".yml", ".yaml")
T = TypeVar("T")

# pySigma validators that apply to this product's rules (the ATT&CK/TLP/CVE tag checks and the check that
# flags custom attributes do not: rules carry ATLAS/OWASP tags and the `abusewatch` block by design).
SIGMA_VALIDATORS = (
    "identifier_existence",
    "identifier_uniqueness",
    "duplicate_title",
    "duplicate_tag",
    "duplicate_references",
    "dangling_detection",
    "all_of_them_condition",
    "them_condition_with_single_detection",
    "double_wildcard",
    "control_character",
    "wildcards_instead_of_modifiers",
    "invalid_modifier_combinations",
    "number_as_string",
    "tag_format",
)
OWASP_IDS = {f"llm{n:02d}" for n in range(1, 11)}
# Rules about what the attacker writes, and the fields the attacker writes: a `not` on those fields lets the attacker
# switch the rule off by adding the filtered words anywhere in the event (docs/rules.md, "Filters").
ATTACK_TEXT_CATEGORIES = ("prompt_injection", "jailbreak", "system_prompt_leak")
ATTACKER_TEXT_FIELDS = (PROMPT, DOCUMENT, TOOL_RESULT, TOOL_DEFINITION)


@dataclass(frozen=True, slots=True)
class LintIssue:
    """A problem lint found; ``severity`` is ``error`` (must fix) or ``warning``."""

    severity: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.message}"


@dataclass(frozen=True, slots=True)
class RuleTestResult:
    """One example of one rule: did the rule match as the example expects."""

    rule: SignatureRule
    case: TestCase
    passed: bool

    __test__ = False

    def describe(self) -> str:
        expected = "match" if self.case.expect_match else "no match"
        got = "no match" if self.case.expect_match != self.passed else "match"
        shown = {name: text if len(text) <= 120 else text[:117] + "..." for name, text in self.case.fields.items()}
        return f"{self.rule.label} [{self.rule.path}]: expected {expected}, got {got} for {shown}"


def yaml_files(path: Path) -> list[Path]:
    """``path`` itself, or the ``*.yml`` / ``*.yaml`` files (any case) under a directory and its subdirectories,
    in sorted path order. Hidden files and directories (``.github/``, ``.git/``) are skipped, so a directory that is
    a git checkout holds only its rules; symlinked directories are not followed (no loops); a symlinked file is
    listed, so a dangling one is reported."""
    if not path.is_dir():
        return [path]
    files = []
    for directory, subdirectories, names in os.walk(path):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        files.extend(
            Path(directory, name)
            for name in names
            if not name.startswith(".") and Path(name).suffix.lower() in RULE_SUFFIXES
        )
    return sorted(files, key=lambda file: file.relative_to(path).parts)


def rule_files_by_directory(directories: Iterable[Path]) -> list[list[Path]]:
    """The rule files of each of ``directories``, in the order given (see :func:`yaml_files`); a missing directory
    has none, and a file already listed under an earlier directory is not listed again."""
    listed: set[Path] = set()
    layers = []
    for directory in directories:
        files = yaml_files(directory) if directory.exists() else []
        layers.append([file for file in files if file not in listed])
        listed.update(files)
    return layers


def unreadable_directories(directories: Iterable[Path]) -> list[RuleLoadError]:
    """An error for each of ``directories`` that is gone or cannot be listed: an unmounted volume or a directory
    being swapped must not load as "no rules"."""
    errors = []
    for directory in directories:
        if not directory.exists():
            errors.append(RuleLoadError(directory, "?", "the rules directory (or file) does not exist"))
        elif directory.is_dir() and not os.access(directory, os.R_OK | os.X_OK):
            errors.append(RuleLoadError(directory, "?", "the rules directory cannot be read"))
    return errors


def rule_files(directories: Iterable[Path]) -> list[Path]:
    """Every rule file under ``directories``: directory by directory, in the order given."""
    return [file for files in rule_files_by_directory(directories) for file in files]


def one_rule_per_id(
    rules: Iterable[tuple[int, str, Path | None, T]], kind: str
) -> tuple[list[T], list[tuple[T, Path | None, Path | None]]]:
    """Keep one rule per id from ``(directory index, id, path, rule)`` in load order.

    A rule of a later directory overrides an earlier directory's rule with the same id (logged as a warning
    naming both files): that is how a deployment tunes a built-in rule from ``detection.rules_dir``. A second rule
    with an id already used in the same directory is not kept: it is returned as ``(rule, its path, the path of
    the rule that keeps the id)``.
    """
    kept: dict[str, tuple[int, Path | None, T]] = {}
    duplicates: list[tuple[T, Path | None, Path | None]] = []
    for layer, rule_id, path, rule in rules:
        earlier = kept.get(rule_id)
        if earlier is not None and earlier[0] == layer:
            duplicates.append((rule, path, earlier[1]))
            continue
        if earlier is not None:
            log.warning("%s %s of %s overrides the one of %s", kind, rule_id, path, earlier[1])
            del kept[rule_id]
        kept[rule_id] = (layer, path, rule)
    return [rule for _, _, rule in kept.values()], duplicates


def default_directories(extra: Path | None = None, builtin: bool = True) -> list[Path]:
    """The built-in pack (``detectors/rules``), plus ``extra`` (the ``ABW_DETECTION__RULES_DIR`` setting)."""
    directories = [BUILTIN_RULES_DIR] if builtin else []
    if extra is not None:
        directories.append(extra)
    return directories


class RuleSet:
    """Loaded, compiled rules and the files that could not be loaded."""

    def __init__(self, compiled: CompiledRules, errors: Sequence[RuleLoadError], files: Sequence[Path] = ()) -> None:
        self.compiled = compiled
        self.errors = list(errors)
        self.files = list(files)

    @property
    def rules(self) -> list[SignatureRule]:
        return self.compiled.rules

    @classmethod
    def load(cls, directories: Iterable[Path], limits: Limits = DEFAULT_LIMITS) -> RuleSet:
        """The rules under ``directories``; a later directory's rule overrides an earlier one's with the same id."""
        directories = list(directories)
        sources = []
        errors = unreadable_directories(directories)
        files = []
        for layer, paths in enumerate(rule_files_by_directory(directories)):
            files.extend(paths)
            for path in paths:
                try:
                    sources.append((layer, path, path.read_text(encoding="utf-8")))
                except (OSError, UnicodeDecodeError) as error:
                    errors.append(RuleLoadError(path, "?", f"cannot read the file: {error}"))
        compiled, more_errors = compile_sources(sources, limits)
        return cls(compiled, [*errors, *more_errors], files)

    @classmethod
    def from_texts(cls, texts: Iterable[str], limits: Limits = DEFAULT_LIMITS) -> RuleSet:
        compiled, errors = compile_sources([(0, None, text) for text in texts], limits)
        return cls(compiled, errors)

    def lint(self) -> list[LintIssue]:
        """Load errors, pySigma validator findings and the product's own checks."""
        issues = [LintIssue("error", "load", str(error)) for error in self.errors]
        validator = SigmaValidator([core_validators[name] for name in SIGMA_VALIDATORS])
        by_rule = {id(rule.sigma): rule for rule in self.rules}
        for issue in validator.validate_rules(SigmaCollection([rule.sigma for rule in self.rules])):
            for sigma_rule in issue.rules:
                rule = by_rule.get(id(sigma_rule))
                where = f"{rule.path}: {rule.label}" if rule else str(getattr(sigma_rule, "title", "?"))
                issues.append(LintIssue("warning", where, f"{issue.description} ({type(issue).__name__})"))
        for rule in self.rules:
            issues.extend(LintIssue("error", f"{rule.path}: {rule.label}", problem) for problem in product_checks(rule))
        for one in self.compiled.compiled:
            issues.extend(
                LintIssue("warning", f"{one.rule.path}: {one.rule.label}", problem) for problem in evasions(one)
            )
        return issues

    def run_tests(self) -> list[RuleTestResult]:
        """Run every rule's examples against the whole compiled set (so rules are tested as they run)."""
        results = []
        for rule in self.rules:
            for case in rule.tests:
                hits = self.compiled.match(case.fields.items()).hits
                matched = any(hit.rule.id == rule.id for hit in hits)
                results.append(RuleTestResult(rule, case, matched == case.expect_match))
        return results


def product_checks(rule: SignatureRule) -> list[str]:
    """What the product requires of a rule beyond valid Sigma."""
    problems = []
    try:
        uuid.UUID(rule.id)
    except ValueError:
        problems.append(f"id {rule.id!r} is not a UUID")
    if rule.category not in CATEGORIES:
        problems.append(f"abusewatch.category {rule.category!r} is not one of {', '.join(CATEGORIES)}")
    if rule.sigma.level is None or rule.level not in LEVELS:
        problems.append("level is not set")
    tags = [(tag.namespace.lower(), tag.name.lower()) for tag in rule.sigma.tags]
    if not any(namespace == "atlas" and name.startswith("aml.t") for namespace, name in tags):
        problems.append("no MITRE ATLAS tag (e.g. atlas.aml.t0051.000)")
    problems.extend(
        f"{namespace} tag {name!r} is not a MITRE ATLAS technique the alerts can name (detectors.documents)"
        for namespace, name in tags
        if name.startswith("aml.") and (namespace != "atlas" or name.upper() not in ATLAS_TECHNIQUES)
    )
    owasp = [name for namespace, name in tags if namespace == "owasp"]
    if not owasp:
        problems.append("no OWASP LLM Top 10 tag (e.g. owasp.llm01)")
    problems.extend(f"owasp tag {name!r} is not owasp.llm01 .. owasp.llm10" for name in owasp if name not in OWASP_IDS)
    if not any(case.expect_match for case in rule.tests):
        problems.append("abusewatch.tests has no 'match' example")
    if not any(not case.expect_match for case in rule.tests):
        problems.append("abusewatch.tests has no 'nomatch' example")
    return problems


def evasions(one: CompiledRule) -> list[str]:
    """Filters an attacker controls: a rule about attacker-written text whose condition negates a selection on it."""
    if one.rule.category not in ATTACK_TEXT_CATEGORIES:
        return []
    positive = set(one.positive)
    negated_fields = {item.field for item in one.items if item.id not in positive}
    attacker = sorted(
        field or "every text field" for field in negated_fields if field is None or field in ATTACKER_TEXT_FIELDS
    )
    if not attacker:
        return []
    return [
        f"the condition negates a selection on {', '.join(attacker)}: a filter on text the attacker writes is an "
        "evasion (adding the filtered words anywhere in the event switches the rule off)"
    ]


def compile_sources(
    sources: Iterable[tuple[int, Path | None, str]], limits: Limits = DEFAULT_LIMITS
) -> tuple[CompiledRules, list[RuleLoadError]]:
    """Parse and compile each rule on its own (a bad rule is an error, not a failure), keep one rule per id (see
    :func:`one_rule_per_id`; a source is ``(directory index, path, text)``), then build the matchers.

    A rule is compiled before the ids are resolved, so one that cannot compile never overrides one that can; it
    is compiled again only if a rule dropped before it moved its position (its index and pattern ids).
    """
    checked: list[tuple[int, str, Path | None, CompiledRule]] = []
    errors: list[RuleLoadError] = []
    next_id = 0
    for layer, path, text in sources:
        try:
            rule = parse_rule(text, path)
            one = compile_rule(rule, len(checked), next_id)
        except NotASignatureRuleError as skipped:
            log.debug("skipped: %s", skipped)
            continue
        except RuleLoadError as error:
            errors.append(error)
            continue
        except Exception as error:  # a case parse_rule did not foresee is still this one file's error
            errors.append(RuleLoadError(path, "?", f"malformed rule: {type(error).__name__}: {error}"))
            continue
        checked.append((layer, rule.id, path, one))
        next_id += len(one.items)
    kept, duplicates = one_rule_per_id(checked, "rule")
    errors.extend(
        RuleLoadError(path, one.rule.label, f"id {one.rule.id} is already used by {first}")
        for one, path, first in duplicates
    )
    compiled: list[CompiledRule] = []
    next_id = 0
    for candidate in kept:
        moved = checked[len(compiled)][3] is not candidate  # a rule before it was dropped (kept is in load order)
        one = compile_rule(candidate.rule, len(compiled), next_id) if moved else candidate
        compiled.append(one)
        next_id += len(one.items)
    return CompiledRules(compiled, limits), errors


Fingerprint = tuple[tuple[str, int, int], ...]


def files_fingerprint(files: Iterable[Path]) -> Fingerprint:
    """``(path, mtime in ns, size)`` of each file, ``-1`` for both where it cannot be read (gone, dangling link):
    equal fingerprints mean no file was added, removed or changed (what the rule and exception watchers poll)."""
    stats = []
    for path in files:
        try:
            stat = path.stat()
        except OSError:
            stats.append((str(path), -1, -1))
            continue
        stats.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(stats)


class ReloadOutcome(enum.Enum):
    """What a watcher's :meth:`~RuleFilesWatcher.maybe_reload` did."""

    UNCHANGED = "unchanged"  # no file was added, removed or changed: nothing loaded
    RELOADED = "reloaded"  # the files changed and loaded: ``current`` is the new set
    REJECTED = "rejected"  # the files changed but some did not load: ``current`` is still the running set


class RuleFilesWatcher(ABC, Generic[T]):
    """Reloads what rule directories hold when their files change (poll: call :meth:`maybe_reload` from a timer).

    The first load happens here and keeps what loads (its errors are in :attr:`last_errors`); a reload replaces
    :attr:`current` in a single assignment, and only when every file loads and every directory can be read;
    otherwise the errors are logged and the running set stays (a vanished directory is not "no rules"). That
    includes a rule whose id another rule of its directory already uses: a copy-pasted file that sorts first must
    not silently replace the running rule. The fingerprint that tells a change is taken before each load, so an
    edit that lands while loading is seen at the next poll.
    """

    kind = "rule"  # for the log: "<kind> reload rejected", "<kind>s reloaded"

    def __init__(self, directories: Sequence[Path]) -> None:
        self.directories = list(directories)
        self._fingerprint = self._scan()
        self.current, errors = self._load_checked()
        self.last_errors: list[object] = list(errors)

    @abstractmethod
    def _load(self) -> tuple[T, Sequence[object]]:
        """Load every file under :attr:`directories`: what loaded and the errors of what did not."""

    @abstractmethod
    def _summary(self, loaded: T) -> str:
        """What ``loaded`` holds, for the log (``N rules``...)."""

    def _scan(self) -> Fingerprint:
        return files_fingerprint(rule_files(self.directories))

    def _load_checked(self) -> tuple[T, list[object]]:
        """:meth:`_load`, plus an error for each directory that is gone or unreadable (once, if ``_load`` says so)."""
        loaded, errors = self._load()
        reported = {str(error) for error in errors}
        missing = [error for error in unreadable_directories(self.directories) if str(error) not in reported]
        return loaded, [*errors, *missing]

    def maybe_reload(self) -> ReloadOutcome:
        """Reload if any rule file was added, removed or changed since the previous load."""
        fingerprint = self._scan()
        if fingerprint == self._fingerprint:
            return ReloadOutcome.UNCHANGED
        self._fingerprint = fingerprint
        candidate, errors = self._load_checked()
        self.last_errors = list(errors)
        if errors:
            running = self._summary(self.current)
            for error in errors:
                log.error("%s reload rejected, keeping the running %s: %s", self.kind, running, error)
            return ReloadOutcome.REJECTED
        self.current = candidate
        log.info("%ss reloaded: %s", self.kind, self._summary(candidate))
        return ReloadOutcome.RELOADED


class RuleSetWatcher(RuleFilesWatcher[RuleSet]):
    """Reloads signature rule directories when their files change (see :class:`RuleFilesWatcher`)."""

    def __init__(self, directories: Sequence[Path], limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        super().__init__(directories)

    def _load(self) -> tuple[RuleSet, list[RuleLoadError]]:
        ruleset = RuleSet.load(self.directories, self.limits)
        return ruleset, ruleset.errors

    def _summary(self, loaded: RuleSet) -> str:
        return f"{len(loaded.rules)} rules, {loaded.compiled.pattern_count} patterns"
