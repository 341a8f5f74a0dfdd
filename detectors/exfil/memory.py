"""Per-session memory of the secrets and PII that reached the model, so a leak in a later event is traced back.

Clients that send only the new turn (``previous_response_id`` style APIs) do not resend the tool result that held
a secret; the memory keeps, per session, a keyed fingerprint of each value and where it was first seen. Only
fingerprints are kept (and checkpointed), never the values. Sessions expire after ``ttl_s`` and the least
recently used ones are dropped beyond ``max_sessions``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

_MAX_VALUES_PER_SESSION = 512


class SessionMemory:
    def __init__(self, key: bytes, *, ttl_s: float, max_sessions: int) -> None:
        self._key = key
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, OrderedDict[str, tuple[str, float]]] = OrderedDict()

    def fingerprint(self, value_key: str) -> str:
        return hashlib.blake2b(value_key.encode("utf-8", "surrogatepass"), key=self._key, digest_size=16).hexdigest()

    def remember(self, session: str, value_key: str, field: str, timestamp: float) -> None:
        values = self._sessions.pop(session, None) or OrderedDict()
        values.setdefault(self.fingerprint(value_key), (field, timestamp))
        while len(values) > _MAX_VALUES_PER_SESSION:
            values.popitem(last=False)
        self._sessions[session] = values
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)

    def recall(self, session: str, value_key: str, now: float) -> str | None:
        """Where the value was first seen in this session, or None (also when that is older than ``ttl_s``)."""
        values = self._sessions.get(session)
        if not values:
            return None
        seen = values.get(self.fingerprint(value_key))
        if seen is None or now - seen[1] > self.ttl_s:
            return None
        return seen[0]

    def expire(self, now: float) -> None:
        for session in [s for s, v in self._sessions.items() if all(now - t > self.ttl_s for _, t in v.values())]:
            del self._sessions[session]

    def state(self) -> dict[str, Any]:
        return {
            "sessions": {
                session: [[fp, field, ts] for fp, (field, ts) in values.items()]
                for session, values in self._sessions.items()
            }
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self._sessions = OrderedDict(
            (session, OrderedDict((fp, (field, float(ts))) for fp, field, ts in values))
            for session, values in state.get("sessions", {}).items()
        )
