"""Issue 9 (simulator realism): placement changes, prefill-side KV and backpressure, paged decode KV with
preemption, shared links, vLLM chunking, horizon accounting, unassigned GPUs, front-end overhead, phase isolation.
Each test checks numbers a hand calculation gives, or the invariant the issue names."""

from __future__ import annotations

import math

import numpy as np
import pytest

from biscale.control import (
    ClockController,
    InstanceState,
    MaxClock,
    Placement,
    ScheduledPlanner,
    parse_placement,
)
from biscale.control.controllers import BaselineClock
from biscale.costmodel import DecodeShape, PrefillShape
from biscale.hardware import get_hardware
from biscale.sim import SimConfig, Simulator, simulate
from biscale.sim.config import DEFAULT_FRONTEND_OVERHEAD_S
from biscale.sim.prefill import take_chunks
from biscale.sim.results import collect
from biscale.sim.toy import ToyCostModel
from biscale.workload import Trace

HW = get_hardware("h100-sxm", "llama-3.3-70b")
TOY = ToyCostModel()
FMAX = TOY.supported_clocks_mhz[-1]


def issue_trace() -> Trace:
    """The issue's reproduction: one 6,000-in / 9,000-out request at 0.9 s and twenty 200/20 requests after it
    (plus a one-token request at 0 s: a trace starts at 0)."""
    arrival = np.concatenate([[0.0, 0.9], 0.95 + 0.05 * np.arange(20)])
    return Trace(arrival, np.array([100, 6_000] + [200] * 20), np.array([1, 9_000] + [20] * 20))


# ---------------------------------------------------------------------------------------------- placement changes
@pytest.mark.parametrize("policy", ["paged", "full"])
def test_issue_reproduction_decode_shrink_does_not_stall_the_queue(policy: str) -> None:
    """Regression (issue 9, item 1): decode TP4 -> TP2 at t = 1 s. The long request no longer fits any decode
    instance: it is rejected with the reason recorded, and the twenty short ones behind it complete."""
    a = parse_placement("prefill:1xTP2,decode:1xTP4")
    b = parse_placement("prefill:1xTP2,decode:1xTP2")
    cfg = SimConfig(nodes=1, gpus_per_node=8, window_s=1.0, decode_kv_policy=policy)
    res = simulate(issue_trace(), a, HW, MaxClock(), planner=ScheduledPlanner([(0.0, a), (1.0, b)]), config=cfg)
    rq = res.requests
    assert (rq.loc[2:, "status"] == "completed").all() and rq.loc[0, "status"] == "completed"
    assert rq.loc[1, "status"] == "rejected"
    assert rq.loc[1, "reject_reason"] == (
        "15000 KV tokens exceed every decode instance's KV capacity (placement changed at 1 s)"
    )
    assert rq.loc[1, "prefill_end_s"] > 1.0 and math.isnan(rq.loc[1, "kv_transfer_start_s"])
    s = res.summary
    assert (s["requests_completed"], s["requests_rejected"], s["requests_unfinished"]) == (21, 1, 0)


def test_request_that_fits_only_a_starting_instance_does_not_block_others() -> None:
    """A prefilled request that fits only a decode instance still starting up waits for it, without head-of-line
    blocking the requests behind it (they go to the ready instance)."""
    a = parse_placement("prefill:1xTP2,decode:1xTP2")
    b = parse_placement("prefill:1xTP2,decode:1xTP2,decode:1xTP4")
    arrival = np.concatenate([[0.0, 1.1], 1.2 + 0.05 * np.arange(10)])
    tr = Trace(arrival, np.array([100, 6_000] + [200] * 10), np.array([2, 9_000] + [20] * 10))
    cfg = SimConfig(nodes=1, gpus_per_node=8, window_s=1.0, startup_s=2.0)
    res = simulate(tr, a, HW, MaxClock(), planner=ScheduledPlanner([(0.0, a), (1.0, b)]), config=cfg)
    rq = res.requests
    inst = res.instances.set_index("instance_id")
    big = rq.loc[1]
    tp4 = int(inst.index[(inst["phase"] == "decode") & (inst["tp"] == 4)][0])
    assert inst.loc[tp4, "ready_s"] == pytest.approx(3.0)
    assert big["status"] == "completed" and big["decode_instance"] == tp4
    assert big["kv_transfer_start_s"] == pytest.approx(3.0) and big["prefill_end_s"] < 3.0
    small = rq.loc[2:]
    assert (small["status"] == "completed").all() and (small["kv_transfer_start_s"] < 3.0).all()
    assert (small["arrival_s"] > big["arrival_s"]).all()


