"""Physical invariants of every hardware model, checked with hypothesis."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

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
        assert cost.effective_clock_mhz <= (f if f is not None else hw.max_clock_mhz)
        assert cost.effective_clock_mhz in hw.supported_clocks_mhz
    assert hw.idle_power_w(tp, f) <= limit
