"""Shared test fixtures: the CLI runner and the path to the shared reference data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("MPLBACKEND", "Agg")

# CI machines are slow and noisy: no per-example deadline; a fixed derandomised profile keeps runs reproducible.
settings.register_profile(
    "biscale", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], max_examples=60
)
settings.load_profile("biscale")

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The reference data the bundled copies came from: ``$BISCALE_SHARED_DATA`` or ``../shared/data`` beside the
#: checkout. Never needed: tests use the bundled copies, and those comparing them with the originals skip.
SHARED_DATA = Path(os.environ.get("BISCALE_SHARED_DATA", str(REPO_ROOT.parent / "shared" / "data")))


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """Run ``biscale ARGS...`` in-process; returns exit code, stdout and stderr."""
    from biscale.cli.main import main

    def _run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return _run


@pytest.fixture
def shared_data() -> Path:
    """The shared reference data directory (calibration, traces, lengths); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (set BISCALE_SHARED_DATA to run this comparison)")
    return SHARED_DATA
