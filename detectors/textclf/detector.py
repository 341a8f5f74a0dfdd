"""The learned prompt-injection / jailbreak detector: scores user prompts, retrieved documents and tool results.

Direct attacks come in ``gen_ai.prompt`` (new user input); indirect ones hide in what the application feeds the
model: ``gen_ai.retrieval.documents.content`` and ``gen_ai.tool.call.result``. All texts of a batch are scored in
one vectorised call. Each event gets ``gen_ai.security.prompt_injection_score`` / ``jailbreak_score`` (max over
its prompts) and ``gen_ai.security.indirect_injection_score`` (max over its documents and tool results); an event
scoring at or above the threshold raises one detection per kind, explained by its top contributing n-grams.
Prompts and documents have their own thresholds (benign documents, long and scored paragraph by paragraph, reach
higher scores than benign prompts). With ``judge_system_messages`` the client-written system text
(:meth:`Event.system_texts`, field ``gen_ai.system_instructions``) is scored as direct input, like a prompt, with
its own score (``gen_ai.security.system_injection_score``) and thresholds: unset, the documents' (a benign system
prompt is long, instruction-dense text: two of the three bundled sample applications' prompts score above the prompt
threshold; see README "Formats it reads").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from detectors.base import Detection, Detector, Evidence, Findings, RuleInfo, SensitiveValue
from detectors.event import DOCUMENT, PROMPT, SYSTEM, TOOL_RESULT, Event
from detectors.signatures.textnorm import fold
from detectors.textclf.model import DEFAULT_MODEL_DIR, DEFAULT_NAME, Analysis, TextClassifier

INJECTION_HEAD = "prompt_injection"
JAILBREAK_HEAD = "jailbreak"
DIRECT_FIELDS = (PROMPT,)
JUDGED_DIRECT_FIELDS = (*DIRECT_FIELDS, SYSTEM)  # SYSTEM: only the texts of Event.system_texts, when configured
INDIRECT_FIELDS = (DOCUMENT, TOOL_RESULT)  # not tool descriptions: never measured on real ones (docs/rules.md)

PROMPT_INJECTION_SCORE = "gen_ai.security.prompt_injection_score"
JAILBREAK_SCORE = "gen_ai.security.jailbreak_score"
INDIRECT_INJECTION_SCORE = "gen_ai.security.indirect_injection_score"
SYSTEM_INJECTION_SCORE = "gen_ai.security.system_injection_score"  # judged client-written system text, its own max
MODEL_VERSION_FIELD = "gen_ai.security.classifier_version"
SENSITIVE_PIECE = 4  # an explaining n-gram sharing this many characters in a row with a secret is left out

_OWASP = ("LLM01:2025",)
PROMPT_INJECTION_RULE = RuleInfo(
    id="abusewatch-ml-prompt-injection",
    name="Prompt injection in user input (ML classifier)",
    category="prompt_injection",
    level="medium",
    description="The text classifier scored a user prompt as a prompt-injection attempt.",
    atlas=("AML.T0051.000",),
    owasp=_OWASP,
)
JAILBREAK_RULE = RuleInfo(
    id="abusewatch-ml-jailbreak",
    name="Jailbreak attempt in user input (ML classifier)",
    category="jailbreak",
    level="medium",
    description="The text classifier scored a user prompt as a jailbreak (persona, role-play, adversarial suffix).",
    atlas=("AML.T0054", "AML.T0051.000"),
    owasp=_OWASP,
)
INDIRECT_INJECTION_RULE = RuleInfo(
    id="abusewatch-ml-indirect-prompt-injection",
    name="Indirect prompt injection in retrieved document or tool result (ML classifier)",
    category="prompt_injection",
    level="medium",
    description="The text classifier found injected instructions in content fed to the model (RAG, tools).",
    atlas=("AML.T0051.001",),
    owasp=_OWASP,
)
RULES = (PROMPT_INJECTION_RULE, JAILBREAK_RULE, INDIRECT_INJECTION_RULE)


class TextClassifierConfig(BaseModel):
    """Detector settings. Thresholds left unset use the operating points shipped in the model artifact."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_dir: Path = DEFAULT_MODEL_DIR
    model_name: str = DEFAULT_NAME
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)  # prompt alert at or above (injection head)
    high_threshold: float | None = Field(default=None, ge=0.0, le=1.0)  # level "high" at or above
    document_threshold: float | None = Field(default=None, ge=0.0, le=1.0)  # same for documents, tool results
    document_high_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    # client-written system text (judge_system_messages); unset: the document thresholds
    system_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    system_high_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    jailbreak_threshold: float | None = Field(default=None, ge=0.0, le=1.0)  # direct alert reported as jailbreak
    max_evidence: int = Field(default=3, ge=1)  # texts quoted per detection
    snippet_chars: int = Field(default=200, ge=20)
    explain_top: int = Field(default=8, ge=1)  # n-grams in the explanation
    status: Literal["stable", "test"] = "stable"  # "test": alerts go to the shadow index


