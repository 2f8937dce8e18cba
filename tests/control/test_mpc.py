"""Prefill MPC: batch projection (vLLM chunked prefill), deadlines, and the controller's choices and guards."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from biscale.control.mpc import PrefillMpc, meets_deadlines, project_batches
from biscale.control.state import Slo
from biscale.errors import InputError

# ------------------------------------------------------------------------------------------------ projection


def pairs(chunk: int, prefix: int) -> float:
    return chunk * (prefix + (chunk + 1) / 2.0)


def test_projection_chunks_the_prompt_that_does_not_fit_and_continues_it_first():
    # scheduled batch: a finished 100-token prompt and a chunk of 50 (prefix 200) of a 400-token prompt;
    # queue: 3,000, 10 and 20 tokens; budget 1,024
    p = project_batches(
        [100, 50], [0, 200], [100, 400], [0.3, 0.2], [3000, 10, 20], [0.1, 0.05, 0.0], horizon=8, token_budget=1024
    )
    assert p.raw[:, 0].tolist() == [2, 2, 1, 1, 3]
    assert p.raw[:, 1].tolist() == [150, 1024, 1024, 1024, 108]
    assert p.raw[0, 2] == pytest.approx(pairs(100, 0) + pairs(50, 200))
    # batch 1: the rest of the 400-token prompt (150 tokens after 250), then 874 tokens of the 3,000-token one
    assert p.raw[1, 2] == pytest.approx(pairs(150, 250) + pairs(874, 0))
    assert p.raw[2, 2] == pytest.approx(pairs(1024, 874))
    assert p.raw[4, 2] == pytest.approx(pairs(78, 2922) + pairs(10, 0) + pairs(20, 0))
    # ages: batch 0 completes the 100-token prompt (waited 0.3 s); batch 1 the 400-token one; 4 the last three
    assert p.age_s.tolist() == [0.3, 0.2, -math.inf, -math.inf, 0.1]
    assert p.tail_age_s == -math.inf and p.k == 5


def test_projection_respects_the_sequence_limit_and_the_horizon():
    p = project_batches(
        [], [], [], [], [10] * 7, [0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1], horizon=2, token_budget=1000, max_batch_seqs=3
    )
    assert p.raw[:, 0].tolist() == [3, 3] and p.raw[:, 1].tolist() == [30, 30]
    assert p.age_s.tolist() == pytest.approx([0.7, 0.4])
    assert p.tail_age_s == pytest.approx(0.1)  # the seventh prompt completes after the horizon
    d = p.deadlines_s(0.6)
    assert d.tolist() == pytest.approx([0.6 - 0.7, 0.6 - 0.4])  # the tail (0.5) is looser than batch 1's own
    p2 = project_batches([], [], [], [], [10] * 7, [0.1] * 6 + [0.9], horizon=2, token_budget=1000, max_batch_seqs=3)
    assert p2.deadlines_s(0.6)[-1] == pytest.approx(0.6 - 0.9)  # an old request behind the horizon binds


def test_projection_adds_the_kv_transfer_estimate_to_ages():
    p = project_batches([100], [0], [100], [0.1], [200], [0.0], token_budget=1000, kv_s_per_token=1e-4)
    assert p.age_s.tolist() == pytest.approx([0.1 + 0.01, 0.02])
    p = project_batches([100], [0], [100], [0.1], [200], [0.0], token_budget=150, kv_s_per_token=1e-4)
    assert p.age_s.tolist() == pytest.approx([0.11, -math.inf, 0.02])


@given(
    st.lists(st.integers(1, 3000), min_size=0, max_size=30),
    st.integers(16, 4096),
    st.integers(0, 8),
    st.integers(1, 12),
)
def test_projection_conserves_tokens_and_respects_the_limits(queue, budget, max_seqs, horizon):
    p = project_batches(
        [],
        [],
        [],
        [],
        queue,
        np.linspace(1.0, 0.0, len(queue)),
        horizon=horizon,
        token_budget=budget,
        max_batch_seqs=max_seqs,
    )
    assert p.k <= horizon
    assert np.all(p.raw[:, 1] <= budget) and np.all(p.raw[:, 1] >= 1)
    if max_seqs:
        assert np.all(p.raw[:, 0] <= max_seqs)
    if p.tail_age_s == -math.inf:  # everything fits in the horizon
        assert p.raw[:, 1].sum() == sum(queue)
        # every prompt completes in exactly one batch: the ages seen are the oldest of each batch
        assert np.isfinite(p.age_s).sum() <= len(queue)
    else:
        assert p.raw[:, 1].sum() < sum(queue)
    # full batches except possibly the last or where the sequence limit cut them
    for j in range(p.k - 1):
        assert p.raw[j, 1] == budget or (max_seqs and p.raw[j, 0] == max_seqs)


# ------------------------------------------------------------------------------------------------ controller


def test_mpc_picks_the_cheapest_feasible_first_clock_by_brute_force(predictor, make_prefill_state):
    """Two projected batches, three candidate clocks: the chosen first clock is that of the cheapest feasible plan."""
    ctrl = PrefillMpc(predictor, clocks_mhz=(1200, 1600), margin_pct=0.0, kv_transfer_s_per_token=0.0)
    for oldest in np.linspace(0.0, 0.55, 12):
        s = make_prefill_state(batch_new=[1500], batch_wait=[oldest], queue=[1200], queue_wait=[0.0])
        got = ctrl.decide(s)
        clocks = ctrl.clocks.get("prefill", 4, s.supported_clocks_mhz, s.token_budget)
        proj = ctrl.project(s)
        pred = predictor.predict("prefill", 4, proj.raw, clocks)
        dl = proj.deadlines_s(ctrl.budget_s(s))
        best, first = np.inf, clocks[-1]
        for combo in itertools.product(range(len(clocks)), repeat=proj.k):
            lv = np.array(combo)
            if meets_deadlines(pred.latency_s, lv, dl):
                e = float(pred.energy_j[np.arange(proj.k), lv].sum())
                if e < best - 1e-12:
                    best, first = e, clocks[combo[0]]
        assert got == first


@given(
    st.lists(st.integers(1, 900), min_size=1, max_size=40),
    st.floats(0.0, 0.7),
    st.sampled_from([2, 4, 8]),
    st.sampled_from(["exact", "greedy"]),
)
def test_mpc_never_violates_a_predicted_ttft_when_a_feasible_plan_exists(
    predictor, make_prefill_state, prompts, span, tp, solver
):
    """Whatever the queue, the first clock belongs to a plan meeting every predicted deadline, or is the top clock
    when no plan does (and that is counted)."""
    ctrl = PrefillMpc(predictor, solver=solver, idle_in_objective=False)
    waits = np.linspace(span, 0.0, len(prompts))
    s = make_prefill_state(
        batch_new=prompts[:1], batch_wait=waits[:1], queue=prompts[1:], queue_wait=waits[1:], tp=tp, token_budget=1024
    )
    got = ctrl.decide(s)
    clocks = ctrl.clocks.get("prefill", tp, s.supported_clocks_mhz, 1024)
    proj = ctrl.project(s)
    pred = predictor.predict("prefill", tp, proj.raw, clocks)
    dl = proj.deadlines_s(ctrl.budget_s(s))
    k, n = pred.latency_s.shape
    top_ok = meets_deadlines(pred.latency_s, np.full(k, n - 1), dl)
    if not top_ok:
        assert got == clocks[-1] and ctrl.stats["infeasible"] == 1
        return
    assert ctrl.stats["planned"] == 1
    # the best plan starting at the chosen clock meets every deadline: check with the rest at the top clock
    lv = np.full(k, n - 1)
    lv[0] = clocks.index(got)
    assert meets_deadlines(pred.latency_s, lv, dl)


def test_mpc_runs_lower_clocks_with_more_slack(predictor, make_prefill_state):
    ctrl = PrefillMpc(predictor, idle_in_objective=False)
    relaxed = ctrl.decide(make_prefill_state(batch_new=[2000], batch_wait=[0.0], queue=[2000], queue_wait=[0.0]))
    urgent = ctrl.decide(make_prefill_state(batch_new=[2000], batch_wait=[0.4], queue=[2000], queue_wait=[0.4]))
    clocks = ctrl.clocks.get("prefill", 4, make_prefill_state().supported_clocks_mhz, 2048)
    # with every deadline far away, the first batch runs at its least-energy candidate clock
    proj = ctrl.project(make_prefill_state(batch_new=[2000], queue=[2000]))
    energy = predictor.predict("prefill", 4, proj.raw[:1], clocks).energy_j[0]
    assert relaxed == clocks[int(np.argmin(energy))] and relaxed < urgent < clocks[-1] + 1


def test_mpc_top_clock_when_even_the_top_misses_and_counts_it(predictor, make_prefill_state):
    ctrl = PrefillMpc(predictor)
    s = make_prefill_state(batch_new=[2000], batch_wait=[0.7])
    assert ctrl.decide(s) == s.supported_clocks_mhz[-1]
    assert ctrl.stats["infeasible"] == 1


def test_mpc_kv_guard_and_idle_rule(predictor, make_prefill_state):
    ctrl = PrefillMpc(predictor, kv_guard_pct=90.0, idle_clock="baseline")
    s = make_prefill_state(batch_new=[100], kv_used=95, kv_capacity=100)
    assert ctrl.decide(s) == s.supported_clocks_mhz[-1] and ctrl.stats["kv_guard"] == 1
    assert ctrl.decide(make_prefill_state(kv_used=0, kv_capacity=100)) is None
    assert ctrl.decide(make_prefill_state(baseline_clock_mhz=1410)) == 1410
    assert ctrl.decide(make_prefill_state(baseline_clock_mhz=0)) == 0  # the governor, as tier 1 said
    assert ctrl.stats["idle"] == 3


def test_mpc_waits_for_work_at_the_lowest_clock_by_default(predictor, make_prefill_state):
    ctrl = PrefillMpc(predictor)
    idle = make_prefill_state(baseline_clock_mhz=1410)
    assert ctrl.decide(idle) == min(idle.supported_clocks_mhz)
    # work arrives: planned as usual, well above the lowest clock
    assert ctrl.decide(make_prefill_state(batch_new=[2000])) > min(idle.supported_clocks_mhz)
    with pytest.raises(InputError, match="idle clock"):
        PrefillMpc(predictor, idle_clock="off")


def test_mpc_without_a_visible_batch_plans_from_the_queue(predictor, make_prefill_state):
    """An engine that shows only the queue (the batch about to run included in it) still gets a plan."""
    ctrl = PrefillMpc(predictor, idle_in_objective=False)
    s = make_prefill_state(queue=[500, 500], queue_wait=[0.0, 0.0])
    clocks = ctrl.clocks.get("prefill", 4, s.supported_clocks_mhz, 2048)
    proj = ctrl.project(s)
    assert proj.k == 1
    energy = predictor.predict("prefill", 4, proj.raw, clocks).energy_j[0]
    assert ctrl.decide(s) == clocks[int(np.argmin(energy))]  # planned, at the least-energy clock


def test_mpc_front_end_overhead_and_margin_shrink_the_budget(predictor, make_prefill_state):
    slo = Slo(ttft_s=0.5)
    assert PrefillMpc(predictor, margin_pct=10, frontend_overhead_s=0.05).budget_s(
        make_prefill_state(slo=slo)
    ) == pytest.approx(0.4)
    s = make_prefill_state(batch_new=[2000], batch_wait=[0.15], slo=slo)
    loose = PrefillMpc(predictor, margin_pct=0).decide(s)
    tight = PrefillMpc(predictor, margin_pct=0, frontend_overhead_s=0.15).decide(s)
    assert tight > loose


def test_mpc_takes_the_engines_front_end_overhead_unless_given_its_own(predictor, make_prefill_state):
    state = dataclasses.replace(make_prefill_state(slo=Slo(ttft_s=0.5)), frontend_overhead_s=0.05)
    assert PrefillMpc(predictor, margin_pct=10).budget_s(state) == pytest.approx(0.4)  # 0.45 - the engine's 0.05
    assert PrefillMpc(predictor, margin_pct=10, frontend_overhead_s=0.0).budget_s(state) == pytest.approx(0.45)


def test_mpc_kv_transfer_default_comes_from_the_artifact(predictor):
    ctrl = PrefillMpc(predictor)
    kv_bytes = predictor.meta["profile_meta"]["kv_bytes_per_token"]
    assert ctrl.kv_s_per_token(2) == pytest.approx(kv_bytes / (2 * 50e9))
    assert PrefillMpc(predictor, kv_transfer_s_per_token=0.0).kv_s_per_token(2) == 0.0


def test_mpc_bad_settings_are_input_errors(predictor):
    with pytest.raises(InputError, match="solver"):
        PrefillMpc(predictor, solver="magic")
    with pytest.raises(InputError, match="horizon"):
        PrefillMpc(predictor, horizon=0)
    with pytest.raises(InputError, match="horizon"):
        PrefillMpc(predictor, solver="greedy", horizon=20)
    with pytest.raises(InputError, match="margin"):
        PrefillMpc(predictor, margin_pct=100)
    with pytest.raises(InputError, match=">= 0"):
        PrefillMpc(predictor, frontend_overhead_s=-1)


def test_an_idle_instance_prices_batches_net_of_idle_power_and_a_busy_one_does_not(predictor, make_prefill_state):
    """A batch with nothing behind it on an instance that is mostly idle runs below the clock of least busy energy
    (the time it saves would be spent idle at the lowest clock's power); the first decisions (no history: counted
    as busy) and a batch with a queue behind it use the busy-energy candidates."""
    ctrl = PrefillMpc(predictor)
    busy_floor = min(ctrl.busy_clocks.get("prefill", 4, make_prefill_state().supported_clocks_mhz, 2048))
    first = ctrl.decide(make_prefill_state(batch_new=[2000], batch_wait=[0.0], time_s=10.0))
    assert first >= busy_floor and ctrl.stats["net_of_idle"] == 0
    got = first
    for k in range(1, 40):  # one small batch every 10 s: the busy share decays far below the gate
        got = ctrl.decide(make_prefill_state(batch_new=[2000], batch_wait=[0.0], time_s=10.0 + 10.0 * k))
    assert ctrl.stats["net_of_idle"] > 0 and got < busy_floor
    queued = ctrl.decide(make_prefill_state(batch_new=[2000], queue=[2000], time_s=500.0))
    assert queued >= busy_floor
