"""Fitting: accuracy bars on held-out simulated rows, baseline comparison, artifact round trip and metadata."""

from __future__ import annotations

import json
import zipfile

import numpy as np

from biscale.predict import BARS_PCT, PREDICTORS, load_predictor
from biscale.predict.features import raw_from_profile
from biscale.predict.fit import split_train_test
from biscale.predict.schema import file_sha256, read_profile


def test_held_out_accuracy_meets_bars(fitted) -> None:  # type: ignore[no-untyped-def]
    errors = fitted.result.errors
    for name in PREDICTORS:
        assert 0.0 < errors[f"{name}_mape_pct"] <= BARS_PCT[name], (name, errors[f"{name}_mape_pct"])
    assert errors["meets_bars"] is True
    for tp_errors in errors["per_tp"].values():
        for name in PREDICTORS:
            assert tp_errors[f"{name}_mape_pct"] <= BARS_PCT[name]


def test_held_out_errors_recomputed_independently(fitted) -> None:  # type: ignore[no-untyped-def]
    """Recompute MAPE on the held-out rows from the saved artifact and the profile file."""
    df = read_profile(fitted.profile)
    test = df[split_train_test(df, 0.2, 3)]
    pred = load_predictor(fitted.artifact)
    for phase in ("prefill", "decode"):
        rows = test[test["phase"] == phase]
        lat_err, pow_err = [], []
        for (tp, clk), grp in rows.groupby(["tp", "sm_clock_mhz"]):
            p = pred.predict(phase, int(tp), raw_from_profile(phase, grp), [int(clk)])
            lat_err.append(np.abs(p.latency_s[:, 0] / grp["latency_s"].to_numpy() - 1))
            pow_err.append(np.abs(p.power_w[:, 0] / grp["power_w"].to_numpy() - 1))
        lat_mape = 100 * np.concatenate(lat_err).mean()
        pow_mape = 100 * np.concatenate(pow_err).mean()
        assert abs(lat_mape - fitted.result.errors[f"{phase}_latency_mape_pct"]) < 1e-9
        assert abs(pow_mape - fitted.result.errors[f"{phase}_power_mape_pct"]) < 1e-9


def test_split_is_by_shape_and_seeded(fitted) -> None:  # type: ignore[no-untyped-def]
    df = read_profile(fitted.profile)
    mask = split_train_test(df, 0.2, 3)
    assert np.array_equal(mask, split_train_test(df, 0.2, 3))
    assert not np.array_equal(mask, split_train_test(df, 0.2, 4))
    assert 0.1 < mask.mean() < 0.3
    # every clock of a held-out shape is held out
    key = ["phase", "tp", "batch_size", "input_len_sum", "context_len_sum"]
    per_shape = df.assign(test=mask).fillna(-1).groupby(key)["test"].agg(["min", "max"])
    assert (per_shape["min"] == per_shape["max"]).all()


def test_beats_hgb_baseline_on_latency(fitted) -> None:  # type: ignore[no-untyped-def]
    e = fitted.result.errors
    for phase in ("prefill", "decode"):
        assert e[f"{phase}_latency_mape_pct"] < e[f"baseline_{phase}_latency_mape_pct"]


def test_artifact_round_trip_and_no_pickle(fitted, tmp_path) -> None:  # type: ignore[no-untyped-def]
    files = sorted(p.name for p in fitted.artifact.iterdir())
    assert files == ["coefficients.npz", "predictor.json"]
    with zipfile.ZipFile(fitted.artifact / "coefficients.npz") as z:
        for name in z.namelist():
            header = z.read(name)[:128]
            assert b"'descr': '|O'" not in header  # no object arrays (which would need pickle)
    loaded = load_predictor(fitted.artifact)
    resaved = load_predictor(loaded.save(tmp_path / "again"))
    rng = np.random.default_rng(0)
    n = rng.integers(1, 20, 16).astype(float)
    t = n * rng.uniform(20, 400, 16)
    clocks = (700, 1000, 1500, 1980)
    a = fitted.result.predictor.predict_prefill(4, clocks, num_seqs=n, tokens_sum=t, attn_pairs=t * 100)
    b = resaved.predict_prefill(4, clocks, num_seqs=n, tokens_sum=t, attn_pairs=t * 100)
    np.testing.assert_array_equal(a.latency_s, b.latency_s)
    np.testing.assert_array_equal(a.power_w, b.power_w)
    np.testing.assert_array_equal(a.out_of_range, b.out_of_range)


def test_artifact_metadata(fitted) -> None:  # type: ignore[no-untyped-def]
    meta = json.loads((fitted.artifact / "predictor.json").read_text())
    assert meta["format"] == "biscale-predictor" and meta["format_version"] == 1
    assert meta["source_profile"]["sha256"] == file_sha256(fitted.profile)
    assert meta["source_profile"]["rows"] == len(fitted.frame)
    assert meta["units"]["power"].startswith("W per GPU")
    assert meta["raw_feature_units"]["tokens_sum"] == "tokens"
    pre4 = meta["phases"]["prefill"]["tps"]["4"]
    rows = fitted.frame[(fitted.frame["phase"] == "prefill") & (fitted.frame["tp"] == 4)]
    lo, hi = pre4["training_ranges"]["tokens_sum"]
    assert rows["input_len_sum"].min() <= lo <= hi <= rows["input_len_sum"].max()
    assert pre4["clocks_mhz"] == sorted(int(c) for c in rows["sm_clock_mhz"].unique())
    assert meta["profile_meta"]["kv_capacity_tokens"]["2"] == fitted.hw.kv_capacity_tokens(2)
    assert set(meta["errors"]) >= {f"{p}_mape_pct" for p in PREDICTORS}


def test_fit_cli_json_and_table(run_cli, fitted, tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("fit", fitted.profile, "-o", tmp_path / "a", "--seed", "3", "--no-baseline", "--json")
    assert res.code == 0, res.err
    lines = res.out.strip().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    for name in PREDICTORS:
        assert abs(obj[f"{name}_mape_pct"] - fitted.result.errors[f"{name}_mape_pct"]) < 1e-9
    assert obj["artifact"] == str(tmp_path / "a") and obj["power_ceiling_w"] > 0
    res = run_cli("fit", fitted.profile, "-o", tmp_path / "b", "--no-baseline")
    assert res.code == 0 and "prefill_latency" in res.out and "MAPE %" in res.out
    res = run_cli("fit", fitted.profile, "-o", tmp_path / "c", "--test-fraction", "0.95")
    assert res.code == 2 and "--test-fraction must be in (0, 0.9)" in res.err
