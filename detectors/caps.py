"""What a tier forgets at its cap on client-chosen state, counted and said without flooding the log."""

from __future__ import annotations

import logging
import math
import time

WARN_EVERY_S = 60.0  # how often (wall time) a cap that keeps forgetting state is logged


class Evictions:
    """``count``: entries forgotten at the cap since the detector was built or its state loaded. :meth:`say` logs
    how many since it last spoke, at most once a minute of wall time: once per batch, one-event batches would flood
    the log."""

    def __init__(self, logger: logging.Logger, message: str) -> None:
        self.logger = logger
        self.message = message  # %-format with the cap and the number forgotten since last said
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self._said_at, self._said_count = -math.inf, 0
        self._reported = 0

    def unreported(self) -> int:
        """How many were forgotten since the last call: what a metric counter adds (``count`` restarts at a
        state load)."""
        new, self._reported = self.count - self._reported, self.count
        return max(new, 0)

    def say(self, cap: int) -> None:
        now = time.monotonic()
        if self.count > self._said_count and now - self._said_at >= WARN_EVERY_S:
            self.logger.warning(self.message, cap, self.count - self._said_count)
            self._said_at, self._said_count = now, self.count
