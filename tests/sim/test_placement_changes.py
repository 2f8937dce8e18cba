"""Placement changes at window boundaries: draining, start-up with idle power, GPU reuse, observations."""

from __future__ import annotations

import numpy as np
import pytest

from biscale.control import (
    ClockController,
    ClusterObservation,
    InstanceState,
    MaxClock,
    Placement,
    Planner,
    ScheduledPlanner,
    parse_placement,
)
from biscale.errors import InputError
from biscale.hardware import get_hardware
from biscale.sim import SimConfig, SimResult, simulate
from biscale.sim.toy import ToyCostModel
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


# ---------------------------------------------------------------------------- regressions from issue 19
TOY = ToyCostModel()
TOY_FMAX = TOY.supported_clocks_mhz[-1]


class LowestClock(ClockController):
    """A dynamic controller (asked before every iteration) that always wants the lowest clock."""

    def decide(self, state: InstanceState) -> int | None:
        return state.supported_clocks_mhz[0]


def _owned_segments_end_by_stop(res: SimResult) -> None:
    seg = res.segments
    assert seg is not None
    for _, row in res.instances.iterrows():
        mine = seg[seg["instance_id"] == row["instance_id"]]
        if row["final_status"] == "stopped":
            assert mine["end_s"].max() <= row["stop_s"], f"instance {row['instance_id']} ran after it stopped"


@pytest.mark.parametrize("prefill_ctrl", ["max", "dynamic"])
def test_draining_prefill_instance_never_stops_with_a_chunk_unfinished(prefill_ctrl: str) -> None:
    """Issue 19, first scenario: ``prefill:TP2,decode:TP2`` -> ``prefill:TP1,decode:TP3`` at 0.04 s on 1 x 4 GPUs,
    budget 64, two 200-in / 50-out requests at 0. Request 0's prefill ends at 0.045 s in the same batch as request
    1's first chunk; its KV used to be rejected (no ready decode instance), which stopped the prefill instance while
    request 1's chunk was out of its queue: it then ran 3 more iterations on GPUs the TP3 decode instance owned (a
    dynamic prefill controller's clock requests landed there). Now the draining decode instance takes both
    requests, the prefill instance stops after its last chunk, and every GPU has one owner at a time."""
    a, b = parse_placement("prefill:1xTP2,decode:1xTP2"), parse_placement("prefill:1xTP1,decode:1xTP3")
    cfg = SimConfig(nodes=1, gpus_per_node=4, window_s=0.04, prefill_token_budget=64, record_segments=True)
    trace = Trace(np.zeros(2), np.array([200, 200]), np.array([50, 50]))
    ctrl = {"prefill": LowestClock() if prefill_ctrl == "dynamic" else MaxClock(), "decode": MaxClock()}
    res = simulate(trace, a, TOY, ctrl, planner=ScheduledPlanner([(0, a), (0.04, b)]), config=cfg)
    rq = res.requests
    _owned_segments_end_by_stop(res)
    inst = res.instances.set_index("instance_id")
    p0 = inst.loc[0]
    # 200 + 200 tokens in chunks of 64: 7 iterations, the last one (16 tokens) ends the prefill instance's work
    assert p0["iterations"] == 7 and p0["stop_s"] >= rq["prefill_end_s"].max()
    assert list(rq["status"]) == ["completed", "completed"]
    assert list(rq["decode_instance"]) == [1, 1]  # the draining decode instance took both
    # the new TP3 decode instance starts only when both old instances have stopped, and runs at the top clock
    new_dec = inst[(inst["phase"] == "decode") & (inst["tp"] == 3)].iloc[0]
    assert new_dec["start_s"] >= max(p0["stop_s"], inst.loc[1, "stop_s"])
    tl = res.timeline
    assert (tl.loc[tl["phase"] == "decode", "clock_mhz"] == TOY_FMAX).all()


