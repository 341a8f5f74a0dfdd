"""Exfiltration and leakage detection: secrets, PII, system-prompt leakage, canaries, URL / markdown and tool-call
exfiltration. Build the tier with :func:`build_exfil_detectors`."""

from detectors.exfil.config import ExfilConfig
from detectors.exfil.detector import ExfilDetector, build_exfil_detectors

__all__ = ["ExfilConfig", "ExfilDetector", "build_exfil_detectors"]
