"""Labelled multi-user LLM traffic over event time, for measuring the anomaly detectors.

Benign traffic: office workers in several time zones with diurnal, weekday patterns and clustered sessions,
heavy legitimate users, a few apps that ask for log-probabilities, occasional notebook bursts, and nightly batch
jobs (regular, templated automated traffic: the hard negative). Attackers: a high-volume scraper, a low-and-slow
scraper under any rate limit, a distributed campaign (several keys sharing one template), a model extractor
(logprobs, temperature sweeps, enumeration) and a denial-of-wallet client (huge contexts and max_tokens).

Everything is drawn from one ``random.Random(seed)``: the same arguments give the same events and labels.
"""

from __future__ import annotations

import ipaddress
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import msgspec

from app.traffic.render import RENDERERS, round_trip
from detectors.event import Event, GuardrailVerdict, Identity, Message

ATTACK_KINDS: tuple[str, ...] = ("scraper", "slow_scraper", "campaign", "extractor", "denial_of_wallet")
# The alert category each attack kind should raise.
EXPECTED_CATEGORY: dict[str, str] = {
    "scraper": "scraping",
    "slow_scraper": "scraping",
    "campaign": "scraping",
    "extractor": "model_extraction",
    "denial_of_wallet": "resource_abuse",
}
DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC).timestamp()  # a Monday, 00:00 UTC
HOUR = 3600.0
DAY = 24 * HOUR

_VOCABULARY = (
    "invoice customer contract policy report quarterly budget forecast meeting agenda summary draft email "
    "proposal strategy roadmap feature release bug incident outage latency database query index schema "
    "migration deployment kubernetes cluster network firewall access token password onboarding training "
    "compliance audit privacy retention vendor supplier pricing discount renewal churn revenue margin hiring "
    "candidate interview feedback review performance goal metric dashboard chart table spreadsheet formula "
    "python function class test coverage refactor library dependency upgrade security patch ticket escalation "
    "translation french german spanish marketing campaign slogan blog article newsletter tweet press release"
)
_WORDS = tuple(_VOCABULARY.split(" "))
_ASKS = (
    "Summarise this {a} for the {b} team",
    "Write a short {a} about {b}",
    "What are the main risks in our {a} {b}?",
    "Explain the difference between {a} and {b} in simple terms",
    "Draft a polite reply to the customer about the {a}",
    "Fix this {a} code so the {b} works",
    "Give me three ideas for a {a} {b}",
    "Translate the following {a} note to {b}",
    "Rewrite this {a} to sound more professional",
    "How do I configure {a} for {b}?",
    "List the action items from this {a} {b}",
    "Create a checklist for the {a} {b}",
)
_USER_AGENTS = ("Mozilla/5.0 ChatUI/3.2", "openai-python/1.54.0", "litellm/1.50.2", "Mozilla/5.0 Copilot/2.1")
_TIMEZONES = (-8.0, -5.0, 0.0, 1.0, 2.0, 5.5, 8.0, 9.0)
_MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet")
_REFUSAL = "I'm sorry, but I can't help with that request."


@dataclass(frozen=True, slots=True)
class Label:
    """Ground truth for one attacking identity (``identity`` is :meth:`Identity.key` of the simulated events; the
    labels file names it as the log does, see :func:`labels_document`)."""

    identity: str
    kind: str
    start: float
    end: float
    api_key_hash: str | None = None
    source_ip: str | None = None
    campaign: str | None = None


@dataclass(slots=True)
class Simulation:
    events: list[Event]
    labels: list[Label]
    benign_identities: list[str]
    start: float
    end: float

    @property
    def days(self) -> float:
        return (self.end - self.start) / DAY


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    hours: float = 48.0
    benign_users: int = 200
    attackers: dict[str, int] = field(default_factory=dict)
    seed: int = 0
    start: float = DEFAULT_START
    heavy_share: float = 0.1  # benign users who use the model all day
    logprob_app_share: float = 0.05  # benign users whose app asks for logprobs (classification confidence)
    burst_probability: float = 0.04  # per benign user and day: a notebook loop of tens of requests
    batch_jobs: int | None = None  # default: one per 50 benign users (at least one)
    campaign_size: int = 8  # keys per distributed campaign


