"""The rules the product can raise, for checks that name rules: ``abusewatch exceptions check`` warns of an alert
exception whose rule ids, globs or categories match none of them (a typo there suppresses nothing, silently).

The built-in detectors define their rules as constants, listed here (a test keeps the list complete); signature
and correlation rules are those a pipeline runs (:func:`running_rules`, no second load) or, with no pipeline,
loaded from the directories the workers read (:func:`known_rules`). Both end in :func:`catalogue`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from detectors.alerting import RISK_RULE_IDS
from detectors.anomaly.rules import RULES as ANOMALY_RULES
from detectors.base import Detector, RuleInfo
from detectors.chains import BLOCKED_THEN_THROUGH, PROMPT_REUSED, RISING_SCORE
from detectors.correlation import Correlation, CorrelationDetector, load_correlations
from detectors.exceptions import KnownRules
from detectors.exfil.canaries import CANARY_IN_RESPONSE, CANARY_IN_TOOL_CALL
from detectors.exfil.leakage import SYSTEM_PROMPT_LEAK, SYSTEM_PROMPT_LEAK_ACROSS_TURNS
from detectors.exfil.pii import PII_DISCLOSURE
from detectors.exfil.resources import RESOURCE_WRITE_RULE
from detectors.exfil.secrets import SECRET_IN_INPUT, SECRET_IN_OUTPUT
from detectors.exfil.tools import EXFIL_RULE, ODD_EGRESS_RULE
from detectors.exfil.urls import RULES as URL_RULES
from detectors.signatures.detector import SignatureDetector
from detectors.signatures.parse import SignatureRule
from detectors.signatures.ruleset import RuleSet
from detectors.textclf.detector import RULES as CLASSIFIER_RULES

BUILTIN_RULES: tuple[RuleInfo, ...] = (
    *ANOMALY_RULES,
    *CLASSIFIER_RULES,
    BLOCKED_THEN_THROUGH,
    RISING_SCORE,
    PROMPT_REUSED,
    SYSTEM_PROMPT_LEAK,
    SYSTEM_PROMPT_LEAK_ACROSS_TURNS,
    SECRET_IN_OUTPUT,
    SECRET_IN_INPUT,
    PII_DISCLOSURE,
    EXFIL_RULE,
    ODD_EGRESS_RULE,
    RESOURCE_WRITE_RULE,
    *URL_RULES.values(),
    CANARY_IN_RESPONSE,
    CANARY_IN_TOOL_CALL,
)


def catalogue(signature_rules: Iterable[SignatureRule], correlations: Iterable[Correlation]) -> KnownRules:
    """Every rule the product can raise with these signature and correlation rules.

    The entity-risk alerts (the identity partitions' and the campaign stage's) are known by id; their category is that
    of the identity's other alerts, so they add none.
    """
    pairs = [
        *((rule.id, rule.category) for rule in BUILTIN_RULES),
        *((rule.id, rule.category) for rule in signature_rules),
        *((correlation.info.id, correlation.info.category) for correlation in correlations),
    ]
    return KnownRules(
        rule_ids=frozenset({*RISK_RULE_IDS, *(rule_id for rule_id, _ in pairs)}),
        categories=frozenset(category for _, category in pairs),
    )


def known_rules(signature_dirs: Iterable[Path], correlation_dirs: Iterable[Path]) -> tuple[KnownRules, list[str]]:
    """:func:`catalogue` with the signature and correlation rules under these directories, loaded here, and the
    errors of the rule files that did not load (their rules count as unknown, so say so next to any warning)."""
    ruleset = RuleSet.load(signature_dirs)
    correlations, correlation_errors = load_correlations(correlation_dirs)
    return catalogue(ruleset.rules, correlations), [*(str(error) for error in ruleset.errors), *correlation_errors]


def running_rules(detectors: Iterable[Detector]) -> KnownRules:
    """:func:`catalogue` with the signature and correlation rules these detectors run, without loading anything.

    Where a detector has a watcher, its current set is taken: after a reload has loaded new rules and before they
    are swapped in, that is the set about to run.
    """
    signature_rules: list[SignatureRule] = []
    correlations: list[Correlation] = []
    for detector in detectors:
        if isinstance(detector, SignatureDetector):
            signature_rules += (detector.watcher.current if detector.watcher else detector.ruleset).rules
        elif isinstance(detector, CorrelationDetector):
            correlations += detector.watcher.current if detector.watcher else detector.correlations
    return catalogue(signature_rules, correlations)
