"""Synthetic arrivals: Poisson and Gamma processes hit their rate and CV, are seeded, and validate arguments."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from biscale.errors import InputError
from biscale.workload import LengthTable, gamma_trace, load_lengths, poisson_trace

TABLE = LengthTable(np.array([100, 200, 300, 400]), np.array([10, 20, 30, 40]), name="t4")


def _gaps(t: np.ndarray) -> np.ndarray:
    return np.diff(t)


def test_poisson_rate_cv_and_exponential_gaps() -> None:
    tr = poisson_trace(20.0, 2_000.0, TABLE, seed=1)
    gaps = _gaps(tr.arrival_s)
    assert abs(tr.mean_rate_rps - 20.0) / 20.0 < 0.02
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.03
    assert sps.kstest(gaps, "expon", args=(0, 1 / 20.0)).pvalue > 0.01
    assert tr.arrival_s[0] == 0.0 and tr.duration_s <= 2_000.0


#: Gaps below this are compared by count only: arrival times are float64 seconds (resolution ~1e-12 s at 3,000 s),
#: and with CV 4 (Gamma shape 1/16) about a fifth of the gaps fall below 1e-12 s, so their differences are rounding.
RESOLVED_GAP_S = 1e-6


@pytest.mark.parametrize("cv", [0.5, 2.0, 4.0])
def test_gamma_rate_cv_and_distribution(cv: float) -> None:
    rate = 30.0
    tr = gamma_trace(rate, cv, 3_000.0, TABLE, seed=2)
    gaps = _gaps(tr.arrival_s)
    assert abs(gaps.mean() - 1 / rate) * rate < 0.04
    assert abs(gaps.std() / gaps.mean() - cv) / cv < 0.08
    law = sps.gamma(1 / cv**2, 0, cv**2 / rate)
    # Every CV: the share of unresolved gaps matches the law, and the resolved gaps follow the truncated law.
    small = law.cdf(RESOLVED_GAP_S)
    assert sps.binomtest(int((gaps <= RESOLVED_GAP_S).sum()), gaps.size, small).pvalue > 0.01
    resolved = gaps[gaps > RESOLVED_GAP_S]
    assert sps.kstest(resolved, lambda x: (law.cdf(x) - small) / (1.0 - small)).pvalue > 0.01


def test_seeded_and_lengths_independent_of_arrivals() -> None:
    a = gamma_trace(5.0, 2.0, 500.0, TABLE, seed=7)
    b = gamma_trace(5.0, 2.0, 500.0, TABLE, seed=7)
    c = gamma_trace(5.0, 2.0, 500.0, load_lengths("sharegpt-v3"), seed=7)
    d = gamma_trace(5.0, 2.0, 500.0, TABLE, seed=8)
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    np.testing.assert_array_equal(a.input_tokens, b.input_tokens)
    np.testing.assert_array_equal(a.arrival_s, c.arrival_s)  # a different length table leaves arrivals alone
    assert not np.array_equal(a.arrival_s, d.arrival_s)


def test_lengths_are_rows_of_the_table() -> None:
    tr = poisson_trace(50.0, 200.0, TABLE, seed=0)
    np.testing.assert_array_equal(tr.input_tokens, tr.output_tokens * 10)
    assert set(np.unique(tr.output_tokens)) == {10, 20, 30, 40}


def test_lengths_by_name() -> None:
    tr = poisson_trace(5.0, 100.0, "sharegpt-v3", seed=0)
    assert "sharegpt-v3" in tr.source
    assert tr.meta["process"] == "poisson"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: poisson_trace(0.0, 10.0, TABLE), "rate must be a positive number of requests per second (got 0.0)"),
        (lambda: poisson_trace(1.0, -5.0, TABLE), "duration must be a positive number of seconds (got -5.0)"),
        (lambda: gamma_trace(1.0, 0.0, 10.0, TABLE), "coefficient of variation must be > 0 (got 0.0)"),
        (lambda: gamma_trace(1.0, float("inf"), 10.0, TABLE), "coefficient of variation must be > 0 (got inf)"),
        (lambda: poisson_trace(1e9, 1e9, TABLE), "more than the limit of 50,000,000"),
    ],
)
def test_bad_arguments(call, message: str) -> None:
    with pytest.raises(InputError) as err:
        call()
    assert message in str(err.value)
