"""Per-identity window features: what one identity did in one tumbling event-time window.

Prompts are reduced to a *shape* without any regular expression (attacker text never meets a backtracking
engine): quoted strings, numbers, single letters and record ids are masked and become the *values* of the
template (short quoted strings: names, titles; ids: any word with a digit, ``HG-20400``, a UUID, an ObjectId,
``cus_NffrFeUfNV2Hib``, and a long word whose letter case flips like a random base62 id's), and the masked words
give a 64-bit SimHash, the *template signature*. Two prompts that differ only in an id, a letter or a quoted
payload share a signature; a prompt that repeats the last prompt of its template with one value stepped by one or
two (``item 41`` → ``item 42``, ``HG-20400`` → ``HG-20401``, ``words starting with b`` → ``c``) is an *enumeration step*
(the last prompts of a few templates are remembered, so a decoy request in between does not hide it, and from a
template further back a step may be longer, so phrasings taken in turn do not either). How many distinct values
fill a template's slots is sketched per template (linear counting in a 256-bit map), and so is how much each
request carries of its own: *context* (tokens beyond the application's system prompt and retrieved documents) and
*slot text* (characters of its values and quoted strings). Enumeration plugs bare values into a template;
legitimate batch work sends a document or a quoted payload with each request.

Everything an accumulator holds is bounded (capped dicts and sets, Welford moments), whatever the traffic.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import operator
import re
import string
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.event import Event
from detectors.matching import MultiMatcher, Pattern

FEATURES: tuple[str, ...] = (
    "requests",
    "input_tokens",
    "output_tokens",
    "tokens",
    "tokens_per_request",
    "output_input_ratio",
    "max_tokens_requested",
    "template_reuse",
    "prompt_diversity",
    "prompt_entropy",
    "refusal_rate",
    "guardrail_block_rate",
    "error_rate",
    "distinct_ips",
    "distinct_user_agents",
    "distinct_primaries",
    "extraction_param_rate",
    "extraction_temperature_std",  # temperature sweeps among requests with extraction parameters
    "extraction_distinct_temperatures",
    "enumeration_rate",
    "interarrival_cv",
    "template_requests",  # requests on the most used template (near signatures merged)
    "slot_distinct_share",  # distinct slot values on that template per request on it
    "context_tokens",  # mean tokens per request the client sent beyond the application's own text
    "slot_chars",  # mean characters per prompt of its values and quoted strings (a quoted payload is long)
)

# Opening phrases of model refusals; matched as escaped literals, only in a completion's first characters.
REFUSAL_PHRASES: tuple[str, ...] = (
    "I can't help with",
    "I cannot help with",
    "I can't assist with",
    "I cannot assist with",
    "I'm sorry, but I can't",
    "I'm sorry, but I cannot",
    "I am sorry, but I cannot",
    "I won't be able to",
    "I'm not able to help",
    "I am not able to provide",
    "I can't provide",
    "I cannot provide",
    "I must decline",
    "I'm unable to",
    "I am unable to",
    "As an AI language model, I cannot",
    "That request violates",
    "I can't comply",
    "I cannot comply",
)
REFUSAL_SCAN_CHARS = 300
MAX_REQUEST_NUMBER = 10_000_000.0  # larger max_tokens, n or top_logprobs values count as this

_PUNCTUATION = string.punctuation + "“”‘’«»"
_QUOTES = ('"', "“", "”", "`")
_ASCII_DIGITS = "0123456789"
_WITHOUT_DIGITS = str.maketrans("", "", _ASCII_DIGITS)
ID_MASK = "<id>"  # what a record id becomes in the masked words
MAX_ID_SLOT_CHARS = 16  # an id counts this much slot text at most: its length is no payload (a UUID has 36)
_MIN_CASE_ID_CHARS = 8  # a word of letters alone is an id only this long or longer, with ...
_MIN_CASE_FLIPS = 4  # ... this many changes of letter case (dQwXkZpLmRt: 9; JavaScript, McDonald: 3; iPhone: 2),
_MAX_CHARS_PER_FLIP = 3  # ... at least one every 3 characters (clientTransferProhibited: 4 in 24, a name in code)
_ENTROPY_CHARS = 512
MAX_QUOTED_VALUE_CHARS = 40  # a quoted string this short is a slot value (a name); a longer one is a payload
_MAX_STEP_DIGITS = 18  # longer numbers are compared as text, never converted (int() refuses > 4,300 digits)
_NEAR = 100  # a prompt that moves no value of its template's last by more takes that prompt's place in memory
SLOT_BITS = 256  # linear-counting map of distinct slot values per template: ~5 % error up to a few hundred
CHARS_PER_TOKEN = 4.0  # for estimating tokens from text when a log lacks usage, or to discount the app's text


def refusal_matcher() -> MultiMatcher:
    """One Hyperscan database of the refusal phrases (escaped literals, caseless, straight or curly apostrophes)."""
    return MultiMatcher(
        [Pattern(i, re.escape(p).replace("'", "['’]")) for i, p in enumerate(REFUSAL_PHRASES)],
        max_matches_per_pattern=1,
    )


@dataclass(frozen=True, slots=True)
class PromptShape:
    """What a prompt looks like once its variable parts are masked."""

    signature: int  # SimHash of the masked words: near-identical templates differ in few bits
    template: int  # exact hash of the masked words
    values: tuple[str, ...]  # numbers, single letters, ids with digits, short quoted strings (in order, at most 8)
    masked_chars: int
    entropy: float  # Shannon entropy of the prompt's characters, bits
    slot_chars: int = 0  # characters of the values and quoted strings: what the prompt adds to its template


def stable_hash(text: str) -> int:
    """A 64-bit hash that is the same in every process (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).digest(), "little")