def test_draining_prefill_keeps_its_gpus_until_its_prompts_kv_has_left() -> None:
    """Issue item 2: a drained prefill instance whose prompts wait for decode memory stays (drawing power) until
    the last of their transfers ends; only then does the new instance get its GPUs."""
    toy = ToyCostModel(kv_tokens_per_gpu=1_000)  # prefill TP4: 4,000 tokens; decode TP4: 4,000 tokens
    a = parse_placement("prefill:1xTP4,decode:1xTP4")
    b = parse_placement("prefill:2xTP2,decode:1xTP4")
    tr = Trace(np.linspace(0.0, 0.1, 8), np.full(8, 1_500), np.full(8, 200))
    cfg = SimConfig(nodes=1, gpus_per_node=8, window_s=0.2, decode_kv_policy="full", record_segments=True)
    res = simulate(tr, a, toy, MaxClock(), planner=ScheduledPlanner([(0.0, a), (0.2, b)]), config=cfg)
    rq = res.requests
    inst = res.instances.set_index("instance_id")
    old = inst.loc[0]
    mine = rq[rq["prefill_instance"] == 0]
    waited = mine[mine["kv_transfer_start_s"] > 0.2]
    assert len(waited) >= 1  # prompts prefilled before the change were still waiting for decode memory
    assert old["final_status"] == "stopped"
    assert old["stop_s"] == pytest.approx(mine["kv_transfer_end_s"].max())
    assert old["stop_s"] > mine["prefill_end_s"].max()
    for iid in inst.index[inst["start_s"] > 0]:
        assert inst.loc[iid, "start_s"] == pytest.approx(old["stop_s"])
    assert (rq["status"] == "completed").all()
    seg = res.segments
    assert seg is not None
    assert seg.loc[seg["instance_id"] == 0, "end_s"].max() == pytest.approx(old["stop_s"])


def test_clock_and_capacity_changes_apply_in_place() -> None:
    """A plan that differs only in an instance's baseline clock and capacity keeps the instance: its clock moves
    through the actuator with the switch latency, its router weight changes, nothing drains."""
    a = Placement.model_validate(
        {"instances": [{"phase": "prefill", "tp": 2, "clock": 1410, "capacity_rps": 2.0}, {"phase": "decode", "tp": 4}]}
    )
    b = Placement.model_validate(
        {
            "instances": [
                {"phase": "prefill", "tp": 2, "clock": 1020, "capacity_rps": 5.0},
                {"phase": "decode", "tp": 4, "clock": "default"},
            ]
        }
    )
    tr = Trace(np.linspace(0.0, 4.0, 40), np.full(40, 300), np.full(40, 10))
    cfg = SimConfig(nodes=1, gpus_per_node=8, window_s=2.0, switch_latency_s=0.05)
    sim = Simulator(tr, a, HW, BaselineClock(), planner=ScheduledPlanner([(0.0, a), (2.0, b)]), config=cfg)
    sim.run()
    res = collect(sim)
    inst = res.instances
    assert len(inst) == 2 and (inst["final_status"] == "ready").all()
    assert list(inst["clock_switches"]) == [1, 1]
    assert sim.instances[0].weight == 5.0 and sim.instances[0].baseline_clock_mhz == 1020
    assert sim.instances[0].ledger.clock_mhz == 1020 and sim.instances[1].ledger.clock_mhz == 0
    tl = res.timeline
    pre = tl[tl["instance_id"] == 0].set_index("time_s")["clock_mhz"]
    assert pre.loc[2.0] == 1410 and pre.loc[3.0] == 1020  # the switch lands 50 ms after the window
    assert (res.requests["status"] == "completed").all()


