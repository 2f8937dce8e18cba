"""Trace operations: rate rescaling keeps burstiness and the time-of-day shape; length replacement; windows."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from biscale.errors import InputError
from biscale.workload import (
    LengthTable,
    Trace,
    load_lengths,
    load_trace,
    rescale_rate,
    slice_window,
    with_lengths,
)


@pytest.fixture(scope="module")
def conv() -> Trace:
    return load_trace("azure-conv")


def _cv(t: np.ndarray) -> float:
    g = np.diff(t)
    return float(g.std() / g.mean())


def _rate_profile(t: np.ndarray, span: float, window_s: float = 300.0) -> np.ndarray:
    """Requests per 5-minute window, normalised to the mean (the planner's view of the trace)."""
    counts = np.histogram(t, bins=np.arange(0.0, span + window_s, window_s))[0][:-1].astype(float)
    return counts / counts.mean()


@pytest.mark.parametrize("factor", [0.3, 0.67, 0.85, 1.0, 1.7, 2.0, 3.5, 6.0])
def test_rescale_hits_rate_and_keeps_cv_and_shape(conv: Trace, factor: float) -> None:
    target = conv.mean_rate_rps * factor
    out = rescale_rate(conv, target, seed=11)
    assert abs(out.mean_rate_rps - target) / target < 0.03
    assert abs(out.duration_s - conv.duration_s) / conv.duration_s < 0.01  # span kept
    assert abs(_cv(out.arrival_s) - _cv(conv.arrival_s)) / _cv(conv.arrival_s) < 0.10
    prof_in = _rate_profile(conv.arrival_s, conv.duration_s)
    prof_out = _rate_profile(out.arrival_s, conv.duration_s)
    # the 5-minute rate profile (diurnal shape) is kept: small per-window deviation, strong correlation
    assert np.max(np.abs(prof_out - prof_in)) < 0.12
    if factor != 1.0:
        assert np.corrcoef(prof_in, prof_out)[0, 1] > 0.8
    assert out.meta["rescale_factor"] == pytest.approx(factor)


def test_rescale_factor_one_is_identity(conv: Trace) -> None:
    out = rescale_rate(conv, conv.mean_rate_rps, seed=3)
    np.testing.assert_array_equal(out.arrival_s, conv.arrival_s)
    np.testing.assert_array_equal(out.input_tokens, conv.input_tokens)


def test_rescale_is_seeded(conv: Trace) -> None:
    a = rescale_rate(conv, 12.0, seed=5)
    b = rescale_rate(conv, 12.0, seed=5)
    c = rescale_rate(conv, 12.0, seed=6)
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    np.testing.assert_array_equal(a.input_tokens, b.input_tokens)
    assert not np.array_equal(a.arrival_s, c.arrival_s)


def test_superposition_keeps_every_original_request(conv: Trace) -> None:
    out = rescale_rate(conv, 3.0 * conv.mean_rate_rps, seed=2)
    assert len(out) == 3 * len(conv)  # integer factor: exactly three full copies
    # each request's lengths travel with it: the multiset of lengths is the original's three times
    np.testing.assert_array_equal(np.sort(out.input_tokens), np.sort(np.repeat(conv.input_tokens, 3)))


def test_thinning_keeps_a_subset(conv: Trace) -> None:
    out = rescale_rate(conv, 0.5 * conv.mean_rate_rps, seed=2)
    assert 0.45 * len(conv) < len(out) < 0.55 * len(conv)
    # the result is re-based by the first kept arrival: shifted back, every request is an original one
    keys = set(zip(np.round(conv.arrival_s, 6), conv.input_tokens, conv.output_tokens, strict=True))

    def kept(base: float) -> set[tuple[float, int, int]]:
        return set(zip(np.round(out.arrival_s + base, 6), out.input_tokens, out.output_tokens, strict=True))

    assert any(kept(base) <= keys for base in conv.arrival_s[:100])


def test_thinning_cv_follows_the_renewal_formula() -> None:
    code = load_trace("azure-code")
    cv0 = _cv(code.arrival_s)
    f = 0.5
    out = rescale_rate(code, f * code.mean_rate_rps, seed=1)
    predicted = np.sqrt(f * cv0**2 + 1 - f)
    assert abs(_cv(out.arrival_s) - predicted) / predicted < 0.15


def test_time_method_keeps_cv_exactly(conv: Trace) -> None:
    out = rescale_rate(conv, 4.0 * conv.mean_rate_rps, method="time")
    assert out.duration_s == pytest.approx(conv.duration_s / 4.0)
    assert _cv(out.arrival_s) == pytest.approx(_cv(conv.arrival_s), rel=1e-9)
    assert out.mean_rate_rps == pytest.approx(4.0 * conv.mean_rate_rps)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_rate_rps": 0.0}, "target rate must be a positive number (got 0.0)"),
        ({"target_rate_rps": float("nan")}, "target rate must be a positive number (got nan)"),
        ({"target_rate_rps": 2.0, "method": "warp"}, "unknown rescale method 'warp' (known: sample, time)"),
        ({"target_rate_rps": 2.0, "shift_s": -1.0}, "shift must be >= 0 seconds (got -1.0)"),
    ],
)
def test_rescale_bad_arguments(conv: Trace, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError) as err:
        rescale_rate(conv, **kwargs)  # type: ignore[arg-type]
    assert message in str(err.value)


