"""Every simulator run in these tests that records power segments is checked against the simulator's invariants
(:func:`biscale.sim.invariants.check_invariants`) when it is collected, whatever the test then asserts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import biscale.sim.results as results
from biscale.sim.engine import Simulator
from biscale.sim.invariants import check_invariants


@pytest.fixture(autouse=True)
def _check_every_recorded_run(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Wrap :func:`biscale.sim.results.collect`; yields the number of runs checked so far (a list of one int)."""
    checked = [0]
    collect = results.collect

    def checked_collect(sim: Simulator) -> results.SimResult:
        res = collect(sim)
        if res.segments is not None:
            check_invariants(res, sim.config, sim.cost_model)
            checked[0] += 1
        return res

    monkeypatch.setattr(results, "collect", checked_collect)
    yield checked
