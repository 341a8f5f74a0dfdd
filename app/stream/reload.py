"""Hot reload in the stream worker: changed signature rules and alert exceptions, swapped into every stage.

The worker's timer loads what changed on a thread of its own (a rule set compiles for seconds, and detection goes
on meanwhile), then swaps it in on the detector thread, the thread that runs every batch, so a swap always lands
between two batches. What changed is loaded and checked once, then handed to every partition's stage and to the
templates that partitions assigned later are made from. A rule pack or an exceptions file that does not load is
logged with its errors and the running one stays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from app.stream import metrics
from detectors.campaigns import CampaignStage
from detectors.exceptions import ExceptionList, ExceptionsError, exception_files
from detectors.pipeline import Pipeline
from detectors.signatures.detector import SignatureDetector
from detectors.signatures.ruleset import RuleSet, RuleSetWatcher, files_fingerprint

log = logging.getLogger(__name__)

Stage = Pipeline | CampaignStage
APPLIED, REJECTED = "applied", "rejected"
T = TypeVar("T")


def signature_watcher(pipeline: Pipeline) -> RuleSetWatcher | None:
    """The watcher of ``pipeline``'s signature tier, if it has one that watches rule files."""
    return next(
        (d.watcher for d in pipeline.detectors if isinstance(d, SignatureDetector) and d.watcher is not None), None
    )


class ExceptionsWatcher:
    """Tells when a file under the alert exceptions path is added, removed or changed (polled, like the rules)."""

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
    """What :meth:`Reloader.load` loaded and checked: a new rule set and/or new exceptions (``None``: no change)."""

    ruleset: RuleSet | None = None
    exceptions: ExceptionList | None = None


class Reloader:
    """Loads changed rules and exceptions, then swaps them into the stages ``stages()`` returns: every partition's,
    and the templates later partitions are made from.

    Two steps, as a rule set compiles for seconds: :meth:`load` anywhere but the detector thread (it touches only
    the watchers), then :meth:`apply` on the detector thread, between two batches. ``stages`` is called at each
    swap, so partitions created meanwhile are included. Signature detectors are shared between a template and its
    :meth:`~detectors.pipeline.Pipeline.fresh` copies (they hold no state); each distinct one gets the set compiled
    once. Each outcome is counted in ``abusewatch_reloads_total``.
    """

    def __init__(
        self,
        stages: Callable[[], Iterable[Stage]],
        *,
        rules: RuleSetWatcher | None = None,
        exceptions: ExceptionsWatcher | None = None,
    ) -> None:
        self.stages = stages
        self.rules = rules
        self.exceptions = exceptions

    def load(self) -> Changes:
        """Load what changed since the last call; what does not load is logged, counted and left out. Never raises."""
        rules, exceptions = self.rules, self.exceptions
        return Changes(
            ruleset=None if rules is None else _attempt("rules", lambda: _load_rules(rules)),
            exceptions=None if exceptions is None else _attempt("exceptions", lambda: _load_exceptions(exceptions)),
        )

    def apply(self, changes: Changes) -> None:
        """Swap ``changes`` into every stage; call it between batches, on the thread that runs them."""
        if changes.ruleset is None and changes.exceptions is None:
            return
        stages = list(self.stages())
        if changes.ruleset is not None:
            detectors = {
                id(detector): detector
                for stage in stages
                if isinstance(stage, Pipeline)
                for detector in stage.detectors
                if isinstance(detector, SignatureDetector)
            }
            for detector in detectors.values():
                detector.use_rules(changes.ruleset)
            metrics.RELOADS.labels("rules", APPLIED).inc()
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


def _load_rules(watcher: RuleSetWatcher) -> RuleSet | None:
    attempts = watcher.last_errors  # replaced by every load the watcher attempts
    if watcher.maybe_reload():
        return watcher.current
    if watcher.last_errors is not attempts:  # rejected: the watcher logged each error
        metrics.RELOADS.labels("rules", REJECTED).inc()
    return None


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
