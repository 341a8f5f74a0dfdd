"""System-prompt leakage: the response (or a tool call) reproduces a substantial part of the system prompt.

Texts are compared as sets of word shingles after normalisation (lower case; punctuation, markdown and whitespace
removed), so re-formatting the prompt as a list or code block does not hide it. The reference is the event's own
system prompt or, when the event does not carry one, the prompts registered for the application.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    def __init__(self, *, shingle_words: int, min_share: float, min_words: int) -> None:
        self.size = shingle_words
        self.min_share = min_share
        self.min_words = min_words

    def run(self, context: EventContext, findings: Findings, masker: Masker) -> list[Detection]:
        references: list[tuple[str, tuple[str, ...]]] = []
        if context.event.system_instructions:
            references.append(("event", tuple(words(context.event.system_instructions))))
        else:
            references += [("registered", p.words) for p in context.profile.system_prompts]
        references = [(origin, tokens) for origin, tokens in references if len(tokens) >= self.size]
        best: tuple[float, int, str, str, str] | None = None  # share, words reproduced, origin, field, text
        for field in (COMPLETION, TOOL_ARGUMENTS):
            text = "\n".join(s.text for s in context.segments if s.field == field and s.side == "output")
            output = words(text) if references and text else []
            if len(output) < self.min_words:
                continue
            for origin, tokens in references:
                found = reproduced_shingles(tokens, output, self.size)
                share = len(found) / (len(tokens) - self.size + 1)
                reproduced = covered_words(list(tokens), self.size, found)
                if share >= self.min_share and reproduced >= self.min_words and (best is None or share > best[0]):
                    best = (share, reproduced, origin, field, text)
        if best is None:
            return []
        share, reproduced, origin, field, text = best
        findings.fields["gen_ai.security.system_prompt_leak_share"] = round(share, 3)
        event = context.event
        where = "response" if field == COMPLETION else "tool call"
        return [
            Detection(
                rule=SYSTEM_PROMPT_LEAK,
                event_ids=[event.id],
                timestamp=event.timestamp,
                identity=event.identity,
                message=f"{where} reproduces {share:.0%} of the {origin} system prompt ({reproduced} words)",
                score=min(1.0, 0.5 + share / 2),
                evidence=[
                    Evidence(
                        field=field,
                        snippet=masker.excerpt(text),  # a value the cut falls inside is masked whole
                        detail=f"{share:.0%} of the {origin} system prompt's {self.size}-word shingles reproduced",
                    )
                ],
                explanation={"shingle_share": round(share, 4), "words_reproduced": float(reproduced)},
            )
        ]
