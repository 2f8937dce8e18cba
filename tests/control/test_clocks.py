"""Candidate clocks: the range, the count, and why clocks below the prefill range are never worth having."""

from __future__ import annotations

import numpy as np
import pytest

from biscale.control.clocks import (
    CandidateClocks,
    default_candidates,
    energy_optimal_clock,
    probe_features,
    snap_to,
    spread_clocks,
)
from biscale.errors import InputError

SUP = tuple(range(345, 1981, 15))


def test_spread_clocks_spans_the_range_evenly_and_snaps():
    got = spread_clocks(990, SUP, 7)
    assert got == (990, 1155, 1320, 1485, 1650, 1815, 1980)
    assert all(c in SUP for c in spread_clocks(1000, SUP, 7))
    assert spread_clocks(300, SUP, 3) == (345, 1155, 1980)  # below the list: starts at its lowest clock
    assert spread_clocks(1980, SUP, 7) == (1980,)
    assert spread_clocks(990, SUP, 1) == (1980,)
    # a narrow range holds fewer clocks than asked for
    assert spread_clocks(1950, SUP, 7) == (1950, 1965, 1980)


def test_snap_ties_go_up_and_duplicates_collapse():
    assert snap_to([352, 353, 360], (345, 360)) == (345, 360)
    assert snap_to([1000], SUP) == (1005,)  # 995 and 1005 are equally near


def test_bad_counts_and_lists_are_input_errors():
    with pytest.raises(InputError, match="at least 1"):
        spread_clocks(990, SUP, 0)
    with pytest.raises(InputError, match="no supported clocks"):
        spread_clocks(990, (), 7)
    with pytest.raises(InputError, match="phase"):
        probe_features("train")


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_prefill_candidates_start_at_the_energy_optimum_and_end_at_the_top(predictor, tp):
    cands = default_candidates(predictor, "prefill", tp, SUP)
    assert len(cands) == 7 and cands[-1] == SUP[-1] and list(cands) == sorted(cands)
    low = energy_optimal_clock(predictor, "prefill", tp, SUP)
    assert cands[0] == low
    # every clock below the range is dominated for every probe batch: slower AND costlier than the lowest candidate
    # (costlier up to the ripple of interpolating between profiled clocks: < 0.5 %)
    below = tuple(c for c in SUP if c < low)
    pred = predictor.predict("prefill", tp, probe_features("prefill"), (*below, low))
    assert np.all(pred.latency_s[:, :-1] >= pred.latency_s[:, -1:])
    assert np.all(pred.energy_j[:, :-1] >= pred.energy_j[:, -1:] * (1 - 5e-3))
    # and the top clock costs more energy than the optimum for every probe batch (the range is not empty of savings)
    top = predictor.predict("prefill", tp, probe_features("prefill"), (low, SUP[-1]))
    assert np.all(top.energy_j[:, 1] > top.energy_j[:, 0])


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_decode_candidates_span_the_whole_range_because_power_falls_with_the_clock(predictor, tp):
    cands = default_candidates(predictor, "decode", tp, SUP)
    assert cands[0] == SUP[0] and cands[-1] == SUP[-1] and len(cands) == 7
    pred = predictor.predict("decode", tp, probe_features("decode")[:3], SUP)
    assert np.all(np.diff(pred.power_w, axis=1) >= 0)  # the premise of the decode range


def test_candidate_cache_and_fixed_override(predictor):
    cc = CandidateClocks(predictor)
    first = cc.get("prefill", 4, SUP)
    assert cc.get("prefill", 4, SUP) is first
    fixed = CandidateClocks(predictor, fixed=(1000, 1402))
    assert fixed.get("decode", 4, SUP) == (1005, 1395, 1980)  # snapped (1000 is a tie: up), top added
    with pytest.raises(InputError, match="positive"):
        CandidateClocks(predictor, fixed=(0,))
    with pytest.raises(InputError, match="at least 1"):
        CandidateClocks(predictor, n=0)


def test_a_static_controller_may_idle_at_the_lowest_clock() -> None:
    """``max-idlelow``: same requests served at the top clock (identical busy energy per iteration count), idle
    time at the lowest clock, so less idle energy and the same completions; the plain ``max`` never leaves the top."""
    import numpy as np

    from biscale.control import MaxClock, parse_placement
    from biscale.hardware import get_hardware
    from biscale.sim import SimConfig, simulate
    from biscale.workload import Trace

    hw = get_hardware("h100-sxm", "llama-3.3-70b")
    rng = np.random.default_rng(5)
    n = 40
    arrival = np.sort(rng.uniform(0, 20, n))
    trace = Trace(arrival - arrival[0], rng.integers(100, 2000, n), rng.integers(2, 60, n), name="gaps")
    placement = parse_placement("prefill:1xTP2,decode:1xTP2")
    cfg = SimConfig(nodes=1, gpus_per_node=8, switch_latency_s=0.01, sample_interval_s=0.05)
    top = simulate(trace, placement, hw, MaxClock(), config=cfg)
    low = simulate(trace, placement, hw, MaxClock(idle_lowest=True), config=cfg)
    assert low.summary["requests_completed"] == top.summary["requests_completed"] == n
    assert low.summary["energy_idle_j"] < 0.9 * top.summary["energy_idle_j"]
    assert low.summary["clock_switches"] > 0 == top.summary["clock_switches"]
    assert set(top.timeline["clock_mhz"]) == {max(hw.supported_clocks_mhz)}
    # busy work runs at the top clock (a batch that starts while the switch back up is in flight runs its first
    # 10 ms lower, so busy energy may differ a little)
    assert low.summary["energy_busy_j"] == pytest.approx(top.summary["energy_busy_j"], rel=0.03)
