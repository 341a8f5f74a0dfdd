"""Every MITRE ATLAS technique a shipped rule maps to has a name: an alert's ``threat.technique.name`` is what Elastic
Security shows, and a bare id there tells an analyst nothing."""

from __future__ import annotations

import re
from pathlib import Path

import detectors
from detectors.catalogue import BUILTIN_RULES
from detectors.correlation import BUILTIN_DIR as BUILTIN_CORRELATIONS
from detectors.correlation import load_correlations
from detectors.documents import ATLAS_TECHNIQUES, atlas_name
from detectors.signatures.ruleset import BUILTIN_RULES_DIR, RuleSet

ATLAS_ID = re.compile(r"\bAML\.T\d{4}(?:\.\d{3})?\b", re.IGNORECASE)


def test_every_atlas_technique_of_the_shipped_rules_has_a_name() -> None:
    pack = RuleSet.load([BUILTIN_RULES_DIR]).rules
    correlations, errors = load_correlations([BUILTIN_CORRELATIONS])
    assert pack and correlations and errors == []
    used = {
        technique.upper()
        for atlas in (
            *(rule.atlas for rule in pack),
            *(correlation.info.atlas for correlation in correlations),
            *(rule.atlas for rule in BUILTIN_RULES),
        )
        for technique in atlas
    }
    assert {"AML.T0043", "AML.T0050", "AML.T0069", "AML.T0072"} <= used, "the ids this test was written for"
    unnamed = sorted(technique for technique in used if atlas_name(technique) == technique)
    assert unnamed == []


def test_every_atlas_id_written_in_the_detectors_package_has_a_name() -> None:
    """Also ids a detector sets outside the catalogue (and rule files of any other shipped kind)."""
    root = Path(detectors.__file__).parent
    files = [path for pattern in ("*.py", "*.yml", "*.yaml") for path in root.rglob(pattern)]
    written = {match.upper() for path in files for match in ATLAS_ID.findall(path.read_text(encoding="utf-8"))}
    assert len(written) >= 20
    assert sorted(written - set(ATLAS_TECHNIQUES)) == []
