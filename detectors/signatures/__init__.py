"""Signature rules: Sigma rules (parsed and validated by pySigma) run in one linear-time pass per field.

See README.md in this package for the rule format.
"""

from detectors.signatures.compiler import CompiledRules, ItemMatch, MatchResult, RuleHit
from detectors.signatures.detector import SignatureDetector
from detectors.signatures.parse import RuleLoadError, SignatureRule, parse_rule
from detectors.signatures.ruleset import BUILTIN_RULES_DIR, RuleSet, RuleSetWatcher, default_directories
from detectors.signatures.textnorm import Limits

__all__ = [
    "BUILTIN_RULES_DIR",
    "CompiledRules",
    "ItemMatch",
    "Limits",
    "MatchResult",
    "RuleHit",
    "RuleLoadError",
    "RuleSet",
    "RuleSetWatcher",
    "SignatureDetector",
    "SignatureRule",
    "default_directories",
    "parse_rule",
]
