"""The clairvoyant oracle's decisions on hand-built states (end-to-end bounds are in the e2e tests)."""

from __future__ import annotations

import numpy as np
import pytest

from biscale.control.mpc import solve_exact
from biscale.control.oracle import OracleDecode, OraclePrefill, true_energy_optimal_clock
from biscale.control.state import Slo
from biscale.costmodel import DecodeShape, PrefillShape
from biscale.errors import InputError
from biscale.workload import Trace


def trace_of(arrivals, inputs, outputs) -> Trace:
    return Trace(np.asarray(arrivals, float), np.asarray(inputs), np.asarray(outputs))


# --------------------------------------------------------------------------------------------------- decode


def busy_trace(n: int = 400) -> Trace:
    """Requests 0..n-1 with output lengths 100 + i, arriving until t = 1000 s (the run is not draining)."""
    return trace_of(np.linspace(0, 1000, n), [500] * n, 100 + np.arange(n))


def test_decode_oracle_runs_the_lowest_clock_meeting_every_remaining_life(hw, make_decode_state):
    tr = busy_trace()
    oracle = OracleDecode(hw, tr)
    ids = np.arange(10, 40)
    out = tr.output_tokens[ids]
    g = np.full(30, 20)
    tau = np.full(30, 19 * 0.035)  # 35 ms per token so far: on schedule for a 35 ms target
    slo = Slo(tpot_s=0.035)
    s = make_decode_state(context=500 + g, generated=g, decode_time=tau, ids=ids, slo=slo, clock_mhz=0)
    got = oracle.decide(s)
    allowed = float(np.min((0.035 * (out - 1) - tau) / (out - g)))
    clocks = oracle.clocks("decode", 4, s.supported_clocks_mhz)
    shape = DecodeShape.from_lengths(500 + g)
    lat = [hw.decode_cost(shape, 4, c).latency_s for c in clocks]
    expect = next(c for c, x in zip(clocks, lat, strict=True) if x <= allowed)
    assert got == expect and clocks[0] == min(s.supported_clocks_mhz)
    assert got > clocks[0]  # the histories bind here


def test_decode_oracle_gives_up_a_lone_hopeless_request_within_the_percentile(hw, make_decode_state):
    tr = busy_trace()
    oracle = OracleDecode(hw, tr)
    # 300 requests seen: at P99 half the 1 % allowance is 1.5 requests: one may be given up
    for start in range(0, 300, 30):
        ids = np.arange(start, start + 30)
        oracle.decide(make_decode_state(context=[600] * 30, ids=ids, instance_id=5, clock_mhz=0))
    ids = np.arange(270, 300)
    tau = np.zeros(30)
    tau[0] = 60.0  # hopelessly behind: alone it would force the top clock
    s = make_decode_state(context=[600] * 30, ids=ids, decode_time=tau, instance_id=5, clock_mhz=0)
    got = oracle.decide(s)
    assert 270 in oracle.sacrificed and len(oracle.sacrificed) == 1
    assert got < s.supported_clocks_mhz[-1]
    # with no allowance left it runs the top clock for the next hopeless one
    tau[1] = 60.0
    assert (
        oracle.decide(make_decode_state(context=[600] * 30, ids=ids, decode_time=tau, clock_mhz=0))
        == (s.supported_clocks_mhz[-1])
    )


def test_decode_oracle_when_draining_takes_the_cheapest_feasible_iteration(hw, make_decode_state):
    ids = np.arange(5)
    tr = trace_of(np.zeros(5), [500] * 5, [400] * 5)  # nothing arrives after t = 0
    s = make_decode_state(context=[600] * 5, ids=ids, time_s=1.0, clock_mhz=0)
    got = OracleDecode(hw, tr).decide(s)
    clocks = OracleDecode(hw, tr).clocks("decode", 4, s.supported_clocks_mhz)
    shape = DecodeShape.from_lengths([600] * 5)
    energy = [hw.decode_cost(shape, 4, c).energy_per_gpu_j for c in clocks]
    assert got == clocks[int(np.argmin(energy))] > clocks[0]
    # with arrivals still to come the lowest feasible clock wins instead (the batch will grow)
    assert OracleDecode(hw, busy_trace()).decide(s) == clocks[0]


