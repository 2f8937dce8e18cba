"""The static baseline: the lowest per-phase clocks meeting both SLOs, searched on the predictors."""

from __future__ import annotations

import numpy as np

from biscale.control import FixedClock, parse_placement
from biscale.control.factory import make_controller
from biscale.control.state import Slo
from biscale.plan.static import StaticClock, lowest_meeting, search_static_clocks
from biscale.predict import PredictorCostModel
from biscale.sim import SimConfig, simulate
from biscale.workload import poisson_trace

PLACEMENT = parse_placement("prefill:1xTP4,decode:1xTP4")


def small_trace():
    return poisson_trace(8.0, 20.0, "sharegpt-v3", seed=3)


def config(ttft_s: float = 0.6, tpot_s: float = 0.1) -> SimConfig:
    return SimConfig(nodes=1, gpus_per_node=8, slo=Slo(ttft_s=ttft_s, tpot_s=tpot_s))


def test_the_search_finds_the_lowest_clocks_that_meet_both_slos(predictor):
    tr, cfg = small_trace(), config(ttft_s=0.25, tpot_s=0.05)
    found = search_static_clocks(tr, PLACEMENT, predictor, cfg)
    cm = PredictorCostModel(predictor)
    clocks = cm.supported_clocks_mhz
    assert found.meets_slo and found.summary["slo_met"]
    assert clocks[0] < found.prefill_mhz < clocks[-1]  # the SLOs bind somewhere inside the range

    def met(p: int, d: int) -> bool:
        ctrl = {"prefill": FixedClock(p), "decode": FixedClock(d)}
        return bool(simulate(tr, PLACEMENT, cm, ctrl, config=cfg).summary["slo_met"])

    assert met(found.prefill_mhz, found.decode_mhz)
    below_p = clocks[clocks.index(found.prefill_mhz) - 1]
    assert not met(below_p, clocks[-1])  # one step lower on prefill misses even with decode at the top
    if found.decode_mhz > clocks[0]:
        assert not met(found.prefill_mhz, clocks[clocks.index(found.decode_mhz) - 1])
    assert found.runs <= 2 * int(np.ceil(np.log2(len(clocks)))) + 1
    # cached: the second phase's controller does not search again
    assert search_static_clocks(tr, PLACEMENT, predictor, cfg) is found


def test_static_controllers_come_from_the_factory(predictor):
    tr, cfg = small_trace(), config()
    pre = make_controller("static", "prefill", predictor=predictor, trace=tr, placement=PLACEMENT, sim_config=cfg)
    dec = make_controller("static", "decode", predictor=predictor, trace=tr, placement=PLACEMENT, sim_config=cfg)
    assert isinstance(pre, StaticClock) and isinstance(dec, StaticClock) and pre.search is dec.search
    assert (pre.clock_mhz, dec.clock_mhz) == (pre.search.prefill_mhz, pre.search.decode_mhz)
    assert pre.name == "static" and pre.is_static


def test_unreachable_slos_leave_both_phases_at_the_top(predictor):
    found = search_static_clocks(small_trace(), PLACEMENT, predictor, config(ttft_s=0.001))
    top = PredictorCostModel(predictor).supported_clocks_mhz[-1]
    assert not found.meets_slo and (found.prefill_mhz, found.decode_mhz) == (top, top) and found.runs == 1


def test_the_guided_search_finds_the_same_clock_from_any_guess():
    clocks = list(range(200, 2000, 15))
    for threshold in (0, 1, 7, 60, len(clocks) - 1):
        for guess in (None, 0, threshold - 3, threshold - 1, threshold, threshold + 1, threshold + 9, len(clocks) - 1):
            if guess is not None and not 0 <= guess < len(clocks):
                continue
            calls: list[int] = []

            def ok(c: int, t: int = threshold, calls: list[int] = calls) -> bool:
                calls.append(c)
                return clocks.index(c) >= t

            assert lowest_meeting(clocks, ok, guess) == clocks[threshold]
            if guess == threshold and 0 < threshold < len(clocks) - 1:
                assert len(calls) == 2  # the guess and one clock below it
            assert len(calls) <= 2 * int(np.ceil(np.log2(len(clocks)))) + 2