@functools.lru_cache(maxsize=1 << 16)
def _word_hash(word: str) -> int:
    return stable_hash(word)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def simhash(words: list[str]) -> int:
    """Charikar's SimHash over word bigrams: similar word lists get signatures a few bits apart.

    Word hashes are cached; bigram hashes are mixed from them with the SplitMix64 finaliser, vectorised.
    """
    if not words:
        return 0
    hashes = np.fromiter((_word_hash(w) for w in words), dtype=np.uint64, count=len(words))
    if len(hashes) > 1:
        hashes = hashes[:-1] ^ (hashes[1:] * _GOLDEN)
        hashes ^= hashes >> np.uint64(30)
        hashes *= _MIX1
        hashes ^= hashes >> np.uint64(27)
        hashes *= _MIX2
        hashes ^= hashes >> np.uint64(31)
    bits = np.unpackbits(hashes.astype("<u8").view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
    majority = bits.sum(axis=0) * 2 > len(hashes)
    return int.from_bytes(np.packbits(majority, bitorder="little").tobytes(), "little")


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def char_entropy(text: str) -> float:
    """Shannon entropy (bits) of the text's UTF-8 bytes."""
    if not text:
        return 0.0
    counts = np.bincount(np.frombuffer(text.encode("utf-8", "replace"), dtype=np.uint8), minlength=1)
    probabilities = counts[counts > 0] / counts.sum()
    return float(-(probabilities * np.log2(probabilities)).sum())


def prompt_shape(text: str, max_chars: int = 2000, max_words: int = 64) -> PromptShape:
    """Mask quoted strings, numbers, single letters and record ids; hash what is left (linear, no regex).

    Only the first ``max_words`` words count: a template shows in its opening words, and long pasted documents
    cost no more than short prompts. A record id is masked whole (:func:`is_record_id`): until session 24 only its
    digits were, so the letters of a UUID, a hex ObjectId or an order code like ``ORD-7F3K9Q`` made every prompt a
    template of its own, and no template rule saw a scraper keyed by such ids (docs/anomaly.md).
    """
    text = text[:max_chars]
    for quote in _QUOTES[1:]:
        if quote in text:
            text = text.replace(quote, '"')
    pieces = text.split('"')
    words: list[str] = []
    values: list[str] = []
    slot_chars = 0
    for index, piece in enumerate(pieces):
        if len(words) >= max_words:
            break
        if index % 2 == 1 and index < len(pieces) - 1:
            words.append("<q>")
            slot_chars += len(piece)
            if len(piece) <= MAX_QUOTED_VALUE_CHARS and len(values) < 8:
                values.append(piece.lower().strip())
            continue
        lowered = piece.lower()
        written: list[str] | None = None  # the words as written, split only if a long word may be a base62 id
        for position, raw in enumerate(lowered.split(maxsplit=max_words)[:max_words]):
            token = raw.strip(_PUNCTUATION)
            if not token:
                continue
            if token.isdecimal() or (len(token) == 1 and token.isalpha()):
                words.append("<n>" if token.isdecimal() else "<l>")
                slot_chars += len(token)
                if len(values) < 8:
                    values.append(token)
                continue
            # a record id (is_record_id): a word with a digit (SKU HG-20400, a UUID, v2, 2024-01-05), or one whose
            # case flips like a base62 id's, read as written (lower-casing adds or removes no space: same positions)
            record_id = token.translate(_WITHOUT_DIGITS) != token
            if not record_id and len(token) >= _MIN_CASE_ID_CHARS and lowered != piece:
                written = written or piece.split(maxsplit=max_words)[:max_words]
                record_id = _case_id(written[position].strip(_PUNCTUATION))
            if record_id:
                words.append(ID_MASK)
                slot_chars += min(len(token), MAX_ID_SLOT_CHARS)
                if len(values) < 8:
                    values.append(token)
                continue
            words.append(token)
    del words[max_words:]
    masked = " ".join(words)
    return PromptShape(
        signature=simhash(words),
        template=stable_hash(masked),
        values=tuple(values),
        masked_chars=len(masked),
        entropy=char_entropy(text[:_ENTROPY_CHARS]),
        slot_chars=slot_chars,
    )


def is_record_id(token: str, cased: str = "") -> bool:
    """A word that names a record rather than says something: it holds an ASCII digit (``HG-20400``, a UUID, a hex
    ObjectId, ``ord-7f3k9q``, ``cus_nffrfeufnv2hib``, but also ``2024-01-05``, ``v2`` or ``gpt-4o``), or, as written
    (``cased``), it is at least 8 characters long and its letters change case at least 4 times and at least once
    every 3 characters, like a random base62 id without a digit (``dQwXkZpLmRt``; about one in seven of 11
    characters has none) and unlike a brand, a name or most names in code (``JavaScript``, ``McDonald``,
    ``iPhone``, ``clientTransferProhibited``; ``getElementById`` is taken for an id).

    ``token`` is the lower-cased word. An id is one value of its template, however its letters fall: masking only
    its digits left every id a word of its own."""
    return token.translate(_WITHOUT_DIGITS) != token or _case_id(cased)


def _case_id(word: str) -> bool:
    """A word as written that changes letter case like a random base62 id (see :func:`is_record_id`)."""
    if len(word) < _MIN_CASE_ID_CHARS or word[1:].islower() or word.isupper() or not word.isascii():
        return False  # most words: one case, or capitalised (one flip at most)
    flips = _case_flips(word)
    return flips >= _MIN_CASE_FLIPS and flips * _MAX_CHARS_PER_FLIP >= len(word)


def _case_flips(word: str) -> int:
    """How often the case changes between two adjacent letters (a separator between them breaks the pair)."""
    flips = 0
    for before, after in itertools.pairwise(word):
        if before.isalpha() and after.isalpha() and before.isupper() != after.isupper():
            flips += 1
    return flips


def steps_from_any(recent: tuple[PromptShape, ...], current: PromptShape) -> bool:
    """``current`` is an enumeration step from one of the ``recent`` prompts (what :func:`remember` keeps).

    From a prompt ``k`` places back (a template's last: ``k`` other templates used since), a step may be up to
    ``k + 1`` (at least 2): ``k + 1`` phrasings taken in turn, one value each, advance each phrasing by ``k + 1``."""
    return any(
        is_enumeration_step(previous, current, max_step=max(2, place + 1)) for place, previous in enumerate(recent)
    )


def remember(recent: tuple[PromptShape, ...], current: PromptShape, size: int) -> tuple[PromptShape, ...]:
    """What an entity remembers after ``current``, at most ``size`` prompts: the last prompt of each template used
    most recently, newest first, ``current`` first; then, in the places left, the prompt that each template's last
    jumped far from (a value more than 100 away, or one that cannot be compared, such as another word). That is
    another run of ids taken in turn on the template, or a decoy with a random id on it between two entries.

    Templates come first, so that a template used k other templates ago is k places back (a step from it may be up
    to k + 1), and so that it takes ``size`` decoys on different templates to push the entries' template out. A
    prompt near its template's last takes that one's place: a small number that varies (a count, a rating, a
    sensor reading), or a retried prompt, is judged against the previous one alone. A prompt with no values cannot
    be stepped from, so it takes no place (nor does it end a run of steps, as it did when only the previous prompt
    was remembered).
    """
    if not current.values:
        return recent
    templates, jumped_from, seen = [current], [], {current.template}
    own: PromptShape | None = None  # the newest prompt of current's template that current is far from
    for shape in recent:
        if shape.template == current.template:
            if own is None and not _near(shape, current):
                own = shape
        elif shape.template in seen:  # a template's second prompt: the one its last jumped from
            jumped_from.append(shape)
        else:
            seen.add(shape.template)
            templates.append(shape)
    if own is not None:
        jumped_from.insert(0, own)
    return tuple([*templates, *jumped_from][:size])


def is_enumeration_step(previous: PromptShape | None, current: PromptShape, max_step: int = 2) -> bool:
    """The same template as ``previous`` with exactly one value stepped forward: a number, a letter, or
    the trailing number of an id (``HG-20400`` → ``HG-20401``)."""
    if previous is None or previous.template != current.template or len(previous.values) != len(current.values):
        return False
    changed = [(a, b) for a, b in zip(previous.values, current.values, strict=True) if a != b]
    if len(changed) != 1:
        return False
    before, after = changed[0]
    change = _value_change(before, after)
    if _is_letter(before) and _is_letter(after):
        return change == 1
    return change is not None and 0 < change <= max_step


def _near(previous: PromptShape, current: PromptShape) -> bool:
    """``current`` moves no value of ``previous`` (its template's) by more than ``_NEAR``."""
    if len(previous.values) != len(current.values):
        return False
    for before, after in zip(previous.values, current.values, strict=True):
        if before != after:
            change = _value_change(before, after)
            if change is None or abs(change) > _NEAR:
                return False
    return True


def _is_letter(value: str) -> bool:
    return len(value) == 1 and value.isalpha()


def _value_change(before: str, after: str) -> int | None:
    """How far ``after`` is past ``before``: two letters, two numbers, or two ids' trailing numbers after the same
    stem (``HG-20400`` → ``HG-20401``: 1); ``None`` for values that are not such a pair."""
    if _is_letter(before) and _is_letter(after):
        return ord(after) - ord(before)
    if before.isdecimal() and after.isdecimal():
        tail_before, tail_after = before, after
    else:
        stem_before, stem_after = before.rstrip(_ASCII_DIGITS), after.rstrip(_ASCII_DIGITS)
        tail_before, tail_after = before[len(stem_before) :], after[len(stem_after) :]
        if stem_before != stem_after or not tail_before or not tail_after:
            return None
    if max(len(tail_before), len(tail_after)) > _MAX_STEP_DIGITS:
        return None
    return int(tail_after) - int(tail_before)


def slot_bit(values: tuple[str, ...]) -> int:
    """The bit of a template's distinct-value map that these slot values set."""
    return stable_hash("\x1f".join(values)) % SLOT_BITS


def distinct_estimate(bitmap: int) -> float:
    """Linear counting: distinct values from the share of bits still unset (saturates at ~1,400)."""
    unset = SLOT_BITS - bitmap.bit_count()
    return SLOT_BITS * math.log(SLOT_BITS / max(unset, 1))


def prompt_text(event: Event) -> str:
    """The new user input of this request (what the client chose to send now)."""
    return "\n".join(m.content for m in event.new_input() if m.role == "user" and m.content)


def context_tokens(event: Event) -> float:
    """Tokens the client sent beyond the application's own text (system prompt, tool list, retrieved documents).

    From the logged input tokens when there are any, else estimated from the input messages' text. A scraper
    plugs a value into a short template; a batch job that summarises or classifies sends the document with it.
    """
    if event.input_tokens is not None and event.input_tokens > 0:
        app_chars = len(event.system_instructions)
        app_chars += sum(len(m.content) for m in event.input_messages if m.role == "system")
        app_chars += sum(len(d.content) for d in event.retrieved_documents)
        app_chars += sum(len(t.name) + len(t.description) for t in event.tool_definitions)
        return max(0.0, event.input_tokens - app_chars / CHARS_PER_TOKEN)
    return sum(len(m.content) for m in event.input_messages if m.role != "system") / CHARS_PER_TOKEN


def request_number(event: Event, name: str) -> float | None:
    """A numeric request parameter, whatever type the gateway logged it as; ``None`` if absent or not a number."""
    value = event.request_params.get(name)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool | int | float) and math.isfinite(value):
        return float(value)
    return None


