"""`biscale calibrate` and `biscale hardware list/show`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from biscale.hardware import calibration as cal


def test_calibrate_table_report_files_and_plots(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "cal"
    res = run_cli("calibrate", "--out", out)
    assert res.code == 0, res.err
    assert "all tolerances met" in res.out
    assert "in-sample" in res.out and "out-of-sample" in res.out
    names = [c.name for c in cal.CHECKS]
    for name in names:
        png = out / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(out / "calibration.csv")
    assert list(table["name"]) == names
    assert set(table.columns) >= {"role", "error_pct", "lodo_error_pct", "tolerance_pct", "passed", "points"}
    saved = json.loads((out / "calibration.json").read_text())
    assert [c["name"] for c in saved["checks"]] == names
    assert saved["checks"][0]["error_pct"] == pytest.approx(table["error_pct"][0])


def test_calibrate_json(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("calibrate", "--json", "--out", tmp_path / "c")
    assert res.code == 0
    lines = res.out.strip().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["all_passed"] is True and obj["gpu"] is None and obj["model"] is None
    assert [c["name"] for c in obj["checks"]] == list(cal.CHECK_BY_NAME)
    assert str(tmp_path / "c" / "calibration.csv") in obj["files"]
    for c in obj["checks"]:
        assert c["passed"] is (c["error_pct"] <= c["tolerance_pct"])
        assert c["tolerance_pct"] == cal.CHECK_BY_NAME[c["name"]].tolerance_pct
        assert c["role"] in ("in-sample", "out-of-sample", "held-out") and c["metric"] == "MAPE"
        if c["role"] != "in-sample":
            assert c["lodo_error_pct"] is None
    roles = {c["name"]: c["role"] for c in obj["checks"]}
    assert roles["mlenergy_70b_decode"] == "held-out" and roles["prefill_power"] == "in-sample"


def test_calibrate_a_pair_against_its_own_data(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("calibrate", "--gpu", "h100-sxm", "--model", "llama-3.1-8b", "--json", "--out", tmp_path)
    assert res.code == 0, res.err
    names = {c["name"] for c in json.loads(res.out)["checks"]}
    assert names == {"allreduce", "mlenergy_8b_step_time", "mlenergy_8b_power"}  # no 70B data for an 8B model
    res = run_cli("calibrate", "--gpu", "h100-sxm", "--model", "llama-3.3-70b", "--json", "--out", tmp_path)
    names = {c["name"] for c in json.loads(res.out)["checks"]}
    assert "mlenergy_70b_decode" in names and "mlenergy_8b_power" not in names
    res = run_cli("calibrate", "--gpu", "a100-sxm-40gb", "--model", "gemma-2-27b", "--json", "--out", tmp_path)
    names = {c["name"] for c in json.loads(res.out)["checks"]}
    assert names == {"a100_decode_clock_shape", "a100_prefill_clock_shape"}


def test_calibrate_a_pair_without_data_is_exit_2(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for args in (
        ("--gpu", "a100-sxm-80gb", "--model", "llama-3.1-8b"),
        ("--gpu", "h100-sxm", "--model", "gemma-2-27b"),
    ):
        res = run_cli("calibrate", *args, "--out", tmp_path)
        assert res.code == 2
        assert "no calibration data for" in res.err and "h100-sxm/llama-3.1-8b" in res.err
        assert len(res.err.strip().splitlines()) == 1


def test_calibrate_unknown_gpu_is_exit_2(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("calibrate", "--gpu", "tpu-v5", "--out", tmp_path)
    assert res.code == 2
    assert res.err.startswith("biscale: error: ")
    assert "unknown GPU 'tpu-v5'" in res.err and "h100-sxm" in res.err
    assert len(res.err.strip().splitlines()) == 1


def test_calibrate_out_is_a_file_is_exit_2(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "file"
    f.write_text("x")
    res = run_cli("calibrate", "--out", f)
    assert res.code == 2
    assert "--out must name a directory, and this is a file" in res.err


def test_hardware_list_json(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("hardware", "list", "--json")
    assert res.code == 0
    obj = json.loads(res.out)
    pairs = {(p["gpu"], p["model"]): p for p in obj["pairs"]}
    h = pairs[("h100-sxm", "llama-3.3-70b")]
    assert h["max_clock_mhz"] == 1980 and h["min_tp"] == 2
    assert h["kv_capacity_tokens_min_tp"] > 0
    assert h["experimental"] is False and h["experimental_reason"] == ""
    a = pairs[("a100-sxm-80gb", "llama-3.1-8b")]
    assert a["experimental"] is True and "no A100 power measurement" in a["experimental_reason"]


def test_hardware_list_table(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("hardware", "list")
    assert res.code == 0 and "h100-sxm" in res.out
    assert "a100-sxm-80gb is experimental" in res.out and "h100-sxm is experimental" not in res.out


def test_hardware_show(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("hardware", "show", "--gpu", "h100-sxm", "--model", "llama-3.3-70b", "--tp", "4", "--json")
    assert res.code == 0
    obj = json.loads(res.out)
    assert obj["tp"] == 4
    rows = obj["clocks"]
    assert [r["sm_clock_mhz"] for r in rows] == sorted(r["sm_clock_mhz"] for r in rows)
    lat = [r["prefill_1024_latency_ms"] for r in rows]
    assert lat == sorted(lat, reverse=True)
    assert all(r["prefill_1024_power_w"] <= 700 for r in rows)
    assert "gemm_efficiency" in obj["constants"]
    table = run_cli("hardware", "show", "--gpu", "a100-sxm-80gb", "--model", "llama-3.1-8b")
    assert table.code == 0 and "fitted constants" in table.out


def test_hardware_show_bad_tp_is_exit_2(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("hardware", "show", "--gpu", "h100-sxm", "--model", "llama-3.3-70b", "--tp", "1")
    assert res.code == 2
    assert "tp 1 not available" in res.err
