"""The simulated profiler: seeded, measures like NVML (counter windows, jitter), respects the KV cache."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from biscale.predict.profilers import load_length_mix
from biscale.predict.profilers.sim import (
    MIN_COUNTER_UPDATES,
    SimProfileConfig,
    _measure,
    default_clocks,
    simulate_profile,
)
from biscale.predict.schema import read_meta, validate_profile


def _small(hw, seed: int) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    inputs, outputs, _ = load_length_mix("sharegpt-v3")
    cfg = SimProfileConfig(tps=(2, 8), clocks_mhz=(990, 1980), shapes_per_tp=12, seed=seed)
    return simulate_profile(hw, cfg, inputs, outputs)[0]


def test_seeded_and_valid(hw) -> None:  # type: ignore[no-untyped-def]
    a, b, c = _small(hw, 1), _small(hw, 1), _small(hw, 2)
    pd.testing.assert_frame_equal(a, b)
    assert not a["latency_s"].equals(c["latency_s"])
    clean = validate_profile(a)
    assert len(clean) == 2 * 2 * 2 * 12


def test_same_shapes_at_every_clock(hw) -> None:  # type: ignore[no-untyped-def]
    df = _small(hw, 3)
    for (_phase, _tp), grp in df.groupby(["phase", "tp"]):
        by_clock = [g["batch_size"].to_numpy() for _, g in grp.groupby("sm_clock_mhz")]
        assert all(np.array_equal(by_clock[0], x) for x in by_clock[1:])


def test_decode_contexts_fit_kv_cache(fitted) -> None:  # type: ignore[no-untyped-def]
    dec = fitted.frame[fitted.frame["phase"] == "decode"]
    for tp, grp in dec.groupby("tp"):
        assert grp["context_len_sum"].max() <= fitted.hw.kv_capacity_tokens(int(tp))
    pre = fitted.frame[fitted.frame["phase"] == "prefill"]
    assert pre["batch_size"].min() == 1 and pre["batch_size"].max() > 10


def test_measurement_covers_counter_updates() -> None:
    """A 5 ms iteration with a 100 ms counter is repeated long enough for several readings; the mean is unbiased."""
    cfg = SimProfileConfig(tps=(1,), clocks_mhz=(1, 2), latency_jitter=0.03, power_noise=0.015)
    rng = np.random.default_rng(0)
    lat, pw, reps = [], [], []
    for _ in range(300):
        m = _measure(rng, 0.005, 400.0, 0.1, cfg)
        lat.append(m[0])
        pw.append(m[1])
        reps.append(m[2])
        assert m[3] >= MIN_COUNTER_UPDATES * 0.1  # window holds >= 6 counter periods
    assert min(reps) >= (MIN_COUNTER_UPDATES + 1) * 0.1 / 0.005
    assert abs(np.mean(lat) / 0.005 - 1) < 0.005
    assert abs(np.mean(pw) / 400.0 - 1) < 0.003
    # jitter and sensor noise are visible, but averaged: per-row spread well under the per-iteration jitter
    assert 0.0005 < np.std(np.array(lat) / 0.005) < 0.03
    assert 0.0005 < np.std(np.array(pw) / 400.0) < 0.015


def test_long_iterations_repeat_at_least_three_times() -> None:
    cfg = SimProfileConfig(tps=(1,), clocks_mhz=(1, 2))
    _, _, reps, wall = _measure(np.random.default_rng(1), 2.0, 600.0, 0.05, cfg)
    assert reps == 3 and wall > 5.0


def test_default_clocks_are_supported(hw) -> None:  # type: ignore[no-untyped-def]
    clocks = default_clocks(hw.supported_clocks_mhz)
    assert set(clocks) <= set(hw.supported_clocks_mhz)
    assert clocks[-1] == hw.supported_clocks_mhz[-1] and clocks[0] == hw.supported_clocks_mhz[0]
    assert len(clocks) == 24 and len(default_clocks(hw.supported_clocks_mhz, 9, 0.3)) == 9
    assert default_clocks(hw.supported_clocks_mhz, 9, 0.3)[0] >= 0.3 * clocks[-1] - 15


def test_profile_cli(run_cli, tmp_path, hw) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "p.parquet"
    res = run_cli(
        "profile", "--backend", "sim", "--tp", "4", "--clocks", "1200,1980", "--shapes", "12", "-o", out, "--json"
    )
    assert res.code == 0, res.err
    obj = json.loads(res.out.strip())
    assert obj["rows_total"] == 2 * 2 * 12 and obj["tps"] == [4] and obj["clocks_mhz"] == [1200, 1980]
    meta = read_meta(out)
    assert meta is not None and meta.backend == "sim" and "--tp 4" in meta.command
    assert set(meta.idle_power_w[4]) == {1200, 1980}


def test_profile_cli_bad_options(run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "p.csv"
    res = run_cli("profile", "--tp", "1", "-o", out)
    assert res.code == 2 and "--tp 1 is not available" in res.err
    res = run_cli("profile", "--clocks", "990,1001", "-o", out)
    assert res.code == 2 and "--clocks 1001 MHz is not a supported clock" in res.err
    res = run_cli("profile", "--clocks", "1980", "-o", out)
    assert res.code == 2 and "at least 2 distinct clocks" in res.err
    res = run_cli("profile", "--backend", "tpu", "-o", out)
    assert res.code == 2 and "field 'backend': unknown profiler backend 'tpu' (choices: sim, torch)" in res.err
    res = run_cli("profile", "--tp", "4,x", "-o", out)
    assert res.code == 2 and "comma-separated whole numbers" in res.err
    res = run_cli("profile", "-o", tmp_path / "p.txt")
    assert res.code == 2 and "--output must end in .csv or .parquet" in res.err
    assert not out.exists()
