"""Physical invariants of every hardware model, checked with hypothesis.

The monotonicity properties hold by construction (docs/hardware.md, "Power limit"): these tests probe them where
they are hardest, including batches and contexts that hold the GPU at its power limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from biscale.costmodel import DecodeShape, PrefillShape
from biscale.hardware import HardwareModel, get_hardware

PAIRS = [("h100-sxm", "llama-3.3-70b"), ("a100-sxm-80gb", "llama-3.1-8b"), ("h100-sxm", "llama-3.1-8b")]
MODELS: list[HardwareModel] = [get_hardware(g, m) for g, m in PAIRS]

hw_st = st.sampled_from(MODELS)
lengths_st = st.lists(st.integers(1, 8192), min_size=1, max_size=16)
contexts_st = st.lists(st.integers(1, 16384), min_size=1, max_size=256)


def _tp(hw: HardwareModel, i: int) -> int:
    tps = [t for t in (1, 2, 4, 8) if t >= hw.min_tp]
    return tps[i % len(tps)]


def _clock(hw: HardwareModel, i: int) -> int:
    return hw.supported_clocks_mhz[i % len(hw.supported_clocks_mhz)]


@given(hw=hw_st, lengths=lengths_st, tp_i=st.integers(0, 3), i=st.integers(0, 200), j=st.integers(0, 200))
def test_prefill_monotone_in_clock(hw: HardwareModel, lengths: list[int], tp_i: int, i: int, j: int) -> None:
    tp = _tp(hw, tp_i)
    lo, hi = sorted((_clock(hw, i), _clock(hw, j)))
    a, b = hw.prefill(lengths, tp, lo), hw.prefill(lengths, tp, hi)
    assert b.latency_s <= a.latency_s  # latency never rises with clock
    assert b.power_w >= a.power_w  # power never falls with clock
    assert b.effective_clock_mhz >= a.effective_clock_mhz
    assert hw.idle_power_w(tp, hi) >= hw.idle_power_w(tp, lo)


@given(hw=hw_st, contexts=contexts_st, tp_i=st.integers(0, 3), i=st.integers(0, 200), j=st.integers(0, 200))
def test_decode_monotone_in_clock(hw: HardwareModel, contexts: list[int], tp_i: int, i: int, j: int) -> None:
    tp = _tp(hw, tp_i)
    lo, hi = sorted((_clock(hw, i), _clock(hw, j)))
    a, b = hw.decode(contexts, tp, lo), hw.decode(contexts, tp, hi)
    assert b.latency_s <= a.latency_s
    assert b.power_w >= a.power_w


@given(
    hw=hw_st,
    lengths=lengths_st,
    extra=st.integers(1, 4096),
    pos=st.integers(0, 15),
    tp_i=st.integers(0, 3),
    i=st.integers(0, 200),
    more_seq=st.booleans(),
)
def test_prefill_never_faster_with_more_tokens(
    hw: HardwareModel, lengths: list[int], extra: int, pos: int, tp_i: int, i: int, more_seq: bool
) -> None:
    tp, f = _tp(hw, tp_i), _clock(hw, i)
    bigger = (
        [*lengths, extra]
        if more_seq
        else [n + (extra if k == pos % len(lengths) else 0) for k, n in enumerate(lengths)]
    )
    assert hw.prefill(bigger, tp, f).latency_s >= hw.prefill(lengths, tp, f).latency_s
    assert hw.prefill(bigger, tp, None).latency_s >= hw.prefill(lengths, tp, None).latency_s


@given(
    hw=hw_st,
    contexts=contexts_st,
    extra=st.integers(1, 8192),
    pos=st.integers(0, 255),
    tp_i=st.integers(0, 3),
    i=st.integers(0, 200),
    more_seq=st.booleans(),
)
def test_decode_never_faster_with_more_batch_or_context(
    hw: HardwareModel, contexts: list[int], extra: int, pos: int, tp_i: int, i: int, more_seq: bool
) -> None:
    tp, f = _tp(hw, tp_i), _clock(hw, i)
    bigger = (
        [*contexts, extra]
        if more_seq
        else [n + (extra if k == pos % len(contexts) else 0) for k, n in enumerate(contexts)]
    )
    assert hw.decode(bigger, tp, f).latency_s >= hw.decode(contexts, tp, f).latency_s
    assert hw.decode(bigger, tp, None).latency_s >= hw.decode(contexts, tp, None).latency_s


@given(
    hw=hw_st,
    lengths=lengths_st,
    contexts=contexts_st,
    tp_i=st.integers(0, 3),
    i=st.integers(0, 200),
    locked=st.booleans(),
)
def test_power_never_exceeds_limit(
    hw: HardwareModel, lengths: list[int], contexts: list[int], tp_i: int, i: int, locked: bool
) -> None:
    tp = _tp(hw, tp_i)
    f = _clock(hw, i) if locked else None
    limit = 700.0 if hw.gpu_name == "h100-sxm" else 400.0
    for cost in (hw.prefill(lengths * 4, tp, f), hw.decode(contexts, tp, f)):
        assert 0 < cost.power_w <= limit
        # the time-averaged clock of the dithering power controller: between the lowest and the requested clock
        assert hw.supported_clocks_mhz[0] <= cost.effective_clock_mhz <= (f if f is not None else hw.max_clock_mhz)
    assert hw.idle_power_w(tp, f) <= limit


# Sufficient-statistics strategies reaching the throttled region (large batches, long contexts, big prefills).
batch_st = st.integers(1, 1024)
mean_ctx_st = st.integers(1, 8192)


def _decode_shape(batch: int, mean_ctx: int) -> DecodeShape:
    return DecodeShape(batch, batch * mean_ctx, float(batch * mean_ctx * mean_ctx))


@given(
    hw=hw_st,
    batch=batch_st,
    mean_ctx=mean_ctx_st,
    more_batch=st.integers(0, 64),
    more_ctx=st.integers(0, 200_000),
    tp_i=st.integers(0, 3),
    i=st.integers(0, 200),
    locked=st.booleans(),
)
def test_decode_latency_monotone_in_batch_and_context_at_the_limit(
    hw: HardwareModel, batch: int, mean_ctx: int, more_batch: int, more_ctx: int, tp_i: int, i: int, locked: bool
) -> None:
    tp, f = _tp(hw, tp_i), (_clock(hw, i) if locked else None)
    small = _decode_shape(batch, mean_ctx)
    ctx = small.context_sum + more_batch + more_ctx  # every added request brings at least one token
    big = DecodeShape(batch + more_batch, ctx, float(ctx * ctx))
    a, b = hw.decode_cost(small, tp, f), hw.decode_cost(big, tp, f)
    assert b.latency_s >= a.latency_s
    assert b.energy_per_gpu_j >= a.energy_per_gpu_j


@given(
    hw=hw_st, batch=batch_st, mean_ctx=mean_ctx_st, tp_i=st.integers(0, 3), i=st.integers(0, 200), j=st.integers(0, 200)
)
def test_decode_monotone_in_requested_clock_at_the_limit(
    hw: HardwareModel, batch: int, mean_ctx: int, tp_i: int, i: int, j: int
) -> None:
    tp = _tp(hw, tp_i)
    lo, hi = sorted((_clock(hw, i), _clock(hw, j)))
    shape = _decode_shape(batch, mean_ctx)
    a, b = hw.decode_cost(shape, tp, lo), hw.decode_cost(shape, tp, hi)
    assert b.latency_s <= a.latency_s
    assert b.power_w >= a.power_w - 1e-9
    assert b.effective_clock_mhz >= a.effective_clock_mhz
    assert hw.decode_cost(shape, tp, None) == hw.decode_cost(shape, tp, hw.max_clock_mhz)


def _assert_highest_clock_within_cap(hw: HardwareModel, cost_at: object, requested: int) -> None:
    """The throttled clock lies between the highest supported clock whose mean power is within the cap (run
    alone: unthrottled) and the next one (over the cap), and the mean power is the cap."""
    cost = cost_at(requested)  # type: ignore[operator]
    eff = cost.effective_clock_mhz
    clocks = hw.supported_clocks_mhz
    cap = hw.power_cap_w  # type: ignore[attr-defined]
    if eff == requested:
        assert cost.power_w <= cap * (1 + 1e-12)
        return
    below = max(f for f in clocks if f <= eff)
    assert below < requested and eff < below + hw.supported_clocks_mhz[1] - clocks[0]
    alone = cost_at(below)  # type: ignore[operator]
    assert alone.effective_clock_mhz == below and alone.power_w <= cap * (1 + 1e-12)
    above = min(f for f in clocks if f > below)
    assert cost_at(above).effective_clock_mhz < above  # type: ignore[operator]
    if below > clocks[0] or alone.power_w < cap:
        assert cost.power_w == pytest.approx(cap, rel=1e-9)


@given(hw=hw_st, batch=batch_st, mean_ctx=mean_ctx_st, tp_i=st.integers(0, 3), i=st.integers(0, 200))
def test_decode_throttles_to_the_highest_clock_within_the_cap(
    hw: HardwareModel, batch: int, mean_ctx: int, tp_i: int, i: int
) -> None:
    tp = _tp(hw, tp_i)
    shape = _decode_shape(batch, mean_ctx)
    _assert_highest_clock_within_cap(hw, lambda f: hw.decode_cost(shape, tp, f), _clock(hw, i))


@given(hw=hw_st, lengths=lengths_st, tp_i=st.integers(0, 3), i=st.integers(0, 200))
def test_prefill_throttles_to_the_highest_clock_within_the_cap(
    hw: HardwareModel, lengths: list[int], tp_i: int, i: int
) -> None:
    tp = _tp(hw, tp_i)
    shape = PrefillShape.from_lengths(lengths * 4)
    _assert_highest_clock_within_cap(hw, lambda f: hw.prefill_cost(shape, tp, f), _clock(hw, i))


@given(hw=hw_st, batch=batch_st, mean_ctx=mean_ctx_st, tp_i=st.integers(0, 3), i=st.integers(0, 200))
def test_decode_fast_path_equals_the_generic_capped_evaluation(
    hw: HardwareModel, batch: int, mean_ctx: int, tp_i: int, i: int
) -> None:
    """The cached per-(TP, clock, batch) threshold of the hot path gives what the general evaluation gives."""
    tp, f = _tp(hw, tp_i), _clock(hw, i)
    shape = _decode_shape(batch, mean_ctx)
    fast = hw.decode_cost(shape, tp, f)
    generic = hw.mixed_cost(tp, f, batch, shape.context_sum, PrefillShape(0, 0, 0.0, 0.0))  # type: ignore[attr-defined]
    assert fast.latency_s == pytest.approx(generic.latency_s, rel=1e-12)
    assert fast.power_w == pytest.approx(generic.power_w, rel=1e-12)
    assert fast.effective_clock_mhz == pytest.approx(generic.effective_clock_mhz, rel=1e-12)