def test_make_before_break_keeps_a_ready_decode_instance() -> None:
    """With free GPUs, the replacement decode instance is created first; the old one keeps serving until it is
    ready, then drains: decode never has zero ready instances."""
    a = parse_placement("prefill:1xTP2,decode:1xTP4")
    b = parse_placement("prefill:1xTP2,decode:1xTP2")
    tr = Trace(np.linspace(0.0, 6.0, 60), np.full(60, 300), np.full(60, 30))
    cfg = SimConfig(nodes=1, gpus_per_node=8, window_s=2.0, startup_s=1.0, sample_interval_s=0.1)
    res = simulate(tr, a, HW, MaxClock(), planner=ScheduledPlanner([(0.0, a), (2.0, b)]), config=cfg)
    inst = res.instances.set_index("instance_id")
    assert inst.loc[2, "gpus"] == "6,7" and inst.loc[2, "start_s"] == 2.0 and inst.loc[2, "ready_s"] == 3.0
    assert inst.loc[1, "stop_s"] >= 3.0
    rq = res.requests
    moved = rq[(rq["kv_transfer_start_s"] > 2.0) & (rq["kv_transfer_start_s"] < 3.0)]
    assert len(moved) > 0 and (moved["decode_instance"] == 1).all()  # the old instance served meanwhile
    tl = res.timeline
    dec = tl[tl["phase"] == "decode"]
    assert dec.groupby("time_s")["status"].apply(lambda s: (s == "ready").any()).all()
    assert (rq["status"] == "completed").all()


def test_without_free_gpus_the_change_breaks_before_it_makes() -> None:
    a = parse_placement("prefill:1xTP4,decode:1xTP4")
    b = parse_placement("prefill:1xTP4,decode:2xTP2")
    tr = Trace(np.linspace(0.0, 4.0, 40), np.full(40, 300), np.full(40, 30))
    cfg = SimConfig(nodes=1, gpus_per_node=8, window_s=2.0)
    res = simulate(tr, a, HW, MaxClock(), planner=ScheduledPlanner([(0.0, a), (2.0, b)]), config=cfg)
    inst = res.instances.set_index("instance_id")
    assert inst.loc[1, "final_status"] == "stopped"
    assert (inst.loc[[2, 3], "start_s"] == inst.loc[1, "stop_s"]).all()


# ---------------------------------------------------------------------------------------------- prefill-side KV
def test_prefill_backpressure_bounds_held_kv_and_reports_blocked_time() -> None:
    """Issue item 3: 200 prompts of 2,000 tokens on a TP2 prefill instance with decode as the bottleneck used to
    pile up 30x its KV capacity; now its KV never exceeds capacity and the stall is reported."""
    tr = Trace(np.linspace(0.0, 2.0, 200), np.full(200, 2_000), np.full(200, 300))
    cfg = SimConfig(nodes=1, gpus_per_node=8, record_segments=True, sample_interval_s=0.25)
    res = simulate(tr, parse_placement("prefill:1xTP2,decode:1xTP2"), HW, MaxClock(), config=cfg)
    inst = res.instances.set_index("instance_id")
    cap = HW.kv_capacity_tokens(2)
    assert inst.loc[0, "kv_capacity_tokens"] == cap
    assert cap - 2_000 < inst.loc[0, "kv_peak_tokens"] <= cap
    s = res.summary
    assert s["prefill_kv_blocked_s"] == inst.loc[0, "kv_blocked_s"] > 1.0
    assert (res.requests["status"] == "completed").all()
    tl = res.timeline
    assert tl.loc[tl["phase"] == "prefill", "kv_used_tokens"].max() <= cap


