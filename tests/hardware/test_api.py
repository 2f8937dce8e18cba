"""The public API of the hardware model: names, clocks, memory, validation, array vs shape API."""

from __future__ import annotations

import itertools
import math

import pytest

from biscale.costmodel import DecodeShape, PrefillShape
from biscale.errors import InputError
from biscale.hardware import HardwareModel, experimental_reason, get_hardware, list_hardware


@pytest.fixture(scope="module")
def h100() -> HardwareModel:
    return get_hardware("h100-sxm", "llama-3.3-70b")


def test_required_pairs_listed() -> None:
    pairs = list_hardware()
    assert ("h100-sxm", "llama-3.3-70b") in pairs
    assert ("a100-sxm-80gb", "llama-3.1-8b") in pairs
    assert ("h100-sxm", "llama-3.1-8b") in pairs  # any combination that fits
    assert pairs == sorted(pairs)


def test_names(h100: HardwareModel) -> None:
    assert h100.gpu_name == "h100-sxm"
    assert h100.model_name == "llama-3.3-70b"


def test_unknown_gpu_names_valid_ones() -> None:
    with pytest.raises(InputError) as err:
        get_hardware("h200", "llama-3.3-70b")
    msg = str(err.value)
    assert "unknown GPU 'h200'" in msg
    assert "h100-sxm" in msg and "a100-sxm-80gb" in msg
    assert "\n" not in msg


def test_unknown_model_names_valid_ones() -> None:
    with pytest.raises(InputError) as err:
        get_hardware("h100-sxm", "llama-9")
    assert "unknown model 'llama-9'" in str(err.value)
    assert "llama-3.3-70b" in str(err.value)


def test_h100_clock_table(h100: HardwareModel) -> None:
    clocks = h100.supported_clocks_mhz
    assert clocks[-1] == 1980 == h100.max_clock_mhz
    assert 330 <= clocks[0] <= 360
    assert all(b - a == 15 for a, b in itertools.pairwise(clocks))
    assert all(isinstance(f, int) for f in clocks)


def test_a100_clock_table() -> None:
    hw = get_hardware("a100-sxm-80gb", "llama-3.1-8b")
    assert hw.max_clock_mhz == 1410
    assert all(b - a == 15 for a, b in itertools.pairwise(hw.supported_clocks_mhz))


def test_memory_facts(h100: HardwareModel) -> None:
    # 2 (K, V) x 80 layers x 8 KV heads x 128 dims x 2 bytes = 320 KiB
    assert h100.kv_bytes_per_token == 320 * 1024
    # 70.6e9 params x 2 bytes = 141 GB: does not fit one 80 GB GPU, fits two.
    assert h100.min_tp == 2
    assert get_hardware("a100-sxm-80gb", "llama-3.1-8b").min_tp == 1
    caps = [h100.kv_capacity_tokens(tp) for tp in (2, 4, 8)]
    assert caps[0] < caps[1] < caps[2]
    # Going from TP4 to TP8 adds four GPUs' worth of memory and no weights.
    per_gpu_tokens = (caps[2] - caps[1]) / 4
    assert 0.85 * 80e9 / (320 * 1024) < per_gpu_tokens < 80e9 / (320 * 1024)
    # TP4: 4 x ~77 GB usable minus ~141 GB of weights -> roughly 0.45 M tokens.
    assert 350_000 < caps[1] < 550_000


def test_bad_tp_and_clock_are_rejected(h100: HardwareModel) -> None:
    with pytest.raises(ValueError, match="tp=1 not available"):
        h100.kv_capacity_tokens(1)
    with pytest.raises(ValueError, match="tp=3"):
        h100.decode([100], 3, None)
    with pytest.raises(ValueError, match="sm_clock_mhz=1000 is not a supported clock"):
        h100.prefill([100], 4, 1000)
    with pytest.raises(ValueError, match="not a supported clock"):
        h100.idle_power_w(4, 2000)


def test_default_governor_is_top_clock_when_busy(h100: HardwareModel) -> None:
    assert h100.decode([800] * 16, 4, None) == h100.decode([800] * 16, 4, h100.max_clock_mhz)
    big = h100.prefill([4096], 2, None)
    assert big == h100.prefill([4096], 2, 1980)
    assert big.effective_clock_mhz < 1980  # a compute-bound TP2 prefill hits the power limit


def test_idle_power(h100: HardwareModel) -> None:
    locked = [h100.idle_power_w(4, f) for f in h100.supported_clocks_mhz]
    assert locked == sorted(locked)
    unlocked = h100.idle_power_w(4, None)
    assert 64 <= unlocked <= 75
    assert unlocked < locked[-1]
    gov = h100.governor
    assert gov.idle_power_w == unlocked
    assert gov.shallow_idle_power_w == pytest.approx(locked[-1])
    assert gov.idle_energy_j(0.0) == 0.0
    long_gap = 4 * gov.downclock_after_s
    expect = gov.downclock_after_s * gov.shallow_idle_power_w + (long_gap - gov.downclock_after_s) * unlocked
    assert gov.idle_energy_j(long_gap) == pytest.approx(expect)
    assert gov.wake_penalty_s(long_gap) == gov.wake_delay_s > 0
    assert gov.wake_penalty_s(gov.downclock_after_s / 2) == 0.0


def test_array_api_matches_shape_api(h100: HardwareModel) -> None:
    lengths = [100, 900, 30]
    assert h100.prefill(lengths, 4, 1500) == h100.prefill_cost(PrefillShape.from_lengths(lengths), 4, 1500)
    assert h100.decode(lengths, 4, 1500) == h100.decode_cost(DecodeShape.from_lengths(lengths), 4, 1500)


