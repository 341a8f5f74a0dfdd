"""System-prompt leakage: the response (or a tool call) reproduces a substantial part of the system prompt.

Texts are compared as sets of word shingles after normalisation (lower case; punctuation, markdown and whitespace
removed), so re-formatting the prompt as a list or code block does not hide it. The reference is the event's own
system prompt or, when the event does not carry one, the prompts registered for the application.

A prompt asked for piece by piece ("quote the next 20 words") never leaks enough in one response. The
:class:`LeakLedger` adds up, per session and prompt, which of its shingles responses reproduced (their positions in
the prompt, never text), and a session whose responses together pass a higher share raises its own rule once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from detectors.base import Detection, Evidence, Findings, RuleInfo
from detectors.event import COMPLETION, TOOL_ARGUMENTS
from detectors.exfil.context import EventContext
from detectors.exfil.masking import Masker
from detectors.exfil.measures import covered_words, words

SYSTEM_PROMPT_LEAK = RuleInfo(
    id="abw-exfil-system-prompt-leak",
    name="System prompt reproduced in a response",
    category="system_prompt_leak",
    level="high",
    description="The response reproduces a substantial share of the application's system prompt.",
    atlas=("AML.T0056",),
    owasp=("LLM07:2025",),
)
SYSTEM_PROMPT_LEAK_ACROSS_TURNS = RuleInfo(
    id="abw-exfil-system-prompt-leak-turns",
    name="System prompt reproduced across a session's responses",
    category="system_prompt_leak",
    level="high",
    description="A session's responses together reproduce a substantial share of the system prompt, each too little "
    "to count alone: a prompt extracted piece by piece.",
    atlas=("AML.T0056",),
    owasp=("LLM07:2025",),
    status="test",
)
MAX_PROMPTS_PER_SESSION = 4


@dataclass(slots=True)
class _Reproduced:
    """What a session's responses reproduced of one prompt: shingle start positions, responses that added some."""

    positions: set[int] = field(default_factory=set)
    responses: int = 0
    last_seen: float = float("-inf")
    alerted: bool = False


