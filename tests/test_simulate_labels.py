"""The simulator's labels file names the identities a replay of its own output produces, in every format."""

from collections import defaultdict

import orjson
import pytest

from app.traffic.render import round_trip
from app.traffic.simulate import (
    ATTACK_KINDS,
    FORMATS,
    Simulation,
    SimulationConfig,
    identity_formats,
    labels_document,
    render_records,
    simulate,
)
from detectors.anomaly import AnomalyDetector
from detectors.base import Findings
from detectors.campaigns import CampaignDetector, candidates_from_findings
from detectors.event import Event, Identity, Message
from detectors.normalise import normalise_payload

# Every kind but the fast scraper (an identity of the same shape, but most of the events): seconds, not minutes.
CONFIG = SimulationConfig(
    hours=6,
    benign_users=6,
    attackers={"slow_scraper": 2, "campaign": 1, "extractor": 1, "denial_of_wallet": 1},
    seed=5,
    campaign_size=3,
)


@pytest.fixture(scope="module")
def simulation() -> Simulation:
    return simulate(CONFIG)


def replayed(simulation: Simulation, fmt: str, config: SimulationConfig = CONFIG) -> list[Event]:
    """The file ``abusewatch simulate --format fmt`` writes, normalised as ``abusewatch replay`` reads it."""
    records = render_records(simulation.events, fmt, config.seed)
    payload = b"".join(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE) for record in records)
    events, letters = normalise_payload(payload, "sim", max_bytes=len(payload) + 1)
    assert letters == [] and len(events) == len(simulation.events)
    return events


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_label_is_the_one_identity_its_attacker_is_replayed_as(simulation, fmt: str) -> None:
    document = labels_document(simulation, CONFIG, fmt)
    replayed_as: dict[str, set[str]] = defaultdict(set)  # the simulator's identity -> identities after replay
    for original, back in zip(simulation.events, replayed(simulation, fmt), strict=True):
        replayed_as[original.identity.key()].add(back.identity.key())
    attackers = document["attackers"]
    assert len(attackers) == len(simulation.labels)  # no two attackers share an identity in the log
    for label in simulation.labels:
        (identity,) = replayed_as[label.identity]  # one attacker, one identity
        assert attackers[identity]["kind"] == label.kind
    benign = {key: identities for key, identities in replayed_as.items() if key in simulation.benign_identities}
    assert all(len(identities) == 1 for identities in benign.values())
    assert set(document["benign_identities"]) == set.union(*benign.values())
    assert not set(document["benign_identities"]) & set(attackers)


def test_mixed_format_spreads_attackers_over_formats(simulation) -> None:
    document = labels_document(simulation, CONFIG, "mixed")
    assert len({label["format"] for label in document["attackers"].values()}) >= 3


def test_mixed_format_logs_extractors_in_formats_that_carry_their_parameters() -> None:
    params = {"temperature": 0.5, "logprobs": True, "top_logprobs": 20, "n": 5, "max_tokens": 1}
    events = [
        Event(
            id=f"x-{index}",
            timestamp=CONFIG.start + index,
            dataset="simulated",
            input_messages=[Message(role="user", content="Classify probe sample 1")],
            request_params=params,
            identity=Identity(api_key_hash=f"key-extractor-{index}", source_ip=f"192.0.2.{index + 1}"),
        )
        for index in range(40)
    ]
    formats = identity_formats(events, "mixed", seed=0)
    assert len(set(formats.values())) >= 2
    for event in events:
        (logged,) = round_trip(event, formats[event.identity.key()])
        assert logged.request_params == params


def test_mixed_format_is_the_same_for_a_seed(simulation) -> None:
    first = list(render_records(simulation.events, "mixed", seed=1))
    assert first == list(render_records(simulation.events, "mixed", seed=1))
    assert first != list(render_records(simulation.events, "mixed", seed=2))


def test_attackers_have_addresses_of_their_own() -> None:
    simulation = simulate(SimulationConfig(hours=0.5, benign_users=0, attackers={"slow_scraper": 60}, seed=0))
    addresses = [label.source_ip for label in simulation.labels]
    assert len(set(addresses)) == len(addresses) == 60  # 60 draws from 254 addresses: collisions without the fix


def alerted_kinds(events: list[Event], kinds: dict[str, str]) -> set[str]:
    """Attacker kinds (``kinds``: identity -> kind) that the anomaly and campaign tiers alert on over ``events``."""
    anomaly, campaigns = AnomalyDetector(), CampaignDetector()
    detections = []
    for start in range(0, len(events), 500):
        batch = events[start : start + 500]
        findings = [Findings() for _ in batch]
        detections += anomaly.detect(batch, findings)
        detections += campaigns.detect(candidates_from_findings(batch, findings))
    detections += anomaly.flush() + campaigns.flush()
    named = {who for d in detections for who in (d.identity.key(), *d.related_users)}
    return {kind for identity, kind in kinds.items() if identity in named}


def test_replay_of_the_mixed_format_file_alerts_on_the_attackers_the_simulation_alerts_on() -> None:
    config = SimulationConfig(hours=12, benign_users=6, attackers=dict.fromkeys(ATTACK_KINDS, 1), seed=3)
    simulation = simulate(config)
    own = alerted_kinds(simulation.events, {label.identity: label.kind for label in simulation.labels})
    document = labels_document(simulation, config, "mixed")
    replay = alerted_kinds(
        replayed(simulation, "mixed", config),
        {identity: label["kind"] for identity, label in document["attackers"].items()},
    )
    assert len(own) >= 3
    assert own <= replay
