"""The PredictorCostModel per-shape cache: exact for prefill, interpolated (within a stated bound) for decode."""

from __future__ import annotations

import numpy as np
import pytest

from biscale.costmodel import DecodeShape, PrefillShape
from biscale.errors import InputError
from biscale.predict import PredictorCostModel, default_predictor


def test_prefill_cache_returns_the_exact_prediction() -> None:
    pred = default_predictor()
    cm = PredictorCostModel(pred)
    shape = PrefillShape.from_lengths([220, 180, 640])
    first = cm.prefill_cost(shape, 4, 1410)
    again = cm.prefill_cost(shape, 4, 1410)
    assert first == again
    assert (first.latency_s, first.power_w) == pred.predict_one("prefill", 4, (3, 1040, shape.attn_pairs), 1410)
    assert (cm.cache_misses, cm.cache_hits) == (1, 1)


def test_exact_mode_matches_the_predictor_for_decode() -> None:
    pred = default_predictor()
    cm = PredictorCostModel(pred)  # decode_context_step_tokens = 0: no interpolation
    shape = DecodeShape.from_lengths([400] * 48)
    got = cm.decode_cost(shape, 8, 1200)
    assert (got.latency_s, got.power_w) == pred.predict_one("decode", 8, (48, shape.context_sum), 1200)


# Bounds: 1e-4 of the worst 20,000-shape sweep for s = 1024 (2e-4 for 2048), with margin; both are about 50x below
# the predictors' own held-out error (~0.5 %), so the cache changes no decision.
@pytest.mark.parametrize("step, bound", [(1024, 2e-4), (2048, 4e-4)])
def test_decode_interpolation_error_is_bounded(step: int, bound: float) -> None:
    exact = PredictorCostModel(default_predictor())
    fast = PredictorCostModel(default_predictor(), decode_context_step_tokens=step)
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(3000):
        tp = int(rng.choice([2, 4, 8]))
        clock = int(rng.choice([795, 990, 1185, 1380, 1590, 1785, 1980, 1005]))
        b = int(rng.integers(1, 40 if tp == 2 else 300))
        ctx = int(b * rng.uniform(20, 12000 / b if tp == 2 else 1500))
        shape = DecodeShape(b, max(ctx, b), 0.0)
        e, f = exact.decode_cost(shape, tp, clock), fast.decode_cost(shape, tp, clock)
        worst = max(worst, abs(f.latency_s / e.latency_s - 1), abs(f.power_w / e.power_w - 1))
    assert worst < bound


def test_a_growing_decode_batch_mostly_hits_the_cache() -> None:
    cm = PredictorCostModel(default_predictor(), decode_context_step_tokens=1024)
    for k in range(200):  # what a running batch of 64 does: the context sum grows by 64 per iteration
        cm.decode_cost(DecodeShape(64, 20_000 + 64 * k, 0.0), 4, 1380)
    assert cm.cache_misses <= 15 and cm.cache_hits >= 185


def test_out_of_range_queries_are_counted_once_per_call() -> None:
    pred = default_predictor()
    cm = PredictorCostModel(pred, decode_context_step_tokens=1024)
    huge = DecodeShape(1000, 5_000_000, 0.0)  # beyond the profiled batch sizes and contexts
    cm.decode_cost(huge, 8, 1980)
    cm.decode_cost(huge, 8, 1980)
    assert pred.out_of_range_queries == 2
    with pytest.raises(InputError, match="decode context step"):
        PredictorCostModel(pred, decode_context_step_tokens=-1)
