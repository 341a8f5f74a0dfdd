"""Hot reload in the stream worker: changed signature rules, correlation rules and alert exceptions, swapped into
every stage.

The worker's timer loads what changed on a thread of its own (a rule set compiles for seconds, and detection goes
on meanwhile), then swaps it in on the detector thread, the thread that runs every batch, so a swap always lands
between two batches. What changed is loaded and checked once, then handed to every partition's stage and to the
templates that partitions assigned later are made from. A rule pack, a correlation rule file or an exceptions file
that does not load is logged with its errors and the running one stays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from app.stream import metrics
from detectors.campaigns import CampaignStage
from detectors.correlation import Correlation, CorrelationDetector, CorrelationWatcher, rule_aliases
from detectors.exceptions import ExceptionList, ExceptionsError, exception_files
from detectors.pipeline import Pipeline
from detectors.signatures.detector import SignatureDetector
from detectors.signatures.ruleset import ReloadOutcome, RuleFilesWatcher, RuleSet, RuleSetWatcher, files_fingerprint

log = logging.getLogger(__name__)

Stage = Pipeline | CampaignStage
APPLIED, REJECTED = "applied", "rejected"
T = TypeVar("T")
D = TypeVar("D")


def signature_watcher(pipeline: Pipeline) -> RuleSetWatcher | None:
    """The watcher of ``pipeline``'s signature tier, if it has one that watches rule files."""
    return next(
        (d.watcher for d in pipeline.detectors if isinstance(d, SignatureDetector) and d.watcher is not None), None
    )


def correlation_watcher(pipeline: Pipeline) -> CorrelationWatcher | None:
    """The watcher of ``pipeline``'s correlation tier, if it has one that watches rule files."""
    return next(
        (d.watcher for d in pipeline.detectors if isinstance(d, CorrelationDetector) and d.watcher is not None), None
    )


class ExceptionsWatcher:
    """Tells when a file under the alert exceptions path is added, removed or changed (polled, like the rules).

    Make it before the running exceptions are loaded: it compares with the files as they were then, so an edit
    that lands while they load (or while the worker starts) is seen at the first check, not at the next edit.
    """

    def __init__(self, path: Path, load: Callable[[], ExceptionList]) -> None:
        self.path = path
        self.load = load  # raises ExceptionsError on a bad file; the worker's is app.engine.build_exceptions
        self._fingerprint = files_fingerprint(exception_files(path))

    def changed(self) -> bool:
        """Whether anything changed since the previous call (the first: since this watcher was made)."""
        fingerprint = files_fingerprint(exception_files(self.path))
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        return True


@dataclass(frozen=True, slots=True)
class Changes:
    """What :meth:`Reloader.load` loaded and checked: a new rule set, correlation rules and/or exceptions
    (``None``: no change)."""

    ruleset: RuleSet | None = None
    correlations: list[Correlation] | None = None
    exceptions: ExceptionList | None = None


class Reloader:
    """Loads changed rules and exceptions, then swaps them into the stages ``stages()`` returns: every partition's,
    and the templates later partitions are made from.

    Two steps, as a rule set compiles for seconds: :meth:`load` anywhere but the detector thread (it touches only
    the watchers), then :meth:`apply` on the detector thread, between two batches. ``stages`` is called at each
    swap, so partitions created meanwhile are included. Signature detectors are shared between a template and its
    :meth:`~detectors.pipeline.Pipeline.fresh` copies (they hold no state); each distinct one gets the set compiled
    once. Correlation detectors are one per partition (they hold its windows): each gets the new correlation rules
    and keeps the windows of the rules that did not change (:meth:`~detectors.correlation.CorrelationDetector.
    use_rules`), and new signature rule names to resolve references by. Rules load before exceptions, so the
    exceptions are checked against the rules about to run. Each outcome is counted in ``abusewatch_reloads_total``
    (kind ``rules``, ``correlations`` or ``exceptions``).
    """

    def __init__(
        self,
        stages: Callable[[], Iterable[Stage]],
        *,
        rules: RuleSetWatcher | None = None,
        correlations: CorrelationWatcher | None = None,
        exceptions: ExceptionsWatcher | None = None,
    ) -> None:
        self.stages = stages
        self.rules = rules
        self.correlations = correlations
        self.exceptions = exceptions

    def load(self) -> Changes:
        """Load what changed since the last call; what does not load is logged, counted and left out. Never raises."""
        rules, correlations, exceptions = self.rules, self.correlations, self.exceptions
        return Changes(  # in this order: exceptions are checked against the rules just loaded
            ruleset=None if rules is None else _attempt("rules", lambda: _load_rules("rules", rules)),
            correlations=(
                None
                if correlations is None
                else _attempt("correlations", lambda: _load_rules("correlations", correlations))
            ),
            exceptions=None if exceptions is None else _attempt("exceptions", lambda: _load_exceptions(exceptions)),
        )

    def apply(self, changes: Changes) -> None:
        """Swap ``changes`` into every stage; call it between batches, on the thread that runs them."""
        if changes.ruleset is None and changes.correlations is None and changes.exceptions is None:
            return
        stages = list(self.stages())
        pipelines = [stage for stage in stages if isinstance(stage, Pipeline)]
        if changes.ruleset is not None:
            for signatures in _distinct(pipelines, SignatureDetector):
                signatures.use_rules(changes.ruleset)
            metrics.RELOADS.labels("rules", APPLIED).inc()
        if changes.ruleset is not None or changes.correlations is not None:
            aliases = None if changes.ruleset is None else rule_aliases(changes.ruleset.rules)
            for correlation in _distinct(pipelines, CorrelationDetector):
                correlation.use_rules(
                    correlation.correlations if changes.correlations is None else changes.correlations,
                    correlation.aliases if aliases is None else aliases,
                )
            if changes.correlations is not None:
                metrics.RELOADS.labels("correlations", APPLIED).inc()
        if changes.exceptions is not None:
            for stage in stages:
                stage.exceptions = changes.exceptions
            metrics.RELOADS.labels("exceptions", APPLIED).inc()


def _attempt(kind: str, load: Callable[[], T | None]) -> T | None:
    try:
        return load()
    except Exception:  # a bug or an unreadable directory must not stop the timer: the running set stays
        log.exception("%s not reloaded; the running ones stay", kind)
        metrics.RELOADS.labels(kind, REJECTED).inc()
        return None


def _distinct(pipelines: Iterable[Pipeline], kind: type[D]) -> list[D]:
    """Each detector of type ``kind`` in ``pipelines`` once (a template shares its stateless ones with its copies)."""
    found = {id(d): d for pipeline in pipelines for d in pipeline.detectors if isinstance(d, kind)}
    return list(found.values())


def _load_rules(kind: str, watcher: RuleFilesWatcher[T]) -> T | None:
    """The watcher's new set if its files changed and loaded; a rejected one (the watcher logged why) is counted."""
    outcome = watcher.maybe_reload()
    if outcome is ReloadOutcome.REJECTED:
        metrics.RELOADS.labels(kind, REJECTED).inc()
    return watcher.current if outcome is ReloadOutcome.RELOADED else None


def _load_exceptions(watcher: ExceptionsWatcher) -> ExceptionList | None:
    if not watcher.changed():
        return None
    try:
        return watcher.load()
    except ExceptionsError as error:
        for problem in error.errors:
            log.error("alert exceptions reload rejected, the running ones stay: %s", problem)
        metrics.RELOADS.labels("exceptions", REJECTED).inc()
        return None
