"""How often CPython's cyclic garbage collector runs in a long-running abusewatch process.

The collector's youngest generation runs every 700 allocations of container objects by default, and every event
allocates hundreds (its fields, detections, documents), so a batch triggers thousands of young collections and, as
they cascade, full passes over everything alive; a full pass holds the GIL, so it also stalls the Faust event loop
(heartbeats, ``/health``). Almost all of an event's objects are freed by reference counting the moment they are
dropped; the collector only finds reference cycles, which a larger young threshold leaves a little longer. Measured
(``docs/performance.md``, "Garbage collector"): at 50,000, replay does 11-13 % more events per CPU second, the
ingest of five 4 MiB OTLP exports takes 30 % less time and stalls the loop 0.15 s instead of 0.38 s, and peak RSS
does not change.

``gc.freeze()`` (moving start-up's objects out of the collector's sight) was measured too and not used: a pipeline
swapped out by a rule reload would stay frozen, and its cycles would never be collected.
"""

from __future__ import annotations

import gc


def tune_garbage_collector(young_threshold: int) -> None:
    """Run the collector's youngest generation every ``young_threshold`` container allocations (0: Python's own
    default); the older generations keep their ratios. Process-wide and idempotent."""
    if young_threshold <= 0:
        return
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
