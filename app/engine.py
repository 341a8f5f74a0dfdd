"""Builds the detection pipeline from settings: the one place that decides which detectors run, in which order.

The Faust workers, ``abusewatch replay``, backtests and benchmarks all call :func:`build_pipeline`, so they run
the same detectors with the same configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from app.settings import Settings
from detectors.alerting import AlertGrouper, AlertPolicy
from detectors.anomaly import AnomalyDetector
from detectors.base import Detector
from detectors.campaigns import CampaignDetector, CampaignStage
from detectors.catalogue import known_rules, running_rules
from detectors.chains import SessionChainDetector
from detectors.correlation import BUILTIN_DIR as BUILTIN_CORRELATIONS
from detectors.correlation import CorrelationDetector, CorrelationWatcher, rule_aliases
from detectors.exceptions import ExceptionList, KnownRules, load_exceptions
from detectors.exfil.detector import build_exfil_detectors
from detectors.history import KEY_PURPOSE, HistoryLedger
from detectors.partitioned import PartitionedPipeline
from detectors.pipeline import Pipeline
from detectors.redact import Redactor
from detectors.signatures.detector import SignatureDetector
from detectors.signatures.ruleset import BUILTIN_RULES_DIR, RuleSetWatcher, default_directories
from detectors.textclf.detector import TextClassifierDetector

log = logging.getLogger(__name__)


def build_detectors(settings: Settings, rule_dirs: Sequence[Path] | None = None) -> list[Detector]:
    """The detection tiers in order: cheap signatures first, then models; later tiers see earlier findings.

    ``rule_dirs`` replaces the settings' signature rule directories (built-in pack, ``detection.rules_dir``), and
    their correlation documents join the built-in correlations: a backtest judges candidate rules in the whole engine.
    """
    detection = settings.detection
    rules = RuleSetWatcher(_rule_dirs(settings) if rule_dirs is None else rule_dirs)
    for error in rules.last_errors:
        log.error("rule not loaded: %s", error)
    correlation_dirs = _correlation_dirs(settings) if rule_dirs is None else _candidate_correlation_dirs(rule_dirs)
    correlations = CorrelationWatcher(correlation_dirs)
    for error in correlations.last_errors:
        log.error("correlation rule not loaded: %s", error)
    exfil = detection.exfil
    if "memory_key" not in exfil.model_fields_set:  # fingerprints keyed per deployment unless set on their own
        exfil = exfil.model_copy(update={"memory_key": detection.redaction_key})
    judge_system = detection.judge_system_messages
    return [
        SignatureDetector(rules, cache_size=detection.signature_cache_size, judge_system_messages=judge_system),
        *build_exfil_detectors(exfil),
        TextClassifierDetector(detection.classifier, judge_system_messages=judge_system),
        AnomalyDetector(detection.anomaly),
        CorrelationDetector(
            correlations, rule_aliases(rules.current.rules), max_groups=detection.correlation_max_groups
        ),
        SessionChainDetector(
            shingle_key=_redactor(settings).derive_key("chain shingles"),
            max_sessions=detection.chain_max_sessions,
        ),
    ]


def build_pipeline(
    settings: Settings, exceptions: ExceptionList | None = None, rule_dirs: Sequence[Path] | None = None
) -> Pipeline:
    """The per-identity stage: every tier, with alert exceptions (``exceptions``, else loaded from the settings and
    checked against the rules these detectors run) and alert hygiene; ``rule_dirs`` as for :func:`build_detectors`."""
    detectors = build_detectors(settings, rule_dirs)
    if exceptions is None:
        exceptions = build_exceptions(settings, running_rules(detectors))
    return Pipeline(detectors, _redactor(settings), build_grouper(settings), exceptions, build_history(settings))


def build_history(settings: Settings) -> HistoryLedger:
    """Which chat-history turns are judged (detectors/history.py); with ``detection.judge_system_messages`` it also
    remembers each session's system instructions, so that they are judged once."""
    key = _redactor(settings).derive_key(KEY_PURPOSE)
    return HistoryLedger(key=key, system=settings.detection.judge_system_messages)


