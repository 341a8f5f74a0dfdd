"""Prompt-cache reads count at their price in the anomaly tier's token sums (detectors.anomaly.features)."""

from __future__ import annotations

from msgspec.structs import replace

from detectors.anomaly import AnomalyDetector
from detectors.anomaly.features import CACHE_READ_WEIGHT, priced_input_tokens
from detectors.base import Findings
from detectors.event import Event, Identity, Message

CONTEXT = 100_000


def call(n: int, *, cache_read: int | None, user: str = "dev") -> Event:
    return Event(
        id=f"{user}-{n}",
        timestamp=1_764_000_000.0 + 60 * n,
        dataset="test",
        input_messages=[Message(role="user", content=f"fix the failing test in module {n % 7}")],
        output_messages=[Message(role="assistant", content="Patched the assertion.")],
        input_tokens=CONTEXT + 800,
        output_tokens=1_500,
        cache_read_tokens=cache_read,
        identity=Identity(user_id=user, api_key_hash="k-" + user),
    )


def test_cache_reads_are_weighed_and_a_log_that_does_not_say_counts_in_full() -> None:
    assert priced_input_tokens(call(0, cache_read=CONTEXT)) == round(800 + CONTEXT * CACHE_READ_WEIGHT)
    assert priced_input_tokens(call(0, cache_read=None)) == CONTEXT + 800
    assert priced_input_tokens(replace(call(0, cache_read=10**9), input_tokens=5)) == 0  # never below zero


def resource_alerts(cache_read: int | None) -> int:
    """A coding agent re-reading a 100,000-token cached context every minute for three hours."""
    detector = AnomalyDetector()
    raised = 0
    for n in range(180):
        event = call(n, cache_read=cache_read)
        raised += sum("resource-abuse" in d.rule.id for d in detector.detect([event], [Findings()]))
    return raised


def test_a_coding_agent_reading_its_cached_context_is_not_a_denial_of_wallet() -> None:
    assert resource_alerts(cache_read=CONTEXT) == 0
    assert resource_alerts(cache_read=None) > 0  # the same tokens uncached: a million a window, alerted