def test_decode_oracle_needs_ids_and_drains_queues_at_the_top(hw, make_decode_state):
    oracle = OracleDecode(hw, busy_trace())
    with pytest.raises(InputError, match="running_request_ids"):
        oracle.decide(make_decode_state(context=[600] * 3))
    s = make_decode_state(context=[600] * 3, ids=[1, 2, 3], waiting=[100])
    assert oracle.decide(s) == s.supported_clocks_mhz[-1]
    idle = make_decode_state(baseline_clock_mhz=990)  # no batch: it waits at the lowest clock, not the baseline
    assert oracle.decide(idle) == min(idle.supported_clocks_mhz) < 990
    # a batch at the online controller's guard (90 % of the 256-sequence limit) also runs at the top
    full = make_decode_state(context=[300] * 231, ids=list(range(231)))
    assert oracle.decide(full) == full.supported_clocks_mhz[-1]
    assert oracle.stats["batch_guard"] == 1


# -------------------------------------------------------------------------------------------------- prefill


@pytest.mark.parametrize("idle_in_objective", [True, False])
def test_prefill_oracle_without_future_work_is_the_exact_mpc_on_true_costs(hw, make_prefill_state, idle_in_objective):
    tr = trace_of([0.0, 0.0], [1500, 1200], [10, 10])
    oracle = OraclePrefill(hw, tr, kv_transfer_s_per_token=0.0, idle_in_objective=idle_in_objective)
    s = make_prefill_state(batch_new=[1500], batch_wait=[0.2], queue=[1200], queue_wait=[0.2], time_s=5.0)
    got = oracle.decide(s)
    # the plan covers all the work: with idle energy in the objective, power is priced above the lowest clock's idle
    clocks = oracle.clocks("prefill", 4, s.supported_clocks_mhz, idle_in_objective)
    idle_w = hw.idle_power_w(4, min(s.supported_clocks_mhz)) if idle_in_objective else 0.0
    shapes = [PrefillShape.from_lengths([1500]), PrefillShape.from_lengths([1200])]
    costs = [[hw.prefill_cost(x, 4, c) for c in clocks] for x in shapes]
    lat = np.array([[x.latency_s for x in row] for row in costs])
    energy = np.array([[x.latency_s * (x.power_w - idle_w) for x in row] for row in costs])
    plan = solve_exact(lat, energy, np.array([0.6 - 0.2, 0.6 - 0.2]))
    assert got == clocks[int(plan.levels[0])] and oracle.stats["planned"] == 1


def test_prefill_oracle_speeds_up_for_a_burst_it_knows_is_coming(hw, make_prefill_state):
    s = make_prefill_state(batch_new=[2000], batch_wait=[0.0], time_s=5.0)
    quiet = OraclePrefill(hw, trace_of([0.0], [2000], [10])).decide(s)
    burst = trace_of([0.0] + [5.05] * 6, [2000] + [1000] * 6, [10] * 7)
    assert OraclePrefill(hw, burst).decide(s) > quiet
    # with two prefill instances it expects (round robin) half of the burst: no faster than with all of it
    assert quiet <= OraclePrefill(hw, burst, prefill_instances=2).decide(s) <= OraclePrefill(hw, burst).decide(s)


def test_prefill_oracle_clock_range_starts_at_the_true_energy_optimum(hw, make_prefill_state):
    oracle = OraclePrefill(hw, trace_of([0.0], [10], [2]))
    sup = make_prefill_state().supported_clocks_mhz
    clocks = oracle.clocks("prefill", 4, sup)
    assert clocks[0] == true_energy_optimal_clock(hw, 4, sup) and clocks[-1] == sup[-1] and len(clocks) == 16
    assert 800 < clocks[0] < 1300
    assert OraclePrefill(hw, trace_of([0.0], [10], [2]), clocks_mhz=(1000,)).clocks("prefill", 4, sup) == (1000, 1980)
    with pytest.raises(InputError, match="horizon"):
        OraclePrefill(hw, trace_of([0.0], [10], [2]), horizon=0)


def test_prefill_oracle_idles_at_the_lowest_clock(hw, make_prefill_state):
    oracle = OraclePrefill(hw, trace_of([0.0], [10], [2]))
    s = make_prefill_state(baseline_clock_mhz=1400)
    assert oracle.decide(s) == min(s.supported_clocks_mhz) < 1400 and oracle.stats["idle"] == 1


