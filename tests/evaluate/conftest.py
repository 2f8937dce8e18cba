"""Fixtures for the evaluation tests: a private cache (seeded with the bundled capacity tables, so nothing is built),
a tiny scenario file and one small evaluation shared by the results, report and CLI tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: A tiny scenario: the default workload (so the bundled capacity table serves it), 90 s of arrivals, 45 s windows,
#: a given capacity (no search), two loads, a two-point switch-latency sweep.
TINY = """
name = "tiny"
description = "test scenario"
loads = [0.5, 0.8]
systems = {systems}

[workload]
trace = "azure-conv"
lengths = "sharegpt-v3"
duration_s = {duration}

[sim]
window_s = 45.0

[capacity]
capacity_rps = 30.0

[planner]
transition_startup_s = 45.0
{extra}
"""

ALL = ["distserve", "distserve-static", "distserve-governor", "placeonly", "static", "biscale", "oracle"]


def tiny_toml(path: Path, *, systems: list[str] | None = None, duration: float = 90.0, extra: str = "") -> Path:
    path.write_text(TINY.format(systems=repr(systems or ALL).replace("'", '"'), duration=duration, extra=extra))
    return path


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every evaluation test caches under a temporary directory (never the user's cache)."""
    d = tmp_path_factory.mktemp("cache")
    old = os.environ.get("BISCALE_CACHE_DIR")
    os.environ["BISCALE_CACHE_DIR"] = str(d)
    yield d
    if old is None:
        os.environ.pop("BISCALE_CACHE_DIR", None)
    else:
        os.environ["BISCALE_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def tiny_eval(tmp_path_factory: pytest.TempPathFactory, private_cache: Path) -> tuple[Path, dict[str, Any]]:
    """One small evaluation (every system, two loads, a sweep), run once on a 2-process pool, results written."""
    from biscale.evaluate import load_scenario, make_backend, run_evaluation, write_results

    root = tmp_path_factory.mktemp("tiny")
    sc = load_scenario(tiny_toml(root / "tiny.toml", extra="[sweep]\nswitch_latency_ms = [1, 50]\n"))
    out = root / "out"
    with make_backend("pool", workers=2) as backend:
        results = run_evaluation([sc], out, backend)
    write_results(out, results)
    return out, results