def test_rescale_needs_two_requests() -> None:
    one = Trace(np.zeros(1), np.ones(1), np.ones(1), name="one")
    with pytest.raises(InputError, match="needs at least two requests"):
        rescale_rate(one, 5.0)


@given(
    st.lists(st.floats(0.001, 50.0), min_size=2, max_size=60),
    st.floats(0.05, 8.0),
    st.integers(0, 2**31),
)
def test_rescale_invariants(gaps: list[float], factor: float, seed: int) -> None:
    arrivals = np.concatenate([[0.0], np.cumsum(gaps)])
    n = arrivals.size
    tr = Trace(arrivals, np.arange(1, n + 1), np.arange(1, n + 1) * 2, name="x")
    out = rescale_rate(tr, tr.mean_rate_rps * factor, seed=seed)
    assert len(out) == 0 or out.arrival_s[0] == 0.0
    assert np.all(np.diff(out.arrival_s) >= 0)
    assert out.duration_s <= tr.duration_s + 1e-9
    np.testing.assert_array_equal(out.output_tokens, out.input_tokens * 2)  # pairs stay together
    if factor >= 1:
        assert len(out) >= int(np.floor(factor)) * n


def test_with_lengths_samples_pairs_from_the_table(conv: Trace) -> None:
    table = LengthTable(np.array([10, 20, 30]), np.array([1, 2, 3]), name="tiny")
    out = with_lengths(conv, table, seed=9)
    np.testing.assert_array_equal(out.arrival_s, conv.arrival_s)
    np.testing.assert_array_equal(out.input_tokens, out.output_tokens * 10)  # rows drawn whole
    counts = np.bincount(out.output_tokens)[1:]
    assert np.all(np.abs(counts / len(conv) - 1 / 3) < 0.02)  # uniform over rows
    again = with_lengths(conv, table, seed=9)
    np.testing.assert_array_equal(out.input_tokens, again.input_tokens)
    assert out.meta["lengths"] == "tiny"


def test_with_sharegpt_lengths_matches_table_means(conv: Trace) -> None:
    lt = load_lengths("sharegpt-v3")
    out = with_lengths(conv, lt, seed=0)
    assert abs(out.input_tokens.mean() - lt.input_tokens.mean()) / lt.input_tokens.mean() < 0.05
    assert abs(out.output_tokens.mean() - lt.output_tokens.mean()) / lt.output_tokens.mean() < 0.05


def test_slice_window(conv: Trace) -> None:
    out = slice_window(conv, 600.0, 900.0)
    inside = (conv.arrival_s >= 600.0) & (conv.arrival_s < 900.0)
    assert len(out) == int(inside.sum())
    first = conv.arrival_s[inside][0]
    np.testing.assert_allclose(out.arrival_s, conv.arrival_s[inside] - first)
    np.testing.assert_array_equal(out.input_tokens, conv.input_tokens[inside])
    assert out.meta["window_offset_s"] == pytest.approx(first - 600.0)


def test_slices_partition_the_trace(conv: Trace) -> None:
    edges = [0.0, 300.0, 1200.0, 2000.0, conv.duration_s + 1]
    total = sum(len(slice_window(conv, a, b)) for a, b in itertools.pairwise(edges))
    assert total == len(conv)


def test_empty_window_and_bad_window(conv: Trace) -> None:
    assert len(slice_window(conv, 1e6, 2e6)) == 0
    with pytest.raises(InputError, match=r"window must satisfy 0 <= start < end \(got start 5.0 s, end 5.0 s\)"):
        slice_window(conv, 5.0, 5.0)