def test_blocked_time_is_the_transfer_that_frees_memory() -> None:
    """Prefill KV holds one 600-token prompt; the second prompt starts when the first one's transfer ends, and the
    instance was blocked exactly that long."""
    toy = ToyCostModel(kv_tokens_per_gpu=1_000)
    tr = Trace(np.zeros(2), np.array([600, 600]), np.array([300, 300]))
    cfg = SimConfig(nodes=1, gpus_per_node=2, decode_kv_policy="full", frontend_overhead_s=0.0)
    res = simulate(tr, parse_placement("prefill:1xTP1,decode:1xTP1"), toy, MaxClock(), config=cfg)
    rq = res.requests
    net = cfg.network
    transfer = net.nvlink_latency_s + 600 * toy.kv_bytes / net.nvlink_bw_bytes_per_s
    assert rq.loc[0, "kv_transfer_end_s"] - rq.loc[0, "prefill_end_s"] == pytest.approx(transfer, rel=1e-9)
    assert rq.loc[1, "prefill_start_s"] == pytest.approx(rq.loc[0, "kv_transfer_end_s"], abs=1e-12)
    assert res.summary["prefill_kv_blocked_s"] == pytest.approx(transfer, rel=1e-9)


# ---------------------------------------------------------------------------------------------- paged decode KV
def two_long_requests(policy: str, watermark: float = 0.0):  # type: ignore[no-untyped-def]
    """Two 480-in / 400-out requests on a decode TP1 of 62 blocks x 16 tokens (992 tokens)."""
    toy = ToyCostModel(kv_tokens_per_gpu=1_000)
    tr = Trace(np.zeros(2), np.array([480, 480]), np.array([400, 400]))
    cfg = SimConfig(
        nodes=1,
        gpus_per_node=2,
        decode_kv_policy=policy,
        kv_watermark_frac=watermark,
        kv_link_sharing="off",
        record_segments=True,
        frontend_overhead_s=0.0,
    )
    return toy, cfg, simulate(tr, parse_placement("prefill:1xTP1,decode:1xTP1"), toy, MaxClock(), config=cfg)


def test_paged_kv_preempts_the_most_recent_request_and_recomputes_it_as_a_prefill() -> None:
    """Both prompts (30 blocks each) are admitted; each grows a block every 16 tokens. Before iteration 16 both need
    a block with 62 in use: the most recently admitted (request 1) is preempted with 17 tokens generated. Its whole
    context (480 + 17 tokens, vLLM resets its computed tokens to 0) fits only when request 0 has finished: it is
    recomputed then, in a step of its own (nothing else runs), which samples its 18th token."""
    toy, _, res = two_long_requests("paged")
    s = res.summary
    assert (s["preemptions"], s["recomputed_tokens"]) == (1, 497)
    inst = res.instances.set_index("instance_id")
    assert (inst.loc[1, "preemptions"], inst.loc[1, "recomputed_tokens"]) == (1, 497)
    assert inst.loc[1, "kv_capacity_tokens"] == 992 and inst.loc[1, "kv_peak_tokens"] == 992
    assert inst.loc[1, "tokens"] == 2 * 399  # every decode token once (request 1's 18th by its recomputation)
    rq = res.requests
    assert list(rq["preemptions"]) == [0, 1] and (rq["status"] == "completed").all()
    assert list(rq["tokens_generated"]) == [400, 400]
    seg = res.segments
    assert seg is not None
    busy = seg[(seg["instance_id"] == 1) & (seg["busy"] == 1)]
    recompute = toy.prefill_cost(PrefillShape.from_lengths([497]), 1, FMAX)
    hit = busy[np.isclose(busy["power_w"], recompute.power_w)]
    assert len(hit) == 1
    assert float(hit["end_s"].iloc[0] - hit["start_s"].iloc[0]) == pytest.approx(recompute.latency_s, rel=1e-9)
    assert hit["start_s"].iloc[0] == pytest.approx(rq.loc[0, "last_token_s"])  # after request 0 has left
    # request 1's largest gap spans its wait and the recomputation
    assert rq.loc[1, "max_tbt_s"] > rq.loc[0, "last_token_s"] - rq.loc[0, "first_token_s"] - 17 * 0.02
    assert rq["energy_j"].sum() == pytest.approx(s["energy_busy_j"], rel=1e-9)