@dataclass(frozen=True, slots=True)
class EventSignals:
    """What the window features need from one event, computed once however many entities it counts for."""

    timestamp: float
    event_id: str
    input_tokens: int
    output_tokens: int
    context_tokens: float
    max_tokens: float
    error: bool
    blocked: bool
    refused: bool
    extraction: bool  # logprobs / top_logprobs or several choices: what model extraction asks for
    temperature: float | None
    ip: int | None
    user_agent: int | None
    primary: str
    shape: PromptShape | None


# A prompt-cache read is billed at about a tenth of an input token (Anthropic, Bedrock; OpenAI discounts cached input
# too): counted in full, a coding agent re-reading a 100,000-token cached context ten times a window would look like
# a denial of wallet. Cache writes (1.25x) and uncached tokens count in full.
CACHE_READ_WEIGHT = 0.1


def priced_input_tokens(event: Event) -> int:
    """The event's input tokens with those read from the prompt cache weighed at :data:`CACHE_READ_WEIGHT`: what the
    window's token sums (resource abuse, the day-scale spend) compare. An event whose log does not say counts in
    full."""
    total = max(0, event.input_tokens or 0)
    cached = min(total, max(0, event.cache_read_tokens or 0))
    return round(total - cached * (1.0 - CACHE_READ_WEIGHT))