class _Builder:
    """Collects events; shared helpers for the benign and attacker generators."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.end = config.start + config.hours * HOUR
        self.events: list[Event] = []
        self.attacker_addresses: set[str] = set()

    def attacker_address(self, drawn: str) -> str:
        """``drawn``, or the next address no other attacker has: attackers stay apart in formats that log no
        credential (OTel), where the address is the identity."""
        address = ipaddress.ip_address(drawn)
        while str(address) in self.attacker_addresses:
            address += 1
        self.attacker_addresses.add(str(address))
        return str(address)

    def add(
        self,
        timestamp: float,
        identity: Identity,
        prompt: str,
        *,
        input_tokens: int,
        output_tokens: int,
        params: dict[str, float | int | bool | str] | None = None,
        completion: str = "Here is what you asked for.",
        outcome: str = "success",
        blocked: bool = False,
    ) -> None:
        if not self.config.start <= timestamp < self.end:
            return
        rng = self.rng
        self.events.append(
            Event(
                id="",
                timestamp=round(timestamp, 3),
                dataset="simulated",
                provider="openai",
                operation="chat",
                request_model=_MODELS[len(prompt) % len(_MODELS)],
                response_model=_MODELS[len(prompt) % len(_MODELS)],
                finish_reasons=["stop"],
                input_tokens=input_tokens,
                output_tokens=output_tokens if outcome == "success" else 0,
                input_messages=[Message(role="user", content=prompt)],
                output_messages=[Message(role="assistant", content=completion)] if outcome == "success" else [],
                request_params=params or {},
                identity=identity,
                duration_ms=round(200 + output_tokens * rng.uniform(8, 20), 1),
                outcome=outcome,  # type: ignore[arg-type]
                error_code="rate_limit_exceeded" if outcome == "failure" else None,
                guardrails=[GuardrailVerdict(source="gateway", action="blocked", categories=["policy"])]
                if blocked
                else [],
            )
        )

    def benign_prompt(self) -> str:
        rng = self.rng
        ask = rng.choice(_ASKS).format(a=rng.choice(_WORDS), b=rng.choice(_WORDS))
        if rng.random() < 0.4:
            ask += ": " + " ".join(rng.choices(_WORDS, k=rng.randint(8, 60)))
        return ask

    def tokens(self, median: float, sigma: float = 0.8, cap: int = 60_000) -> int:
        return max(1, min(cap, int(self.rng.lognormvariate(math.log(median), sigma))))


def _office_ips(builder: _Builder, users: int) -> list[str]:
    """Source IPs: offices of 3-20 people behind one NAT address, and remote workers with their own."""
    rng = builder.rng
    ips: list[str] = []
    office = 0
    while len(ips) < users:
        if rng.random() < 0.3:
            ips.append(f"198.51.{rng.randint(0, 255)}.{rng.randint(1, 254)}")
            continue
        office += 1
        ips.extend([f"203.0.{office % 256}.{10 + office // 256}"] * rng.randint(3, 20))
    return ips[:users]


def _benign_users(builder: _Builder) -> list[str]:
    config, rng = builder.config, builder.rng
    ips = _office_ips(builder, config.benign_users)
    keys = []
    for index in range(config.benign_users):
        identity = Identity(
            user_id=f"user-{config.seed}-{index:05d}",
            api_key_hash=f"key-u{config.seed}-{index:05d}",
            source_ip=ips[index],
            user_agent=rng.choice(_USER_AGENTS),
        )
        keys.append(identity.key())
        heavy = rng.random() < config.heavy_share
        _benign_user(builder, identity, heavy=heavy, logprobs=rng.random() < config.logprob_app_share)
    return keys


def _benign_user(builder: _Builder, identity: Identity, *, heavy: bool, logprobs: bool) -> None:
    config, rng = builder.config, builder.rng
    offset = rng.choice(_TIMEZONES)
    rate = rng.uniform(15, 40) if heavy else rng.lognormvariate(math.log(3), 0.6)  # requests per work hour
    day_start, day_end = rng.uniform(8, 10), rng.uniform(16.5, 19)
    temperature = rng.choice((0.2, 0.7, 1.0))
    params: dict[str, float | int | bool | str] = {"temperature": temperature}
    if logprobs:
        params = {"temperature": 0.0, "logprobs": True, "top_logprobs": 5, "max_tokens": 5}
    hour = math.floor(config.start / HOUR) * HOUR
    while hour < builder.end:
        local = (hour / HOUR + offset) % 24
        weekday = datetime.fromtimestamp(hour + offset * HOUR, tz=UTC).weekday()
        factor = 1.0 if day_start <= local < day_end else 0.05
        if weekday >= 5:
            factor *= 0.1
        count = _poisson(rng, rate * factor)
        anchors = [hour + rng.uniform(0, HOUR) for _ in range(max(1, math.ceil(count / 4)))]
        for _ in range(count):
            timestamp = rng.choice(anchors) + rng.expovariate(1 / 90)
            _benign_request(builder, timestamp, identity, params, heavy)
        if local // 1 == 14 and weekday < 5 and rng.random() < config.burst_probability:
            _burst(builder, hour + rng.uniform(0, HOUR), identity)
        hour += HOUR


def _benign_request(
    builder: _Builder, timestamp: float, identity: Identity, params: dict[str, float | int | bool | str], heavy: bool
) -> None:
    rng = builder.rng
    refused = rng.random() < 0.01
    builder.add(
        timestamp,
        identity,
        builder.benign_prompt(),
        input_tokens=builder.tokens(2500 if heavy else 300),
        output_tokens=builder.tokens(450),
        params=params,
        completion=_REFUSAL if refused else "Sure, here is a summary of the main points.",
        outcome="failure" if rng.random() < 0.01 else "success",
        blocked=rng.random() < 0.003,
    )


def _burst(builder: _Builder, start: float, identity: Identity) -> None:
    """A notebook loop: tens of requests on one template within minutes (legitimate, but looks automated)."""
    rng = builder.rng
    count, topic = rng.randint(20, 90), rng.choice(_WORDS)
    timestamp = start
    for index in range(count):
        timestamp += rng.uniform(2, 8)
        builder.add(
            timestamp,
            identity,
            f"Summarise {topic} document {index + 1} in three bullet points",
            input_tokens=builder.tokens(1500),
            output_tokens=builder.tokens(200),
            params={"temperature": 0.2},
        )


def _batch_jobs(builder: _Builder) -> list[str]:
    """Nightly classification jobs: regular cadence, one template, ticket ids ascending with gaps."""
    config, rng = builder.config, builder.rng
    count = config.batch_jobs if config.batch_jobs is not None else max(1, config.benign_users // 50)
    keys = []
    for index in range(count):
        identity = Identity(
            api_key_hash=f"svc-batch-{config.seed}-{index}",
            source_ip=f"10.20.{index // 250}.{index % 250 + 1}",
            user_agent="batch-worker/4.1 openai-python/1.54.0",
        )
        keys.append(identity.key())
        run_at, duration, cadence = rng.uniform(0, 23), rng.uniform(1, 2.5) * HOUR, rng.uniform(15, 40)
        ticket = rng.randint(10_000, 90_000)
        day = math.floor(config.start / DAY) * DAY
        while day < builder.end:
            timestamp, stop = day + run_at * HOUR, day + run_at * HOUR + duration
            while timestamp < stop:
                ticket += rng.randint(3, 60)
                text = " ".join(rng.choices(_WORDS, k=rng.randint(15, 50)))
                builder.add(
                    timestamp,
                    identity,
                    f'Classify support ticket #{ticket} as billing, technical, account or other: "{text}"',
                    input_tokens=builder.tokens(250, 0.3),
                    output_tokens=2,
                    params={"temperature": 0.0, "max_tokens": 5},
                    completion="technical",
                )
                timestamp += cadence * rng.uniform(0.95, 1.05)
            day += DAY
    return keys


def _attacker_identity(builder: _Builder, kind: str, index: int) -> Identity:
    rng = builder.rng
    return Identity(
        api_key_hash=f"key-{kind}-{builder.config.seed}-{index}",
        source_ip=builder.attacker_address(
            f"192.0.2.{rng.randint(1, 254)}"
            if kind != "campaign"
            else f"100.{rng.randint(64, 127)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        ),
        user_agent=rng.choice(("python-requests/2.31.0", "Go-http-client/1.1", "openai-python/1.54.0")),
    )


def _attack_window(builder: _Builder, duration: float) -> tuple[float, float]:
    """Attacks start after a day of history (or after a third of a short simulation)."""
    config = builder.config
    earliest = config.start + min(DAY, config.hours * HOUR / 3)
    latest = max(earliest, builder.end - duration)
    start = builder.rng.uniform(earliest, latest)
    return start, min(builder.end, start + duration)


def _scraper(builder: _Builder, index: int) -> list[Label]:
    rng = builder.rng
    identity = _attacker_identity(builder, "scraper", index)
    start, end = _attack_window(builder, rng.uniform(2, 4) * HOUR)
    rate = rng.uniform(0.4, 1.5)  # requests per second
    timestamp, item = start, rng.randint(1, 5000)
    while timestamp < end:
        item += 1
        prompt = (
            f"Write the full product description for catalogue item {item}"
            if rng.random() < 0.5
            else f"Answer in detail: {builder.benign_prompt()}"
        )
        builder.add(
            timestamp, identity, prompt, input_tokens=builder.tokens(60, 0.3), output_tokens=builder.tokens(700, 0.3)
        )
        timestamp += rng.expovariate(rate)
    return [_label(identity, "scraper", start, end)]


def _slow_scraper(builder: _Builder, index: int) -> list[Label]:
    rng = builder.rng
    identity = _attacker_identity(builder, "slow_scraper", index)
    start, end = _attack_window(builder, min(24 * HOUR, builder.config.hours * HOUR / 2))
    interval = rng.uniform(70, 110)  # well under any per-minute rate limit
    timestamp, entry = start, rng.randint(100, 900)
    while timestamp < end:
        entry += 1
        builder.add(
            timestamp,
            identity,
            f"Give me the complete encyclopedia entry number {entry}, with all sections and references",
            input_tokens=builder.tokens(40, 0.2),
            output_tokens=builder.tokens(900, 0.3),
            params={"temperature": 0.0},
        )
        timestamp += interval * rng.uniform(0.9, 1.1)
    return [_label(identity, "slow_scraper", start, end)]


def _campaign(builder: _Builder, index: int) -> list[Label]:
    rng = builder.rng
    start, end = _attack_window(builder, rng.uniform(3, 6) * HOUR)
    labels = []
    for member in range(builder.config.campaign_size):
        identity = _attacker_identity(builder, "campaign", index * 1000 + member)
        mean_gap = rng.uniform(40, 120)
        timestamp = start + rng.uniform(0, 300)
        while timestamp < end:
            builder.add(
                timestamp,
                identity,
                f"Write a five-star customer review for listing #{rng.randint(1, 999_999)} "
                f'mentioning "{rng.choice(_WORDS)}"',
                input_tokens=builder.tokens(45, 0.2),
                output_tokens=builder.tokens(250, 0.3),
                params={"temperature": 1.0},
            )
            timestamp += rng.expovariate(1 / mean_gap)
        labels.append(_label(identity, "campaign", start, end, campaign=f"campaign-{builder.config.seed}-{index}"))
    return labels


def _extractor(builder: _Builder, index: int) -> list[Label]:
    rng = builder.rng
    identity = _attacker_identity(builder, "extractor", index)
    start, end = _attack_window(builder, rng.uniform(4, 8) * HOUR)
    temperatures = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
    timestamp, step = start, 0
    while timestamp < end:
        letter = chr(ord("a") + step % 26)
        prompt = (
            f"Complete the sentence with one word: the best word starting with {letter} is"
            if step % 2 == 0
            else f"Classify probe sample {step // 2} as positive or negative"
        )
        builder.add(
            timestamp,
            identity,
            prompt,
            input_tokens=builder.tokens(30, 0.2),
            output_tokens=builder.tokens(5, 0.3),
            params={
                "temperature": temperatures[step % len(temperatures)],
                "logprobs": True,
                "top_logprobs": 20,
                "n": rng.choice((1, 5)),
                "max_tokens": 1,
            },
            completion="word",
        )
        step += 1
        timestamp += rng.expovariate(1 / 20)
    return [_label(identity, "extractor", start, end)]


def _denial_of_wallet(builder: _Builder, index: int) -> list[Label]:
    rng = builder.rng
    identity = _attacker_identity(builder, "denial_of_wallet", index)
    start, end = _attack_window(builder, rng.uniform(2, 4) * HOUR)
    timestamp = start
    while timestamp < end:
        builder.add(
            timestamp,
            identity,
            f"Expand every point of the following into an exhaustive essay: {builder.benign_prompt()}",
            input_tokens=builder.tokens(40_000, 0.4, cap=120_000),
            output_tokens=builder.tokens(16_000, 0.4, cap=32_000),
            params={"max_tokens": 32_000, "temperature": 1.0},
        )
        timestamp += rng.expovariate(1 / 45)
    return [_label(identity, "denial_of_wallet", start, end)]


def _label(identity: Identity, kind: str, start: float, end: float, campaign: str | None = None) -> Label:
    return Label(
        identity=identity.key(),
        kind=kind,
        start=round(start, 3),
        end=round(end, 3),
        api_key_hash=identity.api_key_hash,
        source_ip=identity.source_ip,
        campaign=campaign,
    )


ATTACKERS: dict[str, Callable[[_Builder, int], list[Label]]] = {
    "scraper": _scraper,
    "slow_scraper": _slow_scraper,
    "campaign": _campaign,
    "extractor": _extractor,
    "denial_of_wallet": _denial_of_wallet,
}


def simulate(config: SimulationConfig) -> Simulation:
    """Generate the traffic of ``config``: events sorted by event time with deterministic ids, and labels."""
    unknown = set(config.attackers) - set(ATTACKERS)
    if unknown:
        raise ValueError(f"unknown attacker kinds {sorted(unknown)}; known: {', '.join(ATTACK_KINDS)}")
    builder = _Builder(config)
    benign = _benign_users(builder) + _batch_jobs(builder)
    labels: list[Label] = []
    for kind in ATTACK_KINDS:
        for index in range(config.attackers.get(kind, 0)):
            labels.extend(ATTACKERS[kind](builder, index))
    builder.events.sort(key=lambda e: (e.timestamp, e.identity.key()))
    for number, event in enumerate(builder.events):
        event.id = f"sim-{config.seed}-{number:08d}"
    return Simulation(builder.events, labels, benign, config.start, builder.end)


def parse_attackers(spec: str) -> dict[str, int]:
    """``"scraper=1,campaign=2"`` → ``{"scraper": 1, "campaign": 2}``; raises ``ValueError`` on bad input."""
    attackers: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, count = part.partition("=")
        kind = kind.strip()
        if kind not in ATTACKERS:
            raise ValueError(f"unknown attacker kind {kind!r}; known: {', '.join(ATTACK_KINDS)}")
        try:
            attackers[kind] = int(count) if count else 1
        except ValueError:
            raise ValueError(f"attacker count for {kind!r} must be an integer, not {count!r}") from None
        if attackers[kind] < 0:
            raise ValueError(f"attacker count for {kind!r} must not be negative")
    return attackers


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method (small means) or a rounded normal (large); ``random`` has no Poisson sampler."""
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, product, count = math.exp(-mean), rng.random(), 0
    while product > limit:
        count += 1
        product *= rng.random()
    return count