class LeakLedger:
    """Per session and system prompt (a keyed fingerprint of its words), the shingles reproduced so far.

    Bounded like :class:`detectors.exfil.memory.SessionMemory`: entries expire ``ttl_s`` after their last response
    (event time) and the least recently used sessions go beyond ``max_sessions``."""

    def __init__(self, key: bytes, *, ttl_s: float, max_sessions: int) -> None:
        self._key = key
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, OrderedDict[str, _Reproduced]] = OrderedDict()

    def fingerprint(self, tokens: Sequence[str]) -> str:
        text = "\x1f".join(tokens).encode("utf-8", "surrogatepass")
        return hashlib.blake2b(text, key=self._key, digest_size=16, person=b"leak-ledger").hexdigest()

    def add(self, session: str, prompt: str, positions: set[int], now: float) -> _Reproduced:
        """Record a response's reproduced ``positions`` of ``prompt``; the session's record of it, updated."""
        prompts = self._sessions.pop(session, None) or OrderedDict()
        record = prompts.pop(prompt, None)
        if record is None or now - record.last_seen > self.ttl_s:
            record = _Reproduced()
        if positions - record.positions:
            record.positions |= positions
            record.responses += 1
        record.last_seen = max(record.last_seen, now)
        prompts[prompt] = record
        while len(prompts) > MAX_PROMPTS_PER_SESSION:
            prompts.popitem(last=False)
        self._sessions[session] = prompts
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return record

    def expire(self, now: float) -> None:
        for session in list(self._sessions):
            prompts = self._sessions[session]
            for prompt in [p for p, record in prompts.items() if now - record.last_seen > self.ttl_s]:
                del prompts[prompt]
            if not prompts:
                del self._sessions[session]

    def state(self) -> dict[str, Any]:
        return {
            session: {prompt: _state(record) for prompt, record in prompts.items()}
            for session, prompts in self._sessions.items()
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self._sessions = OrderedDict(
            (
                session,
                OrderedDict(
                    (
                        prompt,
                        _Reproduced(set(value["positions"]), value["responses"], value["last_seen"], value["alerted"]),
                    )
                    for prompt, value in prompts.items()
                ),
            )
            for session, prompts in state.items()
        )


def _state(record: _Reproduced) -> dict[str, Any]:
    return {
        "positions": sorted(record.positions),
        "responses": record.responses,
        "last_seen": record.last_seen,
        "alerted": record.alerted,
    }


@dataclass(frozen=True, slots=True)
class _Output:
    """One output field of the event (its text joined) and, per reference prompt, the shingles it reproduces."""

    field: str
    text: str
    words: int
    found: list[set[int]]


def reproduced_shingles(reference: Sequence[str], response: Sequence[str], size: int) -> set[int]:
    """Start indexes of the reference's ``size``-word shingles that occur in the response.

    Only response positions whose word starts some reference shingle are looked at, so a long response costs a
    set lookup per word rather than a shingle per word. Each distinct response shingle is looked up once, so a
    repetitive reply against a repetitive prompt stays linear (each reference position is added at most once)."""
    positions: dict[tuple[str, ...], list[int]] = {}
    for index in range(len(reference) - size + 1):
        positions.setdefault(tuple(reference[index : index + size]), []).append(index)
    firsts = {shingle[0] for shingle in positions}
    looked_up: set[tuple[str, ...]] = set()
    found: set[int] = set()
    for index in range(len(response) - size + 1):
        if response[index] in firsts:
            shingle = tuple(response[index : index + size])
            if shingle not in looked_up:
                looked_up.add(shingle)
                found.update(positions.get(shingle, ()))
    return found


class SystemPromptLeakCheck:
    """Raises the leak rule when one response reproduces enough of the system prompt, and, given a session's
    ``ledger``, the across-turns rule when its responses do together (``across_turns_min_share``, from two)."""

    def __init__(
        self,
        *,
        shingle_words: int,
        min_share: float,
        min_words: int,
        across_turns_min_share: float = 0.3,
        across_turns_status: str = "test",
    ) -> None:
        self.size = shingle_words
        self.min_share = min_share
        self.min_words = min_words
        self.across_turns_min_share = across_turns_min_share
        self.across_turns_rule = msgspec.structs.replace(SYSTEM_PROMPT_LEAK_ACROSS_TURNS, status=across_turns_status)

    def run(
        self,
        context: EventContext,
        findings: Findings,
        masker: Masker,
        ledger: LeakLedger | None = None,
        session: str = "",
    ) -> list[Detection]:
        references: list[tuple[str, tuple[str, ...]]] = []
        if context.event.system_instructions:
            references.append(("event", tuple(words(context.event.system_instructions))))
        else:
            references += [("registered", p.words) for p in context.profile.system_prompts]
        references = [(origin, tokens) for origin, tokens in references if len(tokens) >= self.size]
        outputs: list[_Output] = []
        for field_name in (COMPLETION, TOOL_ARGUMENTS):
            text = "\n".join(s.text for s in context.segments if s.field == field_name and s.side == "output")
            output = words(text) if references and text else []
            if len(output) >= self.size:
                found = [reproduced_shingles(tokens, output, self.size) for _origin, tokens in references]
                outputs.append(_Output(field_name, text, len(output), found))
        best: tuple[float, int, str, _Output] | None = None  # share, words reproduced, origin, output
        for output in outputs:
            if output.words < self.min_words:
                continue
            for (origin, tokens), found in zip(references, output.found, strict=True):
                share = len(found) / (len(tokens) - self.size + 1)
                reproduced = covered_words(list(tokens), self.size, found)
                if share >= self.min_share and reproduced >= self.min_words and (best is None or share > best[0]):
                    best = (share, reproduced, origin, output)
        detections = []
        if best is not None:
            share, reproduced, origin, output = best
            findings.fields["gen_ai.security.system_prompt_leak_share"] = round(share, 3)
            where = "response" if output.field == COMPLETION else "tool call"
            detections.append(
                self._detection(
                    SYSTEM_PROMPT_LEAK,
                    context,
                    masker,
                    output,
                    f"{where} reproduces {share:.0%} of the {origin} system prompt ({reproduced} words)",
                    f"{share:.0%} of the {origin} system prompt's {self.size}-word shingles reproduced",
                    share,
                    {"shingle_share": round(share, 4), "words_reproduced": float(reproduced)},
                )
            )
        if ledger is not None and session:
            detections += self._across_turns(ledger, context, masker, session, references, outputs, best is not None)
        return detections

    def _across_turns(
        self,
        ledger: LeakLedger,
        context: EventContext,
        masker: Masker,
        session: str,
        references: list[tuple[str, tuple[str, ...]]],
        outputs: list[_Output],
        leaked_alone: bool,
    ) -> list[Detection]:
        """The across-turns rule, once per session and prompt, when this response takes the total over the bar."""
        event = context.event
        for index, (origin, tokens) in enumerate(references):
            found = set().union(*(output.found[index] for output in outputs))
            if not found:
                continue
            record = ledger.add(session, ledger.fingerprint(tokens), found, event.timestamp)
            if leaked_alone:
                record.alerted = True  # this response alone leaked it: the single-response alert says so
            share = len(record.positions) / (len(tokens) - self.size + 1)
            reproduced = covered_words(list(tokens), self.size, record.positions)
            if (
                record.alerted
                or record.responses < 2
                or share < self.across_turns_min_share
                or reproduced < self.min_words
            ):
                continue
            record.alerted = True
            output = max(outputs, key=lambda output: len(output.found[index]))
            return [
                self._detection(
                    self.across_turns_rule,
                    context,
                    masker,
                    output,
                    f"{record.responses} responses of session {session} together reproduce {share:.0%} of the "
                    f"{origin} system prompt ({reproduced} words)",
                    f"{share:.0%} of the {origin} system prompt's {self.size}-word shingles reproduced over "
                    f"{record.responses} responses",
                    share,
                    {
                        "shingle_share": round(share, 4),
                        "words_reproduced": float(reproduced),
                        "responses": float(record.responses),
                    },
                )
            ]
        return []

    @staticmethod
    def _detection(
        rule: RuleInfo,
        context: EventContext,
        masker: Masker,
        output: _Output,
        message: str,
        detail: str,
        share: float,
        explanation: dict[str, float],
    ) -> Detection:
        event = context.event
        return Detection(
            rule=rule,
            event_ids=[event.id],
            timestamp=event.timestamp,
            identity=event.identity,
            message=message,
            score=min(1.0, 0.5 + share / 2),
            evidence=[
                Evidence(
                    field=output.field,
                    snippet=masker.excerpt(output.text),  # a value the cut falls inside is masked whole
                    detail=detail,
                )
            ],
            explanation=explanation,
        )
