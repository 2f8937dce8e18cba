"""``biscale predict`` and ``biscale predict-check``."""

from __future__ import annotations

import json

from biscale.costmodel import PrefillShape


def test_predict_json_matches_api(run_cli, fitted) -> None:  # type: ignore[no-untyped-def]
    res = run_cli(
        "predict", "--artifact", fitted.artifact, "--phase", "prefill", "--tp", "4", "--lengths", "300,200",
        "--clocks", "990,1980", "--json",
    )  # fmt: skip
    assert res.code == 0, res.err
    obj = json.loads(res.out)
    p = fitted.result.predictor.predict_prefill_shapes([PrefillShape.from_lengths([300, 200])], 4, (990, 1980))
    assert obj["latency_ms"] == [float(x) * 1e3 for x in p.latency_s[0]]
    assert obj["power_w"] == [float(x) for x in p.power_w[0]]
    assert obj["clocks_mhz"] == [990, 1980] and obj["out_of_range"] == [False, False]


def test_predict_table_and_errors(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("predict", "--phase", "decode", "--tp", "8", "--lengths", "500,600,700")
    assert res.code == 0 and "latency ms" in res.out
    res = run_cli("predict", "--phase", "decode", "--tp", "1", "--lengths", "500")
    assert res.code == 2 and "no decode model for tp=1" in res.err
    res = run_cli("predict", "--phase", "mixed", "--tp", "4", "--lengths", "5")
    assert res.code == 2 and "--phase must be prefill or decode" in res.err


def test_predict_check_on_its_own_profile(run_cli, fitted) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("predict-check", fitted.artifact, fitted.profile, "--json")
    assert res.code == 0, res.err
    obj = json.loads(res.out)
    assert obj["rows_total"] == len(fitted.frame)
    for key in ("prefill_latency", "decode_latency", "prefill_power", "decode_power"):
        assert 0 < obj[f"{key}_mape_pct"] < 3.0
    assert obj["rows_out_of_range"] > 0  # held-out shapes beyond the training extremes are flagged
