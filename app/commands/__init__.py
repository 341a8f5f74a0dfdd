"""CLI command modules; each defines ``register(cli: typer.Typer) -> None``."""
