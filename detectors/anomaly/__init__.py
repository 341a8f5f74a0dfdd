"""Online per-identity anomaly detection: scraping, model extraction and resource abuse (denial of wallet).

:mod:`features` turns each identity's events into tumbling event-time window features; :mod:`models` scores a
window against the identity's own history (EWMA z-scores) and against its peers (river Half-Space Trees);
:mod:`detector` turns scores and behaviour thresholds (:mod:`config`) into alerts. See ``docs/anomaly.md``.
"""

from detectors.anomaly.config import AnomalyConfig
from detectors.anomaly.detector import AnomalyDetector

__all__ = ["AnomalyConfig", "AnomalyDetector"]
