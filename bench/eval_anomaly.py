"""Detection rate, detection delay and false alerts of the anomaly detector on simulated labelled traffic.

``python -m bench.eval_anomaly`` simulates several days per seed (:mod:`app.traffic.simulate`), adds templated
traffic the simulator lacks (below), replays the events through :class:`detectors.anomaly.AnomalyDetector` in
batches, and reports per attacker kind whether it was alerted and how long after the attack started (event
time), plus false alerts per 1,000 benign identity-days. Thresholds are tuned on seeds 0-2 and reported on the
held-out seeds 10-12 (``docs/anomaly.md``).

Templated traffic added per seed (each identity rendered in one gateway format by :mod:`app.traffic.render` and
normalised back, so system prompts and token counts arrive as a real log carries them):

* ``short_scraper`` (attacker): a new identity sending 100-300 requests within 5-15 minutes on one template,
  with SKUs, account numbers or quoted person names, in sequence or shuffled, some through an app with a system
  prompt; ``short_scraper_alnum_ids``: the same with record ids that have letters in them (UUIDs, hex ObjectIds,
  base62 ids, Stripe-style ``cus_`` ids, order codes like ``ORD-7F3K9Q``: half the id lists since session 24);
* ``thin_campaign`` (attackers): 30-45 keys posting fake seller ratings, exactly 2 requests each per window
  for 2-4 hours (each key is below the campaign rule's 3 a window);
* ``rotating_user_ids`` (attacker): one key asking for product records by SKU every 3-8 s for 1-3 hours with a
  new user id (LiteLLM's ``end_user``) on every request;
* templated automation (benign): ``bulk_classifier`` (ticket ids with the quoted ticket text), ``bulk_summariser``
  (numbered documents sent as attachments: large input tokens), and ``catalogue_generator``, which writes
  product copy for consecutive SKUs with nothing but the SKU in the prompt: indistinguishable from a catalogue
  scraper by its traffic, so expected to alert (the trade-off of the enumeration rule, reported on its own);
  ``app_action``: a shopping app's "track my order" button, one templated prompt with the customer's order
  number, sent through the app's key for 200-600 customers, 1-2 clicks each, at 10-25 clicks a minute for an
  hour: indistinguishable from a distributed enumeration by its traffic, so expected to raise the
  distributed-enumeration rule (a shadow rule by default for that reason); ``logprob_classifier`` (since session 24):
  a nightly ticket-triage job on a service key, ticket ids in order (steps of 1-2) with each ticket's text quoted,
  ``top_logprobs: 5`` at temperature 0 for a calibrated confidence, a request every 20-40 s for 2 hours on each night
  the simulation has room for (the review's M7: it raised model extraction until session 24).

Traffic over about a day (session 24, the review's H3 and H4: nothing accumulated beyond one window), after the rest:

* attackers, each a new key running 16 hours under every window threshold: ``wallet_drain`` (12 requests a window of
  26-29k input and 1.5-2.5k output tokens: ~360,000 tokens a window, under the 400,000 of the resource-abuse rule),
  ``distiller`` (sequence-level distillation: diverse prompts, at most 145 requests a window, under the volume rule's
  150, ~2,000-token answers) and ``logprob_distiller`` (diverse prompts with ``top_logprobs: 20`` at one temperature,
  ~100 a window, no sweep);
* benign heavy traffic: ``chat_app`` (an application key with 400 end users from the simulation's start, ~110
  requests a window at its daytime peak, 1-2.5k tokens of retrieved context each: ~6,000 requests and ~12.5 M tokens
  a day), ``nightly_summariser`` (a key summarising documents for 5-6 hours every night from the start, ~80 a window
  of ~2,400-token documents: 2,300-3,000 requests and 6.6-8.6 M tokens a night) and ``chat_app_launch``, the chat
  application launched after the first day: a new key that spends like the heaviest identities at once, the same
  traffic as a new key drained by its thief (expected to alert, by design).

A false alert is one alert group (rule, subject, hour: what the alert grouper merges) that names no attacking
identity, key or IP. An attacker counts as detected by any anomaly alert naming it after its attack started.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import string
import sys
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace

from faker import Faker

from app.traffic.render import RENDERERS, round_trip
from app.traffic.simulate import ATTACK_KINDS, DAY, EXPECTED_CATEGORY, Label, SimulationConfig, simulate
from bench.eval_grouping import identity_names
from detectors.anomaly import AnomalyConfig, AnomalyDetector
from detectors.base import Detection, Findings
from detectors.campaigns import CampaignDetector, candidates_from_findings
from detectors.event import Event, Identity, Message

TUNING_SEEDS = (0, 1, 2)
HELD_OUT_SEEDS = (10, 11, 12)
HOUR = 3600.0
MINUTE = 60.0
SHORT_SCRAPER = "short_scraper"
SHORT_SCRAPER_ALNUM = "short_scraper_alnum_ids"  # the same, keyed by record ids with letters in them
THIN_CAMPAIGN = "thin_campaign"
ROTATING_USERS = "rotating_user_ids"
DAY_ATTACKS = {"wallet_drain": "resource_abuse", "distiller": "scraping", "logprob_distiller": "model_extraction"}
KINDS = (*ATTACK_KINDS, SHORT_SCRAPER, SHORT_SCRAPER_ALNUM, THIN_CAMPAIGN, ROTATING_USERS, *DAY_ATTACKS)
CATEGORY = {
    **EXPECTED_CATEGORY,
    **DAY_ATTACKS,
    SHORT_SCRAPER: "scraping",
    SHORT_SCRAPER_ALNUM: "scraping",
    THIN_CAMPAIGN: "scraping",
    ROTATING_USERS: "scraping",
}
BASE62 = string.ascii_letters + string.digits
# record ids with letters in them, as applications mint them: every one of them was a template of its own until
# session 24 (features.prompt_shape masked only their digits)
ALNUM_IDS = {
    "uuid": lambda rng: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    "objectid": lambda rng: f"{rng.getrandbits(96):024x}",
    "base62": lambda rng: "".join(rng.choices(BASE62, k=11)),
    "stripe": lambda rng: "cus_" + "".join(rng.choices(BASE62, k=14)),
    "order": lambda rng: "ORD-" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=6)),
}
AUTOMATION_KINDS = (
    "bulk_classifier",
    "bulk_summariser",
    "catalogue_generator",
    "app_action",
    "logprob_classifier",
    "chat_app",
    "nightly_summariser",
    "chat_app_launch",
)
# benign, but the same traffic as an attack: a catalogue scraper; a distributed enumeration (a shadow rule); a new key
# spending like the heaviest identities from its first day (a drained key)
BY_DESIGN = frozenset({"catalogue_generator", "app_action", "chat_app_launch"})
DAY_ATTACK_HOURS = 16.0
ASKS = (
    "Explain in detail",
    "Write a thorough answer about",
    "Give a step-by-step account of",
    "Discuss the trade-offs in",
    "Summarise what experts say about",
    "Answer as a domain expert",
)
APP_SYSTEM_PROMPT = (
    "You are Nova, the shopping assistant of Example Outdoor Supplies. Answer questions about products, prices, "
    "availability, orders and returns using the catalogue tools. Keep answers short and friendly, never discuss "
    "competitors, and hand over to a human agent when a customer asks for a refund above 300 euros."
)
SHORT_SCRAPER_TEMPLATES = (
    "Give the complete product description, price and stock level for SKU {id}. Answer in JSON.",
    "Return the full record of customer account {id}: name, email, postal address and last orders.",
    'Tell me everything you know about the person named "{name}", including employer and contact details.',
    "Print the complete text of section {id} of the internal pricing handbook, word for word.",
)


@dataclass(slots=True)
class SeedResult:
    seed: int
    events: int
    benign_identity_days: float
    false_alerts: int
    false_alert_rules: dict[str, int]
    detected: dict[str, list[float | None]]  # kind -> delay (s) per attacking identity, None when missed
    categories: dict[str, list[str]] = field(default_factory=dict)  # kind -> categories of its first alerts
    first_rules: dict[str, list[str]] = field(default_factory=dict)  # kind -> rule ids of its first alerts
    automation: dict[str, list[int]] = field(default_factory=dict)  # kind -> alert groups per identity
    automation_rules: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> rule -> alert groups


def involved(detection: Detection) -> set[str]:
    """Every identity, key and IP an alert names."""
    identity = detection.identity
    names = {identity.key(), *detection.related_users}
    if identity.api_key_hash:
        names.add(f"key:{identity.api_key_hash}")
    if identity.source_ip:
        names.add(f"ip:{identity.source_ip}")
    names.update(f"ip:{ip}" for ip in detection.related_ips)
    return names


class TemplatedTraffic:
    """Templated bursts the simulator lacks: short scrapers (attackers) and templated automation (benign).

    Each identity is rendered in one gateway format and normalised back; labels name the normalised identity.
    """

    def __init__(self, seed: int, start: float, end: float) -> None:
        self.rng = random.Random(f"templated-{seed}")
        # the shapes of record ids, drawn apart so that every other draw (and so every other request) is as before
        self.id_shapes = random.Random(f"templated-ids-{seed}")
        self.faker = Faker()
        self.faker.seed_instance(seed)
        self.seed, self.start, self.end = seed, start, end
        self.events: list[Event] = []
        self.labels: list[Label] = []
        self.automation: dict[str, str] = {}  # identity / key / ip -> automation kind

    def window(self, duration: float) -> float:
        """A start time after the first day (as the simulator's attacks), leaving room for ``duration``."""
        earliest = self.start + min(DAY, (self.end - self.start) / 3)
        return self.rng.uniform(earliest, max(earliest, self.end - duration))

    def emit(
        self, identity: Identity, requests: list[tuple[float, str, int, int, dict]], system: str, fmt: str = ""
    ) -> Identity:
        """Render every request of one identity in one format (``fmt``, else one drawn), normalise it back; returns
        the logged identity."""
        rng = self.rng
        fmt = fmt or rng.choice(sorted(RENDERERS))
        logged = identity
        for timestamp, prompt, input_tokens, output_tokens, params in requests:
            event = Event(
                id=f"tpl-{self.seed}-{len(self.events):07d}",
                timestamp=round(timestamp, 3),
                dataset="simulated",
                provider="openai",
                operation="chat",
                request_model="gpt-4o-mini",
                response_model="gpt-4o-mini",
                finish_reasons=["stop"],
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                system_instructions=system,
                input_messages=[Message(role="user", content=prompt)],
                output_messages=[Message(role="assistant", content="Here is the information you asked for.")],
                request_params=params,
                identity=identity,
                outcome="success",
            )
            normalised = round_trip(event, fmt)
            self.events.extend(normalised)
            logged = normalised[0].identity
        return logged

    def text_tokens(self, *texts: str) -> int:
        return max(1, round(sum(len(t) for t in texts) / 4 * self.rng.uniform(0.9, 1.1)))

    def ids(self, count: int) -> tuple[list[str], str]:
        """Distinct ids and their shape: sequential (60 %) or shuffled numbers, as SKUs (``HG-20400``), account
        numbers or section numbers; or (half the lists) record ids with letters in them, one of :data:`ALNUM_IDS`."""
        rng = self.rng
        first = rng.randint(1_000, 90_000)
        numbers = list(range(first, first + count)) if rng.random() < 0.6 else rng.sample(range(1, 10**6), count)
        prefix = "".join(rng.choices("ABCDEFGHJKLMNPRSTUVWXYZ", k=2))
        numeric = [f"{prefix}-{n}" for n in numbers] if rng.random() < 0.5 else [str(n) for n in numbers]
        if self.id_shapes.random() < 0.5:
            return numeric, "numeric"
        shape = self.id_shapes.choice(sorted(ALNUM_IDS))
        drawn: dict[str, None] = {}  # distinct, in the order drawn (a set's order is salted per process)
        while len(drawn) < count:
            drawn[ALNUM_IDS[shape](self.id_shapes)] = None
        return list(drawn), shape

    def short_scraper(self, index: int) -> None:
        rng = self.rng
        count, duration = rng.randint(100, 300), rng.uniform(5, 15) * MINUTE
        start = self.window(duration)
        template = rng.choice(SHORT_SCRAPER_TEMPLATES)
        if "{name}" in template:
            values, shape = [self.faker.unique.name() for _ in range(count)], "name"
        else:
            values, shape = self.ids(count)
        system = APP_SYSTEM_PROMPT if rng.random() < 0.5 else ""
        poisson, mean_gap = rng.random() < 0.5, duration / count
        requests, timestamp = [], start
        for value in values:
            prompt = template.format(id=value, name=value)
            requests.append((timestamp, prompt, self.text_tokens(system, prompt), rng.randint(20, 400), {}))
            timestamp += rng.expovariate(1 / mean_gap) if poisson else mean_gap * rng.uniform(0.4, 1.6)
        identity = Identity(
            user_id=f"cust-{rng.randint(10_000, 99_999)}" if system else None,
            api_key_hash=f"key-short-{self.seed}-{index}",
            source_ip=f"198.18.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            user_agent=rng.choice(("python-requests/2.31.0", "okhttp/4.12.0", "Go-http-client/1.1")),
        )
        logged = self.emit(identity, requests, system)
        kind = SHORT_SCRAPER_ALNUM if shape in ALNUM_IDS else SHORT_SCRAPER
        self.labels.append(Label(logged.key(), kind, start, timestamp, logged.api_key_hash, logged.source_ip))

    def thin_campaign(self, index: int) -> None:
        rng = self.rng
        windows = rng.randint(12, 24)  # 2-4 hours
        start = math.floor(self.window(windows * 10 * MINUTE) / (10 * MINUTE)) * 10 * MINUTE
        for member in range(rng.randint(30, 45)):
            identity = Identity(
                api_key_hash=f"key-thin-{self.seed}-{index}-{member}",
                source_ip=f"198.19.{index}.{member + 1}",
                user_agent="python-requests/2.31.0",
            )
            requests = []
            for slot in range(2 * windows):  # two per window, each in its own half
                timestamp = start + (slot + rng.random()) * 5 * MINUTE
                shop, word = rng.randint(1, 999_999), self.faker.word()
                prompt = f'Post a glowing seller rating for shop {shop} praising its "{word}"'
                requests.append((timestamp, prompt, self.text_tokens(prompt), rng.randint(150, 300), {}))
            logged = self.emit(identity, requests, "")
            self.labels.append(
                Label(
                    logged.key(),
                    THIN_CAMPAIGN,
                    start,
                    start + windows * 10 * MINUTE,
                    logged.api_key_hash,
                    logged.source_ip,
                    campaign=f"thin-{self.seed}-{index}",
                )
            )

    def rotating_user_ids(self, index: int) -> None:
        rng = self.rng
        duration = rng.uniform(1, 3) * HOUR
        start = self.window(duration)
        key, address = f"key-rotating-{self.seed}-{index}", f"198.20.{index}.{rng.randint(1, 254)}"
        fmt = rng.choice(sorted(RENDERERS))
        sku, timestamp = rng.randint(10_000, 90_000), start
        logged = None
        while timestamp < start + duration:
            sku += rng.randint(1, 3)
            prompt = f"Give the complete product description, price and stock level for SKU {sku}. Answer in JSON."
            identity = Identity(user_id=f"u-{rng.getrandbits(40):010x}", api_key_hash=key, source_ip=address)
            logged = self.emit(identity, [(timestamp, prompt, self.text_tokens(prompt), 300, {})], "", fmt)
            timestamp += rng.uniform(3, 8)
        assert logged is not None
        name = f"key:{logged.api_key_hash}" if logged.api_key_hash else f"ip:{logged.source_ip}"  # as the log has it
        self.labels.append(Label(name, ROTATING_USERS, start, timestamp, logged.api_key_hash, logged.source_ip))

    def app_action(self, index: int) -> None:
        """Customers of a shopping app pressing "track my order": many user ids through the app's key."""
        rng = self.rng
        start = self.window(HOUR)
        key, address = f"svc-shop-{self.seed}-{index}", f"10.40.{index}.{rng.randint(1, 254)}"
        fmt = rng.choice(sorted(RENDERERS))
        rate = rng.uniform(10, 25) / MINUTE
        customers = [f"cust-{rng.randint(10**6, 10**7)}" for _ in range(int(HOUR * rate / 1.5))]
        timestamp = start
        while timestamp < start + HOUR:
            customer = rng.choice(customers)
            order = 4_000_000 + int(customer.removeprefix("cust-")) % 999_983  # each customer's own order
            prompt = f"Where is my order #{order}? Give me the delivery status and the expected delivery date."
            identity = Identity(user_id=customer, api_key_hash=key, source_ip=address)
            logged = self.emit(
                identity, [(timestamp, prompt, self.text_tokens(prompt), 80, {})], APP_SYSTEM_PROMPT, fmt
            )
            for name in identity_names(logged):
                self.automation[name] = "app_action"
            timestamp += rng.expovariate(rate)

    def logprob_classifier(self, index: int) -> None:
        """A nightly ticket-triage job asking for log-probabilities (calibrated confidence): it walks its ticket ids in
        order, but each prompt quotes the ticket, so it is no enumeration of bare ids."""
        rng = self.rng
        start, ticket, requests = self.window(2 * HOUR), rng.randint(10_000, 90_000), []
        params = {"temperature": 0.0, "logprobs": True, "top_logprobs": 5, "max_tokens": 1}
        for night in range(3):
            timestamp = start + night * DAY
            while timestamp < min(start + night * DAY + 2 * HOUR, self.end):
                text = self.faker.paragraph(nb_sentences=3).replace('"', "")
                prompt = f'Classify support ticket #{ticket} into billing, bug, account or other. Ticket: "{text}"'
                requests.append((timestamp, prompt, self.text_tokens(prompt), 1, params))
                ticket += rng.choice((1, 1, 1, 2))
                timestamp += rng.uniform(20, 40)
        identity = Identity(
            api_key_hash=f"svc-logprob_classifier-{self.seed}-{index}",
            source_ip=f"10.30.{index}.{rng.randint(1, 254)}",
            user_agent="triage-job/1.4 openai-python/1.54.0",
        )
        logged = self.emit(identity, requests, "", rng.choice(("litellm", "openai")))  # formats that log logprobs
        for name in identity_names(logged):
            self.automation[name] = "logprob_classifier"

    def diverse_prompt(self) -> str:
        """A question of its own every time (the words of a sentence drawn afresh): no template to find."""
        sentence = self.faker.sentence(nb_words=self.rng.randint(6, 16)).rstrip(".")
        return f"{self.rng.choice(ASKS)}: {sentence}?"

    def capped_times(self, start: float, hours: float, per_window: float, cap: int) -> list[float]:
        """Poisson arrivals at ``per_window`` a 10-minute window for ``hours``, at most ``cap`` in any window (a
        client that keeps under a known threshold)."""
        rng, times, counts, timestamp = self.rng, [], Counter(), start
        while timestamp < min(start + hours * HOUR, self.end):
            window = int(timestamp // (10 * MINUTE))
            if counts[window] < cap:
                counts[window] += 1
                times.append(timestamp)
            timestamp += rng.expovariate(per_window / (10 * MINUTE))
        return times

    def day_attack(self, kind: str, index: int) -> None:
        """A new key taking, for ``DAY_ATTACK_HOURS``, what no window shows (the review's F1, C2 and B)."""
        rng = self.rng
        start = self.window(DAY_ATTACK_HOURS * HOUR)
        requests = []
        if kind == "wallet_drain":
            for timestamp in self.capped_times(start, DAY_ATTACK_HOURS, 12, 12):
                words = " ".join(rng.choices(("party", "term", "clause", "liability", "notice", "renewal"), k=30))
                prompt = f"Summarise the attached contract and list every obligation: {words}"
                params = {"max_tokens": 4096, "temperature": 0.3}
                requests.append((timestamp, prompt, rng.randint(26_000, 29_000), rng.randint(1_500, 2_500), params))
        elif kind == "distiller":
            for timestamp in self.capped_times(start, DAY_ATTACK_HOURS, 160, 145):
                params = {"max_tokens": 4096, "temperature": 0.7}
                requests.append(
                    (timestamp, self.diverse_prompt(), rng.randint(60, 250), rng.randint(1_500, 2_500), params)
                )
        else:
            params = {"temperature": 1.0, "logprobs": True, "top_logprobs": 20, "max_tokens": 1024}
            for timestamp in self.capped_times(start, DAY_ATTACK_HOURS, 100, 1_000):
                requests.append(
                    (timestamp, self.diverse_prompt(), rng.randint(60, 250), rng.randint(500, 1_100), params)
                )
        identity = Identity(
            api_key_hash=f"key-{kind}-{self.seed}-{index}",
            source_ip=f"198.21.{index}.{rng.randint(1, 254)}",
            user_agent="openai-python/1.54.0",
        )
        logged = self.emit(identity, requests, "", rng.choice(("litellm", "openai")))  # formats that log logprobs
        end = requests[-1][0] if requests else start
        self.labels.append(Label(logged.key(), kind, start, end, logged.api_key_hash, logged.source_ip))

    def chat_app(self, index: int, *, launch: bool = False) -> None:
        """An application key with 400 end users, busy in its daytime (07-19 UTC), each request with 1-2.5k tokens
        of retrieved context: from the simulation's start, or (``launch``) from a time after the first day."""
        rng = self.rng
        kind = "chat_app_launch" if launch else "chat_app"
        start = self.window(DAY) if launch else self.start
        key, address = f"svc-{kind}-{self.seed}-{index}", f"10.50.{index}.{rng.randint(1, 254)}"
        users = [f"member-{rng.randint(10**6, 10**7)}" for _ in range(400)]
        by_user: dict[str, list[tuple[float, str, int, int, dict]]] = defaultdict(list)
        timestamp = start
        while timestamp < self.end:
            hour = timestamp / HOUR % 24
            per_window = 10 + 100 * math.sin(math.pi * (hour - 7) / 12) if 7 <= hour < 19 else 10
            params = {"temperature": 0.7, "max_tokens": 1024}
            by_user[rng.choice(users)].append(
                (timestamp, self.diverse_prompt(), rng.randint(1_000, 2_500), rng.randint(150, 500), params)
            )
            timestamp += rng.expovariate(per_window / (10 * MINUTE))
        for user in sorted(by_user):
            identity = Identity(user_id=user, api_key_hash=key, source_ip=address, user_agent="chat-app/2.0")
            logged = self.emit(identity, by_user[user], APP_SYSTEM_PROMPT, "litellm")
            for name in identity_names(logged):
                self.automation[name] = kind

    def nightly_summariser(self, index: int) -> None:
        """A key summarising documents every night from the simulation's start: 5-6 hours at ~80 a window (Poisson,
        -20 to +20 % a night), each a ~2,400-token document with a random id; no enumeration, no regular cadence."""
        rng = self.rng
        requests, night = [], math.floor(self.start / DAY) * DAY
        while night < self.end:
            begin, hours, rate = night + rng.uniform(0, 2) * HOUR, rng.uniform(5, 6), 80 * rng.uniform(0.8, 1.2)
            for timestamp in self.capped_times(max(begin, self.start), hours, rate, 10**6):
                prompt = f"Summarise the attached document {uuid.UUID(int=rng.getrandbits(128))} in five bullet points"
                tokens = int(rng.lognormvariate(7.8, 0.3))
                requests.append((timestamp, prompt, tokens, rng.randint(200, 400), {"temperature": 0.2}))
            night += DAY
        identity = Identity(
            api_key_hash=f"svc-nightly_summariser-{self.seed}-{index}",
            source_ip=f"10.30.{index}.{rng.randint(1, 254)}",
            user_agent="batch-worker/4.1 openai-python/1.54.0",
        )
        logged = self.emit(identity, requests, "")
        for name in identity_names(logged):
            self.automation[name] = "nightly_summariser"

    def automation_job(self, kind: str, index: int) -> None:
        rng = self.rng
        duration, rate = rng.uniform(30, 90) * MINUTE, rng.uniform(0.12, 0.6)  # 72-360 requests per window
        start = self.window(duration)
        count = int(duration * rate)
        requests = []
        ticket = rng.randint(10_000, 90_000)
        skus, _ = self.ids(count)
        archive = self.faker.word()
        for number in range(count):
            timestamp = start + number / rate * rng.uniform(0.95, 1.05)
            if kind == "bulk_classifier":
                ticket += rng.randint(1, 40)
                text = self.faker.sentence(nb_words=rng.randint(15, 50))
                prompt = f'Classify support ticket #{ticket} as billing, technical, account or other: "{text}"'
                requests.append((timestamp, prompt, self.text_tokens(prompt), 2, {"temperature": 0.0, "max_tokens": 5}))
            elif kind == "bulk_summariser":
                prompt = f"Summarise attached document {number + 1} of the {archive} archive in three bullet points"
                attachment = int(rng.lognormvariate(7.3, 0.5))  # ~1,500 tokens: the document is an attachment
                requests.append((timestamp, prompt, attachment, rng.randint(80, 250), {"temperature": 0.2}))
            else:
                prompt = f"Write a 60-word marketing description for SKU {skus[number]} in our house style."
                requests.append((timestamp, prompt, self.text_tokens(prompt), rng.randint(70, 110), {}))
        identity = Identity(
            api_key_hash=f"svc-{kind}-{self.seed}-{index}",
            source_ip=f"10.30.{index}.{rng.randint(1, 254)}",
            user_agent="batch-worker/4.1 openai-python/1.54.0",
        )
        logged = self.emit(identity, requests, "")
        for name in identity_names(logged):
            self.automation[name] = kind


def templated_traffic(seed: int, start: float, end: float, short_scrapers: int) -> TemplatedTraffic:
    traffic = TemplatedTraffic(seed, start, end)
    for index in range(short_scrapers):
        traffic.short_scraper(index)
    traffic.thin_campaign(0)
    traffic.rotating_user_ids(0)
    for index, kind in enumerate(AUTOMATION_KINDS):
        if kind == "app_action":
            traffic.app_action(index)
        elif kind == "logprob_classifier":
            traffic.logprob_classifier(index)
        elif kind in ("chat_app", "chat_app_launch"):
            traffic.chat_app(index, launch=kind == "chat_app_launch")
        elif kind == "nightly_summariser":
            traffic.nightly_summariser(index)
        else:
            traffic.automation_job(kind, index)
    for index, kind in enumerate(DAY_ATTACKS):
        traffic.day_attack(kind, index)
    return traffic


def run_seed(
    seed: int, traffic: SimulationConfig, config: AnomalyConfig, short_scrapers: int = 2, batch_size: int = 500
) -> SeedResult:
    simulation = simulate(replace(traffic, seed=seed))
    templated = templated_traffic(seed, simulation.start, simulation.end, short_scrapers)
    labels = [*simulation.labels, *templated.labels]
    detector, campaigns = AnomalyDetector(config), CampaignDetector(config)  # per identity, then across
    detections: list[Detection] = []
    events = sorted([*simulation.events, *templated.events], key=lambda e: (e.timestamp, e.identity.key()))
    for offset in range(0, len(events), batch_size):
        batch = events[offset : offset + batch_size]
        findings = [Findings() for _ in batch]
        detections.extend(detector.detect(batch, findings))
        detections.extend(campaigns.detect(candidates_from_findings(batch, findings)))
    detections.extend(detector.flush())
    detections.extend(campaigns.flush())

    attacker_names: dict[str, str] = {}  # identity / key / ip -> attacking identity
    for label in labels:
        attacker_names[label.identity] = label.identity
        if label.api_key_hash:
            attacker_names[f"key:{label.api_key_hash}"] = label.identity
        if label.source_ip:
            attacker_names[f"ip:{label.source_ip}"] = label.identity
    first: dict[str, Detection] = {}
    false_groups: set[tuple[str, str, int]] = set()
    automation_groups: dict[str, set[tuple[str, str, int]]] = defaultdict(set)
    for detection in sorted(detections, key=lambda d: d.timestamp):
        names = involved(detection)
        hits = {attacker_names[name] for name in names if name in attacker_names}
        group = (detection.rule.id, detection.group_key or detection.identity.key(), int(detection.timestamp // HOUR))
        automation = {templated.automation[name] for name in names if name in templated.automation}
        if not hits and automation:
            for kind in automation:
                automation_groups[kind].add(group)
        elif not hits:
            false_groups.add(group)
        for identity in hits:
            first.setdefault(identity, detection)
    result = SeedResult(
        seed=seed,
        events=len(events),
        benign_identity_days=len(simulation.benign_identities) * simulation.days,
        false_alerts=len(false_groups),
        false_alert_rules=dict(sorted(Counter(rule for rule, _, _ in false_groups).items())),
        detected=defaultdict(list),
    )
    for label in labels:
        detection = first.get(label.identity)
        delay = None if detection is None else max(0.0, detection.timestamp - label.start)
        result.detected[label.kind].append(delay)
        if detection is not None:
            result.categories.setdefault(label.kind, []).append(detection.rule.category)
            result.first_rules.setdefault(label.kind, []).append(detection.rule.id)
    result.detected = dict(result.detected)
    for kind in AUTOMATION_KINDS:
        groups = automation_groups.get(kind, set())
        result.automation[kind] = [len(groups)]
        result.automation_rules[kind] = dict(sorted(Counter(rule for rule, _, _ in groups).items()))
    return result


def summarise(results: list[SeedResult]) -> dict[str, object]:
    """Per kind: identities detected, median and worst delay (minutes); false alerts per 1,000 identity-days."""
    kinds: dict[str, dict[str, object]] = {}
    for kind in KINDS:
        delays = [d for r in results for d in r.detected.get(kind, [])]
        found = [d for d in delays if d is not None]
        categories = sorted({c for r in results for c in r.categories.get(kind, [])})
        kinds[kind] = {
            "detected": f"{len(found)}/{len(delays)}",
            "median_delay_min": round(statistics.median(found) / 60, 1) if found else None,
            "max_delay_min": round(max(found) / 60, 1) if found else None,
            "alert_categories": categories,
            "expected_category": CATEGORY[kind],
            "first_rules": dict(Counter(rule for r in results for rule in r.first_rules.get(kind, []))),
        }
    automation = {
        kind: {
            "identities_alerted": f"{sum(1 for r in results for n in r.automation.get(kind, []) if n)}/"
            f"{sum(len(r.automation.get(kind, [])) for r in results)}",
            "alert_groups": dict(sum((Counter(r.automation_rules.get(kind, {})) for r in results), Counter())),
            "expected": "alerts (by design)" if kind in BY_DESIGN else "no alert",
        }
        for kind in AUTOMATION_KINDS
    }
    identity_days = sum(r.benign_identity_days for r in results)
    false_alerts = sum(r.false_alerts for r in results)
    return {
        "seeds": [r.seed for r in results],
        "events": sum(r.events for r in results),
        "kinds": kinds,
        "false_alerts": false_alerts,
        "benign_identity_days": round(identity_days, 1),
        "false_alerts_per_1000_identity_days": round(1000 * false_alerts / identity_days, 3) if identity_days else None,
        "false_alert_rules": dict(sum((Counter(r.false_alert_rules) for r in results), Counter())),
        "automation": automation,
    }


def _or_dash(value: object) -> object:
    """A table cell: ``-`` where there is no figure (no attacker of the kind was detected)."""
    return "-" if value is None else value


def markdown(title: str, summary: dict[str, object]) -> str:
    kinds = summary["kinds"]
    assert isinstance(kinds, dict)
    lines = [
        f"**{title}** (seeds {', '.join(map(str, summary['seeds']))}; {summary['events']:,} events)",
        "",
        "| attacker kind | detected | median delay (min) | worst delay (min) | alert category | first alert rule |",
        "|---|---|---|---|---|---|",
    ]
    for kind, row in kinds.items():
        first_rules = ", ".join(
            f"{rule.removeprefix('abusewatch-anomaly-')} ×{n}" for rule, n in row["first_rules"].items()
        )
        lines.append(
            f"| {kind} | {row['detected']} | {_or_dash(row['median_delay_min'])} | {_or_dash(row['max_delay_min'])} | "
            f"{', '.join(row['alert_categories']) or '-'} | {first_rules or '-'} |"
        )
    lines += [
        "",
        f"False alerts: {summary['false_alerts']} over {summary['benign_identity_days']:,} benign identity-days = "
        f"**{summary['false_alerts_per_1000_identity_days']} per 1,000 identity-days** "
        f"(by rule: {summary['false_alert_rules'] or 'none'}).",
        "",
        "| templated automation (benign) | identities alerted | alert groups by rule | expected |",
        "|---|---|---|---|",
    ]
    automation = summary["automation"]
    assert isinstance(automation, dict)
    for kind, row in automation.items():
        groups = ", ".join(
            f"{rule.removeprefix('abusewatch-anomaly-')} ×{n}" for rule, n in row["alert_groups"].items()
        )
        lines.append(f"| {kind} | {row['identities_alerted']} | {groups or '-'} | {row['expected']} |")
    return "\n".join(lines)


def evaluate(
    seeds: tuple[int, ...], traffic: SimulationConfig, config: AnomalyConfig, jobs: int, short_scrapers: int
) -> list[SeedResult]:
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_seed, seed, traffic, config, short_scrapers) for seed in seeds]
        return [future.result() for future in futures]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=72.0, help="Event-time span per seed (default 3 days).")
    parser.add_argument("--benign-users", type=int, default=300)
    parser.add_argument("--seeds", default=None, help="Comma-separated seeds (default: tuning and held-out sets).")
    parser.add_argument("--config", default=None, help="AnomalyConfig overrides as JSON.")
    parser.add_argument("--burst-probability", type=float, default=None, help="Stress: notebook bursts per user-day.")
    parser.add_argument("--heavy-share", type=float, default=None, help="Stress: share of heavy benign users.")
    parser.add_argument("--short-scrapers", type=int, default=2, help="Short templated scraper bursts per seed.")
    parser.add_argument("--jobs", type=int, default=2, help="Seeds simulated in parallel.")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of Markdown.")
    args = parser.parse_args(argv)
    config = AnomalyConfig(**json.loads(args.config)) if args.config else AnomalyConfig()
    traffic = SimulationConfig(
        hours=args.hours, benign_users=args.benign_users, attackers=dict.fromkeys(ATTACK_KINDS, 1)
    )
    if args.burst_probability is not None:
        traffic = replace(traffic, burst_probability=args.burst_probability)
    if args.heavy_share is not None:
        traffic = replace(traffic, heavy_share=args.heavy_share)
    sets = (
        [("Seeds " + args.seeds, tuple(int(s) for s in args.seeds.split(",")))]
        if args.seeds
        else [("Tuning", TUNING_SEEDS), ("Held out", HELD_OUT_SEEDS)]
    )
    output = {}
    for title, seeds in sets:
        results = evaluate(seeds, traffic, config, args.jobs, args.short_scrapers)
        output[title] = {"summary": summarise(results), "per_seed": [asdict(r) for r in results]}
        if not args.json:
            print(markdown(title, output[title]["summary"]) + "\n", flush=True)
    if args.json:
        json.dump(output, sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
