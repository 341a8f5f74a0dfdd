"""The traffic simulator: deterministic with its seed, labels that match the traffic, every output format."""

import itertools
import json
import statistics
from collections import defaultdict

import msgspec
import orjson
import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.traffic.simulate import (
    ATTACK_KINDS,
    FORMATS,
    SimulationConfig,
    parse_attackers,
    render_records,
    simulate,
)
from detectors.anomaly.features import prompt_shape, prompt_text
from detectors.normalise import normalise_payload

ALL = dict.fromkeys(ATTACK_KINDS, 1)


@pytest.fixture(scope="module")
def simulation():
    return simulate(SimulationConfig(hours=30, benign_users=30, attackers=ALL, seed=4, campaign_size=5))


def test_same_seed_same_traffic_other_seed_other_traffic() -> None:
    config = SimulationConfig(hours=6, benign_users=10, attackers={"scraper": 1}, seed=1)
    first, second = simulate(config), simulate(config)
    assert msgspec.json.encode(first.events) == msgspec.json.encode(second.events)
    assert first.labels == second.labels
    other = simulate(SimulationConfig(hours=6, benign_users=10, attackers={"scraper": 1}, seed=2))
    assert msgspec.json.encode(other.events) != msgspec.json.encode(first.events)


def test_events_are_in_event_time_order_with_unique_ids(simulation) -> None:
    timestamps = [e.timestamp for e in simulation.events]
    assert timestamps == sorted(timestamps)
    assert len({e.id for e in simulation.events}) == len(simulation.events)
    assert all(simulation.start <= t < simulation.end for t in timestamps)


def test_every_event_belongs_to_a_benign_or_labelled_identity(simulation) -> None:
    labelled = {label.identity for label in simulation.labels}
    benign = set(simulation.benign_identities)
    assert not labelled & benign
    by_identity = defaultdict(list)
    for event in simulation.events:
        by_identity[event.identity.key()].append(event)
    assert set(by_identity) <= labelled | benign
    assert labelled <= set(by_identity)
    for label in simulation.labels:
        times = [e.timestamp for e in by_identity[label.identity]]
        assert label.start <= min(times) and max(times) <= label.end
        assert label.start >= simulation.start + 10 * 3600  # after a third of the run: baselines exist


def test_labels_describe_what_each_attacker_does(simulation) -> None:
    events = defaultdict(list)
    for event in simulation.events:
        events[event.identity.key()].append(event)
    kinds = defaultdict(list)
    for label in simulation.labels:
        kinds[label.kind].append(events[label.identity])
    assert {kind: len(v) for kind, v in kinds.items()} == {**ALL, "campaign": 5}

    (extractor,) = kinds["extractor"]
    assert all(e.request_params.get("logprobs") is True for e in extractor)
    assert len({e.request_params["temperature"] for e in extractor}) >= 5

    (wallet,) = kinds["denial_of_wallet"]
    assert statistics.median(e.input_tokens + e.output_tokens for e in wallet) > 30_000

    (slow,) = kinds["slow_scraper"]
    gaps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(slow)]
    assert min(gaps) >= 60  # under a 1/min rate limit
    assert statistics.pstdev(gaps) / statistics.mean(gaps) < 0.1  # but machine-regular

    (scraper,) = kinds["scraper"]
    assert len(scraper) / ((scraper[-1].timestamp - scraper[0].timestamp) / 60) > 20  # > 20 requests a minute

    signatures = [{prompt_shape(prompt_text(e)).signature for e in member} for member in kinds["campaign"]]
    assert len(set.union(*signatures)) == 1  # every key of the campaign sends one template


def test_benign_users_work_by_day_in_their_own_time_zone(simulation) -> None:
    hours_by_user: dict[str, list[int]] = defaultdict(lambda: [0] * 24)
    for event in simulation.events:
        key = event.identity.key()
        if key.startswith("user:") and key in simulation.benign_identities:
            hours_by_user[key][int(event.timestamp // 3600) % 24] += 1
    day_shares = []
    for hours in hours_by_user.values():
        if sum(hours) >= 20:
            busiest_half_day = max(sum(hours[(start + h) % 24] for h in range(11)) for start in range(24))
            day_shares.append(busiest_half_day / sum(hours))
    assert len(day_shares) >= 10
    assert statistics.median(day_shares) > 0.85  # most of a user's requests fall within one working day
    assert len({max(range(24), key=hours.__getitem__) for hours in hours_by_user.values()}) >= 4  # time zones


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "mixed"])
def test_rendered_records_normalise_back_to_the_same_traffic(fmt: str) -> None:
    simulation = simulate(SimulationConfig(hours=3, benign_users=5, attackers={"extractor": 1}, seed=3))
    events = simulation.events[:50]
    records = list(render_records(events, fmt, seed=3))
    assert len(records) == len(events)
    payload = b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in records)
    normalised, letters = normalise_payload(payload, "sim", max_bytes=1 << 22)
    assert letters == []
    assert [e.timestamp for e in normalised] == pytest.approx([e.timestamp for e in events], abs=1e-3)
    assert [prompt_text(e) for e in normalised] == [prompt_text(e) for e in events]


def test_mixed_format_uses_several_formats() -> None:
    simulation = simulate(SimulationConfig(hours=2, benign_users=12, seed=0))
    records = list(render_records(simulation.events, "mixed", seed=0))
    assert len({frozenset(r) for r in records}) >= 3


def test_parse_attackers() -> None:
    assert parse_attackers("scraper=2, campaign") == {"scraper": 2, "campaign": 1}
    assert parse_attackers("") == {}
    for bad in ("robot=1", "scraper=many", "scraper=-1"):
        with pytest.raises(ValueError):
            parse_attackers(bad)


def test_cli_writes_records_and_labels(tmp_path) -> None:
    out, labels = tmp_path / "traffic.jsonl", tmp_path / "labels.json"
    result = CliRunner().invoke(
        cli,
        [
            "simulate",
            "--hours",
            "4",
            "--benign-users",
            "5",
            "--attackers",
            "extractor=1",
            "--format",
            "openai",
            "--out",
            str(out),
            "--labels-out",
            str(labels),
            "--seed",
            "7",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = out.read_bytes().splitlines()
    assert lines and all(orjson.loads(line)["request"] for line in lines)
    document = json.loads(labels.read_text())
    assert [label["kind"] for label in document["attackers"].values()] == ["extractor"]
    assert document["seed"] == 7 and document["format"] == "openai"
    replayed, letters = normalise_payload(out.read_bytes(), "sim", max_bytes=1 << 24)
    identities = {event.identity.key() for event in replayed}
    assert letters == [] and set(document["attackers"]) <= identities
    assert set(document["benign_identities"]) == identities - set(document["attackers"])


def test_cli_rejects_bad_arguments(tmp_path) -> None:
    runner = CliRunner()
    bad_kind = runner.invoke(cli, ["simulate", "--attackers", "robot=1", "--out", str(tmp_path / "x")])
    bad_format = runner.invoke(cli, ["simulate", "--format", "csv", "--out", str(tmp_path / "x")])
    assert bad_kind.exit_code == 2 and bad_format.exit_code == 2
    assert not (tmp_path / "x").exists()
