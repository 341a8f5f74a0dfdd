"""Learned prompt-injection / jailbreak text classifier: hashed n-gram features, linear heads, its detector."""

from detectors.textclf.detector import TextClassifierConfig, TextClassifierDetector
from detectors.textclf.model import ModelError, TextClassifier

__all__ = ["ModelError", "TextClassifier", "TextClassifierConfig", "TextClassifierDetector"]
