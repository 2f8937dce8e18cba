"""The run summary is a pure function of the request and instance tables (reused for live runs)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from biscale.control import Slo
from biscale.jsonio import to_json_text
from biscale.metrics import summarize


def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    requests = pd.DataFrame(
        {
            "status": ["completed", "completed", "completed", "unfinished", "rejected"],
            "ttft_s": [0.2, 0.5, 0.9, np.nan, np.nan],
            "tpot_s": [0.05, np.nan, 0.2, np.nan, np.nan],  # the second is a one-token answer
            "max_tbt_s": [0.08, 0.0, 0.3, np.nan, np.nan],
        }
    )
    instances = pd.DataFrame(
        {
            "phase": ["prefill", "decode"],
            "tokens": [1000, 200],
            "busy_energy_j": [300.0, 500.0],
            "idle_energy_j": [100.0, 100.0],
            "energy_j": [400.0, 600.0],
            "clock_switches": [2, 3],
        }
    )
    return requests, instances


def test_summary_numbers_by_hand() -> None:
    requests, instances = tables()
    s = summarize(requests, instances, Slo(ttft_s=0.6, tpot_s=0.1, percentile=90.0), duration_s=10.0)
    assert (s["requests_total"], s["requests_completed"], s["requests_unfinished"], s["requests_rejected"]) == (
        5,
        3,
        1,
        1,
    )
    assert s["ttft_p50_ms"] == pytest.approx(500.0) and s["ttft_mean_ms"] == pytest.approx(1e3 * 1.6 / 3)
    assert s["tpot_p50_ms"] == pytest.approx(125.0)  # over the two multi-token answers: 50 and 200 ms
    # TTFT met by requests 0 and 1; TPOT by 0 and 1 (a one-token answer meets it); both: 2 of 5
    assert s["ttft_attainment_pct"] == 40.0 and s["tpot_attainment_pct"] == 40.0 and s["slo_attainment_pct"] == 40.0
    assert s["slo_violations"] == 3 and not s["slo_met"]
    assert s["goodput_rps"] == 0.2 and s["throughput_rps"] == 0.3
    assert s["energy_total_j"] == 1000.0 and s["energy_busy_j"] == 800.0 and s["energy_idle_j"] == 200.0
    assert s["prefill_energy_per_prompt_token_j"] == 0.4 and s["decode_energy_per_output_token_j"] == 3.0
    assert s["prefill_busy_energy_per_prompt_token_j"] == 0.3 and s["decode_busy_energy_per_output_token_j"] == 2.5
    assert s["energy_per_request_j"] == pytest.approx(1000.0 / 3) and s["avg_power_w"] == 100.0
    assert s["clock_switches"] == 5 and s["instances_total"] == 2 and s["sim_time_s"] == 10.0


def test_empty_run_is_nan_not_an_error_and_json_has_null() -> None:
    requests, instances = tables()
    s = summarize(requests.iloc[:0], instances.iloc[:0], Slo(), duration_s=0.0)
    assert s["requests_total"] == 0 and not s["slo_met"] and math.isnan(s["ttft_p99_ms"])
    assert math.isnan(s["goodput_rps"]) and s["energy_total_j"] == 0.0
    text = to_json_text({"x": s["ttft_p99_ms"], "n": np.int64(3), "a": np.array([1.5, np.inf]), "b": np.bool_(True)})
    assert text == '{"x": null, "n": 3, "a": [1.5, null], "b": true}'


def test_verdict_is_joint_attainment() -> None:
    """Each target met by 9 of 10 requests but by different ones: each attainment is 90 %, the joint one 80 %, so
    the verdict at the 90th percentile is a miss (it was a pass when the attainments were checked separately)."""
    n = 10
    ttft = np.full(n, 0.1)
    tpot = np.full(n, 0.05)
    ttft[0] = 1.0  # request 0 misses TTFT only
    tpot[1] = 0.5  # request 1 misses TPOT only
    requests = pd.DataFrame({"status": ["completed"] * n, "ttft_s": ttft, "tpot_s": tpot, "max_tbt_s": tpot})
    _, instances = tables()
    s = summarize(requests, instances, Slo(ttft_s=0.6, tpot_s=0.1, percentile=90.0), duration_s=10.0)
    assert s["ttft_attainment_pct"] == 90.0 and s["tpot_attainment_pct"] == 90.0
    assert s["slo_attainment_pct"] == 80.0 and not s["slo_met"]


def test_itl_percentiles_weight_gaps_by_tokens() -> None:
    """ITL quantiles over tokens: a gap seen by a batch of b tokens counts b times (checked against the expanded
    token list), and the histogram holds every token."""
    rng = np.random.default_rng(3)
    gaps = rng.uniform(0.01, 0.3, 400)
    tokens = rng.integers(1, 50, 400)
    requests, instances = tables()
    s = summarize(
        requests, instances, Slo(ttft_s=0.6, tpot_s=0.1, itl_s=0.2), duration_s=10.0, token_gaps=(gaps, tokens)
    )
    every = np.repeat(gaps, tokens)
    for q in (50, 90, 99):
        assert s[f"itl_p{q}_ms"] == pytest.approx(1e3 * np.percentile(every, q, method="inverted_cdf"))
    assert s["itl_tokens"] == int(tokens.sum()) == sum(s["itl_histogram"]["tokens"])
    assert s["slo_itl_ms"] == pytest.approx(200.0)
    assert s["itl_slo_met"] == bool(np.percentile(every, 99, method="inverted_cdf") <= 0.2)
    none = summarize(requests, instances, Slo(), duration_s=10.0)
    assert math.isnan(none["itl_p99_ms"]) and none["itl_slo_met"] is None and none["slo_itl_ms"] == 100.0


def test_a_simulated_run_counts_every_decode_token_in_its_itl() -> None:
    """Every token generated by a decode iteration has one gap in the ITL record, and no gap exceeds the largest gap
    of some request (the per-request maxima and the per-token gaps come from the same iterations)."""
    from biscale.control import MaxClock, parse_placement
    from biscale.hardware import get_hardware
    from biscale.sim import SimConfig, simulate
    from biscale.workload import Trace

    rng = np.random.default_rng(7)
    n = 60
    arrival = np.sort(rng.uniform(0, 6, n))
    trace = Trace(arrival - arrival[0], rng.integers(50, 1500, n), rng.integers(2, 80, n), name="itl")
    res = simulate(
        trace,
        parse_placement("prefill:1xTP2,decode:1xTP2"),
        get_hardware("h100-sxm", "llama-3.3-70b"),
        MaxClock(),
        config=SimConfig(nodes=1, gpus_per_node=8),
    )
    s = res.summary
    assert s["requests_completed"] == n
    assert s["itl_tokens"] == s["decode_tokens"] == int((trace.output_tokens - 1).sum())
    largest = 1e3 * float(res.requests["max_tbt_s"].max())
    assert 0 < s["itl_p50_ms"] <= s["itl_p99_ms"] <= largest + 1e-9