def test_recomputation_shares_a_step_with_the_running_decodes() -> None:
    """vLLM 0.33's v1 scheduler (``vllm/v1/core/sched/scheduler.py``): a preempted request goes back to the waiting
    queue with ``num_computed_tokens = 0``; a later step schedules the running requests' decodes first and then,
    in the token budget left, the preempted request's prompt and generated tokens as one prefill, and samples its
    next token in that same step. Request 2 (150-in) is preempted with 11 tokens generated; when request 1 has left,
    its 150 + 11 tokens are recomputed in one step with request 0's decode (context 161): the step takes both
    parts' latencies at their mean power, request 0 gets its token at its end (its largest gap is that step), and
    no step recomputes alone."""
    toy = ToyCostModel(kv_tokens_per_gpu=1_000)
    tr = Trace(np.array([0.0, 0.0, 0.05]), np.array([100, 700, 150]), np.array([300, 60, 300]))
    cfg = SimConfig(
        nodes=1,
        gpus_per_node=2,
        kv_watermark_frac=0.0,
        kv_link_sharing="off",
        record_segments=True,
        frontend_overhead_s=0.0,
    )
    res = simulate(tr, parse_placement("prefill:1xTP1,decode:1xTP1"), toy, MaxClock(), config=cfg)
    rq = res.requests
    assert list(rq["preemptions"]) == [0, 0, 1] and res.summary["recomputed_tokens"] == 161
    assert (rq["status"] == "completed").all()
    pre = toy.prefill_cost(PrefillShape.from_lengths([161]), 1, FMAX)
    dec = toy.decode_cost(DecodeShape(1, 161, 161.0**2), 1, FMAX)
    lat = pre.latency_s + dec.latency_s
    power = (pre.latency_s * pre.power_w + dec.latency_s * dec.power_w) / lat
    seg = res.segments
    assert seg is not None
    busy = seg[(seg["instance_id"] == 1) & (seg["busy"] == 1)]
    mixed = busy[np.isclose(busy["power_w"], power, rtol=1e-12)]
    assert len(mixed) == 1 and float(mixed["end_s"].iloc[0] - mixed["start_s"].iloc[0]) == pytest.approx(lat)
    assert not np.isclose(busy["power_w"], pre.power_w, rtol=1e-12).any()  # no recomputation step of its own
    assert rq.loc[0, "max_tbt_s"] == pytest.approx(lat, rel=1e-9)
    assert res.instances.loc[1, "tokens"] == 299 + 59 + 299  # every decode token once


def test_full_reservation_never_preempts_and_serialises() -> None:
    _, _, res = two_long_requests("full")
    rq = res.requests
    assert res.summary["preemptions"] == 0
    assert rq.loc[1, "kv_transfer_start_s"] == pytest.approx(rq.loc[0, "last_token_s"])


def test_watermark_holds_back_admission() -> None:
    """With a 10 % watermark (6 of 62 blocks) the second prompt (30 blocks) is not admitted next to the first
    (62 - 31 - 30 < 6): no preemption, the second transfer waits for memory."""
    _, _, res = two_long_requests("paged", watermark=0.1)
    rq = res.requests
    assert res.summary["preemptions"] == 0
    assert rq.loc[1, "kv_transfer_start_s"] > rq.loc[0, "first_token_s"] + 0.5


