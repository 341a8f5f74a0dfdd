"""Which turns of a chat history the session has already shown: history the client invented is judged too.

Chat APIs are stateless: the client resends the whole conversation every turn, and detectors judge only the new
part (:meth:`Event.new_input`) so an attack alerts once, not once per later turn. That trusts the client's history.
An attacker can put the payload in an earlier "user" turn (or a tool result), add a fabricated assistant reply
("Sure, I am DAN now") and end with a harmless turn: no request ever carried the payload as its new part. The
ledger remembers a keyed hash of every input turn and every reply each session (identity and session id) showed,
and sets an event's ``judged_span`` so that every history turn the session never showed is judged, once. A trailing
assistant turn that the session showed as a reply (a "continue" request resending a reply cut short) is not judged
as the client's words.

Memory is bounded per session (its most recent :data:`MAX_TURNS_PER_SESSION` turns) and in total (least recently
active sessions are forgotten first), so one request with a huge history forgets only its own session's turns. The
ledger is part of the pipeline's checkpoint. A forgotten session's history is judged once more when it is resent,
which can repeat an alert but never hides one. The pipeline judges a batch first and records its turns only once
the batch went through (:meth:`HistoryLedger.commit`), so a batch retried event by event is judged the same way.

When system messages are judged as the client's words (``detection.judge_system_messages``, a ledger made with
``system=True``), the ledger remembers each session's system instructions too and sets ``Event.system_shown`` when
the session showed them before: a client resends them every turn, and an attack placed there alerts once, not once
a turn. Otherwise it records no system text, so what it remembers (and forgets) is the same as without the option.

Tool definitions are written by whoever serves each tool (an MCP server, a plugin) and are judged as retrieved
content; the ledger remembers each session's set of them (one key for the whole set, in any order) and sets
``Event.tools_shown`` when the session showed that set before, so a poisoned description alerts once, and again
only when the set changes (a tool added or rewritten: every description of the new set is judged again).
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Container, Iterable, Sequence
from typing import Any

import msgspec

from detectors.event import Event, Message

DEFAULT_CAPACITY = 100_000  # turns remembered per pipeline (one pipeline per partition): about 10 MB
KEY_PURPOSE = "history turns"  # what the ledger's key is derived for from the redaction key
MAX_TURNS_PER_SESSION = 1_024

Pending = list[tuple[int, list[int]]]  # (session, turns) to record once the batch went through


class HistoryLedger:
    """Keyed hashes of the turns each session showed, sessions in order of last activity."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, *, key: bytes | None = None, system: bool = False) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.system = system  # remember system instructions and set Event.system_shown (see the module docstring)
        self._key = hashlib.blake2b(key or secrets.token_bytes(32), person=b"abw-history", digest_size=32).digest()
        self._sessions: OrderedDict[int, OrderedDict[int, None]] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def judge(self, events: Sequence[Event]) -> tuple[list[Event], Pending]:
        """``events``, each with ``judged_span`` (``system_shown``, ``tools_shown``) set where its session's history
        says so (the same object when nothing changes), and the turns to :meth:`commit` once they went through.
        Turns of earlier events of the batch count as shown for later ones."""
        judged: list[Event] = []
        pending: Pending = []
        batch: dict[int, set[int]] = {}
        for event in events:
            session = self._hash(_scope(event))
            known = self._sessions.get(session, {})
            shown = batch.setdefault(session, set())
            keys = [self._turn_key(session, message) for message in event.input_messages]
            seen = [
                key is None or key in known or key in shown or self._results_shown(session, message, known, shown)
                for key, message in zip(keys, event.input_messages, strict=True)
            ]
            spanned = _with_span(event, seen)
            turns = [key for key in keys if key is not None]
            if self.system and event.system_instructions:
                system = self._system_key(session, event.system_instructions)
                if system in known or system in shown:
                    spanned = msgspec.structs.replace(spanned, system_shown=True)
                turns.append(system)
            if event.tool_definitions:
                tools = self._tools_key(session, event)
                if tools in known or tools in shown:
                    spanned = msgspec.structs.replace(spanned, tools_shown=True)
                turns.append(tools)
            judged.append(spanned)
            turns += [key for message in event.output_messages if (key := self._turn_key(session, message)) is not None]
            turns += self._result_keys(session, event)
            shown.update(turns)
            pending.append((session, turns))
        return judged, pending

    def _result_keys(self, session: int, event: Event) -> list[int]:
        """What this turn retrieved or its tools returned, as a resent tool call's result may read it: each
        retrieved document, all of them joined by blank lines (a resent ``file_search_call``), each tool result."""
        documents = [document.content for document in event.retrieved_documents if document.content]
        results = [call.result for call in event.output_tool_calls() if call.result]
        texts = [*documents, "\n\n".join(documents), *results] if documents else results
        return [self._result_key(session, text) for text in texts]

    def _results_shown(self, session: int, message: Message, known: Container[int], shown: Container[int]) -> bool:
        """A history turn of tool calls whose every result the session showed (retrieved, or a tool's output)."""
        calls = message.tool_calls
        if message.content.strip() or not calls or not all(call.result for call in calls):
            return False
        keys = [self._result_key(session, call.result or "") for call in calls]
        return all(key in known or key in shown for key in keys)

    def _result_key(self, session: int, text: str) -> int:
        return self._hash(f"{session}:result:{text.strip()}")

    def _system_key(self, session: int, text: str) -> int:
        return self._hash(f"{session}:system:{text.strip()}")

    def _tools_key(self, session: int, event: Event) -> int:
        """The session's set of tools, whatever order the client lists them in."""
        tools = sorted((tool.name, tool.description) for tool in event.tool_definitions)
        return self._hash(f"{session}:tools:" + _framed(part for tool in tools for part in tool))

    def commit(self, pending: Pending) -> None:
        """Record the turns of a batch that went through."""
        for session, turns in pending:
            kept = self._sessions.pop(session, None)
            if kept is None:
                kept = OrderedDict()
            self._sessions[session] = kept
            before = len(kept)
            for turn in turns:
                kept.pop(turn, None)
                kept[turn] = None
            while len(kept) > MAX_TURNS_PER_SESSION:
                kept.popitem(last=False)
            self._size += len(kept) - before
        while self._size > self.capacity:
            _, forgotten = self._sessions.popitem(last=False)
            self._size -= len(forgotten)

    def state(self) -> list[list[Any]]:
        """The sessions, least recently active first, each as its hash and its turns' hashes (64-bit integers)."""
        return [[session, list(turns)] for session, turns in self._sessions.items()]

    def load_state(self, state: Iterable[Sequence[Any]]) -> None:
        self._sessions = OrderedDict((int(session), OrderedDict.fromkeys(map(int, turns))) for session, turns in state)
        self._size = sum(len(turns) for turns in self._sessions.values())
        self.commit([])  # a smaller capacity than the checkpoint's applies at once

    def fresh(self) -> HistoryLedger:
        """An empty ledger with the same key and capacity (one per partition)."""
        clone = HistoryLedger(self.capacity, system=self.system)
        clone._key = self._key
        return clone

    def _hash(self, text: str) -> int:
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), key=self._key, digest_size=8).digest()
        return int.from_bytes(digest, "little")

    def _turn_key(self, session: int, message: Message) -> int | None:
        """A turn within its session; ``None`` for a turn with nothing to judge. Replies are kept under the
        assistant role, as clients resend them; surrounding whitespace is ignored, as clients trim it."""
        if message.role not in ("user", "assistant", "tool"):
            return None
        content = message.content.strip()
        if not content and not message.tool_calls:
            return None
        parts = [message.role, content]
        for call in message.tool_calls:
            parts += [call.name, call.arguments, call.result or ""]
        return self._hash(f"{session}:" + _framed(parts))


def _framed(parts: Iterable[str]) -> str:
    """``parts`` joined with each one's length before it, so no two lists of parts join to the same text."""
    return "".join(f"{len(part)}:{part}" for part in parts)


def _scope(event: Event) -> str:
    return f"{event.identity.key()}\x1f{event.identity.session_id or ''}"


def _with_span(event: Event, seen: list[bool]) -> Event:
    """``event`` with the span the session's history calls for (``seen``: whether the session showed each input
    turn): from the first history turn not seen (before the request's own turns), and without trailing assistant
    turns that were all seen as replies."""
    count = len(event.input_messages)
    stateless = event.stateless_start()
    trailing = event.trailing_assistant_start()
    if trailing < count and all(seen[trailing:]):  # a reply resent to be continued:
        end = first_new = trailing  # nothing of the request is its own, unless the session never showed it
    else:
        end, first_new = count, stateless
    start = next((index for index in range(first_new) if not seen[index]), first_new)
    if start == stateless and end == count:
        return event
    return msgspec.structs.replace(event, judged_span=(start, end))