class TextClassifierDetector(Detector):
    """Scores every prompt, retrieved document and tool result of a batch with the text classifier (and the
    client-written system text, with ``judge_system_messages``)."""

    name = "classifier"

    def __init__(
        self,
        config: TextClassifierConfig | None = None,
        model: TextClassifier | None = None,
        *,
        judge_system_messages: bool = False,
    ) -> None:
        self.config = config or TextClassifierConfig()
        self.judge_system_messages = judge_system_messages
        self.model = model or TextClassifier.load(self.config.model_dir, self.config.model_name)
        injection, jailbreak = self.model.head(INJECTION_HEAD), self.model.head(JAILBREAK_HEAD)
        self.threshold = _first(self.config.threshold, injection.threshold)
        self.high_threshold = max(self.threshold, _first(self.config.high_threshold, injection.high_threshold))
        self.document_threshold = _first(self.config.document_threshold, injection.document_threshold)
        self.document_high_threshold = max(
            self.document_threshold, _first(self.config.document_high_threshold, injection.document_high_threshold)
        )
        self.system_threshold = _first(self.config.system_threshold, self.document_threshold)
        self.system_high_threshold = max(
            self.system_threshold, _first(self.config.system_high_threshold, self.document_high_threshold)
        )
        self.jailbreak_threshold = _first(self.config.jailbreak_threshold, jailbreak.threshold)
        self._injection = self.model.head_names.index(INJECTION_HEAD)
        self._jailbreak = self.model.head_names.index(JAILBREAK_HEAD)
        self._rules = {
            (rule.id, level): msgspec.structs.replace(rule, level=level, status=self.config.status)
            for rule in RULES
            for level in ("medium", "high")
        }

    def detect(self, events: Sequence[Event], findings: Sequence[Findings]) -> list[Detection]:
        owners, fields, texts = [], [], []
        for index, event in enumerate(events):
            judged = [(field, text) for field, text in event.texts() if field in (*DIRECT_FIELDS, *INDIRECT_FIELDS)]
            if self.judge_system_messages:
                judged += [(SYSTEM, text) for text in event.system_texts()]
            for field, text in judged:
                owners.append(index)
                fields.append(field)
                texts.append(text)
        if not texts:
            return []
        analysis = self.model.analyse(texts, keep=min(self.threshold, self.document_threshold, self.system_threshold))
        scores = analysis.scores
        owner = np.asarray(owners)
        kinds = np.asarray(fields)
        direct = np.isin(kinds, JUDGED_DIRECT_FIELDS)
        system = kinds == SYSTEM
        cut = np.where(system, self.system_threshold, np.where(direct, self.threshold, self.document_threshold))
        high = np.where(
            system, self.system_high_threshold, np.where(direct, self.high_threshold, self.document_high_threshold)
        )
        injection, jailbreak = scores[:, self._injection], scores[:, self._jailbreak]
        flagged = injection >= cut
        top_direct = _max_by_owner(injection, owner, direct & ~system, len(events))
        top_jailbreak = _max_by_owner(jailbreak, owner, direct & ~system, len(events))
        top_system = _max_by_owner(injection, owner, system, len(events))
        top_indirect = _max_by_owner(injection, owner, ~direct, len(events))
        detections = []
        for index in np.unique(owner):
            found = findings[index]
            found.fields[MODEL_VERSION_FIELD] = self.model.version
            if top_direct[index] >= 0:
                found.fields[PROMPT_INJECTION_SCORE] = round(float(top_direct[index]), 4)
                found.fields[JAILBREAK_SCORE] = round(float(top_jailbreak[index]), 4)
            if top_system[index] >= 0:
                found.fields[SYSTEM_INJECTION_SCORE] = round(float(top_system[index]), 4)
            if top_indirect[index] >= 0:
                found.fields[INDIRECT_INJECTION_SCORE] = round(float(top_indirect[index]), 4)
            for is_direct in (True, False):
                rows = np.flatnonzero((owner == index) & (direct == is_direct) & flagged)
                if rows.size:
                    rows = rows[np.argsort(-injection[rows], kind="stable")]
                    detection = self._detection(
                        events[index], rows, texts, fields, analysis, is_direct, (cut, high), found.sensitive
                    )
                    found.rule_ids.append(detection.rule.id)
                    detections.append(detection)
        return detections

    def _kind(self, best: int, jailbreak: np.ndarray, is_direct: bool) -> tuple[str, str]:
        """Rule and head of a detection whose best text is ``best``: indirect, jailbreak or prompt injection."""
        if not is_direct:
            return INDIRECT_INJECTION_RULE.id, INJECTION_HEAD
        if jailbreak[best] >= self.jailbreak_threshold:
            return JAILBREAK_RULE.id, JAILBREAK_HEAD
        return PROMPT_INJECTION_RULE.id, INJECTION_HEAD

    def _detection(
        self,
        event: Event,
        rows: np.ndarray,
        texts: list[str],
        fields: list[str],
        analysis: Analysis,
        is_direct: bool,
        thresholds: tuple[np.ndarray, np.ndarray],
        sensitive: Sequence[SensitiveValue] = (),
    ) -> Detection:
        """One detection for the event's direct (or indirect) texts; ``rows`` are the flagged texts, best first;
        ``thresholds`` the alert and level "high" thresholds of each text.

        Explaining n-grams that hold a piece of one of the event's ``sensitive`` values are left out: an n-gram is
        folded (lower case) text, which scrubbing by value cannot recognise, so a piece of a secret would reach
        the alert raw.
        """
        injection, jailbreak = analysis.scores[:, self._injection], analysis.scores[:, self._jailbreak]
        best = int(rows[0])
        score = float(injection[best])
        rule_id, head = self._kind(best, jailbreak, is_direct)
        explanation = analysis.explain(best, head, self.config.explain_top)  # from the features already computed
        if sensitive:
            explanation = without_sensitive_pieces(explanation, sensitive)
        cut, high = thresholds
        rule = self._rules[rule_id, "high" if score >= high[best] else "medium"]
        evidence = []
        for row in rows[: self.config.max_evidence]:
            start, end = _snippet_span(texts[row], explanation, self.config.snippet_chars)
            evidence.append(
                Evidence(
                    field=fields[row],
                    snippet=texts[row][start:end],
                    start=start,
                    end=end,
                    detail=f"{INJECTION_HEAD}_score={injection[row]:.4f} {JAILBREAK_HEAD}_score={jailbreak[row]:.4f} "
                    f"threshold={cut[row]:.4f} model=textclf-{self.model.version}",
                )
            )
        where = fields[best] if not is_direct else "system instructions" if fields[best] == SYSTEM else "user prompt"
        return Detection(
            rule=rule,
            event_ids=[event.id],
            timestamp=event.timestamp,
            identity=event.identity,
            message=f"{rule.name}: score {score:.2f} in {where}",
            score=score,
            evidence=evidence,
            related_users=[event.identity.user_id] if event.identity.user_id else [],
            related_ips=[event.identity.source_ip] if event.identity.source_ip else [],
            explanation={_explanation_key(feature): weight for feature, weight in explanation.items()},
        )