def test_capacity_callbacks_never_reenter_the_decode_queue() -> None:
    """Issue 19, second scenario (2 x 4 GPUs, KV 2,000 tokens per GPU): ``prefill:TP4,decode:TP4`` ->
    ``prefill:TP4,prefill:TP1,decode:TP1`` at 0.25 s -> ``prefill:TP2,decode:TP4`` at 1.25 s. Placing the decode
    queue used to stop a prefill instance whose stop created an instance whose readiness placed the same queue
    again (IndexError). Both requests fit the last placement and complete."""
    a = parse_placement("prefill:1xTP4,decode:1xTP4")
    b = parse_placement("prefill:1xTP4,prefill:1xTP1,decode:1xTP1")
    c = parse_placement("prefill:1xTP2,decode:1xTP4")
    cfg = SimConfig(nodes=2, gpus_per_node=4, window_s=0.25, record_segments=True)
    trace = Trace(np.array([0.0, 1.1963]), np.array([1182, 1292]), np.array([133, 7]))
    toy = ToyCostModel(kv_tokens_per_gpu=2000)
    res = simulate(trace, a, toy, MaxClock(), planner=ScheduledPlanner([(0, a), (0.25, b), (1.25, c)]), config=cfg)
    assert list(res.requests["status"]) == ["completed", "completed"]
    _owned_segments_end_by_stop(res)


SHRINK_TRACE = Trace(
    np.array([0.0, 0.0, 0.04, 0.1]), np.array([100, 100, 2000, 100]), np.array([40, 40, 20, 10])
)  # two long decodes, a 2,020-token request prefilling at the change, a probe 50 ms after it


def test_shrink_never_rejects_a_request_that_fits_and_keeps_prefill_serving() -> None:
    """Issue 19, third scenario: ``prefill:TP4,decode:TP4`` -> ``prefill:2xTP1,decode:2xTP2`` at 0.05 s on 2 x 4
    GPUs. The 2,020-token request prefilling at the change used to be rejected (the new TP2 decode instances, 200,000
    tokens each, waited for its prefill instance's GPUs) and no prefill instance was ready for 0.44 s (the new ones
    waited for the old decode instance to finish its requests): the probe at 0.1 s waited 0.4 s for its first
    token. Now the new instances are packed so that each phase gets one on GPUs that are released soon (the old
    prefill instance's), the draining decode instance takes the KV the old prefill instance still holds, and the
    probe's TTFT stays within a few prefill iterations of the unchanged placement's."""
    a, b = parse_placement("prefill:1xTP4,decode:1xTP4"), parse_placement("prefill:2xTP1,decode:2xTP2")
    cfg = SimConfig(nodes=2, gpus_per_node=4, window_s=0.05, record_segments=True, frontend_overhead_s=0.0)
    same = simulate(SHRINK_TRACE, a, TOY, MaxClock(), config=cfg)
    res = simulate(SHRINK_TRACE, a, TOY, MaxClock(), planner=ScheduledPlanner([(0, a), (0.05, b)]), config=cfg)
    rq = res.requests
    assert (rq["status"] == "completed").all()
    assert rq.loc[2, "decode_instance"] == 1  # the draining decode instance took the prompt prefilled at the change
    inst = res.instances.set_index("instance_id")
    new_prefill = inst[(inst["phase"] == "prefill") & (inst.index > 1)]
    assert len(new_prefill) == 2
    assert new_prefill["start_s"].min() == pytest.approx(inst.loc[0, "stop_s"])  # on the old prefill's GPUs
    assert inst.loc[0, "stop_s"] < 0.1
    # the probe (arrives at 0.1 s): prefilled by a new TP1 instance, decoded by the new TP2 instance that started
    # with it; its TTFT is the unchanged run's plus at most its slower (TP1 instead of TP4) prefill
    probe_ttft, base_ttft = rq.loc[3, "ttft_s"], same.requests.loc[3, "ttft_s"]
    tp1_prefill = TOY.prefill_base_s + TOY.prefill_per_token_s * 100 + TOY.prefill_per_pair_s * 100 * 101 / 2
    assert probe_ttft <= base_ttft + tp1_prefill + 1e-9
    _owned_segments_end_by_stop(res)