def build_exceptions(settings: Settings, known: KnownRules | None = None) -> ExceptionList:
    """The configured alert exceptions. A bad file raises :class:`~detectors.exceptions.ExceptionsError` here, at
    startup, never mid-stream; exceptions already expired are logged (and not applied to newer events), and so are
    rule ids, globs and categories that match none of the ``known`` rules (a typo there suppresses nothing). Pass
    the rules already loaded (:func:`~detectors.catalogue.running_rules`); without them the rule files of these
    settings are loaded to list them."""
    path = settings.detection.exceptions_path
    if path is None:
        return ExceptionList()
    exceptions = load_exceptions(path)
    today = datetime.now(tz=UTC).date()
    for exception in exceptions.expired(today):
        log.warning(
            "alert exception %s (%s) expired on %s (today, in wall time; it still applies to events dated before)",
            exception.id,
            exception.source,
            exception.entry.expires,
        )
    if known is None:
        known, _errors = known_rules_of(settings)  # rule errors: build_detectors logs them
    for warning in exceptions.unknown_rule_warnings(known):
        log.warning("alert exception %s", warning)
    log.info("%d alert exceptions loaded from %s", len(exceptions), path)
    return exceptions


def build_campaign_stage(
    settings: Settings, sources: int = 0, exceptions: ExceptionList | None = None
) -> CampaignStage:
    """The cross-identity stage: campaigns on one prompt template, judged by signature (detectors/campaigns.py);
    ``sources`` is the number of identity partitions feeding it. Alert exceptions: ``exceptions``, else loaded
    from the settings (as :func:`build_pipeline` does)."""
    if exceptions is None:
        exceptions = build_exceptions(settings)
    detector = CampaignDetector(settings.detection.anomaly, sources=sources)
    return CampaignStage(detector, build_grouper(settings), exceptions)


def build_engine(
    settings: Settings, rule_dirs: Sequence[Path] | None = None, partitions: int | None = None
) -> PartitionedPipeline:
    """The engine replay, backtest and the stream run: the per-identity stage (every tier, the configured alert
    exceptions and alert policy) once per identity partition (``kafka.partitions`` unless given), and the
    cross-identity campaign stage. ``rule_dirs`` replaces the configured signature rules (see
    :func:`build_pipeline`). A bad exceptions file raises :class:`~detectors.exceptions.ExceptionsError`."""
    partitions = partitions or settings.kafka.partitions
    template = build_pipeline(settings, rule_dirs=rule_dirs)  # loads the exceptions, checked against its rules
    campaigns = build_campaign_stage(settings, sources=partitions, exceptions=template.exceptions)
    return PartitionedPipeline(template, partitions, campaigns)


def known_rules_of(settings: Settings) -> tuple[KnownRules, list[str]]:
    """The rules these settings run (built-in detectors, signature and correlation rules), loaded from their files,
    and the errors of the rule files that did not load: what alert exceptions are checked against where no pipeline
    is running (``abusewatch exceptions check``)."""
    return known_rules(_rule_dirs(settings), _correlation_dirs(settings))


def _rule_dirs(settings: Settings) -> list[Path]:
    """The signature rule directories: the built-in pack (unless disabled) and ``detection.rules_dir``."""
    detection = settings.detection
    return default_directories(detection.rules_dir, builtin=detection.builtin_rules)


def _correlation_dirs(settings: Settings) -> list[Path]:
    rules_dir = settings.detection.rules_dir
    return [BUILTIN_CORRELATIONS, *([rules_dir] if rules_dir else [])]


def _candidate_correlation_dirs(rule_dirs: Sequence[Path]) -> list[Path]:
    return [BUILTIN_CORRELATIONS, *(directory for directory in rule_dirs if directory != BUILTIN_RULES_DIR)]


def _redactor(settings: Settings) -> Redactor:
    return Redactor(settings.detection.redaction_key.get_secret_value().encode("utf-8"))


def build_grouper(settings: Settings) -> AlertGrouper:
    """The alert grouper with the configured alert policy (``detection.alerting``)."""
    alerting = settings.detection.alerting
    policy = AlertPolicy(
        window_seconds=alerting.window_seconds,
        risk_threshold=alerting.risk_threshold,
        risk_half_life_seconds=alerting.risk_half_life_seconds,
    )
    return AlertGrouper(_redactor(settings), policy)