def without_sensitive_pieces(explanation: dict[str, float], sensitive: Sequence[SensitiveValue]) -> dict[str, float]:
    """``explanation`` without the ``ngram:`` features that share :data:`SENSITIVE_PIECE` characters in a row with
    a sensitive value (both folded, as the featuriser folds text), or lie wholly inside one."""
    folded = [fold(value.value) for value in sensitive]

    def leaks(gram: str) -> bool:
        size = min(SENSITIVE_PIECE, len(gram))
        pieces = {gram[start : start + size] for start in range(len(gram) - size + 1)}
        return any(piece in value for value in folded for piece in pieces)

    return {
        feature: weight
        for feature, weight in explanation.items()
        if not (feature.startswith("ngram:") and leaks(feature.removeprefix("ngram:").strip()))
    }


def _first(value: float | None, default: float) -> float:
    return default if value is None else value


def _explanation_key(feature: str) -> str:
    """``ngram:<text>`` / ``concept:<class>`` with dots replaced, since dotted keys would become nested fields in
    Elasticsearch."""
    return feature.replace(".", "\u2024")


def _max_by_owner(scores: np.ndarray, owner: np.ndarray, mask: np.ndarray, size: int) -> np.ndarray:
    """Per-event maximum of ``scores[mask]``; -1 for events without a masked text."""
    out = np.full(size, -1.0)
    np.maximum.at(out, owner[mask], scores[mask])
    return out


def _snippet_span(text: str, explanation: dict[str, float], width: int) -> tuple[int, int]:
    """A window of ``width`` characters around the strongest explaining n-gram found in ``text``, else its start."""
    lowered = text.lower()
    anchor = 0
    if len(lowered) == len(text):  # lower() kept offsets aligned
        for gram in explanation:
            position = lowered.find(gram.strip())
            if position >= 0:
                anchor = position
                break
    start = max(0, min(anchor - width // 4, len(text) - width))
    return start, min(len(text), start + width)
