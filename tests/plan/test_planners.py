"""The four tier-1 planners inside the simulator (re-planning windows), on a small real capacity table."""

from __future__ import annotations

import numpy as np
import pytest

from biscale.control import BaselineClock, MaxClock
from biscale.control.state import ClusterObservation
from biscale.hardware import get_hardware
from biscale.plan.capacity import CapacityTable
from biscale.plan.planners import PLANNER_CLASSES, BiScalePlanner, DistServePlanner
from biscale.plan.solve import Cluster, PlanSettings
from biscale.sim import SimConfig, simulate
from biscale.workload import Trace, load_lengths, poisson_trace, rescale_rate, slice_window

WINDOW_S = 30.0


@pytest.fixture(scope="module")
def step_trace() -> Trace:
    """60 s at 6 req/s, then 60 s at 30 req/s (ShareGPT lengths)."""
    lengths = load_lengths("sharegpt-v3")
    low, high = poisson_trace(6.0, 60.0, lengths, seed=1), poisson_trace(30.0, 60.0, lengths, seed=2)
    return Trace(
        np.concatenate([low.arrival_s, 60.0 + high.arrival_s]),
        np.concatenate([low.input_tokens, high.input_tokens]),
        np.concatenate([low.output_tokens, high.output_tokens]),
        name="step",
    )


def _run(planner, trace: Trace, initial_rps: float, controller=None):  # type: ignore[no-untyped-def]
    hw = get_hardware("h100-sxm", "llama-3.3-70b")
    placement = planner.initial_placement(initial_rps)
    cfg = SimConfig(nodes=2, gpus_per_node=8, window_s=WINDOW_S)
    return placement, simulate(trace, placement, hw, controller or BaselineClock(), planner=planner, config=cfg)


