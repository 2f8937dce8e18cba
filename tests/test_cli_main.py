"""The root command: help works, unknown commands are usage errors, user errors become exit code 2."""

from __future__ import annotations

import typer

from biscale.cli import main as cli_main
from biscale.errors import InputError


def test_help_lists_program(run_cli):
    res = run_cli("--help")
    assert res.code == 0
    assert "biscale" in res.out.lower()


def test_unknown_command_is_usage_error(run_cli):
    res = run_cli("no-such-command")
    assert res.code == 2


def test_input_error_is_one_line_exit_2(run_cli, monkeypatch):
    probe = typer.Typer()

    @probe.callback()
    def _root() -> None:
        """Probe app."""

    @probe.command()
    def boom() -> None:
        raise InputError("bad value -3", path="x.csv", line=7, field="ContextTokens")

    monkeypatch.setattr(cli_main, "app", probe)
    res = run_cli("boom")
    assert res.code == 2
    assert res.err.strip() == "biscale: error: x.csv:7, field 'ContextTokens': bad value -3"
    assert "Traceback" not in res.err
