"""Conservation, causality, exact energy, determinism: on fixed runs and as hypothesis properties."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, example, find, given, settings
from hypothesis import strategies as st

from biscale.control import (
    GOVERNOR_MHZ,
    ClockController,
    DefaultGovernor,
    InstanceState,
    MaxClock,
    Placement,
    ScheduledPlanner,
    parse_placement,
)
from biscale.costmodel import CostModel
from biscale.errors import InputError
from biscale.hardware import get_hardware
from biscale.sim import SimConfig, simulate
from biscale.sim.cluster import check_fits
from biscale.sim.invariants import check_invariants
from biscale.sim.toy import ToyCostModel
from biscale.workload import Trace

HW = get_hardware("h100-sxm", "llama-3.3-70b")
TOY = ToyCostModel()
REL = 1e-9


class RandomClocks(ClockController):
    """A seeded random clock schedule: each decision keeps the clock, locks a random clock, or unlocks."""

    def __init__(self, seed: int, p_change: float = 0.3) -> None:
        self.rng = np.random.default_rng(seed)
        self.p_change = p_change
        self.seen: list[InstanceState] = []

    def decide(self, state: InstanceState) -> int | None:
        if len(self.seen) < 50:
            self.seen.append(state)
        u = self.rng.random()
        if u > self.p_change:
            return None
        if u < 0.05:
            return GOVERNOR_MHZ
        return int(self.rng.choice(state.supported_clocks_mhz))


def small_trace(seed: int, n: int, span: float, max_in: int = 3000, max_out: int = 60) -> Trace:
    rng = np.random.default_rng(seed)
    arr = np.sort(np.concatenate([[0.0], rng.uniform(0, span, n - 1)]))
    return Trace(arr, rng.integers(1, max_in, n), rng.integers(1, max_out, n))


def test_fixed_run_on_hardware_model_holds_invariants() -> None:
    cfg = SimConfig(nodes=2, gpus_per_node=8, record_segments=True, sample_interval_s=0.5)
    res = simulate(small_trace(1, 300, 20.0), parse_placement("prefill:2xTP2,decode:2xTP4"), HW, MaxClock(), config=cfg)
    check_invariants(res, cfg, HW)
    assert res.summary["requests_completed"] == 300


def test_random_clock_schedule_on_hardware_model() -> None:
    cfg = SimConfig(nodes=1, gpus_per_node=8, record_segments=True, switch_latency_s=0.02)
    ctrl = RandomClocks(7)
    res = simulate(small_trace(2, 120, 15.0), parse_placement("prefill:1xTP2,decode:1xTP4"), HW, ctrl, config=cfg)
    check_invariants(res, cfg, HW)
    assert res.summary["clock_switches"] > 5
    # controllers saw real state: waits are non-negative, contexts exceed tokens generated
    for st_ in ctrl.seen:
        assert (st_.waiting_time_s >= 0).all()
        assert (st_.running_context_tokens > st_.running_generated_tokens).all()
        assert 0 <= st_.kv_used_tokens <= st_.kv_capacity_tokens
        assert st_.slo == cfg.slo


def test_deterministic() -> None:
    cfg = SimConfig(nodes=1, gpus_per_node=8, record_segments=True)
    tr = small_trace(3, 150, 10.0)
    runs = [
        simulate(tr, parse_placement("prefill:1xTP2,decode:1xTP4"), HW, RandomClocks(11), config=cfg) for _ in range(2)
    ]
    pd.testing.assert_frame_equal(runs[0].requests, runs[1].requests)
    pd.testing.assert_frame_equal(runs[0].timeline, runs[1].timeline)
    assert runs[0].summary == runs[1].summary


def test_horizon_reports_unfinished_with_state_and_shares_still_sum() -> None:
    cfg = SimConfig(nodes=1, gpus_per_node=8, record_segments=True, max_time_s=3.0)
    res = simulate(
        small_trace(4, 200, 5.0, max_out=400),
        parse_placement("prefill:1xTP2,decode:1xTP4"),
        HW,
        DefaultGovernor(),
        config=cfg,
    )
    check_invariants(res, cfg, HW)
    s = res.summary
    assert s["requests_unfinished"] > 0 and s["requests_not_arrived"] > 0
    unf = res.requests[res.requests["status"] == "unfinished"]
    assert "decoding" in set(unf["state"]) and "waiting_prefill" in set(unf["state"])
    dec = unf[unf["state"] == "decoding"]
    assert (dec["tokens_generated"] < dec["output_tokens"]).all() and (dec["decode_energy_j"] > 0).all()
    assert s["sim_time_s"] >= 3.0


def test_oversized_request_is_rejected_at_once() -> None:
    cap = HW.kv_capacity_tokens(4)
    tr = Trace(np.array([0.0, 0.1, 0.2]), np.array([100, 5000, 20_000]), np.array([cap, 10, 5]))
    cfg = SimConfig(nodes=1, gpus_per_node=8, record_segments=True)
    res = simulate(tr, parse_placement("prefill:1xTP2,decode:1xTP4"), HW, MaxClock(), config=cfg)
    rq = res.requests
    assert list(rq["status"]) == ["rejected", "completed", "rejected"]
    assert rq["reject_reason"][0] == f"{100 + cap} KV tokens exceed every decode instance's KV capacity"
    assert rq["reject_reason"][2] == "prompt of 20000 tokens exceeds every prefill instance's KV capacity"
    assert res.summary["requests_rejected"] == 2
    check_invariants(res, cfg, HW)


def test_decode_memory_wait_never_drops() -> None:
    """Full reservation: requests whose KV does not fit yet wait for memory; all complete, and memory is never
    oversubscribed."""
    toy = ToyCostModel(kv_tokens_per_gpu=500)  # decode TP2: 1000 tokens of KV
    tr = Trace(np.zeros(6), np.full(6, 300), np.full(6, 200))  # 500 tokens each: two fit at a time
    cfg = SimConfig(
        nodes=1,
        gpus_per_node=4,
        record_segments=True,
        sample_interval_s=0.05,
        decode_kv_policy="full",
        frontend_overhead_s=0.0,
    )
    res = simulate(tr, parse_placement("prefill:1xTP2,decode:1xTP2"), toy, MaxClock(), config=cfg)
    check_invariants(res, cfg, toy)
    rq = res.requests.sort_values("kv_transfer_start_s")
    assert (res.requests["status"] == "completed").all()
    waited = rq["kv_transfer_start_s"] - rq["prefill_end_s"]
    assert (waited.iloc[2:] > 0).all()
    dec = res.timeline[res.timeline["phase"] == "decode"]
    assert dec["kv_used_tokens"].max() <= 1000
    # at most two decode at once: transfers start only after earlier requests leave
    starts = rq["kv_transfer_start_s"].to_numpy()
    lasts = np.sort(rq["last_token_s"].to_numpy())
    assert (starts[2:] >= lasts[: len(starts) - 2] - 1e-12).all()


placements = st.sampled_from(
    [
        "prefill:1xTP1,decode:1xTP1",
        "prefill:1xTP2,decode:1xTP2",
        "prefill:2xTP1,decode:1xTP2@1530",
        "prefill:1xTP1@default,decode:2xTP1",
        "prefill:1xTP4,decode:1xTP2,decode:1xTP2@1170",
    ]
)


@settings(max_examples=60)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 25),
    span=st.floats(0.0, 3.0),
    spec=placements,
    switch=st.sampled_from([0.0, 0.004, 0.03]),
    budget=st.sampled_from([256, 1024, 8192]),
    horizon=st.one_of(st.none(), st.floats(0.05, 2.0)),
    max_batch=st.integers(1, 8),
)
def test_properties_random_traces_placements_clock_schedules(
    seed: int,
    n: int,
    span: float,
    spec: str,
    switch: float,
    budget: int,
    horizon: float | None,
    max_batch: int,
) -> None:
    cfg = SimConfig(
        nodes=2,
        gpus_per_node=4,
        record_segments=True,
        switch_latency_s=switch,
        prefill_token_budget=budget,
        decode_max_batch=max_batch,
        max_time_s=horizon,
        sample_interval_s=0.25,
    )
    tr = small_trace(seed, n, span, max_in=2000, max_out=30)
    placement: Placement = parse_placement(spec)
    res = simulate(tr, placement, TOY, RandomClocks(seed), config=cfg)
    check_invariants(res, cfg, TOY)
    again = simulate(tr, placement, TOY, RandomClocks(seed), config=cfg)
    pd.testing.assert_frame_equal(res.requests, again.requests)


@st.composite
def placement_in(draw: st.DrawFn, nodes: int, gpus_per_node: int) -> Placement:
    """A random placement that fits the cluster: 1-2 instances per phase, TP 1/2/4, clocks."""
    groups = []
    for phase in ("prefill", "decode"):
        for _ in range(draw(st.integers(1, 2))):
            spec: dict[str, object] = {"phase": phase, "tp": draw(st.sampled_from([1, 2, 4]))}
            clock = draw(st.sampled_from([None, None, 1530, "default"]))
            if clock is not None:
                spec["clock"] = clock
            if draw(st.booleans()):
                spec["capacity_rps"] = draw(st.sampled_from([1.0, 3.0]))
            groups.append(spec)
    placement = Placement.model_validate({"instances": groups})
    try:
        check_fits([s.tp for s in placement.expand()], nodes, gpus_per_node)
    except InputError:
        assume(False)
    return placement


@st.composite
def realism_runs(draw: st.DrawFn) -> tuple[Trace, list[tuple[float, Placement]], SimConfig, ToyCostModel]:
    """A random cluster and KV capacity, a placement schedule that shrinks and grows both phases, random lengths
    relative to the capacity (so requests that fit one placement and not the next occur), every realism setting."""
    nodes = draw(st.sampled_from([1, 2]))
    gpn = draw(st.sampled_from([4, 8]))
    kv_per_gpu = draw(st.sampled_from([250, 800, 3_000]))
    window = draw(st.floats(0.2, 1.5))
    schedule = [(i * window, draw(placement_in(nodes, gpn))) for i in range(draw(st.integers(1, 4)))]
    n = draw(st.integers(1, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    span = draw(st.floats(0.0, 3.0))
    arrival = np.sort(np.concatenate([[0.0], rng.uniform(0.0, span, n - 1)]))
    trace = Trace(arrival, rng.integers(1, 3 * kv_per_gpu, n), rng.integers(1, 2 * kv_per_gpu, n))
    cfg = SimConfig(
        nodes=nodes,
        gpus_per_node=gpn,
        record_segments=True,
        window_s=window,
        startup_s=draw(st.sampled_from([0.0, 0.1, 0.5])),
        sample_interval_s=0.3,
        switch_latency_s=draw(st.sampled_from([0.0, 0.01])),
        prefill_token_budget=draw(st.sampled_from([64, 512, 8192])),
        decode_max_batch=draw(st.integers(1, 8)),
        max_time_s=draw(st.one_of(st.none(), st.floats(0.3, 3.0))),
        decode_kv_policy=draw(st.sampled_from(["paged", "full"])),
        kv_block_tokens=draw(st.sampled_from([1, 16])),
        kv_watermark_frac=draw(st.sampled_from([0.0, 0.01, 0.3])),
        kv_link_sharing=draw(st.sampled_from(["fifo", "off"])),
        unassigned_gpu_power_w=draw(st.sampled_from(["idle", "off", 12.5])),
        frontend_overhead_s=draw(st.sampled_from([0.0, 0.03])),
    )
    return trace, schedule, cfg, ToyCostModel(kv_tokens_per_gpu=kv_per_gpu)


def shrinks_decode_under_a_waiting_request(run: tuple[Trace, list[tuple[float, Placement]], SimConfig, Any]) -> bool:
    """The issue's case: a later placement's largest decode instance is smaller than the first's, and a request
    fits the first but not the later one."""
    trace, schedule, _, cm = run
    caps = [max(cm.kv_capacity_tokens(s.tp) for s in p.expand() if s.phase == "decode") for _, p in schedule]
    total = trace.input_tokens + trace.output_tokens
    return any(c < caps[0] and bool(((total > c) & (total <= caps[0])).any()) for c in caps[1:])


def test_the_schedule_strategy_generates_the_decode_shrink_case() -> None:
    # pinned (derandomised): whether a search finds the case must not depend on the run
    pinned = settings(max_examples=2_000, derandomize=True)
    found = find(realism_runs(), shrinks_decode_under_a_waiting_request, settings=pinned)
    assert shrinks_decode_under_a_waiting_request(found)


ISSUE_RUN = (
    Trace(
        np.concatenate([[0.0, 0.9], 0.95 + 0.05 * np.arange(20)]),
        np.array([100, 300] + [20] * 20),  # 900 KV tokens: fits decode TP4 (992), not TP2 (496)
        np.array([1, 600] + [20] * 20),
    ),
    [(0.0, parse_placement("prefill:1xTP2,decode:1xTP4")), (1.0, parse_placement("prefill:1xTP2,decode:1xTP2"))],
    SimConfig(nodes=1, gpus_per_node=8, window_s=1.0, record_segments=True),
    ToyCostModel(kv_tokens_per_gpu=250),
)


#: A draining dynamic prefill instance stops while its last batch is being finished (the batch's last KV leaves
#: during ``end_batch``); the idle clock consultation that followed used to actuate GPUs it no longer owned (KeyError,
#: or a wrong clock for the instance that took them). Found by this property test.
STOP_WHILE_FINISHING_RUN = (
    Trace(
        np.zeros(25),
        np.array([
            618, 1477, 1833, 921, 1106, 2393, 1932, 2354, 911, 1645, 2280, 1561, 2016, 1652, 1689, 934, 2100, 325,
            1389, 1731, 2029, 1261, 901, 745, 1015,
        ]),
        np.array([
            777, 1150, 1423, 117, 1494, 850, 573, 1076, 914, 408, 515, 1151, 951, 807, 541, 1217, 627, 525, 1424,
            423, 364, 1142, 997, 78, 135,
        ]),
    ),
    [
        (0.0, parse_placement("prefill:1xTP2,prefill:1xTP1,decode:1xTP2")),
        (0.25, parse_placement("prefill:1xTP1,decode:1xTP1")),
    ],
    SimConfig(
        nodes=1, gpus_per_node=8, record_segments=True, window_s=0.25, startup_s=0.0, sample_interval_s=0.3,
        switch_latency_s=0.0, prefill_token_budget=64, decode_max_batch=1, max_time_s=None, decode_kv_policy="paged",
        kv_block_tokens=1, kv_watermark_frac=0.0, kv_link_sharing="fifo", unassigned_gpu_power_w="idle",
        frontend_overhead_s=0.0,
    ),
    ToyCostModel(kv_tokens_per_gpu=800),
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@example(run=ISSUE_RUN)
@example(run=STOP_WHILE_FINISHING_RUN)
@given(run=realism_runs())
def test_properties_under_random_placement_schedules(
    run: tuple[Trace, list[tuple[float, Placement]], SimConfig, ToyCostModel],
) -> None:
    """Every request ends completed, rejected with a reason, or unfinished only when a horizon cuts the run; no
    transfer from a stopped instance; KV never over capacity; the energy of every GPU integrates to the summary."""
    trace, schedule, cfg, cm = run
    res = simulate(trace, schedule[0][1], cm, RandomClocks(7), planner=ScheduledPlanner(schedule), config=cfg)
    check_invariants(res, cfg, cm)
    inst = res.instances
    assert (inst["ready_s"] - inst["start_s"] >= 0).all()
    stopped = inst[inst["final_status"] == "stopped"]
    assert (stopped["stop_s"] >= stopped["start_s"]).all()


class DynamicMaxClock(MaxClock):
    """:class:`MaxClock` declared dynamic: asked before every iteration, it answers the clock already in force, so no
    switch happens, but every decode iteration goes through ``DecodeStage.start_iteration`` (the general path):
    the hot path runs only for static controllers."""

    is_static = False


@pytest.mark.parametrize(
    ("cost_model", "kv_policy"),
    [(HW, "paged"), (HW, "full"), (ToyCostModel(kv_tokens_per_gpu=3000), "paged")],
    ids=["h100-paged", "h100-full", "toy-paged-preempting"],
)
def test_fast_path_matches_general_path(cost_model: CostModel, kv_policy: str) -> None:
    """The static-clock decode hot path and the general iteration path give identical results: the same run with
    a static controller (hot path) and a dynamic one answering the same clock (general path only)."""
    tr = small_trace(5, 200, 10.0, max_out=200)
    plc = parse_placement("prefill:1xTP2,decode:2xTP2")
    cfg = SimConfig(nodes=1, gpus_per_node=8, decode_kv_policy=kv_policy, record_segments=True)
    fast = simulate(tr, plc, cost_model, MaxClock(), config=cfg)
    general = simulate(tr, plc, cost_model, DynamicMaxClock(), config=cfg)
    assert general.summary["clock_switches"] == 0
    if cost_model is not HW:
        assert general.summary["preemptions"] > 0  # the hot path's out-of-blocks exit is exercised
    pd.testing.assert_frame_equal(fast.requests, general.requests)
    pd.testing.assert_frame_equal(fast.timeline, general.timeline)
    pd.testing.assert_frame_equal(fast.instances, general.instances)
    pd.testing.assert_frame_equal(fast.segments, general.segments)
    assert fast.summary == general.summary
