"""Energy meter: counter wraparound and reset, measurement windows, the power-sampling thread."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from biscale.gpu.energy import COUNTER_MODULUS, EnergyMeter, counter_delta_mj
from biscale.gpu.fake_nvml import FakeNvml, default_state


@given(
    prev=st.integers(0, COUNTER_MODULUS - 1),
    delta=st.integers(0, 10**9),
    elapsed=st.floats(1.0, 1e4),
)
def test_delta_is_exact_across_wraparound(prev: int, delta: int, elapsed: float) -> None:
    # 10^9 mJ within >= 1 s is at most 1 MW: plausible only thanks to the elapsed time bound.
    if delta > 5000.0 * elapsed * 1000.0:
        return
    cur = (prev + delta) % COUNTER_MODULUS
    got, kind = counter_delta_mj(prev, cur, elapsed)
    assert got == delta
    assert kind == ("wrap" if cur < prev else "ok")


@given(prev=st.integers(10**7, 10**15), cur=st.integers(0, 10**6), elapsed=st.floats(0.0, 100.0))
def test_counter_restart_counts_energy_since_restart(prev: int, cur: int, elapsed: float) -> None:
    got, kind = counter_delta_mj(prev, cur, elapsed)
    assert (got, kind) == (cur, "reset")


def one_gpu(sequence: list[int]) -> FakeNvml:
    state = default_state(1)
    state["gpus"][0]["energy_sequence_mj"] = sequence
    return FakeNvml(state=state)


def test_window_across_wraparound() -> None:
    top = COUNTER_MODULUS
    # readings: meter open, window begin, window end (wrapped)
    meter = EnergyMeter(one_gpu([top - 9_000, top - 2_000, 3_000]))
    with meter.window() as w:
        pass
    m = w.measurement
    assert m is not None
    assert m.energy_j == {0: pytest.approx(5.0)}
    assert m.total_energy_j == pytest.approx(5.0)
    assert (m.counter_wraps, m.counter_resets) == (1, 0)
    meter.close()


def test_window_across_counter_reset() -> None:
    meter = EnergyMeter(one_gpu([50_000_000, 80_000_000, 81_000_000, 700]))
    w = meter.begin()
    meter.poll()  # 81_000_000: +1000 J
    m = meter.end(w)  # driver reloaded: counter restarted at 0, now 700 mJ
    assert m.energy_j[0] == pytest.approx(1000.0 + 0.7)
    assert (m.counter_wraps, m.counter_resets) == (0, 1)
    meter.close()


def test_window_energy_matches_power_times_time() -> None:
    fake = FakeNvml(state=default_state(2))  # fake counters advance at the GPU's power (450 W unlocked)
    with EnergyMeter(fake) as meter:
        with meter.window() as w:
            time.sleep(0.3)
        m = w.measurement
    assert m is not None
    assert m.duration_s == pytest.approx(0.3, abs=0.15)
    for g in (0, 1):
        assert m.avg_power_w[g] == pytest.approx(450.0, rel=0.15)
    assert m.total_energy_j == pytest.approx(sum(m.energy_j.values()))
    d = m.to_dict()
    assert d["total_energy_j"] == pytest.approx(m.total_energy_j)
    assert [g["gpu"] for g in d["gpus"]] == [0, 1]


def test_sampling_thread_builds_a_power_timeline() -> None:
    fake = FakeNvml(state=default_state(2))
    fake.update(lambda s: s["gpus"][1].__setitem__("locked_mhz", [990, 990]))
    meter = EnergyMeter(fake)
    meter.start_sampling(0.02)
    with pytest.raises(RuntimeError, match="already running"):
        meter.start_sampling(0.02)
    time.sleep(0.3)
    tl = meter.stop_sampling()
    meter.close()
    n = len(tl.t_s)
    assert 2 <= n <= 30
    assert np.all(np.diff(tl.t_s) > 0)
    assert np.allclose(tl.power_w[0], 450.0)
    # power scales with (f / f_max)^2 in the fake: 70 + 380 * (990/1980)^2 = 165 W
    assert np.allclose(tl.power_w[1], 165.0)
    assert np.all(np.diff(tl.energy_j[0]) >= 0)
    assert tl.energy_j[0][-1] > tl.energy_j[1][-1]
    assert len(tl.to_dict()["gpus"][0]["power_w"]) == n


def test_sampling_period_must_be_positive() -> None:
    meter = EnergyMeter(FakeNvml(state=default_state(1)))
    with pytest.raises(ValueError, match="> 0 s"):
        meter.start_sampling(0)
    with pytest.raises(RuntimeError, match="not running"):
        meter.stop_sampling()
    meter.close()
