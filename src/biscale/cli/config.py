"""``biscale config``: the run configuration's JSON schema (what ``biscale simulate --config FILE`` accepts)."""

from __future__ import annotations

import typer

config_app = typer.Typer(help="Run configurations: JSON schema.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``config`` command group to the root app."""
    app.add_typer(config_app, name="config")


@config_app.command("schema")
def schema_cmd() -> None:
    """Print the JSON schema of a simulation run configuration (TOML or JSON files follow it)."""
    from biscale.jsonio import to_json_text
    from biscale.sim.runconfig import config_schema

    typer.echo(to_json_text(config_schema(), indent=2))
