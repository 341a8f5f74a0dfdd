"""What a detector is and what it returns.

A detector looks at a batch of events and returns :class:`Detection` objects; it may also annotate each event
(scores, matched rules, sensitive spans) through that event's :class:`Findings`. Stateless detectors keep nothing
between batches; stateful ones keep per-identity state in memory and expose it through ``state`` /
``load_state`` so the stream can checkpoint it, the way river estimators keep their own state.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import msgspec

from detectors.caps import Evictions
from detectors.event import Event, Identity

Category = Literal[
    "prompt_injection",
    "jailbreak",
    "system_prompt_leak",
    "data_exfiltration",
    "secret_exposure",
    "pii_exposure",
    "scraping",
    "model_extraction",
    "tool_abuse",
    "resource_abuse",
]
CATEGORIES: tuple[str, ...] = Category.__args__  # type: ignore[attr-defined]

Level = Literal["informational", "low", "medium", "high", "critical"]
SEVERITY: dict[str, int] = {"informational": 1, "low": 21, "medium": 47, "high": 73, "critical": 99}
LEVELS: tuple[str, ...] = tuple(SEVERITY)


class RuleInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What an alert says about the rule that raised it (ECS ``rule.*`` plus threat mappings)."""

    id: str
    name: str
    category: Category
    level: Level
    description: str = ""
    atlas: tuple[str, ...] = ()  # MITRE ATLAS technique ids, e.g. "AML.T0051.000"
    owasp: tuple[str, ...] = ()  # OWASP LLM Top 10 (2025) ids, e.g. "LLM01:2025"
    status: str = "stable"  # Sigma status; "test" rules alert in shadow mode
    ruleset: str = "abusewatch"
    # rules whose detection on the same event reports the same finding: this rule's detection is then folded into
    # theirs rather than raised as an alert of its own (:func:`detectors.pipeline.fold_same_findings`)
    folds_into: tuple[str, ...] = ()


class Evidence(msgspec.Struct, frozen=True, kw_only=True):
    """Where and what matched. ``snippet`` is redacted before any document leaves the engine."""

    field: str
    snippet: str
    start: int | None = None
    end: int | None = None
    transforms: tuple[str, ...] = ()  # e.g. ("base64",) when found only after decoding
    detail: str | None = None


class Detection(msgspec.Struct, kw_only=True):
    """One detector verdict; the alerting stage turns detections into alert documents."""

    rule: RuleInfo
    event_ids: list[str]
    timestamp: float
    identity: Identity
    message: str
    score: float = 1.0  # confidence in [0, 1]
    evidence: list[Evidence] = []
    related_users: list[str] = []
    related_ips: list[str] = []
    group_key: str | None = None  # what makes two detections the same alert; default: the event ids
    explanation: dict[str, float] = {}
    # the event whose arrival raised it, when that is not the last of ``event_ids`` (a window that a later event's
    # time closed): the pipeline orders a batch's detections by it (:func:`detectors.pipeline.in_arrival_order`)
    raised_by: str | None = None
    also_matched: list[str] = []  # ids of the rules whose detections were folded into this one (``folds_into``)


class SensitiveValue(msgspec.Struct, frozen=True, kw_only=True):
    """A raw secret or PII value found in an event; every output is scrubbed of it.

    ``key`` is the value's normalised form when the detector knows one (a card's digits, an e-mail in lower case):
    the mask is derived from it, so one card written with spaces and with dashes gets one mask."""

    kind: str
    value: str
    key: str = ""


class Findings:
    """Per-event annotations that detectors add and the document builder renders.

    ``fields`` maps dotted ECS paths (e.g. ``gen_ai.security.prompt_injection_score``) to values. The pipeline
    records in ``rule_ids`` and ``categories`` what each detector raised on the event, so later detectors (session
    chains, correlation) can build on earlier verdicts.
    """

    __slots__ = ("categories", "fields", "rule_ids", "sensitive")

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.rule_ids: list[str] = []
        self.categories: set[str] = set()
        self.sensitive: list[SensitiveValue] = []


class Detector(ABC):
    """A detection tier. Subclasses set ``name`` and implement :meth:`detect`."""

    name: ClassVar[str]
    # Whether the pipeline records a detection on the event that triggered it, for later tiers and the event's
    # document. Tiers that raise when a window over earlier events closes set False: no event of the batch
    # triggered the detection, and which window events are still in the batch depends on batching.
    marks_events: ClassVar[bool] = True
    # A tier with a cap on client-chosen state counts what it forgot at the cap (detectors/caps.py), for a metric.
    evictions: Evictions | None = None

    @abstractmethod
    def detect(self, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        """Look at a batch (``findings[i]`` belongs to ``events[i]``) and return detections."""

    def flush(self, until: float | None = None) -> list[Detection]:
        """Detections still pending at the end of the input (open windows); ``until`` is the last event time."""
        return []

    def state(self) -> dict[str, Any]:
        """Serializable state for checkpointing; stateless detectors return ``{}``."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        if state:
            raise ValueError(f"{self.name} is stateless but was given state")

    def fresh(self) -> Detector:
        """A detector with this one's configuration and no state, e.g. for one more identity partition.

        A stateless detector is returned as it is, so compiled rule packs and models are shared. A stateful one
        is copied shallowly and given empty state, which is enough when :meth:`load_state` rebinds its
        containers (as every detector here does); one that holds state in a shared helper object overrides this.
        """
        if type(self).state is Detector.state:
            return self
        clone = copy.copy(self)
        clone.load_state({})
        return clone
