"""hindsight-lock's per-window choice: the least-energy clock pair meeting the window, the top clock where none."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biscale.control.state import Slo
from biscale.evaluate.hindsight import WindowFigures, choose, settled, window_figures


def fig(prefill_j: list[float], decode_j: list[float], ttft_miss: list[float], tpot_miss: list[float]) -> WindowFigures:
    n = len(prefill_j)
    return WindowFigures(
        np.array(prefill_j),
        np.array(decode_j),
        np.array(ttft_miss),
        np.array(tpot_miss),
        np.full(n, 100.0),
        np.full(n, 0.05),
    )


def test_choose_takes_the_cheapest_pair_within_the_joint_miss_budget() -> None:
    slo = Slo(ttft_s=0.6, tpot_s=0.1, percentile=99.0)  # 1 miss in 100 requests allowed per window
    figures = {
        1000: fig([10.0, 10.0], [20.0, 20.0], [0.0, 5.0], [1.0, 0.0]),
        1500: fig([15.0, 15.0], [25.0, 25.0], [0.0, 1.0], [0.0, 0.0]),
        1980: fig([30.0, 30.0], [40.0, 40.0], [0.0, 0.0], [0.0, 0.0]),
    }
    pre, dec, total = choose(figures, slo)
    # window 0: (1000, 1000) has 0 + 1 misses: allowed, the cheapest; window 1: prefill 1000 misses 5, 1500 misses 1,
    # so prefill 1500 with decode 1000 (0 misses): 1 miss in total
    assert (pre, dec) == ([1000, 1500], [1000, 1000])
    assert total == pytest.approx(10 + 20 + 15 + 20)


def test_choose_falls_back_to_the_top_clock_and_respects_the_itl_target() -> None:
    slo = Slo(ttft_s=0.6, tpot_s=0.1, itl_s=0.04, percentile=99.0)
    bad = fig([1.0], [1.0], [50.0], [50.0])
    top = fig([9.0], [9.0], [0.0], [0.0])
    top.p99_tpot_s[:] = 0.03
    pre, dec, _ = choose({1000: bad, 1980: top}, slo)
    assert (pre, dec) == ([1980], [1980])
    top.p99_tpot_s[:] = 0.05  # the top clock misses the ITL target too: it is still the fallback
    assert choose({1000: bad, 1980: top}, slo)[:2] == ([1980], [1980])


def test_window_figures_split_energy_and_misses_by_window() -> None:
    timeline = pd.DataFrame(
        {
            "time_s": [1.0, 2.0, 1.0, 2.0],
            "instance_id": [0, 0, 1, 1],
            "phase": ["prefill", "prefill", "decode", "decode"],
            "energy_j": [5.0, 12.0, 3.0, 4.0],  # cumulative
        }
    )
    requests = pd.DataFrame(
        {
            "arrival_s": [0.1, 0.5, 1.5],
            "status": ["completed", "completed", "unfinished"],
            "ttft_s": [0.1, 0.9, np.nan],
            "tpot_s": [0.05, 0.2, np.nan],
        }
    )
    f = window_figures(requests, timeline, Slo(), window_s=1.0, windows=2)
    assert f.prefill_j.tolist() == [5.0, 7.0] and f.decode_j.tolist() == [3.0, 1.0]
    assert f.requests.tolist() == [2.0, 1.0]
    assert f.ttft_miss.tolist() == [1.0, 1.0] and f.tpot_miss.tolist() == [1.0, 1.0]


def test_the_ascending_search_settles_when_the_last_clock_run_wins_no_window() -> None:
    slo = Slo(ttft_s=0.6, tpot_s=0.1, percentile=99.0)
    low = fig([10.0, 10.0], [20.0, 20.0], [0.0, 5.0], [0.0, 0.0])  # window 1: prefill misses at 1000
    mid = fig([12.0, 14.0], [25.0, 25.0], [0.0, 0.0], [0.0, 0.0])
    high = fig([15.0, 18.0], [30.0, 30.0], [0.0, 0.0], [0.0, 0.0])
    assert not settled({1000: low}, slo)  # one clock says nothing about the next
    # window 1 chose prefill 1500, the highest clock run: a higher one might still be cheaper
    assert not settled({1000: low, 1500: mid}, slo)
    assert settled({1000: low, 1500: mid, 1800: high}, slo)  # 1800 won no window in either phase
    # a window no pair meets keeps the search going (its fallback is the top clock)
    assert not settled({1000: fig([1.0], [1.0], [50.0], [0.0]), 1500: fig([1.0], [1.0], [50.0], [0.0])}, slo)
    # the choice on the settled clocks is the choice on every candidate when energy rises above them
    top = fig([40.0, 40.0], [50.0, 50.0], [0.0, 0.0], [0.0, 0.0])
    some = {1000: low, 1500: mid, 1800: high}
    assert choose(some, slo)[:2] == choose({**some, 1980: top}, slo)[:2] == ([1000, 1500], [1000, 1000])
