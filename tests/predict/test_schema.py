"""Profile validation: every bad profile is a one-line error naming what is wrong, exit code 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biscale.errors import InputError
from biscale.predict.schema import MIN_ROWS_PER_CLOCK, meta_path, read_meta, read_profile


@pytest.fixture
def good(fitted) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    return pd.read_csv(fitted.profile)


def _fit_error(run_cli, tmp_path: Path, df: pd.DataFrame, name: str = "bad.csv") -> str:  # type: ignore[no-untyped-def]
    path = tmp_path / name
    if name.endswith(".csv"):
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    res = run_cli("fit", path, "-o", tmp_path / "out", "--no-baseline")
    assert res.code == 2, res.out + res.err
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("biscale: error: "), res.err
    assert "Traceback" not in res.err
    assert not (tmp_path / "out").exists()
    return lines[0]


def test_missing_column(run_cli, tmp_path, good) -> None:  # type: ignore[no-untyped-def]
    msg = _fit_error(run_cli, tmp_path, good.drop(columns=["latency_s"]))
    assert "missing column(s): latency_s" in msg and "field 'latency_s'" in msg


def test_missing_power_and_energy(run_cli, tmp_path, good) -> None:  # type: ignore[no-untyped-def]
    msg = _fit_error(run_cli, tmp_path, good.drop(columns=["power_w", "energy_j"]))
    assert "need power_w or energy_j" in msg


def test_nan_names_line_and_column(run_cli, tmp_path, good) -> None:  # type: ignore[no-untyped-def]
    df = good.copy()
    df.loc[5, "power_w"] = np.nan
    msg = _fit_error(run_cli, tmp_path, df)
    assert "bad.csv:7" in msg and "field 'power_w'" in msg and "NaN" in msg  # header is line 1, row 5 is line 7


def test_negative_and_zero_values(run_cli, tmp_path, good) -> None:  # type: ignore[no-untyped-def]
    df = good.copy()
    df.loc[10, "latency_s"] = -0.01
    msg = _fit_error(run_cli, tmp_path, df)
    assert "bad.csv:12" in msg and "field 'latency_s'" in msg and "must be positive, got -0.01" in msg
    df = good.copy()
    df.loc[0, "tp"] = 0
    msg = _fit_error(run_cli, tmp_path, df)
    assert "bad.csv:2" in msg and "field 'tp'" in msg and "positive" in msg


def test_decode_row_lengths_checked(run_cli, tmp_path, good) -> None:  # type: ignore[no-untyped-def]
    df = good.copy()
    i = int(np.flatnonzero(df["phase"].to_numpy() == "decode")[3])
    df.loc[i, "context_len_sum"] = 0
    msg = _fit_error(run_cli, tmp_path, df)
    assert f"bad.csv:{i + 2}" in msg and "field 'context_len_sum'" in msg


def test_single_clock(run_cli, tmp_path, good) -> None:  # type: ignore[no-untyped-def]
    df = good[good["sm_clock_mhz"] == good["sm_clock_mhz"].max()]
    msg = _fit_error(run_cli, tmp_path, df)
    assert "single SM clock" in msg and "need at least 2 clocks" in msg


def test_too_few_rows(run_cli, tmp_path, good) -> None:  # type: ignore[no-untyped-def]
    df = good.groupby(["phase", "tp", "sm_clock_mhz"]).head(MIN_ROWS_PER_CLOCK - 1)
    msg = _fit_error(run_cli, tmp_path, df)
    assert "too few rows" in msg and f"need >= {MIN_ROWS_PER_CLOCK}" in msg


def test_bad_phase_and_missing_phase(run_cli, tmp_path, good) -> None:  # type: ignore[no-untyped-def]
    df = good.copy()
    df.loc[3, "phase"] = "training"
    assert "phase must be 'prefill' or 'decode', got 'training'" in _fit_error(run_cli, tmp_path, df)
    msg = _fit_error(run_cli, tmp_path, good[good["phase"] == "prefill"])
    assert "no decode rows" in msg


def test_parquet_errors_name_row(run_cli, tmp_path, good) -> None:  # type: ignore[no-untyped-def]
    df = good.copy()
    df["batch_size"] = df["batch_size"].astype(float)
    df.loc[4, "batch_size"] = 2.5
    msg = _fit_error(run_cli, tmp_path, df, name="bad.parquet")
    assert "bad.parquet row 5" in msg and "whole number" in msg


def test_missing_and_unreadable_files(run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("fit", tmp_path / "nope.csv", "-o", tmp_path / "o")
    assert res.code == 2 and "profile not found" in res.err
    (tmp_path / "x.txt").write_text("a,b\n")
    res = run_cli("fit", tmp_path / "x.txt", "-o", tmp_path / "o")
    assert res.code == 2 and "must end in .csv or .parquet" in res.err


def test_energy_only_profile_derives_power(tmp_path, good) -> None:  # type: ignore[no-untyped-def]
    df = good.drop(columns=["power_w"])
    df.to_parquet(tmp_path / "e.parquet", index=False)
    clean = read_profile(tmp_path / "e.parquet")
    np.testing.assert_allclose(clean["power_w"], good["energy_j"] / good["latency_s"], rtol=1e-12)


def test_attn_pairs_default_from_lengths(tmp_path, good) -> None:  # type: ignore[no-untyped-def]
    """Without attn_pairs, unchunked prompts give sum L(L+1)/2 = (n (std^2 + mean^2) + sum) / 2."""
    df = good.drop(columns=["attn_pairs"])
    df.to_csv(tmp_path / "p.csv", index=False)
    clean = read_profile(tmp_path / "p.csv")
    pre = clean["phase"] == "prefill"
    np.testing.assert_allclose(clean.loc[pre, "attn_pairs"], good.loc[pre, "attn_pairs"], rtol=1e-6)


def test_sidecar_round_trip_and_bad_sidecar(fitted, tmp_path) -> None:  # type: ignore[no-untyped-def]
    meta = read_meta(fitted.profile)
    assert meta is not None and meta.kv_bytes_per_token == fitted.hw.kv_bytes_per_token
    assert meta.kv_capacity_tokens[4] == fitted.hw.kv_capacity_tokens(4)
    bad = tmp_path / "b.csv"
    bad.write_text("x\n")
    meta_path(bad).write_text('{"gpu": "h100-sxm"}')
    with pytest.raises(InputError, match=r"b\.meta\.json: bad profile sidecar"):
        read_meta(bad)
