"""What the requests demand: the misses the SLO percentile allows (as the summary counts them), the token, pair
and context totals with the most favourable misses removed, the submission window and the shortest horizon."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biscale.bound.demand import allowed_misses, demand_of, submitted
from biscale.control.state import Slo
from biscale.metrics import summarize
from biscale.sim import SimConfig
from biscale.workload.trace import Trace


def _summary_met(n: int, misses: int, pct: float) -> bool:
    """Whether :func:`biscale.metrics.summarize` reports the SLOs met when ``misses`` of ``n`` requests miss."""
    ttft = np.where(np.arange(n) < misses, 10.0, 0.1)
    requests = pd.DataFrame({"status": ["completed"] * n, "ttft_s": ttft, "tpot_s": 0.01, "max_tbt_s": 0.01})
    instances = pd.DataFrame(
        {"phase": ["prefill"], "tokens": [1], "busy_energy_j": [1.0], "idle_energy_j": [0.0], "energy_j": [1.0]}
        | {"clock_switches": [0]}
    )
    return bool(summarize(requests, instances, Slo(ttft_s=1.0, tpot_s=1.0, percentile=pct), 1.0)["slo_met"])


@pytest.mark.parametrize(("n", "pct"), [(1, 99.0), (99, 99.0), (100, 99.0), (101, 99.0), (1000, 99.0), (300, 95.5)])
def test_allowed_misses_is_exactly_what_the_summary_tolerates(n: int, pct: float) -> None:
    d = allowed_misses(n, pct)
    assert _summary_met(n, d, pct)
    assert d == n or not _summary_met(n, d + 1, pct)


def test_allowed_misses_by_hand() -> None:
    assert allowed_misses(100, 99.0) == 1
    assert allowed_misses(99, 99.0) == 0
    assert allowed_misses(250, 99.0) == 2
    assert allowed_misses(250, 100.0) == 0


def test_totals_remove_the_largest_requests_and_sum_the_contexts() -> None:
    arrival = np.array([0.0, 1.0, 2.0])
    inp = np.array([10, 100, 5])
    out = np.array([3, 1, 5])
    d = demand_of(arrival, inp, out, 50.0, np.zeros(3))  # 50 %: one of three may miss
    assert d.exempt == 1
    assert (d.prompt_tokens, d.decode_tokens) == (115, 6)
    assert d.tokens == 121
    assert d.prompt_tokens_met == 15  # the 100-token prompt removed
    assert d.pairs_met == pytest.approx(10 * 11 / 2 + 5 * 6 / 2)
    assert d.decode_tokens_met == 2  # the 4 decode tokens of the last request removed
    # contexts: request 0 reads 11, 12; request 2 reads 6, 7, 8, 9 (removed: the larger total)
    assert d.context_met == pytest.approx(11 + 12)
    assert d.min_context == 6  # the shortest prompt with a decode phase + 1
    assert d.max_prompt == 100


def test_the_shortest_horizon_counts_every_served_request() -> None:
    arrival = np.array([0.0, 1.0, 2.0])
    service = np.array([5.0, 0.5, 0.1])
    assert demand_of(arrival, np.ones(3, int), np.ones(3, int), 100.0, service).min_horizon_s == 5.0
    # one request may go unserved: the latest end (request 0's) can be left out, not the last arrival
    assert demand_of(arrival, np.ones(3, int), np.ones(3, int), 50.0, service).min_horizon_s == 2.1


def test_submitted_applies_the_submission_window_and_the_horizon() -> None:
    trace = Trace(arrival_s=np.array([0.0, 1.0, 2.0, 3.0]), input_tokens=np.ones(4, int), output_tokens=np.ones(4, int))
    assert submitted(trace, SimConfig(duration_s=2.0))[0].tolist() == [0.0, 1.0]  # arrivals before duration_s
    assert submitted(trace, SimConfig(max_time_s=2.0))[0].tolist() == [0.0, 1.0, 2.0]  # up to the horizon
    assert submitted(trace, SimConfig())[0].size == 4


def test_no_request_is_refused() -> None:
    with pytest.raises(ValueError, match="no request is submitted"):
        demand_of(np.zeros(0), np.zeros(0, int), np.zeros(0, int), 99.0, np.zeros(0))
