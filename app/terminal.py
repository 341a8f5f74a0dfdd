"""Attacker-written text made safe to show an analyst, in a terminal or in the HTML report.

Alert content (messages, evidence, prompts, event ids a client chose) may hold terminal control sequences or
bidirectional overrides; shown as they are, they would clear the screen, forge output or reverse what is read.
"""

from __future__ import annotations

from typing import Any

# C0/C1 controls (but tab and newline), DEL and bidirectional overrides, shown as escapes instead of acting.
_UNSAFE = [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_SAFE_TABLE = {code: f"\\u{code:04x}" for code in _UNSAFE}


def terminal_safe(text: Any) -> str:
    """``text`` with control characters escaped, so alert content cannot drive the analyst's terminal."""
    return str(text).translate(_SAFE_TABLE)


def clipped(text: Any, width: int) -> str:
    """``text`` made :func:`terminal_safe`, on one line (whitespace runs become one space), cut to ``width``
    characters with an ellipsis: for a table cell."""
    flat = " ".join(terminal_safe(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
