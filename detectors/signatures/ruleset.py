"""Rule sets: load rule directories, compile them, lint them, run their examples, and reload them when they change.

Loading never fails as a whole: a file that does not parse, uses something unsupported or repeats another rule's
id is reported in :attr:`RuleSet.errors` and the other rules still run.
"""

from __future__ import annotations

import enum
import logging
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


def rule_files(directories: Iterable[Path]) -> list[Path]:
    """Every rule file under ``directories`` (recursive), sorted; missing directories are skipped."""
    files: set[Path] = set()
    for directory in directories:
        if directory.is_file():
            files.add(directory)
        elif directory.is_dir():
            files.update(p for p in directory.rglob("*") if p.suffix in RULE_SUFFIXES and p.is_file())
    return sorted(files)


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
        files = rule_files(directories)
        sources = []
        errors: list[RuleLoadError] = []
        for path in files:
            try:
                sources.append((path, path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as error:
                errors.append(RuleLoadError(path, "?", f"cannot read the file: {error}"))
        compiled, more_errors = compile_sources(sources, limits)
        return cls(compiled, [*errors, *more_errors], files)

    @classmethod
    def from_texts(cls, texts: Iterable[str], limits: Limits = DEFAULT_LIMITS) -> RuleSet:
        compiled, errors = compile_sources([(None, text) for text in texts], limits)
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
    owasp = [name for namespace, name in tags if namespace == "owasp"]
    if not owasp:
        problems.append("no OWASP LLM Top 10 tag (e.g. owasp.llm01)")
    problems.extend(f"owasp tag {name!r} is not owasp.llm01 .. owasp.llm10" for name in owasp if name not in OWASP_IDS)
    if not any(case.expect_match for case in rule.tests):
        problems.append("abusewatch.tests has no 'match' example")
    if not any(not case.expect_match for case in rule.tests):
        problems.append("abusewatch.tests has no 'nomatch' example")
    return problems


def compile_sources(
    sources: Iterable[tuple[Path | None, str]], limits: Limits = DEFAULT_LIMITS
) -> tuple[CompiledRules, list[RuleLoadError]]:
    """Parse and compile each rule on its own (a bad rule is an error, not a failure), then build the matchers."""
    compiled: list[CompiledRule] = []
    errors: list[RuleLoadError] = []
    seen: dict[str, SignatureRule] = {}
    next_id = 0
    for path, text in sources:
        try:
            rule = parse_rule(text, path)
            if rule.id in seen:
                raise RuleLoadError(path, rule.label, f"id {rule.id} is already used by {seen[rule.id].path}")
            one = compile_rule(rule, len(compiled), next_id)
        except NotASignatureRuleError as skipped:
            log.debug("skipped: %s", skipped)
            continue
        except RuleLoadError as error:
            errors.append(error)
            continue
        seen[rule.id] = rule
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
    :attr:`current` in a single assignment, and only when every file loads; otherwise the errors are logged and the
    running set stays. The fingerprint that tells a change is taken before each load, so an edit that lands while
    loading is seen at the next poll.
    """

    kind = "rule"  # for the log: "<kind> reload rejected", "<kind>s reloaded"

    def __init__(self, directories: Sequence[Path]) -> None:
        self.directories = list(directories)
        self._fingerprint = self._scan()
        self.current, errors = self._load()
        self.last_errors: list[object] = list(errors)

    @abstractmethod
    def _load(self) -> tuple[T, Sequence[object]]:
        """Load every file under :attr:`directories`: what loaded and the errors of what did not."""

    @abstractmethod
    def _summary(self, loaded: T) -> str:
        """What ``loaded`` holds, for the log (``N rules``...)."""

    def _scan(self) -> Fingerprint:
        return files_fingerprint(rule_files(self.directories))

    def maybe_reload(self) -> ReloadOutcome:
        """Reload if any rule file was added, removed or changed since the previous load."""
        fingerprint = self._scan()
        if fingerprint == self._fingerprint:
            return ReloadOutcome.UNCHANGED
        self._fingerprint = fingerprint
        candidate, errors = self._load()
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
