"""The randomized checker: random placement schedules on the toy and the H100 model, with random clocks (static and
dynamic controllers, switch latencies), KV policies, horizons, token budgets, routers and cluster shapes; every run
must pass :func:`biscale.sim.invariants.check_invariants` and finish without a simulator error.

In the ordinary suite it draws the ordinary profile's examples (fresh each run). ``.ci/run`` also runs it under the
``randomized`` profile (``BISCALE_HYPOTHESIS_PROFILE=randomized python -m pytest -m randomized tests/sim``:
thousands of examples); a failure prints the session's seed (the report header) and the shrunk example with its
``@reproduce_failure`` blob. Failures it found are pinned below as ``@example`` cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
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
from biscale.control.controllers import BaselineClock
from biscale.costmodel import CostModel
from biscale.hardware import get_hardware
from biscale.sim import SimConfig, simulate
from biscale.sim.toy import ToyCostModel
from biscale.workload import Trace

HW = get_hardware("h100-sxm", "llama-3.3-70b")


class SeededClocks(ClockController):
    """A dynamic controller with a seeded random schedule: keep, lock a random clock, or unlock."""

    def __init__(self, seed: int, p_change: float) -> None:
        self.rng = np.random.default_rng(seed)
        self.p_change = p_change

    def decide(self, state: InstanceState) -> int | None:
        u = self.rng.random()
        if u > self.p_change:
            return None
        if u < 0.05:
            return GOVERNOR_MHZ
        return int(self.rng.choice(state.supported_clocks_mhz))


@dataclass(frozen=True)
class Run:
    """One randomized run (its repr is the minimal case hypothesis prints)."""

    model: str
    """``toy`` (with ``kv_tokens_per_gpu``) or ``h100`` (Llama 3.3 70B on H100 SXM)."""
    kv_tokens_per_gpu: int
    arrival_s: tuple[float, ...]
    input_tokens: tuple[int, ...]
    output_tokens: tuple[int, ...]
    schedule: tuple[tuple[float, str], ...]
    """``(from_s, placement spec)``; the first at 0."""
    controllers: tuple[str, str]
    """Prefill and decode: ``max``, ``governor``, ``baseline`` or ``random:SEED``."""
    config: SimConfig

    def cost_model(self) -> CostModel:
        return HW if self.model == "h100" else ToyCostModel(kv_tokens_per_gpu=self.kv_tokens_per_gpu)

    def controller(self, which: str) -> ClockController:
        if which == "max":
            return MaxClock()
        if which == "governor":
            return DefaultGovernor()
        if which.startswith("random:"):
            return SeededClocks(int(which.split(":")[1]), 0.3)
        return BaselineClock()


def _place(free: list[int], tp: int, leave: int = 0) -> list[int] | None:
    """Free GPUs per node after packing a TP group best fit, or None if it does not fit (or leaves no node with
    ``leave`` free GPUs, room for a decode instance)."""
    nodes = [n for n in range(len(free)) if free[n] >= tp]
    if not nodes:
        return None
    node = min(nodes, key=lambda n: free[n])
    after = [f - tp if n == node else f for n, f in enumerate(free)]
    return after if max(after) >= leave else None


def _placement_spec(draw: st.DrawFn, nodes: int, gpn: int, tps: list[int], clocks: list[object]) -> str:
    """1-2 instances per phase that fit the cluster (each TP drawn among those that still fit), as a spec."""
    free = [gpn] * nodes
    groups = []
    for phase in ("prefill", "prefill", "decode", "decode"):
        if groups and groups[-1].startswith(phase) and draw(st.booleans()):
            continue  # a phase's second instance is optional
        fits = [tp for tp in tps if _place(free, tp, leave=min(tps) if phase == "prefill" else 0) is not None]
        if not fits:
            break
        tp = draw(st.sampled_from(fits))
        free = _place(free, tp) or free
        clock = draw(st.sampled_from(clocks))
        groups.append(f"{phase}:1xTP{tp}" + ("" if clock is None else f"@{clock}"))
    assume(any(g.startswith("decode") for g in groups))
    return ",".join(groups)


def _largest(cm: CostModel, spec: str, phase: str) -> int:
    """KV capacity of the largest ``phase`` instance of placement ``spec``, tokens."""
    return max(cm.kv_capacity_tokens(s.tp) for s in parse_placement(spec).expand() if s.phase == phase)


@st.composite
def random_runs(draw: st.DrawFn) -> Run:
    model = draw(st.sampled_from(["toy", "toy", "h100"]))
    nodes = draw(st.sampled_from([1, 2]))
    gpn = draw(st.sampled_from([4, 8]))
    if model == "toy":
        kv = draw(st.sampled_from([250, 800, 3_000, 100_000]))
        tps, clocks = [1, 2, 3, 4], [None, None, 1530, "default"]
        max_in, max_out = 3 * min(kv, 1_500), min(2 * kv, 300)  # some requests fit no instance, some not the next
    else:
        kv = 0
        tps, clocks = [2, 4] + ([8] if gpn == 8 else []), [None, None, 1410, "default"]
        max_in, max_out = 16_000, 300  # prompts beyond a TP2 instance's KV (12,939 tokens) occur
    window = draw(st.floats(0.05, 1.5))
    k = draw(st.sampled_from([1, 2, 2, 3, 3, 4, 5]))
    schedule = tuple((i * window, _placement_spec(draw, nodes, gpn, tps, clocks)) for i in range(k))
    n = draw(st.integers(1, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    span = draw(st.floats(0.0, 3.0))
    arrival = np.sort(np.concatenate([[0.0], rng.uniform(0.0, span, n - 1)]))
    inp = rng.integers(1, max_in, n)
    out = rng.integers(1, max_out, n)
    if draw(st.booleans()):  # half the runs: every request fits every placement (no change may reject one)
        cm = HW if model == "h100" else ToyCostModel(kv_tokens_per_gpu=kv)
        caps = [_largest(cm, spec, ph) for _, spec in schedule for ph in ("prefill", "decode")]
        limit = min(caps) - 16  # (whole KV blocks)
        inp = np.minimum(inp, limit - 1)
        out = np.minimum(out, limit - inp)
    controllers = tuple(
        draw(st.sampled_from(["max", "governor", "baseline", f"random:{draw(st.integers(0, 99))}"])) for _ in "pd"
    )
    cfg = SimConfig(
        nodes=nodes,
        gpus_per_node=gpn,
        record_segments=True,
        window_s=window,
        startup_s=draw(st.sampled_from([0.0, 0.0, 0.02, 0.1, 0.5])),
        sample_interval_s=draw(st.sampled_from([0.1, 0.3, 1.0])),
        switch_latency_s=draw(st.sampled_from([0.0, 0.004, 0.01, 0.03])),
        initial_clock=draw(st.sampled_from(["max", "default", 1200])),
        prefill_token_budget=draw(st.sampled_from([16, 64, 512, 2048, 8192])),
        prefill_max_seqs=draw(st.sampled_from([1, 4, 1024])),
        decode_max_batch=draw(st.integers(1, 16)),
        max_time_s=draw(st.one_of(st.none(), st.floats(0.05, 3.0))),
        decode_kv_policy=draw(st.sampled_from(["paged", "full"])),
        kv_block_tokens=draw(st.sampled_from([1, 16])),
        kv_watermark_frac=draw(st.sampled_from([0.0, 0.01, 0.3])),
        kv_link_sharing=draw(st.sampled_from(["fifo", "off"])),
        unassigned_gpu_power_w=draw(st.sampled_from(["idle", "off", 12.5])),
        frontend_overhead_s=draw(st.sampled_from([0.0, 0.009])),
        prefill_router=draw(st.sampled_from(["least-work", "round-robin"])),
        decode_router=draw(st.sampled_from(["most-free-kv", "state-space"])),
    )
    return Run(
        model,
        kv,
        tuple(float(a) for a in arrival),
        tuple(int(x) for x in inp),
        tuple(int(x) for x in out),
        schedule,
        (controllers[0], controllers[1]),
        cfg,
    )


def run_checked(run: Run) -> None:
    """Simulate ``run``; the invariants are checked when the result is collected (tests/sim/conftest.py)."""
    trace = Trace(np.array(run.arrival_s), np.array(run.input_tokens), np.array(run.output_tokens))
    schedule: list[tuple[float, Placement]] = [(t, parse_placement(spec)) for t, spec in run.schedule]
    ctrl = {"prefill": run.controller(run.controllers[0]), "decode": run.controller(run.controllers[1])}
    cm = run.cost_model()
    res = simulate(trace, schedule[0][1], cm, ctrl, planner=ScheduledPlanner(schedule), config=run.config)
    assert res.summary["requests_total"] == len(run.arrival_s)
    fits = fits_every_placement(run, cm)
    event(f"{run.model} model, {len(run.schedule) - 1} placement changes, every request fits every placement: {fits}")
    if fits:  # a placement change never rejects a request that fits
        assert res.summary["requests_rejected"] == 0, res.requests.loc[res.requests["status"] == "rejected"]


def fits_every_placement(run: Run, cm: CostModel) -> bool:
    """Every request fits a prefill and (unless it needs one token) a decode instance of every placement."""
    unit = run.config.kv_block_tokens if run.config.decode_kv_policy == "paged" else 1
    inp, out = np.array(run.input_tokens), np.array(run.output_tokens)
    for _, spec in run.schedule:
        specs = list(parse_placement(spec).expand())
        pre = max(cm.kv_capacity_tokens(s.tp) for s in specs if s.phase == "prefill")
        dec = max(cm.kv_capacity_tokens(s.tp) // unit * unit for s in specs if s.phase == "decode")
        if (inp > pre).any() or ((out > 1) & (inp + out > dec)).any():
            return False
    return True


#: Found by the randomized profile (seed 2091630478844822220, after 1,187 clean runs): a preempted request whose
#: recomputation also produced its last token freed its decode instance's memory, but nothing placed the prefilled
#: requests waiting for that memory (the instance sat idle; 14 requests never finished).
LAST_TOKEN_BY_RECOMPUTE = Run(
    "toy",
    800,
    (0.0,) * 25,
    (1275, 1664, 79, 2277, 2274, 536, 2161, 750, 680, 1205, 303, 1043, 981, 1704, 2345, 374, 335, 650, 2299, 359,
     1855, 2121, 647, 986, 974),
    (92, 146, 27, 115, 77, 267, 147, 31, 287, 237, 35, 113, 67, 98, 8, 130, 227, 82, 7, 57, 99, 265, 263, 231, 47),
    (
        (0.0, "prefill:1xTP3,decode:1xTP1,decode:1xTP3"),
        (1.0, "prefill:1xTP1,decode:1xTP3"),
        (2.0, "prefill:1xTP1,prefill:1xTP1,decode:1xTP1,decode:1xTP3"),
    ),
    ("max", "max"),
    SimConfig(
        nodes=1, gpus_per_node=8, prefill_token_budget=16, prefill_max_seqs=1, decode_max_batch=3,
        switch_latency_s=0.0, window_s=1.0, sample_interval_s=0.1, record_segments=True, kv_watermark_frac=0.0,
        frontend_overhead_s=0.0,
    ),
)  # fmt: skip


#: Found by the randomized profile on the H100 model (seed 5477038249773518748, after 2,074 clean runs): changes
#: every 0.25 s with a 0.5 s start-up; at the last one the prompt prefilled by the draining TP8 prefill instance fits
#: no ready or draining decode instance, only the TP8 decode instance still starting (and retiring): it was
#: rejected as stranded although that instance takes it once ready.
WAITS_FOR_A_STARTING_DECODE = Run(
    "h100",
    0,
    (0.0,),
    (7571,),
    (154,),
    (
        (0.0, "prefill:1xTP8,decode:1xTP2"),
        (0.25, "prefill:1xTP2,decode:1xTP2"),
        (0.5, "prefill:1xTP8,decode:1xTP8"),
        (0.75, "prefill:1xTP2,decode:1xTP2"),
    ),
    ("max", "max"),
    SimConfig(
        nodes=2, gpus_per_node=8, prefill_token_budget=512, prefill_max_seqs=1, decode_max_batch=1,
        switch_latency_s=0.0, startup_s=0.5, window_s=0.25, sample_interval_s=0.1, record_segments=True,
        kv_block_tokens=1, kv_watermark_frac=0.0, frontend_overhead_s=0.0,
    ),
)  # fmt: skip


@pytest.mark.randomized
@example(run=LAST_TOKEN_BY_RECOMPUTE)
@example(run=WAITS_FOR_A_STARTING_DECODE)
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much], deadline=None)
@given(run=random_runs())
def test_random_placement_changes_keep_every_invariant(run: Run) -> None:
    run_checked(run)


def test_preempting_the_whole_batch_lets_the_ready_requests_run() -> None:
    """Found by the ordinary property test (fresh examples): with ``decode_max_batch=1`` the only running request
    (26-in / 211-out) is preempted while two prefilled requests wait with their KV (199 tokens of 250) and its
    context no longer fits beside them; that step is empty, so the next one forms at once and admits a waiting
    request. The first version of the mixed recompute step stopped there and left three requests unfinished."""
    inp = [503, 3, 296, 643, 416, 26, 573, 547, 635, 132, 67, 647]
    out = [12, 271, 41, 150, 241, 211, 202, 15, 3, 63, 5, 335]
    cfg = SimConfig(
        nodes=1,
        gpus_per_node=4,
        prefill_token_budget=64,
        decode_max_batch=1,
        switch_latency_s=0.0,
        record_segments=True,
        kv_block_tokens=1,
        kv_watermark_frac=0.0,
        frontend_overhead_s=0.0,
    )
    tr = Trace(np.zeros(12), np.array(inp), np.array(out))
    res = simulate(tr, parse_placement("prefill:1xTP1,decode:1xTP1"), ToyCostModel(kv_tokens_per_gpu=250), config=cfg)
    rq = res.requests
    fits = np.array(inp) + np.array(out) <= 250
    assert list(rq.index[fits]) == [5, 9, 10]
    assert (rq.loc[fits, "status"] == "completed").all() and (rq.loc[~fits, "status"] == "rejected").all()
    assert rq.loc[5, "preemptions"] >= 1
