"""trace_stats against hand-computed values; units in every numeric key."""

from __future__ import annotations

import math

import numpy as np
import pytest

from biscale.workload import LengthTable, Trace, load_trace, trace_stats

UNIT_SUFFIXES = ("_s", "_rps", "_tokens")
PLAIN_COUNTS = {"requests", "interarrival_cv", "excluded_failed_requests", "out_of_order_rows"}


def test_small_trace_by_hand() -> None:
    tr = Trace(np.array([0.0, 1.0, 3.0, 6.0]), np.array([10, 20, 30, 40]), np.array([1, 2, 3, 100]), name="h")
    s = trace_stats(tr)
    assert s["requests"] == 4
    assert s["span_s"] == 6.0
    assert s["mean_rate_rps"] == pytest.approx(4 / 6)
    gaps = np.array([1.0, 2.0, 3.0])
    assert s["interarrival_cv"] == pytest.approx(math.sqrt(2 / 3) / 2.0)
    assert s["interarrival_cv"] == pytest.approx(gaps.std() / gaps.mean())
    assert s["input_mean_tokens"] == 25.0
    assert s["input_p50_tokens"] == 25.0  # linear interpolation between 20 and 30
    assert s["input_p90_tokens"] == pytest.approx(37.0)
    assert s["output_max_tokens"] == 100
    assert s["peak_rate_60s_rps"] == pytest.approx(4 / 60)
    assert s["has_arrivals"] is True


def test_units_on_every_numeric_key() -> None:
    s = trace_stats(load_trace("azure-conv"))
    for key, value in s.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            assert key in PLAIN_COUNTS or key.endswith(UNIT_SUFFIXES), key


def test_conv_summary_against_numpy() -> None:
    tr = load_trace("azure-conv")
    s = trace_stats(tr)
    assert s["requests"] == 19_366
    assert s["span_s"] == pytest.approx(3_501.72, abs=0.01)
    assert s["mean_rate_rps"] == pytest.approx(19_366 / s["span_s"])
    assert s["input_p99_tokens"] == pytest.approx(np.percentile(tr.input_tokens, 99))
    assert 1.0 < s["interarrival_cv"] < 1.2
    assert s["peak_rate_60s_rps"] > s["mean_rate_rps"]


def test_length_table_has_no_arrival_keys() -> None:
    s = trace_stats(LengthTable(np.array([1, 2, 3]), np.array([4, 5, 6]), name="t"))
    assert s["requests"] == 3 and s["has_arrivals"] is False
    assert "span_s" not in s and "interarrival_cv" not in s
    assert s["output_p50_tokens"] == 5.0


def test_tiny_traces_give_nan_not_errors() -> None:
    s = trace_stats(Trace(np.zeros(1), np.ones(1), np.ones(1)))
    assert s["requests"] == 1
    assert math.isnan(s["interarrival_cv"]) and math.isnan(s["mean_rate_rps"])
    empty = trace_stats(Trace(np.zeros(0), np.zeros(0), np.zeros(0)))
    assert empty["requests"] == 0 and math.isnan(empty["input_p50_tokens"])