def event_signals(event: Event, refusals: MultiMatcher, prompt_chars: int) -> EventSignals:
    prompt = prompt_text(event)
    completion = "\n".join(m.content for m in event.output_messages if m.content)[:REFUSAL_SCAN_CHARS]
    # Client-chosen numbers are bounded: one max_tokens of 1e308 would make a window's sum infinite and poison the
    # baselines its windows teach (the partition's shared peer baseline included).
    logprobs = min(request_number(event, "logprobs") or 0.0, MAX_REQUEST_NUMBER)
    top_logprobs = min(request_number(event, "top_logprobs") or 0.0, MAX_REQUEST_NUMBER)
    choices = min(request_number(event, "n") or 1.0, MAX_REQUEST_NUMBER)
    max_tokens = request_number(event, "max_tokens") or request_number(event, "max_completion_tokens") or 0.0
    max_tokens = min(max_tokens, MAX_REQUEST_NUMBER)
    identity = event.identity
    return EventSignals(
        timestamp=event.timestamp,
        event_id=event.id,
        input_tokens=priced_input_tokens(event),
        output_tokens=max(0, event.output_tokens or 0),
        context_tokens=context_tokens(event),
        max_tokens=max(0.0, max_tokens),
        error=event.outcome == "failure",
        blocked=any(g.action == "blocked" for g in event.guardrails),
        refused=bool(completion) and bool(refusals.scan(completion)),
        extraction=logprobs > 0 or top_logprobs > 0 or choices > 1,
        temperature=request_number(event, "temperature"),
        ip=small_hash(identity.source_ip) if identity.source_ip else None,
        user_agent=small_hash(identity.user_agent) if identity.user_agent else None,
        primary=identity.key(),
        shape=prompt_shape(prompt, prompt_chars) if prompt else None,
    )


