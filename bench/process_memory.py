"""This process's resident memory, for the benches that measure it (standard library only, so importing it adds
nothing to what they measure)."""

from __future__ import annotations

import os


def rss_bytes() -> int:
    """Resident set size now (``/proc/self/statm``: resident pages times the page size)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