# ---------------------------------------------------------------------------------------------- links
def link_run(spec: str, nodes: int, gpn: int, sharing: str, n: int = 2):  # type: ignore[no-untyped-def]
    tr = Trace(np.zeros(n), np.full(n, 1_000), np.full(n, 5))
    cfg = SimConfig(nodes=nodes, gpus_per_node=gpn, kv_link_sharing=sharing)
    return simulate(tr, parse_placement(spec), TOY, MaxClock(), config=cfg).requests


def test_transfers_sharing_a_link_queue_fifo() -> None:
    net = SimConfig().network
    one = net.nvlink_latency_s + 1_000 * TOY.kv_bytes / (2 * net.nvlink_bw_bytes_per_s)
    rq = link_run("prefill:1xTP2,decode:1xTP2", 1, 4, "fifo")
    dur = rq["kv_transfer_end_s"] - rq["kv_transfer_start_s"]
    assert dur[0] == pytest.approx(one, rel=1e-9) and dur[1] == pytest.approx(2 * one, rel=1e-9)
    assert rq.loc[1, "kv_link_wait_s"] == pytest.approx(one, rel=1e-9) and rq.loc[0, "kv_link_wait_s"] == 0
    free = link_run("prefill:1xTP2,decode:1xTP2", 1, 4, "off")
    assert np.allclose(free["kv_transfer_end_s"] - free["kv_transfer_start_s"], one, rtol=1e-9)


def test_transfers_on_different_gpus_run_in_parallel_across_nodes() -> None:
    """A TP2 prefill instance ships to two TP1 decode instances on another node: each transfer uses one of its two
    NIC lanes, so they run at once."""
    net = SimConfig().network
    one = net.internode_latency_s + 1_000 * TOY.kv_bytes / net.internode_bw_bytes_per_s
    rq = link_run("prefill:1xTP2,decode:2xTP1", 2, 2, "fifo")
    assert set(rq["decode_instance"]) == {1, 2}
    assert np.allclose(rq["kv_transfer_end_s"] - rq["kv_transfer_start_s"], one, rtol=1e-9)
    assert (rq["kv_link_wait_s"] == 0).all()


# ---------------------------------------------------------------------------------------------- chunking
def test_chunking_fills_the_budget_with_the_last_prompt() -> None:
    assert take_chunks([5_000, 5_000, 100], 8_192, 16) == [5_000, 3_192]
    assert take_chunks([10_000, 100], 8_192, 16) == [8_192]
    assert take_chunks([1_000, 2_000], 8_192, 16) == [1_000, 2_000]
    assert take_chunks([100, 100, 100], 8_192, 2) == [100, 100]
    assert take_chunks([], 8_192, 2) == []


def test_chunked_last_prompt_continues_at_the_head() -> None:
    tr = Trace(np.zeros(2), np.array([5_000, 5_000]), np.array([1, 1]))
    cfg = SimConfig(nodes=1, gpus_per_node=4)
    res = simulate(tr, parse_placement("prefill:1xTP2,decode:1xTP2"), HW, MaxClock(), config=cfg)
    rq = res.requests
    assert rq.loc[0, "prefill_start_s"] == rq.loc[1, "prefill_start_s"] == 0.0  # both in the first batch
    assert rq.loc[1, "prefill_end_s"] > rq.loc[0, "prefill_end_s"]
    assert res.instances.loc[0, "iterations"] == 2