def test_costs_are_finite_and_positive(h100: HardwareModel) -> None:
    for tp in (2, 4, 8):
        for f in (h100.supported_clocks_mhz[0], 1200, None):
            for c in (h100.prefill([1], tp, f), h100.prefill([8192] * 4, tp, f), h100.decode([1] * 512, tp, f)):
                assert c.latency_s > 0 and math.isfinite(c.latency_s)
                assert 0 < c.power_w <= 700
                assert c.energy_per_gpu_j == pytest.approx(c.latency_s * c.power_w)


def test_chunked_prefill_prefix_costs_more(h100: HardwareModel) -> None:
    plain = h100.prefill([512], 4, 1980).latency_s
    chunk = h100.prefill([512], 4, 1980, prefix_lengths=[4096]).latency_s
    assert chunk > plain


def test_second_pair_is_plausible() -> None:
    hw = get_hardware("a100-sxm-80gb", "llama-3.1-8b")
    # 8B on one A100: ~16 GB of weights streamed at ~2 TB/s -> roughly 8-12 ms per decode step.
    d = hw.decode([500] * 8, 1, None).latency_s
    assert 0.006 < d < 0.02
    assert hw.prefill([2048], 1, None).power_w <= 400
    h = get_hardware("h100-sxm", "llama-3.1-8b")
    assert h.decode([500] * 8, 1, None).latency_s < d  # H100 has more bandwidth


def test_experimental_gpus_are_flagged() -> None:
    assert experimental_reason("h100-sxm") is None
    for gpu in ("a100-sxm-80gb", "a100-sxm-40gb"):
        reason = experimental_reason(gpu)
        assert reason is not None and "no A100 power measurement" in reason
        assert get_hardware(gpu, "llama-3.1-8b").experimental_reason == reason  # type: ignore[attr-defined]
    with pytest.raises(InputError, match="unknown GPU 'h200'"):
        experimental_reason("h200")


def test_an_experimental_spec_must_say_why(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import json

    from biscale.hardware import specs

    gpus = tmp_path / "gpus"
    gpus.mkdir()
    raw = json.loads((specs.data_dir() / "gpus" / "a100-sxm-80gb.json").read_text())
    raw.pop("experimental_reason")
    (gpus / "x100.json").write_text(json.dumps(raw))
    monkeypatch.setattr(specs, "data_dir", lambda: tmp_path)
    with pytest.raises(InputError, match="experimental GPU specs must say why"):
        specs._load("gpus", "x100", specs.GpuSpec)


def test_large_batch_decode_runs_at_full_clock_below_the_power_limit(h100: HardwareModel) -> None:
    """TP4 decode is throttled only once its mean power (KV reads included) reaches the cap."""
    cap = h100.power_cap_w  # type: ignore[attr-defined]
    for batch in (64, 128, 192, 256):
        c = h100.decode([765] * batch, 4, None)
        if c.effective_clock_mhz < h100.max_clock_mhz:
            assert c.power_w == pytest.approx(cap)
        else:
            assert c.power_w <= cap
    assert h100.decode([765] * 128, 4, None).effective_clock_mhz == h100.max_clock_mhz


def test_idle_top_w_moves_the_top_clocks_idle_power_and_keeps_the_lowest(h100: HardwareModel) -> None:
    """The idle-power knob (docs/hardware.md, "Idle power at the top clock"): P_idle(top) becomes the value, the
    lowest clock's idle power and the deep idle stay, the law stays increasing in the clock; kernel time keeps its
    calibrated power, so a busy iteration loses exactly the idle change over its engine step time."""
    clocks = h100.supported_clocks_mhz
    low, top, mid = clocks[0], clocks[-1], clocks[len(clocks) // 2]
    moved = get_hardware("h100-sxm", "llama-3.3-70b", idle_top_w=125.0)
    assert h100.idle_power_w(4, top) > 175.0  # the fitted engine idle law: 181 W
    assert moved.idle_power_w(4, top) == pytest.approx(125.0)
    assert moved.idle_power_w(4, low) == pytest.approx(h100.idle_power_w(4, low))
    assert h100.idle_power_w(4, low) < moved.idle_power_w(4, mid) < h100.idle_power_w(4, mid)
    locked = [moved.idle_power_w(4, f) for f in clocks]
    assert locked == sorted(locked)
    assert moved.idle_power_w(4, None) == h100.idle_power_w(4, None)
    assert moved.governor.shallow_idle_power_w == pytest.approx(125.0)
    shape = DecodeShape(64, 64 * 1000, 64 * 1000.0**2)
    a, b = h100.decode_cost(shape, 4, top), moved.decode_cost(shape, 4, top)
    assert b.latency_s == a.latency_s
    step = h100.consts.engine_step_s  # type: ignore[attr-defined]
    assert a.power_w * a.latency_s - b.power_w * b.latency_s == pytest.approx(
        (h100.idle_power_w(4, top) - 125.0) * step, rel=1e-6
    )
    assert get_hardware("h100-sxm", "llama-3.3-70b") is h100  # the calibrated model is still the cached one


@pytest.mark.parametrize("bad", [60.0, 5000.0, float("nan")])
def test_idle_top_w_out_of_range_is_an_input_error(bad: float) -> None:
    with pytest.raises(InputError, match=r"idle power at the top clock must be above .* got"):
        get_hardware("h100-sxm", "llama-3.3-70b", idle_top_w=bad)
