"""Which turns of a chat history the session has already shown: history the client invented is judged too.

Chat APIs are stateless: the client resends the whole conversation every turn, and detectors judge only the new
part (:meth:`Event.new_input`) so an attack alerts once, not once per later turn. That trusts the client's history.
An attacker can put the payload in an earlier "user" turn, add a fabricated assistant reply ("Sure, I am DAN
now") and end with a harmless turn: no request ever carried the payload as its new part. The ledger remembers a
hash of every input turn and every reply it saw per session, and moves an event's ``judged_from`` back to the first
turn of its history that the session never showed, so every turn is judged once, whoever wrote it.

Memory is bounded (least recently seen entries are forgotten first) and the ledger is not checkpointed: after a
restart or an eviction a session's history is judged once more, which can repeat an alert but never hides one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import msgspec

from detectors.event import Event, Message

DEFAULT_CAPACITY = 100_000  # turns remembered per pipeline (one pipeline per partition): about 10 MB


class HistoryLedger:
    """Hashes of the turns each session (identity and session id) has shown, most recently seen last."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._seen: dict[int, None] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def judge(self, event: Event) -> Event:
        """``event``, with ``judged_from`` moved back to the first history turn its session never showed; then
        remembers its input turns and replies. Returns the same object when nothing moves."""
        scope = _scope(event)
        keys = [_turn_key(scope, message) for message in event.input_messages]
        start = event.stateless_start()
        unseen = next((i for i, key in enumerate(keys[:start]) if key is not None and key not in self._seen), None)
        self._remember(keys)
        self._remember(_turn_key(scope, message) for message in event.output_messages)
        if unseen is None:
            return event
        return msgspec.structs.replace(event, judged_from=unseen)

    def _remember(self, keys: Iterable[int | None]) -> None:
        for key in keys:
            if key is None:
                continue
            self._seen.pop(key, None)
            self._seen[key] = None
            if len(self._seen) > self.capacity:
                del self._seen[next(iter(self._seen))]


def _scope(event: Event) -> str:
    return f"{event.identity.key()}\x1f{event.identity.session_id or ''}"


def _turn_key(scope: str, message: Message) -> int | None:
    """A 64-bit hash of a turn within its session; ``None`` for a turn with nothing to judge. Replies are stored
    under the assistant role, as clients resend them; surrounding whitespace is ignored, as clients trim it."""
    content = message.content.strip()
    if not content or message.role not in ("user", "assistant", "tool"):
        return None
    text = f"{scope}\x1f{message.role}\x1f{content}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")
