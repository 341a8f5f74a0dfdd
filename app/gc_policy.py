"""How often CPython's cyclic garbage collector runs in a long-running abusewatch process.

The collector runs its youngest generation whenever new container objects, net of those freed, pass 700 (the
default), and a batch of events keeps thousands alive at once (fields, detections, documents), so a batch triggers
hundreds of young collections and, as they cascade, full passes over everything alive; a pass holds the GIL, so it
also stalls the Faust event loop (heartbeats, ``/health``). Reference counting frees almost all of an event's objects
the moment they are dropped; the collector only finds reference cycles, which a larger threshold leaves longer, so
memory held by cyclic garbage grows with it: 10,000 keeps that bounded while removing most of the passes. Measured
in ``docs/performance.md`` ("Garbage collector"), with 50,000 and ``gc.freeze()`` and why neither is the default.
Prometheus' ``python_gc_collections_total`` and ``process_resident_memory_bytes`` on ``/metrics`` show the effect.
"""

from __future__ import annotations

import gc


def tune_garbage_collector(young_threshold: int) -> None:
    """Collect the youngest generation every ``young_threshold`` new container objects (0: leave the collector as it
    is, Python's default unless something else set it); the older generations keep their ratios. Process-wide and
    idempotent."""
    if young_threshold <= 0:
        return
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
