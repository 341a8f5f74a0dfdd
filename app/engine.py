"""Builds the detection pipeline from settings: the one place that decides which detectors run, in which order.

The Faust workers, ``abusewatch replay``, backtests and benchmarks all call :func:`build_pipeline`, so they run
the same detectors with the same configuration.
"""

from __future__ import annotations

from app.settings import Settings
from detectors.base import Detector
from detectors.chains import SessionChainDetector
from detectors.pipeline import Pipeline
from detectors.redact import Redactor


def build_detectors(settings: Settings) -> list[Detector]:
    """The detection tiers in order: cheap signatures first, then models; later tiers see earlier findings."""
    return [SessionChainDetector()]


def build_pipeline(settings: Settings) -> Pipeline:
    redactor = Redactor(settings.detection.redaction_key.get_secret_value().encode("utf-8"))
    return Pipeline(build_detectors(settings), redactor)
