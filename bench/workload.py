"""The fixed benchmark workload: seeded, generated LLM logs in every supported source format.

Every benchmark part reads the same records so their figures compare. Each record is one exchange of one of
``identities`` users (activity skewed: a few heavy users, a long tail), rendered in turn as LiteLLM, OpenAI,
Bedrock or OTLP by :mod:`app.traffic.render`. Texts come from :mod:`app.traffic.pools`: the application's
system prompt, a benign question padded with pasted context (help articles, code, logs) so that prompt and
completion lengths are log-uniform in 100 B - 20 KB, and in ``attack_share`` of the events an attack from the
pools (direct override, DAN, system-prompt extraction, indirect injection in a retrieved document, leaked AWS key,
base64-wrapped injection, markdown-image exfiltration) placed at a random point of the prompt or document.

Generated records are cached as NDJSON under ``.cache/bench/`` (one line: ``{"format": ..., "record": ...}``);
the same arguments always give byte-identical files.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from app.traffic import pools
from app.traffic.render import RENDERERS
from app.traffic.samples import fake_aws_key
from detectors.event import Event, Identity, Message, RetrievedDocument
from detectors.normalise import normalise_many

ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = ROOT / ".cache" / "bench"
FORMATS = ("litellm", "openai", "bedrock", "otel")
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
MIN_CHARS, MAX_CHARS = 100, 20_000
SYSTEMS = (pools.SUPPORT_SYSTEM, pools.CODING_SYSTEM, pools.ANALYTICS_SYSTEM)
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet")


@dataclass(frozen=True)
class WorkloadConfig:
    events: int = 20_000
    identities: int = 5_000
    attack_share: float = 0.05
    seed: int = 20_261_122
    events_per_second: float = 50.0  # event-time rate: spreads the events over time for the stateful tiers

    def cache_path(self, cache_dir: Path = CACHE_DIR) -> Path:
        key = f"{self.events}-{self.identities}-{self.attack_share}-{self.seed}-{self.events_per_second}"
        return cache_dir / f"workload-{hashlib.sha256(key.encode()).hexdigest()[:12]}.ndjson"


@dataclass(frozen=True)
class Record:
    """One source log record as it arrives on Kafka: its format and its JSON bytes."""

    fmt: str
    raw: bytes
    attack: str | None  # the attack kind it carries, None for benign traffic


def _filler() -> list[str]:
    """Pasted-context paragraphs: help articles, benign answers, code and query results from the pools."""
    pieces = [body for _, _, body in pools.HELP_ARTICLES]
    pieces += [exchange.answer for exchange in pools.SUPPORT_EXCHANGES + pools.CODING_EXCHANGES]
    pieces += [turn[3] for turn in pools.CODING_TOOL_TURNS] + [
        f"{turn[1]}\n{turn[2]}" for turn in pools.ANALYTICS_TURNS
    ]
    return [_fill(piece, random.Random(index)) for index, piece in enumerate(pieces)]


def _fill(template: str, rng: random.Random) -> str:
    """Fill a pool template's ``{slot}`` placeholders; texts with other braces are kept as they are."""
    try:
        return template.format(**{slot: rng.choice(values) for slot, values in pools.SLOTS.items()})
    except (KeyError, IndexError, ValueError):
        return template


def _length(rng: random.Random) -> int:
    return int(math.exp(rng.uniform(math.log(MIN_CHARS), math.log(MAX_CHARS))))


def _pad(rng: random.Random, text: str, target: int, filler: list[str]) -> str:
    parts, size = [text], len(text)
    while size < target:
        parts.append(rng.choice(filler))
        size += len(parts[-1]) + 2
    return "\n\n".join(parts)[: max(target, len(text))]


def _insert(rng: random.Random, text: str, payload: str) -> str:
    """``payload`` at a random paragraph boundary of ``text``."""
    cuts = [0, len(text)] + [i for i in range(len(text)) if text.startswith("\n\n", i)]
    at = rng.choice(cuts)
    return f"{text[:at]}\n\n{payload}\n\n{text[at:]}"


