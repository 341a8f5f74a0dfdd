"""Word classes ("concepts") that let the classifier generalise across the wording of an injection.

A bag of n-grams learns the exact phrasing it was trained on: "ignore all previous instructions" teaches nothing
about "disregard the earlier directives". Mapping each word to a small class (``override``, ``prior``, ``rules``,
...) and emitting the classes and ordered class pairs within a few words as extra features lets the linear model
learn that *an override verb near a reference to earlier rules* is suspicious, whatever the synonyms. The model
learns every weight; this table only says which words mean the same thing. It is part of the model: the artifact
records its digest and refuses to load under another table.

Words are matched after the featuriser's character fold (lower case, look-alikes to Latin), as whole words of two
or more word characters. A word belongs to one class. A few German, Spanish and French forms of the core
override vocabulary are included, because direct injections in other languages are common.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache

CONCEPTS: dict[str, str] = {  # class → its words, separated by spaces
    "override": (
        "ignore ignores ignored ignoring disregard disregards disregarded disregarding forget forgets forgetting "
        "forgot forgotten override overrides overriding overridden overrule overrules bypass bypasses bypassing "
        "bypassed circumvent circumventing skip discard discarding abandon dismiss neglect nevermind supersede "
        "supersedes superseded replace replaces erase unlearn cancel void "
        "ignoriere ignorieren ignoriert vergiss vergessen vergesse ignora ignorar ignoren olvida olvidar olvide "
        "ignorez oubliez oublie oublier zaboravi забудь забудьте игнорируй игнорируйте"
    ),
    "prior": (
        "previous previously prior above earlier preceding former initial original originally aforementioned "
        "foregoing existing default preset prewritten preprogrammed "
        "vorherigen vorherige vorheriges bisherigen bisherige obigen obige vorangegangenen anteriores anterior "
        "previas precedentes"
    ),
    "rules": (
        "instructions instruction instructed rules rule guidelines guideline directives directive prompt prompts "
        "constraints constraint restrictions restriction restricted policies policy programming programmed "
        "guardrails guardrail filters filter filtering safeguards safeguard limitations limitation limits "
        "boundaries commands orders protocols protocol principles ethics ethical moral morals morality censorship "
        "censored guidance regulations "
        "anweisungen anweisung befehle regeln vorgaben richtlinien instrucciones reglas consignes regles instrukcije "
        "инструкции инструкций правила"
    ),
    "system": (
        "system developer developers hidden secret secrets internal confidential preprompt configuration config "
        "backend underlying private"
    ),
    "reveal": (
        "reveal reveals revealing print printing output repeat repeating display show tell disclose disclosing "
        "leak leaking expose dump echo recite recount restate rehash verbatim spell share paste copy"
    ),
    "roleplay": (
        "pretend pretending act acting roleplay roleplaying role persona character simulate simulating "
        "simulation emulate impersonate embody imagine hypothetical hypothetically fictional fiction scenario "
        "game play playing become mode"
    ),
    "transcript": "conversation conversations chat context transcript history messages sentences lines",
    "ai": "ai assistant model chatbot bot chatgpt gpt openai llm claude gemini bard llama",
    "henceforth": "now henceforth onwards onward anymore longer nun jetzt ahora maintenant",
    "unbound": (
        "unrestricted unfiltered uncensored unlimited unbound unbounded unchained unleashed jailbroken jailbreak "
        "jailbreaking liberated freed amoral unethical immoral rogue dan anything"
    ),
    "negation": (
        "never without no not cannot dont refuse refusing refusal refusals decline declining "
        "apologize apologise sorry warnings warning disclaimers disclaimer"
    ),
    "obey": "must always obey obeys comply complying follow only strictly exactly mandatory required",
    "switch": "new instead actually real true next different updated neue neuen nueva nuevas nouvelles",
    "task": "task tasks goal objective mission assignment aufgabe aufgaben tarea tache",
    "respond": "say says saying respond response reply answer begin start starting first word sentence",
}
VERSION = "injection-concepts/1"


def concept_names() -> tuple[str, ...]:
    """Class names, in table order (a class's index is its id)."""
    return tuple(CONCEPTS)


@cache
def concepts_digest() -> str:
    """sha256 of the table, in order (a class's id is its position): an artifact trained under another table or
    another order of the same classes differs."""
    payload = json.dumps([VERSION, list(CONCEPTS.items())], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def word_concepts() -> dict[str, int]:
    """Word → class id (every word is listed under one class only; tests/test_textclf_features.py checks)."""
    return {word: concept_id for concept_id, words in enumerate(CONCEPTS.values()) for word in words.split()}
