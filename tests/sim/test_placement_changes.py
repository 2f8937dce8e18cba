"""Placement changes at window boundaries: draining, start-up with idle power, GPU reuse, observations."""

from __future__ import annotations

import numpy as np
import pytest

from biscale.control import ClusterObservation, MaxClock, Placement, Planner, ScheduledPlanner, parse_placement
from biscale.errors import InputError
from biscale.hardware import get_hardware
from biscale.sim import SimConfig, simulate
from biscale.workload import Trace

HW = get_hardware("h100-sxm", "llama-3.3-70b")
FMAX = HW.supported_clocks_mhz[-1]


def steady(rate: float, span: float, seed: int = 0, inp: int = 400, out: int = 30) -> Trace:
    rng = np.random.default_rng(seed)
    n = int(rate * span)
    arr = np.sort(np.concatenate([[0.0], rng.uniform(0, span, n - 1)]))
    return Trace(arr, rng.integers(50, inp, n), rng.integers(2, out, n))


def test_scale_out_new_instance_starts_up_drawing_idle_power() -> None:
    a = parse_placement("prefill:1xTP2,decode:1xTP4")
    b = parse_placement("prefill:2xTP2,decode:1xTP4")
    cfg = SimConfig(nodes=1, gpus_per_node=8, window_s=10.0, startup_s=5.0, record_segments=True)
    res = simulate(steady(8, 30), a, HW, MaxClock(), planner=ScheduledPlanner([(0, a), (10.0, b)]), config=cfg)
    inst = res.instances
    assert len(inst) == 3
    new = inst.iloc[2]
    assert (new["phase"], new["start_s"], new["ready_s"]) == ("prefill", 10.0, 15.0)
    rq = res.requests
    served = rq[rq["prefill_instance"] == 2]
    assert len(served) > 0 and (served["prefill_start_s"] >= 15.0).all()
    seg = res.segments
    assert seg is not None
    mine = seg[seg["instance_id"] == 2]
    assert mine["start_s"].min() == 10.0
    clipped = (np.minimum(mine["end_s"], 15.0) - mine["start_s"]).clip(lower=0.0)
    assert float((clipped * mine["power_w"]).sum()) == pytest.approx(HW.idle_power_w(2, FMAX) * 2 * 5.0, rel=1e-9)
    assert (mine[mine["start_s"] < 15.0]["busy"] == 0).all()
    assert res.summary["requests_completed"] == len(rq)
    assert rq["energy_j"].sum() == pytest.approx(res.summary["energy_busy_j"], rel=1e-9)


def test_scale_in_drains_before_stopping_and_frees_gpus_for_new_instances() -> None:
    # 1 node x 8: the prefill TP4 must drain before two TP2 prefill instances can use its GPUs
    a = parse_placement("prefill:1xTP4,decode:1xTP4")
    b = parse_placement("prefill:2xTP2,decode:1xTP4")
    cfg = SimConfig(nodes=1, gpus_per_node=8, window_s=10.0, startup_s=1.0, record_segments=True)
    tr = steady(30, 25, inp=3000)
    res = simulate(tr, a, HW, MaxClock(), planner=ScheduledPlanner([(0, a), (10.0, b)]), config=cfg)
    inst = res.instances.set_index("instance_id")
    old = inst.loc[0]
    assert old["final_status"] == "stopped" and old["stop_s"] >= 10.0
    rq = res.requests
    on_old = rq[rq["prefill_instance"] == 0]
    assert (on_old["status"] == "completed").all()
    assert on_old["prefill_end_s"].max() <= old["stop_s"] + 1e-12  # drained its queue before stopping
    assert (on_old["arrival_s"] < 10.0).all()  # nothing new was routed to it after the window
    for iid in (2, 3):
        assert inst.loc[iid, "start_s"] == pytest.approx(old["stop_s"])
        assert set(inst.loc[iid, "gpus"].split(",")) <= set(old["gpus"].split(","))
    assert res.summary["requests_completed"] == len(rq)
    # the stopped instance draws nothing after it stops
    seg = res.segments
    assert seg is not None
    assert seg[seg["instance_id"] == 0]["end_s"].max() == pytest.approx(old["stop_s"])


def test_planner_sees_window_observation() -> None:
    seen: list[ClusterObservation] = []
    a = parse_placement("prefill:1xTP2,decode:1xTP4")

    class Recorder(Planner):
        def plan(self, observation: ClusterObservation) -> Placement:
            seen.append(observation)
            return a

    tr = steady(5, 20)
    res = simulate(tr, a, HW, MaxClock(), planner=Recorder(), config=SimConfig(nodes=1, window_s=5.0))
    assert [o.time_s for o in seen][:4] == [5.0, 10.0, 15.0, 20.0]
    counts = [int(((tr.arrival_s >= t - 5) & (tr.arrival_s < t)).sum()) for t in (5.0, 10.0, 15.0)]
    assert [o.arrivals for o in seen[:3]] == counts
    assert seen[0].arrival_rate_rps == counts[0] / 5.0
    assert seen[0].placement == a and seen[0].total_gpus == 8
    done_by_last_window = int((res.requests["last_token_s"] <= seen[-1].time_s).sum())
    assert sum(o.completions for o in seen) == done_by_last_window
    assert 2 <= seen[1].mean_output_tokens < 30
    assert {i.phase for i in seen[0].instances} == {"prefill", "decode"}


def test_infeasible_plan_is_an_error() -> None:
    a = parse_placement("prefill:1xTP2,decode:1xTP4")
    big = parse_placement("prefill:2xTP4,decode:1xTP4")
    with pytest.raises(InputError, match="needs 12 GPUs but the cluster has 8"):
        simulate(
            steady(2, 10),
            a,
            HW,
            MaxClock(),
            planner=ScheduledPlanner([(0, a), (5.0, big)]),
            config=SimConfig(nodes=1, window_s=5.0),
        )
