"""The one exception normalisers raise: a record that is not a known format or is malformed for its format."""

from __future__ import annotations


class NormaliseError(Exception):
    """``reason`` is a short machine code (e.g. ``unknown_format``, ``malformed:bedrock``); ``detail`` a sentence."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
