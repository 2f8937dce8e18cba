"""Output under any locale and when piped, one source per default, one spelling per flag, the version (issue 21)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from biscale.control.state import SLO_TPOT_MS, SLO_TTFT_MS, Slo

SRC = Path(__file__).resolve().parents[2] / "src" / "biscale"


def _biscale(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``biscale ARGS`` in a real interpreter with stdout and stderr piped (not a terminal)."""
    full = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "biscale.cli.main", *args],
        capture_output=True,
        env=full,
        cwd=cwd,
        timeout=120,
        text=True,
        errors="replace",
    )


ASCII = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}


@pytest.mark.parametrize("args", [("evaluate", "--list"), ("hardware", "list"), ("trace", "stats", "{unicode}")])
def test_an_ascii_locale_never_crashes_the_output(tmp_path: Path, args: tuple[str, ...]) -> None:
    """``LC_ALL=C PYTHONUTF8=0``: stdout is ASCII; a table cut with an ellipsis (and a non-ASCII file name) raised
    UnicodeEncodeError. Now the tables are whole and what ASCII cannot hold is replaced."""
    trace = tmp_path / "ünïcødé.csv"
    trace.write_text("arrival_s,input_tokens,output_tokens\n0,10,10\n5,12,8\n")
    res = _biscale(*(a.format(unicode=trace) for a in args), env=ASCII)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and res.stdout.strip()


def test_an_error_naming_a_non_utf8_file_shows_its_bytes(tmp_path: Path) -> None:
    name = os.fsdecode(b"bad\xff.csv")
    (tmp_path / name).write_text("x\n")
    for env in (None, ASCII):
        res = _biscale("trace", "stats", name, env=env, cwd=tmp_path)
        assert res.returncode == 2
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("biscale: error: bad\\xff.csv:1: "), res.stderr
    good = os.fsdecode(b"good\xff.csv")
    (tmp_path / good).write_text("arrival_s,input_tokens,output_tokens\n0,10,10\n5,12,8\n")
    res = _biscale("trace", "stats", good, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "good\\xff.csv" in res.stdout  # the table names the file by its bytes, not U+FFFD


def test_piped_tables_keep_whole_scenario_names() -> None:
    """``biscale evaluate --list | cat`` once cut names to 80 columns (``azure-code-n…``)."""
    from biscale.evaluate import bundled_scenarios

    res = _biscale("evaluate", "--list", env={"COLUMNS": "40"})
    assert res.returncode == 0, res.stderr
    assert "…" not in res.stdout
    for name in bundled_scenarios():
        assert re.search(rf"[│|] {re.escape(name)} +[│|]", res.stdout), name


def test_version_flag_and_command_agree(run_cli: Any) -> None:
    from biscale import __version__

    for args in (("--version",), ("version",)):
        res = run_cli(*args)
        assert res.code == 0 and res.out.strip() == __version__


def test_the_600_ms_target_is_written_once_in_src() -> None:
    """One source per default: the TTFT target's literal lives in the Slo model alone (``grep -rn 600 src | grep
    -i ttft`` finds one line)."""
    hits = [
        f"{p.relative_to(SRC)}:{i}"
        for p in SRC.rglob("*")
        if p.suffix in (".py", ".toml", ".json", ".md") and p.is_file()
        for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
        if "600" in line and "ttft" in line.lower()
    ]
    assert len(hits) == 1 and hits[0].startswith("control/state.py:"), hits
    assert (Slo().ttft_s * 1e3, Slo().tpot_s * 1e3) == (SLO_TTFT_MS, SLO_TPOT_MS)


@pytest.mark.parametrize(
    ("args", "ttft_s"),
    [
        ((), Slo().ttft_s),
        (("--slo-ttft-ms", "450"), 0.45),
        (("--ttft-slo-ms", "450"), 0.45),  # the old spelling, hidden, still works
    ],
)
def test_simulate_takes_the_slo_spelling_of_every_command(
    run_cli: Any, tmp_path: Path, args: tuple[str, ...], ttft_s: float
) -> None:
    out = tmp_path / "run"
    res = run_cli("simulate", "--trace", "azure-conv", "--placement", "prefill:TP2,decode:TP4", "--duration", "5",
                  *args, "--out", out, "--json")  # fmt: skip
    assert res.code == 0, res.err
    config = json.loads((out / "config.json").read_text())
    assert config["sim"]["slo"]["ttft_s"] == pytest.approx(ttft_s)


def test_slo_options_default_to_the_model_everywhere() -> None:
    """Every command's --slo-ttft-ms / --slo-tpot-ms is spelled the same and defaults to the Slo model's targets
    (None in the option, resolved from the model when the command runs)."""
    import typer.main

    from biscale.cli.common import slo_ms
    from biscale.cli.main import app

    root = typer.main.get_command(app)
    spelled = {
        name
        for name, cmd in root.commands.items()  # type: ignore[attr-defined]
        for p in getattr(cmd, "params", [])
        if "--slo-ttft-ms" in p.opts and p.default is None
    }
    assert {"plan", "simulate", "evaluate", "loadgen", "emulate-engine"} <= spelled
    hidden_old = [
        p.opts
        for p in root.commands["simulate"].params
        if "--ttft-slo-ms" in p.opts  # type: ignore[attr-defined]
    ]
    assert hidden_old == [["--ttft-slo-ms"]]
    assert slo_ms(None, None) == (Slo().ttft_s * 1e3, Slo().tpot_s * 1e3)
    assert slo_ms(450.0, None) == (450.0, Slo().tpot_s * 1e3)