def small_hash(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "replace"))


class Moments:
    """Welford mean and variance in O(1) memory."""

    __slots__ = ("m2", "mean", "n")

    def __init__(self, n: int = 0, mean: float = 0.0, m2: float = 0.0) -> None:
        self.n, self.mean, self.m2 = n, mean, m2

    def add(self, value: float) -> None:
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (value - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.n) if self.n > 1 else 0.0

    def cv(self, min_n: int = 3) -> float:
        """Coefficient of variation; 1.0 (no regularity shown) with fewer than ``min_n`` values or a zero mean."""
        return self.std / self.mean if self.n >= min_n and self.mean > 0 else 1.0

    def dump(self) -> list[float]:
        return [self.n, self.mean, self.m2]


def _add_capped(values: set[Any], value: Any, cap: int) -> None:
    if len(values) < cap:
        values.add(value)


@dataclass(frozen=True, slots=True)
class Limits:
    """The caps of a window accumulator (from :class:`AnomalyConfig`)."""

    templates: int
    distinct: int
    event_ids: int
    window_seconds: float


@dataclass(frozen=True, slots=True)
class TemplateBurst:
    """One window's most used template with what the enumeration rule reads of it, or two adjacent windows' merged
    (a burst cut in two by a window boundary)."""

    signature: int
    on_template: int  # requests on the template
    values: int  # linear-counting map of its distinct slot values
    prompts: int  # prompts in the window(s)
    requests: int
    context: float  # context tokens, summed
    slot_chars: int  # slot text characters, summed
    start: float  # start of the (first) window
    first_ts: float
    last_ts: float

    @property
    def template_share(self) -> float:
        return self.on_template / self.prompts if self.prompts else 0.0

    @property
    def distinct_share(self) -> float:
        return min(1.0, distinct_estimate(self.values) / self.on_template) if self.on_template else 0.0

    @property
    def context_tokens(self) -> float:
        return self.context / max(1, self.requests)

    @property
    def slot_chars_per_prompt(self) -> float:
        return self.slot_chars / max(1, self.prompts)

    def then(self, later: TemplateBurst, max_bits: int) -> TemplateBurst | None:
        """This burst continued by ``later`` (the next window's), if both are on the same template."""
        if hamming(self.signature, later.signature) > max_bits:
            return None
        return TemplateBurst(
            signature=later.signature,
            on_template=self.on_template + later.on_template,
            values=self.values | later.values,
            prompts=self.prompts + later.prompts,
            requests=self.requests + later.requests,
            context=self.context + later.context,
            slot_chars=self.slot_chars + later.slot_chars,
            start=self.start,
            first_ts=self.first_ts,
            last_ts=later.last_ts,
        )

    def dump(self) -> list[Any]:
        return [
            f"{self.signature:016x}",
            self.on_template,
            f"{self.values:x}",
            self.prompts,
            self.requests,
            self.context,
            self.slot_chars,
            self.start,
            self.first_ts,
            self.last_ts,
        ]

    @classmethod
    def load(cls, data: list[Any]) -> TemplateBurst:
        signature, on_template, values, prompts, requests, context, slot_chars, start, first_ts, last_ts = data
        return cls(
            int(signature, 16),
            int(on_template),
            int(values, 16),
            int(prompts),
            int(requests),
            float(context),
            int(slot_chars),
            float(start),
            float(first_ts),
            float(last_ts),
        )


