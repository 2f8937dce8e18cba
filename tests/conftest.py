"""Shared test fixtures: the CLI runner, a loopback server for aiohttp apps, the shared reference data."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("MPLBACKEND", "Agg")

# Hypothesis profiles, chosen by $BISCALE_HYPOTHESIS_PROFILE (or --hypothesis-profile). CI machines are slow and
# noisy: no per-example deadline. Property tests draw fresh examples on every run (their @example cases are pinned);
# the session's seed is in the report header and a failure prints its shrunk example with a @reproduce_failure
# blob, so any failure can be replayed with --hypothesis-seed=SEED.
#   biscale     the ordinary suite (default): 60 fresh examples per property test
#   pinned      the same examples on every run (derandomised), for bisecting or comparing runs locally
#   randomized  the randomized checkers (tests marked ``randomized``): thousands of fresh examples per test
_COMMON: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow],
    "database": None,
    "print_blob": True,
}
settings.register_profile("biscale", max_examples=60, **_COMMON)
settings.register_profile("pinned", max_examples=60, derandomize=True, **_COMMON)
settings.register_profile("randomized", max_examples=5_000, **_COMMON)
settings.load_profile(os.environ.get("BISCALE_HYPOTHESIS_PROFILE", "biscale"))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Register the ``randomized`` marker; fix one random seed for the session (unless derandomised or given
    with --hypothesis-seed) so that the report header can name it."""
    config.addinivalue_line("markers", "randomized: a randomized checker (run with the 'randomized' profile in CI)")
    if config.getoption("hypothesis_seed", None) is None and not settings.default.derandomize:
        config.option.hypothesis_seed = str(random.SystemRandom().randrange(2**63))


def _seed_line(config: pytest.Config) -> str:
    seed = config.getoption("hypothesis_seed", None)
    profile = settings.get_current_profile_name()
    if seed is None:
        return f"hypothesis profile {profile!r}, derandomised"
    return f"hypothesis profile {profile!r}, seed {seed} (replay a failure with --hypothesis-seed={seed})"


def pytest_report_header(config: pytest.Config) -> str:
    return _seed_line(config)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Name the seed again after a failure (``-q`` hides the header)."""
    if exitstatus != 0:
        terminalreporter.write_line(_seed_line(config))


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
def serve_app() -> Iterator[Callable[..., str]]:
    """Serve aiohttp applications on loopback ports from background threads: ``serve_app(app)`` returns the URL;
    every one is stopped after the test."""
    import asyncio
    import threading

    from aiohttp import web

    servers: list[tuple[asyncio.AbstractEventLoop, web.AppRunner, threading.Thread]] = []

    def _start(app: web.Application, shutdown_timeout: float = 0.5) -> str:
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        servers.append((loop, runner, thread))
        return f"http://127.0.0.1:{port}"

    yield _start
    for loop, runner, thread in servers:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture
def shared_data() -> Path:
    """The shared reference data directory (calibration, traces, lengths); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (set BISCALE_SHARED_DATA to run this comparison)")
    return SHARED_DATA
