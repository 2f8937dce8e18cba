"""The tier-1 planner of one evaluation run: the arrivals it plans for and the planner with its initial placement.

Shared by the systems (:mod:`biscale.evaluate.systems`) and hindsight-lock's search (:mod:`biscale.evaluate.hindsight`),
which replays the reference planners' placements.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from biscale.control.placement import Placement
from biscale.evaluate.scenario import Scenario
from biscale.plan.capacity import CapacityTable
from biscale.plan.planners import PLANNER_CLASSES, TablePlanner
from biscale.plan.solve import Cluster, PlanSettings
from biscale.workload.trace import Trace


def submitted(trace: Trace, duration_s: float | None) -> np.ndarray:
    """Arrival times the simulator submits (those before ``duration_s``)."""
    a = np.asarray(trace.arrival_s)
    return a if duration_s is None else a[a < duration_s]


def window_rates_of(arrivals: np.ndarray, window_s: float) -> np.ndarray:
    """Rate of every full window of the submitted arrivals, req/s (one partial window when none is full)."""
    span = float(arrivals[-1]) if arrivals.size else 0.0
    n = math.floor(span / window_s + 1e-9)
    if n < 1:
        return np.array([arrivals.size / max(span, 1e-9)]) if arrivals.size else np.array([0.0])
    return np.histogram(arrivals, bins=np.arange(n + 1) * window_s)[0] / window_s


def plan_settings(scenario: Scenario) -> tuple[PlanSettings, str]:
    """The scenario's planner settings and forecaster."""
    opts = dict(scenario.planner)
    forecaster = str(opts.pop("forecaster", "previous"))
    return PlanSettings(**opts), forecaster


def build_planner(
    scenario: Scenario, planner: str, table: CapacityTable, arrivals: np.ndarray
) -> tuple[TablePlanner, Placement, dict[str, Any]]:
    """The tier-1 planner of a run and its initial placement (planned for the first window's rate, as every
    planner of the run is; ``distserve-static`` for the busiest window)."""
    settings, forecaster = plan_settings(scenario)
    cluster = Cluster(scenario.nodes, min(scenario.gpus, scenario.gpus_per_node))
    rates = window_rates_of(arrivals, scenario.sim.window_s)
    notes: dict[str, Any] = {"first_window_rps": float(rates[0])}
    cls = PLANNER_CLASSES[planner]
    if planner == "distserve-static":
        peak = float(rates.max())
        notes["peak_window_rps"] = peak
        pl: TablePlanner = cls(table, cluster, settings, peak_rps=peak)  # type: ignore[call-arg]
        return pl, pl.initial_placement(peak), notes
    pl = cls(table, cluster, settings, forecaster=forecaster)
    return pl, pl.initial_placement(float(rates[0])), notes
