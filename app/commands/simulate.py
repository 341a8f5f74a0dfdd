"""``abusewatch simulate``: labelled multi-user LLM traffic (benign users, batch jobs, attackers) as log files."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import typer
from rich.console import Console

from app.files import ensure_writable
from app.traffic.simulate import (
    DEFAULT_START,
    FORMATS,
    SimulationConfig,
    labels_document,
    parse_attackers,
    render_records,
    simulate,
)

console = Console(stderr=True)


def register(cli: typer.Typer) -> None:
    cli.command("simulate")(simulate_command)


def simulate_command(
    hours: float = typer.Option(48.0, "--hours", min=0.1, help="Event-time span to simulate."),
    benign_users: int = typer.Option(200, "--benign-users", min=0, help="Benign human users."),
    attackers: str = typer.Option(
        "scraper=1,slow_scraper=1,campaign=1,extractor=1,denial_of_wallet=1",
        "--attackers",
        help="kind=count,... with kinds scraper, slow_scraper, campaign, extractor, denial_of_wallet ('' for none).",
    ),
    fmt: str = typer.Option("litellm", "--format", help=f"Log format: {' | '.join(FORMATS)}."),
    out: Path = typer.Option(..., "--out", help="Where the log records go (JSONL)."),
    labels_out: Path | None = typer.Option(None, "--labels-out", help="Ground truth (JSON): identity -> attack."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same traffic."),
    start: float | None = typer.Option(None, "--start", help="Start as epoch seconds (default: a fixed Monday)."),
) -> None:
    """Generate realistic labelled traffic over event time, in any supported log format."""
    if fmt not in FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(FORMATS)}", param_hint="--format")
    try:
        attacker_counts = parse_attackers(attackers)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--attackers") from None
    config = SimulationConfig(
        hours=hours,
        benign_users=benign_users,
        attackers=attacker_counts,
        seed=seed,
        start=DEFAULT_START if start is None else start,
    )
    ensure_writable(out, labels_out)
    simulation = simulate(config)
    with out.open("wb") as handle:
        for record in render_records(simulation.events, fmt, seed):
            handle.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
    if labels_out is not None:
        labels_out.write_text(json.dumps(labels_document(simulation, config, fmt), indent=1) + "\n")
    console.print(
        f"{len(simulation.events):,} events ({fmt}) from {len(simulation.benign_identities)} benign identities and "
        f"{len(simulation.labels)} attacking identities over {hours:g} h -> {out}"
    )
