"""The model-extraction rule's enumeration path: log-probabilities or several choices on prompts that step through
ids are extraction only when the prompts bring nothing but the ids (the enumeration rule's payload limits).

A benign nightly classifier walks its ticket ids in order and asks for ``top_logprobs`` to get a calibrated
confidence (a documented, common use): until session 24 it raised high-severity model extraction on 23 windows of
two nights (the review's M7), because that path read the steps and not what the prompts carried."""

import random
from collections.abc import Sequence

from msgspec.structs import replace

from detectors.anomaly import AnomalyDetector
from detectors.anomaly.rules import MODEL_EXTRACTION
from detectors.base import Detection, Findings
from detectors.event import Event, Identity, Message

START = 1_767_830_400.0  # aligned to the 10-minute windows
WORDS = ("printer", "invoice", "login", "password", "refund", "shipping", "broken", "screen", "charge", "crash")
TRIAGE = {"temperature": 0, "logprobs": True, "top_logprobs": 5, "max_tokens": 1}


def triage_night(*, with_ticket_text: bool, seed: int = 21, hours: float = 2.0) -> list[Event]:
    """One service key classifying tickets in id order (steps of 1-2), a request every 20-40 s, asking for the top 5
    log-probabilities of a one-token answer at temperature 0; ``with_ticket_text``: each prompt quotes the ticket."""
    rng = random.Random(seed)
    events, timestamp, ticket = [], START + 5.0, 88_000
    identity = Identity(api_key_hash="sk-svc-ticket-triage", source_ip="10.20.0.5", user_agent="triage-job/1.4")
    while timestamp < START + hours * 3600:
        text = " ".join(rng.choices(WORDS, k=rng.randint(25, 60)))
        quoted = f' Ticket: "{text}"' if with_ticket_text else ""
        prompt = f"Classify support ticket #{ticket} into billing, bug, account or other.{quoted}"
        events.append(
            Event(
                id=f"triage-{len(events)}",
                timestamp=timestamp,
                dataset="test",
                input_messages=[Message(role="user", content=prompt)],
                output_messages=[Message(role="assistant", content="bug")],
                input_tokens=round(len(prompt) / 4),
                output_tokens=1,
                request_params=TRIAGE,
                identity=identity,
            )
        )
        ticket += rng.choice((1, 1, 1, 2))
        timestamp += rng.uniform(20, 40)
    return events


def detect(events: Sequence[Event]) -> list[Detection]:
    detector = AnomalyDetector()
    return detector.detect(events, [Findings() for _ in events]) + detector.flush()


def extraction(detections: Sequence[Detection]) -> list[Detection]:
    return [d for d in detections if d.rule.id == MODEL_EXTRACTION.id]


def test_a_logprob_classifier_walking_ticket_ids_with_the_ticket_text_is_no_extraction() -> None:
    events = triage_night(with_ticket_text=True)
    assert len(events) > 200
    assert extraction(detect(events)) == []


def test_the_same_walk_with_nothing_but_the_ids_is_still_extraction() -> None:
    """Bare prompts stepping through ids, every one asking for log-probabilities: what the path is for."""
    alerts = extraction(detect(triage_night(with_ticket_text=False)))
    assert len(alerts) >= 5
    assert all(a.explanation["enumeration_rate"] >= 0.3 and a.explanation["context_tokens"] <= 150 for a in alerts)


def test_a_temperature_sweep_needs_no_bare_prompts() -> None:
    """The sweep path is unchanged: the payload limits are the enumeration path's alone."""
    events = triage_night(with_ticket_text=True)
    swept = [replace(e, request_params={**TRIAGE, "temperature": i % 4 / 2}) for i, e in enumerate(events)]
    assert extraction(detect(swept))