def template_bit(signature: int) -> int:
    """The bit of a window's distinct-template map that this template signature sets."""
    return 1 << (signature % SLOT_BITS)


class WindowAccumulator:
    """One identity's counts in one window; every container is capped, so memory is fixed per identity."""

    __slots__ = (
        "blocked",
        "context",
        "entropy",
        "enumeration",
        "errors",
        "event_ids",
        "extraction",
        "first_ts",
        "gaps",
        "input_tokens",
        "ips",
        "last_ts",
        "max_tokens",
        "output_tokens",
        "primaries",
        "prompts",
        "refusals",
        "requests",
        "slot_chars",
        "slot_values",
        "start",
        "step_output_tokens",
        "temperatures",
        "template_bits",
        "template_evictions",
        "templates",
        "temps",
        "user_agents",
        "work_gaps",
    )

    def __init__(self, start: float) -> None:
        self.start = start
        self.requests = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.context = 0.0
        self.max_tokens = 0.0
        self.errors = 0
        self.blocked = 0
        self.refusals = 0
        self.prompts = 0
        self.entropy = 0.0
        self.slot_chars = 0
        self.templates: dict[int, int] = {}
        self.slot_values: dict[int, int] = {}  # template signature -> linear-counting map of its slot values
        self.template_evictions = 0
        self.template_bits = 0  # linear-counting map of the distinct templates, for when counters were reused
        self.ips: set[int] = set()
        self.user_agents: set[int] = set()
        self.primaries: set[str] = set()  # identity keys seen under this entity (an IP or key may serve many)
        self.extraction = 0
        self.temperatures = Moments()  # of requests with extraction parameters
        self.temps: set[float] = set()
        self.enumeration = 0
        self.step_output_tokens = 0  # the output tokens of the enumeration steps: what they took
        self.gaps = Moments()
        # ``gaps`` but for one that spans a whole empty window: a rest, not an inter-arrival, to the slow rule's
        # enumeration path (the first request after a rest is the only one whose gap can span one). Kept apart, not
        # subtracted later: taking a 600-s rest out of a mean of near-zero gaps cancels catastrophically
        self.work_gaps = Moments()
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.event_ids: list[str] = []

    def add(self, signals: EventSignals, *, enumeration: bool, previous_ts: float | None, limits: Limits) -> None:
        """Count one event; ``previous_ts`` is this entity's previous event time (maybe in an earlier window)."""
        self.requests += 1
        self.input_tokens += signals.input_tokens
        self.output_tokens += signals.output_tokens
        self.context += signals.context_tokens
        self.max_tokens += signals.max_tokens
        self.errors += signals.error
        self.blocked += signals.blocked
        self.refusals += signals.refused
        shape = signals.shape
        if shape is not None:
            self.prompts += 1
            self.entropy += shape.entropy
            self.slot_chars += shape.slot_chars
            self._add_template(shape.signature, limits.templates)
            if shape.values:
                bitmap = self.slot_values.get(shape.signature, 0)
                self.slot_values[shape.signature] = bitmap | (1 << slot_bit(shape.values))
        if signals.ip is not None:
            _add_capped(self.ips, signals.ip, limits.distinct)
        if signals.user_agent is not None:
            _add_capped(self.user_agents, signals.user_agent, limits.distinct)
        _add_capped(self.primaries, signals.primary, limits.distinct)
        if signals.extraction:
            self.extraction += 1
            if signals.temperature is not None:
                self.temperatures.add(signals.temperature)
                _add_capped(self.temps, round(signals.temperature, 2), limits.distinct)
        if enumeration:
            self.enumeration += 1
            self.step_output_tokens += signals.output_tokens
        if previous_ts is not None:
            gap = min(max(0.0, signals.timestamp - previous_ts), limits.window_seconds)
            self.gaps.add(gap)
            if previous_ts >= self.start - limits.window_seconds:
                self.work_gaps.add(gap)
        if self.first_ts is None:
            self.first_ts = signals.timestamp
        self.last_ts = signals.timestamp if self.last_ts is None else max(self.last_ts, signals.timestamp)
        if len(self.event_ids) < limits.event_ids:
            self.event_ids.append(signals.event_id)

    def _add_template(self, signature: int, max_templates: int) -> None:
        """Count a prompt on its template, in at most ``max_templates`` counters (Space-Saving, Metwally et al. 2005):
        a template not counted takes the place of the least counted one and inherits its count. Any template with
        more than 1 / ``max_templates`` of the window's prompts is therefore counted, whatever came first (a scraper
        opening each window with other prompts cannot push its own out), and over-counted by at most that share."""
        templates = self.templates
        if signature in templates:
            templates[signature] += 1
            return
        self.template_bits |= template_bit(signature)
        if len(templates) < max_templates:
            templates[signature] = 1
            return
        least = min(templates, key=templates.__getitem__)  # the first of the least counted, in insertion order
        templates[signature] = templates.pop(least) + 1
        self.slot_values.pop(least, None)  # the newcomer's values start afresh
        self.template_evictions += 1

    def distinct_templates(self) -> float:
        """How many templates the window's prompts used: counted while the counters sufficed, estimated once one was
        reused (a template that came back after losing its counter is still one template)."""
        if not self.template_evictions:
            return float(len(self.templates))
        return max(float(len(self.templates)), distinct_estimate(self.template_bits))

    def template_burst(self, max_bits: int) -> TemplateBurst | None:
        """The most used template (signatures within ``max_bits`` of it counting as the same) and its values."""
        if not self.templates:
            return None
        top = max(self.templates, key=lambda s: (self.templates[s], -s))
        near = [s for s in self.templates if hamming(s, top) <= max_bits]
        bitmap = 0
        for signature in near:
            bitmap |= self.slot_values.get(signature, 0)
        return TemplateBurst(
            signature=top,
            on_template=sum(self.templates[s] for s in near),
            values=bitmap,
            prompts=self.prompts,
            requests=self.requests,
            context=self.context,
            slot_chars=self.slot_chars,
            start=self.start,
            first_ts=self.start if self.first_ts is None else self.first_ts,
            last_ts=self.start if self.last_ts is None else self.last_ts,
        )

    def features(self, template_hamming: int) -> dict[str, float]:
        """The window's feature vector (names in :data:`FEATURES`)."""
        requests = max(1, self.requests)
        prompts = max(1, self.prompts)
        tokens = self.input_tokens + self.output_tokens
        distinct_templates = self.distinct_templates()
        burst = self.template_burst(template_hamming)
        return {
            "requests": float(self.requests),
            "input_tokens": float(self.input_tokens),
            "output_tokens": float(self.output_tokens),
            "tokens": float(tokens),
            "tokens_per_request": tokens / requests,
            "output_input_ratio": self.output_tokens / max(1, self.input_tokens),
            "max_tokens_requested": self.max_tokens / requests,
            "template_reuse": burst.template_share if burst else 0.0,
            "prompt_diversity": distinct_templates / prompts if self.prompts else 0.0,
            "prompt_entropy": self.entropy / prompts,
            "refusal_rate": self.refusals / requests,
            "guardrail_block_rate": self.blocked / requests,
            "error_rate": self.errors / requests,
            "distinct_ips": float(len(self.ips)),
            "distinct_user_agents": float(len(self.user_agents)),
            "distinct_primaries": float(len(self.primaries)),
            "extraction_param_rate": self.extraction / requests,
            "extraction_temperature_std": self.temperatures.std,
            "extraction_distinct_temperatures": float(len(self.temps)),
            "enumeration_rate": self.enumeration / prompts if self.prompts else 0.0,
            "interarrival_cv": self.gaps.cv(),
            "template_requests": float(burst.on_template) if burst else 0.0,
            "slot_distinct_share": burst.distinct_share if burst else 0.0,
            "context_tokens": self.context / requests,
            "slot_chars": self.slot_chars / prompts,
        }

    def interarrival_cv_without_rest(self) -> float:
        """The inter-arrival CV with the rest before this window (if any) left out: how regular the work is."""
        return self.work_gaps.cv()

    def dump(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "counts": [
                self.requests,
                self.input_tokens,
                self.output_tokens,
                self.max_tokens,
                self.errors,
                self.blocked,
                self.refusals,
                self.prompts,
                self.entropy,
                self.template_evictions,
                self.extraction,
                self.enumeration,
                self.context,
                self.slot_chars,
            ],
            "templates": [[f"{s:016x}", n] for s, n in self.templates.items()],
            "slot_values": [[f"{s:016x}", f"{bitmap:x}"] for s, bitmap in self.slot_values.items()],
            "template_bits": f"{self.template_bits:x}",
            "ips": sorted(self.ips),
            "user_agents": sorted(self.user_agents),
            "primaries": sorted(self.primaries),
            "temperatures": self.temperatures.dump(),
            "temps": sorted(self.temps),
            "gaps": self.gaps.dump(),
            "work_gaps": self.work_gaps.dump(),
            "step_output_tokens": self.step_output_tokens,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "event_ids": list(self.event_ids),
        }

    @classmethod
    def load(cls, data: dict[str, Any]) -> WindowAccumulator:
        window = cls(float(data["start"]))
        (
            window.requests,
            window.input_tokens,
            window.output_tokens,
            window.max_tokens,
            window.errors,
            window.blocked,
            window.refusals,
            window.prompts,
            window.entropy,
            window.template_evictions,
            window.extraction,
            window.enumeration,
            window.context,
            window.slot_chars,
        ) = data["counts"]
        window.templates = {int(s, 16): int(n) for s, n in data["templates"]}
        window.slot_values = {int(s, 16): int(bitmap, 16) for s, bitmap in data["slot_values"]}
        # absent from checkpoints of earlier code, which kept no map: the templates it counted
        bits = data.get("template_bits")
        counted = functools.reduce(operator.or_, map(template_bit, window.templates), 0)
        window.template_bits = int(bits, 16) if bits is not None else counted
        window.ips, window.user_agents = set(data["ips"]), set(data["user_agents"])
        window.primaries = set(data["primaries"])
        window.temperatures = Moments(*data["temperatures"])
        window.temps = set(data["temps"])
        window.gaps = Moments(*data["gaps"])
        # absent from checkpoints of earlier code: no rest known, none left out
        window.work_gaps = Moments(*data["work_gaps"]) if "work_gaps" in data else Moments(*data["gaps"])
        # absent from checkpoints of earlier code, which took the steps' share of the window's output tokens
        estimate = window.output_tokens * window.enumeration // max(1, window.requests)
        window.step_output_tokens = int(data.get("step_output_tokens", estimate))
        window.first_ts, window.last_ts = data["first_ts"], data["last_ts"]
        window.event_ids = list(data["event_ids"])
        return window