# ---------------------------------------------------------------------------------------------- horizon, energy
def test_requests_after_the_horizon_are_not_arrived_and_do_not_count_against_the_slo() -> None:
    tr = Trace(
        np.concatenate([np.linspace(0.0, 1.0, 10), np.linspace(5.0, 6.0, 10)]), np.full(20, 200), np.full(20, 10)
    )
    cfg = SimConfig(nodes=1, gpus_per_node=8, max_time_s=3.0)
    res = simulate(tr, parse_placement("prefill:1xTP2,decode:1xTP4"), HW, MaxClock(), config=cfg)
    s = res.summary
    assert (s["requests_completed"], s["requests_not_arrived"], s["requests_unfinished"]) == (10, 10, 0)
    assert s["slo_attainment_pct"] == 100.0 and s["slo_met"] and s["slo_violations"] == 0
    assert set(res.requests.loc[10:, "status"]) == {"not_arrived"}


@pytest.mark.parametrize(("setting", "per_gpu_w"), [("idle", HW.governor.idle_power_w), ("off", 0.0), (37.5, 37.5)])
def test_unassigned_gpus_draw_their_power(setting: float | str, per_gpu_w: float) -> None:
    """A 16-GPU cluster running a 6-GPU placement: 10 GPUs in no instance for the whole run."""
    tr = Trace(np.linspace(0.0, 2.0, 20), np.full(20, 300), np.full(20, 20))
    cfg = SimConfig(nodes=2, gpus_per_node=8, unassigned_gpu_power_w=setting)
    res = simulate(tr, parse_placement("prefill:1xTP2,decode:1xTP4"), HW, MaxClock(), config=cfg)
    s = res.summary
    assert s["energy_unassigned_j"] == pytest.approx(10 * per_gpu_w * s["sim_time_s"], rel=1e-12)
    assert s["energy_cluster_j"] == pytest.approx(s["energy_total_j"] + s["energy_unassigned_j"], rel=1e-12)
    assert s["cluster_avg_power_w"] == pytest.approx(s["avg_power_w"] + 10 * per_gpu_w, rel=1e-9)
    out = int(res.requests["tokens_generated"].sum())
    assert s["output_tokens"] == out == 20 * 20
    assert s["cluster_energy_per_output_token_j"] == pytest.approx(s["energy_cluster_j"] / out, rel=1e-12)
    assert s["energy_per_output_token_j"] == pytest.approx(s["energy_total_j"] / out, rel=1e-12)


def test_frontend_overhead_shifts_token_times_only() -> None:
    tr = Trace(np.linspace(0.0, 3.0, 30), np.full(30, 400), np.arange(1, 31))
    plc = parse_placement("prefill:1xTP2,decode:1xTP4")
    base = simulate(tr, plc, HW, MaxClock(), config=SimConfig(nodes=1, gpus_per_node=8, frontend_overhead_s=0.0))
    assert SimConfig().frontend_overhead_s == DEFAULT_FRONTEND_OVERHEAD_S > 0
    ov = simulate(tr, plc, HW, MaxClock(), config=SimConfig(nodes=1, gpus_per_node=8, frontend_overhead_s=0.05))
    a, b = base.requests, ov.requests
    assert np.allclose(b["ttft_s"] - a["ttft_s"], 0.05, rtol=0, atol=1e-12)
    assert np.allclose(b["last_token_s"] - a["last_token_s"], 0.05, rtol=0, atol=1e-12)
    np.testing.assert_allclose(b["tpot_s"], a["tpot_s"], rtol=1e-12)
    np.testing.assert_array_equal(b["kv_transfer_end_s"], a["kv_transfer_end_s"])
    assert ov.summary["ttft_p50_ms"] == pytest.approx(base.summary["ttft_p50_ms"] + 50.0, rel=1e-9)
    assert ov.summary["energy_total_j"] == base.summary["energy_total_j"]


class Spy(ClockController):
    """Records what a dynamic controller sees."""

    def __init__(self) -> None:
        self.states: list[InstanceState] = []

    def decide(self, state: InstanceState) -> int | None:
        self.states.append(state)
        return None