FORMATS: tuple[str, ...] = ("litellm", "openai", "bedrock", "otel", "mixed")


def identity_formats(events: list[Event], fmt: str, seed: int) -> dict[str, str]:
    """The log format of each identity (:meth:`Identity.key`) of ``events``.

    ``mixed`` gives each identity one format, so that it is one identity in the log too (the normalisers key the
    same caller differently per format), drawn from the seed and the identity among the formats that carry every
    request parameter the identity sends (Bedrock logs no ``logprobs``: an extractor logged there would lose its
    signal).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt != "mixed":
        return {event.identity.key(): fmt for event in events}
    first: dict[str, Event] = {}
    params: dict[str, dict[str, float | int | bool | str]] = {}
    for event in events:
        key = event.identity.key()
        first.setdefault(key, event)
        params.setdefault(key, {}).update(event.request_params)
    names = sorted(RENDERERS)
    formats = {}
    for key, event in first.items():
        probe = msgspec.structs.replace(event, request_params=params[key])
        carrying = [name for name in names if set(round_trip(probe, name)[0].request_params) >= set(params[key])]
        formats[key] = random.Random(f"{seed}:{key}").choice(carrying or names)
    return formats


def render_records(events: list[Event], fmt: str, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Source-format records for ``events`` (:mod:`app.traffic.render`); ``mixed`` picks a format per identity
    (:func:`identity_formats`)."""
    formats = identity_formats(events, fmt, seed)
    for event in events:
        yield RENDERERS[formats[event.identity.key()]](event)


def labels_document(simulation: Simulation, config: SimulationConfig, fmt: str) -> dict[str, Any]:
    """The labels file of ``simulation`` written in ``fmt``: each attacking identity with its kind, attack start and
    end, key, IP, campaign and log format, and the benign identities that sent traffic, each named as the
    normalisers read it back from its records (:func:`app.traffic.render.round_trip`), which is what a replay of
    the file alerts on."""
    formats = identity_formats(simulation.events, fmt, config.seed)
    logged: dict[str, Identity] = {}
    for event in simulation.events:
        key = event.identity.key()
        if key not in logged:
            logged[key] = round_trip(event, formats[key])[0].identity
    attackers = {}
    for label in simulation.labels:
        identity = logged[label.identity]
        named = replace(
            label, identity=identity.key(), api_key_hash=identity.api_key_hash, source_ip=identity.source_ip
        )
        attackers[named.identity] = {**asdict(named), "format": formats[label.identity]}
    return {
        "seed": config.seed,
        "format": fmt,
        "start": simulation.start,
        "end": simulation.end,
        "attackers": attackers,
        "benign_identities": [logged[key].key() for key in simulation.benign_identities if key in logged],
    }
