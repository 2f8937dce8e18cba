"""A run's figures from its tables: per-window SLO attainment, the cluster's energy with unassigned GPUs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from biscale.control.state import Slo
from biscale.results.record import gpu_seconds, run_record, unassigned_energy, window_slo

SLO = Slo(ttft_s=0.6, tpot_s=0.1, percentile=99.0)


def requests(arrival, ttft, tpot, status=None) -> pd.DataFrame:
    n = len(arrival)
    return pd.DataFrame(
        {
            "arrival_s": np.asarray(arrival, dtype=float),
            "status": status or ["completed"] * n,
            "ttft_s": np.asarray(ttft, dtype=float),
            "tpot_s": np.asarray(tpot, dtype=float),
            "max_tbt_s": np.zeros(n),
        }
    )


def test_windows_group_by_arrival_and_count_misses() -> None:
    # window 0: 100 requests, one TTFT miss (99 % met); window 1: 100 requests, two TPOT misses; window 2: empty;
    # window 3: one unfinished request out of 10
    a = np.r_[np.linspace(0, 59, 100), np.linspace(60, 119, 100), np.linspace(180, 239, 10)]
    ttft = np.full(a.size, 0.1)
    ttft[5] = 0.7
    tpot = np.full(a.size, 0.05)
    tpot[[120, 150]] = 0.2
    status = ["completed"] * a.size
    status[-1] = "unfinished"
    rows = window_slo(requests(a, ttft, tpot, status), SLO, 60.0)
    assert [r["window"] for r in rows] == [0, 1, 3]
    assert [r["requests"] for r in rows] == [100, 100, 10]
    assert rows[0]["ttft_attainment_pct"] == pytest.approx(99.0) and rows[0]["slo_met"]
    assert rows[1]["tpot_attainment_pct"] == pytest.approx(98.0) and not rows[1]["slo_met"]
    assert rows[2]["slo_attainment_pct"] == pytest.approx(90.0) and not rows[2]["slo_met"]
    assert rows[1]["p99_tpot_ms"] == pytest.approx(1e3 * np.percentile(tpot[100:200], 99))
    assert rows[0]["rate_rps"] == pytest.approx(100 / 60)


def test_one_token_answers_meet_tpot_in_windows() -> None:
    rows = window_slo(requests([0.0, 1.0], [0.1, 0.1], [np.nan, 0.05]), SLO, 60.0)
    assert rows[0]["tpot_attainment_pct"] == 100.0


def instances() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "phase": ["prefill", "decode", "decode"],
            "tp": [4, 4, 4],
            "start_s": [0.0, 0.0, 50.0],
            "stop_s": [np.nan, 60.0, np.nan],
        }
    )


def test_unassigned_gpu_energy_from_gpu_seconds() -> None:
    inst = instances()
    assert gpu_seconds(inst, 100.0) == pytest.approx(4 * 100 + 4 * 60 + 4 * 50)
    e, source = unassigned_energy({"sim_time_s": 100.0}, inst, 16, 70.0)
    assert e == pytest.approx((16 * 100 - 840) * 70.0) and source.startswith("deep idle")
    assert unassigned_energy({"energy_unassigned_j": 5.0}, inst, 16, 70.0) == (5.0, "simulator")
    assert unassigned_energy({"sim_time_s": 100.0}, inst, None, None) == (0.0, "not counted")


def test_run_record_definitions() -> None:
    summary = {
        "sim_time_s": 100.0,
        "energy_total_j": 1e5,
        "prompt_tokens": 1000,
        "decode_tokens": 3000,
        "prefill_energy_per_prompt_token_j": 0.3,
        "decode_energy_per_output_token_j": 0.4,
        "ttft_p99_ms": 200.0,
        "tpot_p99_ms": 50.0,
        "slo_met": True,
        "clock_switches": 7,
    }
    req = requests(np.linspace(0, 90, 50), np.full(50, 0.1), np.full(50, 0.05))
    rec = run_record(summary, req, instances(), SLO, 60.0, total_gpus=16, unassigned_power_w=70.0)
    e_free = (1600 - 840) * 70.0
    assert rec["energy_cluster_j"] == pytest.approx(1e5 + e_free)
    assert rec["cluster_j_per_token"] == pytest.approx((1e5 + e_free) / 4000)
    assert rec["avg_power_w"] == pytest.approx((1e5 + e_free) / 100)
    assert (rec["prefill_j_per_token"], rec["decode_j_per_token"]) == (0.3, 0.4)
    assert (rec["p99_ttft_ms"], rec["p99_tpot_ms"], rec["clock_switches"]) == (200.0, 50.0, 7)
    assert rec["windows"] == 2 and rec["windows_slo_met"] == 2 and rec["slo_met_every_window"]
    assert rec["preemptions"] is None  # not modelled by this simulator (no summary key, no column)
    assert math.isnan(rec["p50_ttft_ms"])
    rec2 = run_record({**summary, "preemptions": 3}, req, instances(), SLO, 60.0)
    assert rec2["preemptions"] == 3