def test_controllers_see_the_overhead_preemptions_and_prefill_kv() -> None:
    """The engine reports its front-end overhead, decode preemptions and the prefill instance's held KV in the
    state; the prefill MPC's TTFT budget takes the overhead from there unless told otherwise."""
    from biscale.control.mpc import PrefillMpc
    from biscale.predict import default_predictor

    toy = ToyCostModel(kv_tokens_per_gpu=1_000)
    tr = Trace(np.zeros(2), np.array([480, 480]), np.array([400, 400]))
    cfg = SimConfig(nodes=1, gpus_per_node=2, kv_watermark_frac=0.0, kv_link_sharing="off", frontend_overhead_s=0.12)
    spy = Spy()
    simulate(tr, parse_placement("prefill:1xTP1,decode:1xTP1"), toy, spy, config=cfg)
    assert {s.frontend_overhead_s for s in spy.states} == {0.12}
    dec = [s for s in spy.states if s.phase == "decode"]
    assert dec[0].preemptions == 0 and dec[-1].preemptions == 1
    pre = [s for s in spy.states if s.phase == "prefill"]
    assert pre[0].kv_used_tokens == 960  # both prompts reserved by the batch about to run
    mpc = PrefillMpc(default_predictor("h100-sxm", "llama-3.3-70b"), margin_pct=0.0)
    assert mpc.budget_s(pre[0]) == pytest.approx(pre[0].slo.ttft_s - 0.12)
    own = PrefillMpc(default_predictor("h100-sxm", "llama-3.3-70b"), margin_pct=0.0, frontend_overhead_s=0.02)
    assert own.budget_s(pre[0]) == pytest.approx(pre[0].slo.ttft_s - 0.02)


# ---------------------------------------------------------------------------------------------- phase isolation
def test_prefill_isolation_completes_requests_when_their_kv_has_left() -> None:
    tr = Trace(np.linspace(0.0, 1.0, 20), np.full(20, 500), np.full(20, 50))
    cfg = SimConfig(nodes=1, gpus_per_node=2, isolate_phase="prefill", frontend_overhead_s=0.0)
    res = simulate(tr, parse_placement("prefill:1xTP2,decode:1xTP4"), HW, MaxClock(), config=cfg)
    assert list(res.instances["phase"]) == ["prefill"]
    rq = res.requests
    assert (rq["status"] == "completed").all() and (rq["decode_instance"] == -1).all()
    net = cfg.network
    one = net.internode_latency_s + 500 * HW.kv_bytes_per_token / (2 * net.internode_bw_bytes_per_s)
    done = rq["kv_transfer_end_s"] - rq["kv_transfer_start_s"] - rq["kv_link_wait_s"]
    assert np.allclose(done, one, rtol=1e-9)
    assert (rq["first_token_s"] == rq["kv_transfer_end_s"]).all()
    assert (rq["last_token_s"] == rq["first_token_s"]).all()
    assert rq["tpot_s"].isna().all() and (rq["tokens_generated"] == 1).all()
    assert res.summary["decode_tokens"] == 0 and res.summary["output_tokens"] == 20


def test_decode_isolation_ttft_is_the_admission_wait() -> None:
    tr = Trace(np.linspace(0.0, 1.0, 20), np.full(20, 500), np.full(20, 50))
    cfg = SimConfig(nodes=1, gpus_per_node=4, isolate_phase="decode", frontend_overhead_s=0.01)
    res = simulate(tr, parse_placement("prefill:1xTP2,decode:1xTP4"), HW, MaxClock(), config=cfg)
    assert list(res.instances["phase"]) == ["decode"]
    rq = res.requests
    assert (rq["status"] == "completed").all() and (rq["prefill_instance"] == -1).all()
    assert (rq["prefill_end_s"] == rq["arrival_s"]).all()
    np.testing.assert_allclose(rq["ttft_s"], rq["kv_transfer_start_s"] - rq["arrival_s"] + 0.01, atol=1e-12)
    assert (rq["tokens_generated"] == 50).all() and res.summary["prompt_tokens"] == 0
