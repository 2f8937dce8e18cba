"""The premises the bound rests on (docs/evaluate.md, "Lower bound"), checked on the bundled cost models:

* M: an iteration's latency and its energy above the idle floor do not fall when it gains a request, tokens,
  sequences, attention pairs or KV context;
* A: at a fixed requested clock, where both ends of a range of context (decode) or attention pairs (prefill) run
  unthrottled, latency and energy are affine in between;
* F: no iteration draws less than the least idle power of any clock.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from biscale.bound.lower import idle_floor_w
from biscale.costmodel import CostModel, DecodeShape, PrefillShape
from biscale.hardware import get_hardware
from biscale.sim.toy import ToyCostModel

H100 = get_hardware("h100-sxm", "llama-3.3-70b")
SMALL = get_hardware("h100-sxm", "llama-3.1-8b")
TOY = ToyCostModel()
MODELS: list[tuple[CostModel, tuple[int, ...]]] = [(H100, (2, 4, 8)), (SMALL, (1, 2, 4, 8)), (TOY, (1, 2, 4))]

model_st = st.sampled_from(MODELS)


def _floor(cm: CostModel, tps: tuple[int, ...]) -> float:
    return idle_floor_w(cm, tps, cm.governor.idle_power_w)


def _clock(cm: CostModel, i: int) -> int | None:
    clocks = (*cm.supported_clocks_mhz, None)
    return clocks[i % len(clocks)]


def _excess(cost: object, tp: int, floor: float) -> float:
    return tp * cost.latency_s * (cost.power_w - floor)  # type: ignore[attr-defined]


@given(
    m=model_st,
    tp_i=st.integers(0, 3),
    i=st.integers(0, 200),
    batch=st.integers(1, 512),
    per=st.integers(1, 4096),
    more_b=st.integers(0, 64),
    more_ctx=st.integers(0, 200_000),
)
def test_decode_is_monotone_and_above_the_floor(
    m: tuple[CostModel, tuple[int, ...]], tp_i: int, i: int, batch: int, per: int, more_b: int, more_ctx: int
) -> None:
    cm, tps = m
    tp, clock, floor = tps[tp_i % len(tps)], _clock(cm, i), _floor(cm, tps)
    ctx = batch * per
    a = cm.decode_cost(DecodeShape(batch, ctx, float(ctx * per)), tp, clock)
    b = cm.decode_cost(DecodeShape(batch + more_b, ctx + more_ctx, float((ctx + more_ctx) * per)), tp, clock)
    assert a.power_w >= floor  # F
    assert b.latency_s >= a.latency_s * (1 - 1e-12)  # M
    assert _excess(b, tp, floor) >= _excess(a, tp, floor) * (1 - 1e-12) - 1e-12  # M


@given(
    m=model_st,
    tp_i=st.integers(0, 3),
    i=st.integers(0, 200),
    tokens=st.integers(1, 8192),
    seqs=st.integers(1, 64),
    pairs=st.floats(0, 5e7),
    more_t=st.integers(0, 4096),
    more_s=st.integers(0, 64),
    more_p=st.floats(0, 5e7),
)
def test_prefill_is_monotone_and_above_the_floor(
    m: tuple[CostModel, tuple[int, ...]],
    tp_i: int,
    i: int,
    tokens: int,
    seqs: int,
    pairs: float,
    more_t: int,
    more_s: int,
    more_p: float,
) -> None:
    cm, tps = m
    tp, clock, floor = tps[tp_i % len(tps)], _clock(cm, i), _floor(cm, tps)
    a = cm.prefill_cost(PrefillShape(seqs, tokens, float(tokens * tokens), pairs), tp, clock)
    b = cm.prefill_cost(
        PrefillShape(seqs + more_s, tokens + more_t, float((tokens + more_t) ** 2), pairs + more_p), tp, clock
    )
    assert a.power_w >= floor  # F
    assert b.latency_s >= a.latency_s * (1 - 1e-12)  # M
    assert _excess(b, tp, floor) >= _excess(a, tp, floor) * (1 - 1e-12) - 1e-12  # M


def _unthrottled(cost: object, clock: int | None, cm: CostModel) -> bool:
    requested = max(cm.supported_clocks_mhz) if clock is None else clock
    return abs(cost.effective_clock_mhz - requested) < 1e-6  # type: ignore[attr-defined]


@given(
    m=model_st,
    tp_i=st.integers(0, 3),
    i=st.integers(0, 200),
    batch=st.integers(1, 256),
    lo=st.integers(1, 2000),
    hi=st.integers(1, 2000),
    w=st.floats(0, 1),
)
def test_decode_is_affine_in_context_where_unthrottled(
    m: tuple[CostModel, tuple[int, ...]], tp_i: int, i: int, batch: int, lo: int, hi: int, w: float
) -> None:
    cm, tps = m
    tp, clock, floor = tps[tp_i % len(tps)], _clock(cm, i), _floor(cm, tps)
    c0, c1 = sorted((batch * lo, batch * hi))
    cm_ = round(c0 + w * (c1 - c0))
    w = (cm_ - c0) / (c1 - c0) if c1 > c0 else 0.0
    ends = [cm.decode_cost(DecodeShape(batch, c, float(c * c) / batch), tp, clock) for c in (c0, c1)]
    if not all(_unthrottled(e, clock, cm) for e in ends):
        return
    mid = cm.decode_cost(DecodeShape(batch, cm_, float(cm_ * cm_) / batch), tp, clock)
    assert _unthrottled(mid, clock, cm)
    assert mid.latency_s == pytest.approx(ends[0].latency_s + w * (ends[1].latency_s - ends[0].latency_s), rel=1e-9)
    x0, x1 = (_excess(e, tp, floor) for e in ends)
    assert _excess(mid, tp, floor) == pytest.approx(x0 + w * (x1 - x0), rel=1e-9, abs=1e-12)


@given(
    m=model_st,
    tp_i=st.integers(0, 3),
    i=st.integers(0, 200),
    tokens=st.integers(1, 8192),
    p0=st.floats(0, 1e8),
    p1=st.floats(0, 1e8),
    w=st.floats(0, 1),
)
def test_prefill_is_affine_in_attention_pairs_where_unthrottled(
    m: tuple[CostModel, tuple[int, ...]], tp_i: int, i: int, tokens: int, p0: float, p1: float, w: float
) -> None:
    cm, tps = m
    tp, clock, floor = tps[tp_i % len(tps)], _clock(cm, i), _floor(cm, tps)
    lo, hi = sorted((p0, p1))
    pm = lo + w * (hi - lo)
    ends = [cm.prefill_cost(PrefillShape(1, tokens, float(tokens * tokens), p), tp, clock) for p in (lo, hi)]
    if not all(_unthrottled(e, clock, cm) for e in ends):
        return
    mid = cm.prefill_cost(PrefillShape(1, tokens, float(tokens * tokens), pm), tp, clock)
    assert _unthrottled(mid, clock, cm)
    assert mid.latency_s == pytest.approx(ends[0].latency_s + w * (ends[1].latency_s - ends[0].latency_s), rel=1e-9)
    x0, x1 = (_excess(e, tp, floor) for e in ends)
    assert _excess(mid, tp, floor) == pytest.approx(x0 + w * (x1 - x0), rel=1e-9, abs=1e-12)


def test_the_h100_model_throttles_somewhere_so_the_stepped_columns_are_exercised() -> None:
    big = H100.decode_cost(DecodeShape(256, 256 * 200, 256 * 200.0 * 200), 4, 1980)
    assert big.effective_clock_mhz < 1980  # the power limit holds the top clock down (docs/hardware.md)