@pytest.mark.parametrize("name", ["biscale", "placeonly", "distserve", "distserve-static"])
def test_each_planner_runs_inside_simulate(name: str, small_table: CapacityTable, step_trace: Trace) -> None:
    cluster = Cluster(2, 8)
    kwargs = {"peak_rps": 30.0} if name == "distserve-static" else {}
    planner = PLANNER_CLASSES[name](small_table, cluster, **kwargs)
    assert planner.name == name
    ctrl = MaxClock() if name.startswith("distserve") else BaselineClock()
    placement, res = _run(planner, step_trace, 6.0, ctrl)
    s = res.summary
    assert s["requests_completed"] == s["requests_total"] == len(step_trace)
    assert res.meta["planner"] == name
    top = small_table.top_clock_mhz
    for g in placement.instances:
        row = small_table.get(g.phase, g.tp, g.clock)  # type: ignore[arg-type]
        assert row is not None and g.capacity_rps == pytest.approx(row.capacity_rps, rel=1e-6)
        if name.startswith("distserve"):
            assert g.clock == top
    if name == "distserve-static":
        assert planner.is_static and s["instances_total"] == placement.num_instances()
        return
    windows = int(res.summary["sim_time_s"] // WINDOW_S)
    assert len(planner.decisions) == windows
    assert [d.observed_rps for d in planner.decisions][:4] == pytest.approx(
        [
            np.sum((step_trace.arrival_s >= k * WINDOW_S) & (step_trace.arrival_s < (k + 1) * WINDOW_S)) / WINDOW_S
            for k in range(4)
        ]
    )
    # the load step (6 -> 30 req/s at 60 s) makes every re-planning planner add capacity
    first_high = next(d for d in planner.decisions if d.time_s >= 90.0)
    assert first_high.changed and first_high.forecast_rps > 20
    assert s["instances_total"] > placement.num_instances()


def test_placeonly_plans_exactly_what_biscale_plans(small_table: CapacityTable, step_trace: Trace) -> None:
    cluster = Cluster(2, 8)
    a, b = PLANNER_CLASSES["biscale"](small_table, cluster), PLANNER_CLASSES["placeonly"](small_table, cluster)
    _run(a, step_trace, 6.0)
    _run(b, step_trace, 6.0)
    assert [d.placement for d in a.decisions] == [d.placement for d in b.decisions]


def test_biscale_meets_the_slo_with_less_predicted_power_than_distserve(
    small_table: CapacityTable, workload: Trace
) -> None:
    tr = slice_window(rescale_rate(workload, 15.0, seed=0), 0, 120)
    ours, theirs = BiScalePlanner(small_table, Cluster(2, 8)), DistServePlanner(small_table, Cluster(2, 8))
    _, r_ours = _run(ours, tr, 15.0)
    _, r_theirs = _run(theirs, tr, 15.0, MaxClock())
    assert r_ours.summary["slo_met"] and r_theirs.summary["slo_met"]
    assert all(d.predicted_power_w < e.predicted_power_w for d, e in zip(ours.decisions, theirs.decisions, strict=True))
    assert r_ours.summary["energy_total_j"] < r_theirs.summary["energy_total_j"]


def _observation(placement, rate: float) -> ClusterObservation:  # type: ignore[no-untyped-def]
    return ClusterObservation(
        time_s=300.0,
        window_s=300.0,
        arrivals=int(rate * 300),
        arrival_rate_rps=rate,
        mean_input_tokens=float("nan"),
        mean_output_tokens=float("nan"),
        completions=0,
        placement=placement,
        instances=(),
        total_gpus=16,
    )


def test_hysteresis_and_transition_cost_keep_the_current_placement(small_table: CapacityTable) -> None:
    cluster = Cluster(2, 8)
    current = DistServePlanner(small_table, cluster).initial_placement(12.0)
    plain = BiScalePlanner(small_table, cluster)
    changed = plain.plan(_observation(current, 12.0))
    assert changed.spec() != current.spec() and plain.decisions[-1].changed
    saving = current.prediction.cluster_power_w - plain.decisions[-1].predicted_power_w  # type: ignore[union-attr]
    assert saving > 0
    lazy = BiScalePlanner(small_table, cluster, PlanSettings(hysteresis_pct=99.0))
    assert lazy.plan(_observation(current, 12.0)) == current
    assert lazy.decisions[-1].kept_because == "hysteresis" and not lazy.decisions[-1].changed
    eager = BiScalePlanner(small_table, cluster, PlanSettings(hysteresis_pct=0.1))
    assert eager.plan(_observation(current, 12.0)).spec() == changed.spec()
    # hysteresis never keeps a placement that no longer has the headroom
    assert lazy.plan(_observation(current, 40.0)) != current
    # a transition cost far above the window's saving keeps the instances in force
    sticky = BiScalePlanner(small_table, cluster, PlanSettings(transition_startup_s=1e7))
    kept = sticky.plan(_observation(current, 12.0))
    assert sorted(g.token() for g in kept.instances) == sorted(g.token() for g in current.instances)


def test_registry_builds_planners_with_forecasters(small_table: CapacityTable) -> None:
    p = PLANNER_CLASSES["biscale"](small_table, Cluster(2, 8), forecaster="peak")
    assert p.forecaster.name == "peak"
    p.plan(_observation(p.initial_placement(5.0), 20.0))
    p.plan(_observation(p.initial_placement(5.0), 5.0))
    assert p.decisions[-1].forecast_rps == 20.0  # the peak of the recent windows


def test_distserve_lock_keeps_distserves_instances_at_the_lowest_clock_that_covers_the_forecast(
    small_table: CapacityTable,
) -> None:
    """Same instances as DistServe; each phase at the lowest tabulated clock whose capacity x count covers the
    forecast at the headroom's utilisation; a lower clock would not (checked against the table)."""
    from biscale.plan.planners import DistServeLockPlanner
    from biscale.plan.solve import Demand, _problem, usable_configs

    cluster, settings = Cluster(2, 8), PlanSettings()
    lock, ref = DistServeLockPlanner(small_table, cluster, settings), DistServePlanner(small_table, cluster, settings)
    for rate in (3.0, 10.0, 20.0):
        got, want = lock.initial_placement(rate), ref.initial_placement(rate)
        assert [(g.phase, g.tp, g.count) for g in got.instances] == [(g.phase, g.tp, g.count) for g in want.instances]
        problem = _problem(
            small_table, cluster, Demand.of(small_table, rate), settings, usable_configs(small_table, cluster, settings)
        )
        clocks = sorted({c.clock_mhz for c in small_table.configs})
        for g in got.instances:

            def covers(clock: int, g=g, problem=problem, rate=rate) -> bool:  # type: ignore[no-untyped-def]
                c = small_table.get(g.phase, g.tp, clock)
                return (
                    c is not None
                    and c.capacity_rps > 0
                    and (g.count * min(problem.u_max, problem.max_util(c)) * c.capacity_rps >= rate - 1e-9)
                )

            assert isinstance(g.clock, int)
            if g.clock != small_table.top_clock_mhz:
                assert covers(g.clock)
            assert not any(covers(c) for c in clocks if c < g.clock)
    # at a low rate at least one phase runs below the top clock (else the baseline adds nothing)
    assert any(g.clock != small_table.top_clock_mhz for g in lock.initial_placement(3.0).instances)
