"""Fixtures for every test."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def garbage_collector_restored() -> Iterator[None]:
    """Commands and benches tune the process's garbage collector as the worker does (``app/gc_policy.py``); each test
    leaves the next one Python's own thresholds, so no test runs with a collector an earlier one set."""
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