def _attack(rng: random.Random) -> tuple[str, str, str | None]:
    """(kind, text for the prompt, text for a retrieved document or None)."""
    kind = rng.choice(("override", "dan", "extraction", "indirect", "secret", "base64", "exfil_markdown"))
    if kind == "override":
        return kind, pools.DIRECT_OVERRIDE, None
    if kind == "dan":
        return kind, pools.DAN_JAILBREAK, None
    if kind == "extraction":
        return kind, pools.EXTRACTION_PROMPT, None
    if kind == "indirect":
        return kind, pools.INDIRECT_PROMPT, pools.INDIRECT_DOCUMENT
    if kind == "secret":
        key = fake_aws_key(rng)
        return kind, f"{pools.SECRET_PROMPT}\nAWS_ACCESS_KEY_ID={key}\nAccessDenied for {key}", None
    if kind == "base64":
        payload = base64.b64encode(pools.BASE64_INJECTION_TEXT.encode()).decode()
        return kind, pools.BASE64_INJECTION_PROMPT.format(payload=payload), None
    return kind, "Summarise the renewals using the template.", f"{pools.EXFIL_CONTEXT}\n{pools.EXFIL_DOCUMENT}"


def _identities(rng: random.Random, count: int) -> list[Identity]:
    return [
        Identity(
            user_id=f"user-{index:06d}",
            api_key_hash=hashlib.sha256(f"key-{index % max(count // 4, 1)}".encode()).hexdigest()[:16],
            organization_id=f"org-{index % 50:03d}",
            source_ip=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            user_agent=rng.choice(("openai-python/1.54.0", "litellm/1.50.2", "Mozilla/5.0 ChatUI/3.2")),
            session_id=f"s-{index:06d}",
        )
        for index in range(count)
    ]


def generate_events(config: WorkloadConfig) -> Iterator[tuple[Event, str | None]]:
    """The workload's canonical events with their attack kind (None: benign), in event-time order."""
    rng = random.Random(config.seed)
    filler = _filler()
    users = _identities(rng, config.identities)
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(users))]  # Zipf-like: heavy users and a long tail
    chosen = rng.choices(users, weights=weights, k=config.events)
    asks = [_fill(e.prompt, rng) for e in pools.SUPPORT_EXCHANGES + pools.CODING_EXCHANGES]
    for index, identity in enumerate(chosen):
        system_index = index % len(SYSTEMS)
        prompt = _pad(rng, rng.choice(asks), _length(rng), filler)
        answer = _pad(rng, rng.choice(filler), _length(rng), filler)
        documents: list[RetrievedDocument] = []
        kind = None
        if rng.random() < config.attack_share:
            kind, attack_prompt, document = _attack(rng)
            prompt = _insert(rng, prompt, attack_prompt) if rng.random() < 0.5 else attack_prompt
            if document:
                documents.append(RetrievedDocument(content=document, id=f"doc-{index}", source="kb"))
        yield (
            Event(
                id=f"bench-{config.seed}-{index:08d}",
                timestamp=START + index / config.events_per_second,
                dataset="bench",
                provider="openai",
                operation="chat",
                request_model=MODELS[system_index],
                response_model=MODELS[system_index],
                finish_reasons=["stop"],
                input_tokens=len(prompt) // 4 + 1,
                output_tokens=len(answer) // 4 + 1,
                system_instructions=SYSTEMS[system_index],
                input_messages=[Message(role="user", content=prompt)],
                output_messages=[Message(role="assistant", content=answer)],
                retrieved_documents=documents,
                identity=identity,
                service_name=("support-bot", "devpilot", "insight")[system_index],
                duration_ms=float(rng.randint(200, 9000)),
                outcome="success",
            ),
            kind,
        )


def _render(config: WorkloadConfig) -> Iterator[bytes]:
    for index, (event, kind) in enumerate(generate_events(config)):
        fmt = FORMATS[index % len(FORMATS)]
        yield orjson.dumps({"format": fmt, "attack": kind, "record": RENDERERS[fmt](event)})


def load_records(config: WorkloadConfig = WorkloadConfig(), cache_dir: Path = CACHE_DIR) -> list[Record]:
    """The workload's source records, generated once and then read from the cache."""
    path = config.cache_path(cache_dir)
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        with partial.open("wb") as out:
            for line in _render(config):
                out.write(line + b"\n")
        partial.replace(path)
    records = []
    with path.open("rb") as lines:
        for line in lines:
            item = orjson.loads(line)
            records.append(Record(item["format"], orjson.dumps(item["record"]), item["attack"]))
    return records


def normalise_records(records: list[Record]) -> list[Event]:
    """The canonical events of ``records`` (what the ingest stage hands to detection)."""
    return [event for record in records for event in normalise_many(orjson.loads(record.raw))]


def texts(events: list[Event]) -> list[str]:
    """Every scannable text of ``events``, in order: what a text scanner is given."""
    return [text for event in events for _, text in event.texts()]
