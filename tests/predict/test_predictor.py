"""Query API: (K, N) shapes, monotone in clock, interpolation, out-of-range flagging, speed-path consistency."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from biscale.costmodel import DecodeShape, PrefillShape
from biscale.errors import InputError
from biscale.predict import Predictor, load_predictor


@pytest.fixture(scope="module")
def pred(fitted) -> Predictor:  # type: ignore[no-untyped-def]
    return load_predictor(fitted.artifact)


def test_shapes_k_by_n(pred) -> None:  # type: ignore[no-untyped-def]
    k_lens = [[100, 200], [50], [800, 30, 30], [1000], [10, 10], [300], [64, 64, 64, 64], [2000]]
    clocks = pred.clocks_mhz("prefill", 4)[-7:]
    p = pred.predict_prefill_shapes([PrefillShape.from_lengths(x) for x in k_lens], 4, clocks)
    assert p.latency_s.shape == p.power_w.shape == p.out_of_range.shape == (8, 7)
    assert np.all(p.latency_s > 0) and np.all(p.power_w > 0)
    np.testing.assert_allclose(p.energy_j, p.latency_s * p.power_w)
    d = pred.predict_decode_shapes([DecodeShape.from_lengths([500] * b) for b in (1, 8, 64)], 4, clocks)
    assert d.latency_s.shape == (3, 7)


def test_array_and_shape_paths_agree(pred) -> None:  # type: ignore[no-untyped-def]
    shapes = [PrefillShape.from_lengths(x) for x in ([100, 200], [700], [5, 6, 7])]
    clocks = (900, 1400, 1980)
    a = pred.predict_prefill_shapes(shapes, 2, clocks)
    b = pred.predict_prefill(
        2,
        list(clocks),
        num_seqs=[s.num_seqs for s in shapes],
        tokens_sum=[s.tokens_sum for s in shapes],
        attn_pairs=[s.attn_pairs for s in shapes],
    )
    np.testing.assert_array_equal(a.latency_s, b.latency_s)
    np.testing.assert_array_equal(a.power_w, b.power_w)


def test_prediction_close_to_hardware_model(pred, hw) -> None:  # type: ignore[no-untyped-def]
    """In-range shapes at profiled and in-between clocks: within a few percent of the ground truth."""
    grid = pred.clocks_mhz("prefill", 4)
    between = [c for c in hw.supported_clocks_mhz if grid[0] < c < grid[-1] and c not in grid][::7]
    for clk in list(grid) + between:
        for lens in ([200, 300, 150], [1200], [40]):
            truth = hw.prefill(lens, 4, clk)
            p = pred.predict_prefill_shapes([PrefillShape.from_lengths(lens)], 4, [clk])
            assert abs(p.latency_s[0, 0] / truth.latency_s - 1) < 0.06, (clk, lens)
            assert abs(p.power_w[0, 0] / truth.power_w - 1) < 0.08, (clk, lens)


@given(
    tp=st.sampled_from([2, 4, 8]),
    phase=st.sampled_from(["prefill", "decode"]),
    sizes=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8),
    mix=st.floats(0.0, 1.0),
    clocks=st.lists(st.integers(345, 1980), min_size=2, max_size=9, unique=True),
)
def test_monotone_in_clock(pred, tp, phase, sizes, mix, clocks) -> None:  # type: ignore[no-untyped-def]
    """Latency never rises and power never falls as the clock rises (as in the hardware model)."""
    m = pred.models[(phase, tp)]
    u = np.asarray(sizes)
    raw = m.lo + (m.hi - m.lo) * np.column_stack([u] + [np.full_like(u, mix)] * (m.lo.size - 1))
    clocks_sorted = sorted(clocks)
    p = pred.predict(phase, tp, raw, clocks_sorted)
    assert np.all(np.diff(p.latency_s, axis=1) <= 1e-12)
    assert np.all(np.diff(p.power_w, axis=1) >= -1e-9)


def test_interpolation_between_grid_clocks(pred) -> None:  # type: ignore[no-untyped-def]
    grid = pred.clocks_mhz("decode", 8)
    lo, hi = grid[3], grid[4]
    mid = (lo + hi) // 2
    p = pred.predict_decode(8, (lo, mid, hi), batch_size=[32], context_sum=[32 * 400])
    assert p.latency_s[0, 0] >= p.latency_s[0, 1] >= p.latency_s[0, 2]
    assert p.power_w[0, 0] <= p.power_w[0, 1] <= p.power_w[0, 2]
    assert not p.out_of_range.any()


def test_out_of_range_is_flagged_and_counted(pred) -> None:  # type: ignore[no-untyped-def]
    m = pred.models[("prefill", 4)]
    grid = pred.clocks_mhz("prefill", 4)
    before = pred.out_of_range_queries
    inside = m.lo + 0.5 * (m.hi - m.lo)
    too_big = m.hi * 3.0
    p = pred.predict("prefill", 4, np.vstack([inside, too_big]), [grid[0] - 100, grid[2], grid[-1]])
    expected = np.array([[True, False, False], [True, True, True]])
    np.testing.assert_array_equal(p.out_of_range, expected)
    assert pred.out_of_range_queries - before == int(expected.sum())
    # a clock below the grid is clamped to the lowest profiled clock (never extrapolated past it)
    q = pred.predict("prefill", 4, inside[None, :], [grid[0] - 100, grid[0]])
    assert q.latency_s[0, 0] == q.latency_s[0, 1]


def test_unknown_tp_is_an_input_error(pred) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match=r"no prefill model for tp=1 \(profiled TP degrees: 2, 4, 8\)"):
        pred.predict_prefill(1, (1980,), num_seqs=[1], tokens_sum=[100], attn_pairs=[5050])


def test_load_rejects_non_artifacts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="not a predictor artifact"):
        load_predictor(tmp_path)
    (tmp_path / "predictor.json").write_text('{"format": "other", "format_version": 1}')
    (tmp_path / "coefficients.npz").write_bytes(b"")
    with pytest.raises(InputError, match="unsupported artifact format 'other'"):
        load_predictor(tmp_path)


def test_scalar_path_matches_vector_path(pred) -> None:  # type: ignore[no-untyped-def]
    m = pred.models[("decode", 4)]
    grid = pred.clocks_mhz("decode", 4)
    rows = [tuple(m.lo + f * (m.hi - m.lo)) for f in (0.0, 0.3, 1.0)] + [tuple(m.hi * 2)]
    for raw in rows:
        for clk in (grid[0] - 50, grid[0], (grid[5] + grid[6]) // 2, grid[-1]):
            before = pred.out_of_range_queries
            lat, pw = pred.predict_one("decode", 4, raw, clk)
            n_one = pred.out_of_range_queries - before
            v = pred.predict("decode", 4, np.array([raw]), (clk,))
            assert lat == pytest.approx(float(v.latency_s[0, 0]), rel=1e-12)
            assert pw == pytest.approx(float(v.power_w[0, 0]), rel=1e-12)
            assert n_one == int(v.out_of_range[0, 0])