def test_prefill_oracle_splits_future_arrivals_among_the_ready_instances_by_weight(hw, make_prefill_state):
    tr = trace_of(np.linspace(0.0, 6.0, 12), [500] * 12, [10] * 12)
    oracle = OraclePrefill(hw, tr)
    a = make_prefill_state(batch_new=[100], batch_wait=[0.0], time_s=4.0, instance_id=3)
    assert oracle.future_arrivals(a, 0, 12).tolist() == list(range(12))  # alone: every arrival is its
    oracle.decide(a)
    b = make_prefill_state(batch_new=[100], batch_wait=[0.0], time_s=4.1, instance_id=7)
    oracle.decide(b)
    got_a, got_b = oracle.future_arrivals(a, 0, 12), oracle.future_arrivals(b, 0, 12)
    # two equal instances: half each, disjoint (round robin)
    assert len(got_a) == len(got_b) == 6 and sorted([*got_a, *got_b]) == list(range(12))
    # a TP-8 instance weighs twice a TP-4 one (the router's weight is the TP degree when no capacity is given)
    c = make_prefill_state(batch_new=[100], batch_wait=[0.0], time_s=4.2, instance_id=9, tp=8)
    oracle.decide(c)
    shares = [len(oracle.future_arrivals(x, 0, 12)) for x in (a, b, c)]
    assert shares == [3, 3, 6]
    # an instance silent for longer than instance_memory_s no longer counts (drained or stopped)
    late = make_prefill_state(batch_new=[100], batch_wait=[0.0], time_s=4.1 + 31.0, instance_id=7)
    assert len(oracle.future_arrivals(late, 0, 12)) == 12
    # a fixed count splits equally by instance id
    fixed = OraclePrefill(hw, tr, prefill_instances=3)
    assert len(fixed.future_arrivals(b, 0, 12)) == 4
    with pytest.raises(InputError, match="instance_memory_s"):
        OraclePrefill(hw, tr, instance_memory_s=0.0)


def test_prefill_oracle_prices_idle_power_when_it_idles_after_the_batch(hw, make_prefill_state):
    tr = trace_of([0.0], [2000], [10])
    s = make_prefill_state(batch_new=[2000], batch_wait=[0.0], time_s=5.0)
    net = OraclePrefill(hw, tr)
    gross = OraclePrefill(hw, tr, idle_in_objective=False)
    got_net, got_gross = net.decide(s), gross.decide(s)
    # nothing follows the batch: a slower batch displaces idle time at the lowest clock, so it costs only its power
    # above that idle power, and a lower clock wins than on the batch's whole energy
    assert got_net < got_gross and net.stats["net_of_idle"] == 1
    shape = PrefillShape.from_lengths([2000])
    idle_w = hw.idle_power_w(4, min(s.supported_clocks_mhz))

    def over_idle(c: int) -> float:
        cost = hw.prefill_cost(shape, 4, c)
        return cost.latency_s * (cost.power_w - idle_w)

    def whole(c: int) -> float:
        cost = hw.prefill_cost(shape, 4, c)
        return cost.latency_s * cost.power_w

    # the same true energy over the batch and the idle time it displaces, the choices ordered the other way
    span = hw.prefill_cost(shape, 4, got_net).latency_s
    assert over_idle(got_net) < over_idle(got_gross) and whole(got_net) > whole(got_gross)
    assert span < 0.6
    # with work queued behind the batch the instance is busy back to back: the whole energy counts
    busy = make_prefill_state(batch_new=[2000], batch_wait=[0.0], queue=[2000] * 40, queue_wait=[0.0] * 40, time_s=5.0)
    assert net.decide(busy) == gross.decide(busy)


def test_decode_oracle_keeps_the_online_growth_guard(hw, make_decode_state):
    oracle = OracleDecode(hw, busy_trace())
    ids = np.arange(200)
    s = make_decode_state(context=[400] * 200, ids=ids, clock_mhz=1980)
    clocks = oracle.clocks("decode", 4, s.supported_clocks_mhz)
    shape = DecodeShape.from_lengths([400] * 200)
    lat = [hw.decode_cost(shape, 4, c).latency_s for c in clocks]
    got = oracle.decide(s)
    # 200 running of a 256 limit: a clock whose latency (relative to the top clock in force) would grow the batch past
    # the 90 % guard (230.4 sequences, Little's law) is not taken; the lowest one that does not is
    k = clocks.index(got)
    assert 200 * lat[k] / lat[-1] <= 230.4 < 200 * lat[k - 1] / lat[-1]
    assert oracle.stats["growth_guard"] == 1 and got > clocks[0]
