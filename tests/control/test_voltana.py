"""VoltanaLLM's EcoFreq and EcoPred: one test per rule of its frequency manager, on hand-made tables and states."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biscale.control.factory import make_controller
from biscale.control.state import Slo
from biscale.control.voltana import EcoFreq
from biscale.errors import InputError
from biscale.predict.ecopred import (
    DECODE_SEGMENT_ENDS,
    MIN_SEGMENT_SHAPES,
    EcoPred,
    _PhaseTable,
    default_ecopred,
    fit_ecopred,
    merge_segments,
)

LIST = (1005, 1200, 1410, 1605, 1980)
"""Listed clocks of the tests (supported H100 clocks)."""


def table() -> EcoPred:
    """Latency (s) independent of the clock's position but falling with it: prefill ``t x 1e-4 x 2000 / f``;
    decode, batch 1-128: ``(0.01 + 1e-4 b) x 2000 / f``, 129-256: twice that (a boundary at 128)."""
    clocks = LIST
    prefill = tuple(((0.0, 1e-4 * 2000 / f, 0.0),) for f in clocks)
    decode = tuple(((1e-4 * 2000 / f, 0.0, 0.01 * 2000 / f), (2e-4 * 2000 / f, 0.0, 0.02 * 2000 / f)) for f in clocks)
    return EcoPred(
        {
            ("prefill", 4): _PhaseTable(clocks, (8192,), 1, prefill),
            ("decode", 4): _PhaseTable(clocks, (128, 256), 1, decode),
        },
        {("prefill", 4): 1005, ("decode", 4): 1005},
    )


@pytest.fixture
def dstate(make_decode_state):  # type: ignore[no-untyped-def]
    """Decode snapshots of a GPU at 345 MHz (no listed clock: every answer is a change)."""
    return lambda **kw: make_decode_state(**{"clock_mhz": 345, **kw})


@pytest.fixture
def pstate(make_prefill_state):  # type: ignore[no-untyped-def]
    """Prefill snapshots of a GPU at 345 MHz."""
    return lambda **kw: make_prefill_state(**{"clock_mhz": 345, **kw})


def ecofreq(phase: str, **kw: object) -> EcoFreq:
    return EcoFreq(table(), phase, clocks_mhz=LIST, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ EcoPred
def test_ecopred_interpolates_between_profiled_clocks_and_has_no_prediction_outside_its_segments() -> None:
    pred = table()
    assert pred.latency_s("decode", 4, 1005, 100, 0) == pytest.approx((0.01 + 0.01) * 2000 / 1005)
    mid = (pred.latency_s("decode", 4, 1005, 100, 0) + pred.latency_s("decode", 4, 1200, 100, 0)) / 2  # type: ignore[operator]
    assert pred.latency_s("decode", 4, 1102, 100, 0) == pytest.approx(mid, rel=1e-2)
    assert pred.latency_s("decode", 4, 1200, 129, 0) == pytest.approx((0.02 + 2e-4 * 129) * 2000 / 1200)
    assert pred.latency_s("decode", 4, 1200, 257, 0) is None
    assert pred.latency_s("prefill", 4, 1980, 1, 1000) == pytest.approx(0.1 * 2000 / 1980)
    with pytest.raises(InputError, match="no decode table for TP8"):
        pred.latency_s("decode", 8, 1200, 1, 1)


def test_fit_recovers_exact_linear_tables_and_merges_sparse_segments() -> None:
    rows = []
    rng = np.random.default_rng(0)
    batches = np.unique(np.exp(rng.uniform(0, np.log(300), 60)).astype(int))
    contexts = {int(b): int(b * rng.uniform(100, 900)) for b in batches}
    for f in (990, 1980):
        for b in batches:
            ctx = contexts[int(b)]
            lat = (1e-3 + 2e-5 * b + 3e-8 * ctx) * 1980 / f
            rows.append(
                dict(
                    phase="decode",
                    tp=4,
                    sm_clock_mhz=f,
                    batch_size=b,
                    context_len_sum=ctx,
                    latency_s=lat,
                    energy_j=lat * (100 + 0.2 * f),
                )
            )
        for n in (64, 256, 1024, 4096, 8192):
            lat = (2e-3 + 5e-5 * n) * 1980 / f
            rows.append(
                dict(
                    phase="prefill",
                    tp=4,
                    sm_clock_mhz=f,
                    batch_size=1,
                    input_len_sum=n,
                    latency_s=lat,
                    energy_j=lat * (400 if f == 1980 else 100),
                )
            )
    pred = fit_ecopred(pd.DataFrame(rows))
    segs = merge_segments(batches)
    assert segs[0][0] == 1 and segs[-1][1] >= batches.max()
    assert all(np.count_nonzero((batches >= lo) & (batches <= hi)) >= MIN_SEGMENT_SHAPES for lo, hi in segs)
    assert {hi for _, hi in segs} <= set(DECODE_SEGMENT_ENDS)
    assert pred.latency_s("decode", 4, 990, 100, 50_000) == pytest.approx((1e-3 + 2e-3 + 1.5e-3) * 2, rel=1e-6)
    assert pred.latency_s("prefill", 4, 1980, 1, 2000) == pytest.approx(2e-3 + 0.1, rel=1e-6)
    assert pred.sweet_spot_mhz("prefill", 4) == 990  # half the energy per iteration at 990 MHz


def test_default_ecopred_is_fitted_on_the_bundled_profile() -> None:
    pred = default_ecopred()
    assert pred.tps("decode") == pred.tps("prefill") == (2, 4, 8)
    sweet = pred.sweet_spot_mhz("decode", 4)
    assert 990 <= sweet <= 1275  # the bottom of the U-shaped energy curve, well below the top
    assert pred.latency_s("decode", 4, 1980, 128, 128 * 700) < pred.latency_s("decode", 4, sweet, 128, 128 * 700)  # type: ignore[operator]


# ------------------------------------------------------------------ EcoFreq, one rule each
def test_the_lowest_listed_clock_whose_predicted_latency_meets_the_relaxed_slo(dstate) -> None:
    # batch 100: latency 0.02 x 2000 / f; the ITL target 30 ms x (1 + 0.35) = 40.5 ms -> 1005 MHz (39.8 ms) passes
    slo = Slo(tpot_s=0.03)
    ctrl = ecofreq("decode")
    assert ctrl.decide(dstate(context=[10] * 100, slo=slo)) == 1005
    # without the margin 1005 MHz (39.8 ms) misses 30 ms and 1410 MHz (28.4 ms) is the lowest that meets it
    strict = ecofreq("decode", slo_margin=0.0)
    assert strict.decide(dstate(context=[10] * 100, slo=slo)) == 1410
    # nothing but the top meets it: the top clock
    assert strict.decide(dstate(context=[10] * 100, slo=Slo(tpot_s=0.001), instance_id=1)) == 1980


def test_a_waiting_request_means_the_top_clock(dstate) -> None:
    ctrl = ecofreq("decode")
    assert ctrl.decide(dstate(context=[10] * 10)) == 1005
    assert ctrl.decide(dstate(context=[10] * 10, waiting=[300], time_s=10.1)) == 1980
    assert ctrl.stats["waiting"] == 1


def test_a_batch_across_the_tile_boundary_costs_more(dstate) -> None:
    slo = Slo(tpot_s=0.045)  # 60.75 ms relaxed
    ctrl = ecofreq("decode")
    assert ctrl.decide(dstate(context=[10] * 128, slo=slo)) == 1005  # (0.01 + 0.0128) x 2000/1005 = 45 ms
    # 129 requests open the second segment: (0.02 + 0.0258) x 2000 / f, 57 ms first at 1605 MHz
    assert ctrl.decide(dstate(context=[10] * 129, slo=slo, time_s=10.1)) == 1605


def test_prefill_budget_is_the_slo_minus_the_longest_wait(pstate) -> None:
    # 1,000 new tokens: 200 / f s, 0.199 s at 1005 MHz; the TTFT budget 0.3 x 1.35 = 0.405 s minus 0.05 s waited
    slo = Slo(ttft_s=0.3)
    ctrl = ecofreq("prefill")
    assert ctrl.decide(pstate(batch_new=[600, 400], batch_wait=[0.05, 0.0], slo=slo)) == 1005
    # a request of the batch already waited 0.25 s: 0.155 s left, 1410 MHz (0.142 s) is the lowest that fits
    after = ctrl.decide(pstate(batch_new=[600, 400], batch_wait=[0.25, 0.1], slo=slo, time_s=10.2))
    assert after == 1410


def test_prefill_queue_behind_the_batch_means_the_top_clock(pstate) -> None:
    ctrl = ecofreq("prefill")
    assert ctrl.decide(pstate(batch_new=[100], queue=[500])) == 1980


def test_five_seconds_without_an_iteration_fall_back_to_the_lowest_listed_clock(pstate) -> None:
    ctrl = ecofreq("prefill")
    assert ctrl.decide(pstate(batch_new=[100], queue=[50], time_s=100.0)) == 1980
    assert ctrl.decide(pstate(time_s=101.0)) is None  # idle, 1 s: keep the clock
    assert ctrl.decide(pstate(time_s=104.9)) is None
    assert ctrl.decide(pstate(time_s=105.1)) == 1005  # > 5 s since the last iteration
    assert ctrl.stats["fallback"] == 1


def test_arrival_thresholds_force_the_top_clock_over_their_window(pstate) -> None:
    # 5 requests of 300 tokens within the 3-s window: 500 tokens/s > 400
    ctrl = ecofreq("prefill", tps_threshold=400.0)
    for k in range(5):
        state = pstate(batch_new=[300], time_s=10.0 + 0.5 * k, instance_id=0)
        state = _with_ids(state, [k])
        want = ctrl.decide(state)
    assert want == 1980 and ctrl.stats["tps_threshold"] >= 1
    # 3.5 s later the window holds nothing: back to the SLO rule
    late = _with_ids(pstate(batch_new=[300], time_s=15.5), [9])
    assert ctrl.decide(late) == 1005
    rps = ecofreq("prefill", rps_threshold=0.5)  # 3 requests in 5 s: 0.6 req/s
    outs = [rps.decide(_with_ids(pstate(batch_new=[10], time_s=1.0 + k), [k])) for k in range(3)]
    assert outs == [1005, 1005, 1980]


def test_a_poll_interval_decides_on_the_median_of_its_iterations(dstate) -> None:
    slo = Slo(tpot_s=0.045)
    ctrl = ecofreq("decode", poll_interval_s=1.0)
    assert ctrl.decide(dstate(context=[10] * 10, slo=slo, time_s=0.0)) == 1005  # first poll
    # three iterations within the interval: batches 129, 129, 10 -> median 129 (across the boundary)
    assert ctrl.decide(dstate(context=[10] * 129, slo=slo, time_s=0.3)) is None
    assert ctrl.decide(dstate(context=[10] * 129, slo=slo, time_s=0.6)) is None
    assert ctrl.decide(dstate(context=[10] * 10, slo=slo, time_s=1.0)) == 1605


def test_the_default_list_runs_from_the_profiles_sweet_spot_to_the_top(dstate) -> None:
    ctrl = make_controller("ecofreq", "decode")
    assert isinstance(ctrl, EcoFreq)
    state = dstate(context=[500] * 64)
    listed = ctrl.clock_list(4, state.supported_clocks_mhz)
    assert len(listed) == 5 and listed[-1] == state.supported_clocks_mhz[-1]
    assert listed[0] == default_ecopred().sweet_spot_mhz("decode", 4)
    assert ctrl.decide(state) == listed[0]  # 64 requests at 100 ms: the sweet spot meets it easily


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"n_clocks": 1}, "n_clocks must be >= 2"),
        ({"clocks_mhz": [1410]}, "at least 2 distinct clocks"),
        ({"tps_threshold": 0}, "tps_threshold must be > 0"),
        ({"poll_interval_s": -1}, "poll_interval_s must be >= 0"),
        ({"fallback_s": 0}, "fallback_s must be > 0"),
    ],
)
def test_bad_options_are_input_errors(options: dict[str, object], match: str) -> None:
    with pytest.raises(InputError, match=match):
        EcoFreq(table(), "decode", **options)  # type: ignore[arg-type]


def _with_ids(state, ids):  # type: ignore[no-untyped-def]
    import dataclasses

    return dataclasses.replace(state, batch_request_ids=np.asarray(ids, dtype=np.int64))


def test_the_clock_in_force_or_on_its_way_is_not_asked_for_again(dstate) -> None:
    ctrl = ecofreq("decode")
    assert ctrl.decide(dstate(context=[10] * 10, clock_mhz=1005)) is None  # already there
    assert ctrl.decide(dstate(context=[10] * 10, clock_mhz=1980, pending_clock_mhz=1005, time_s=10.1)) is None
    assert ctrl.decide(dstate(context=[10] * 10, clock_mhz=1005, waiting=[5], time_s=10.2)) == 1980
