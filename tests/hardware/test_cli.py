"""`biscale calibrate` and `biscale hardware list/show`."""

from __future__ import annotations

import json
from pathlib import Path

from biscale.hardware import calibration as cal


def test_calibrate_table_and_plots(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "cal"
    res = run_cli("calibrate", "--out", out)
    assert res.code == 0, res.err
    assert "all tolerances met" in res.out
    for name in cal.TOLERANCE_PCT:
        png = out / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibrate_json(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("calibrate", "--json", "--out", tmp_path / "c")
    assert res.code == 0
    lines = res.out.strip().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["all_passed"] is True
    assert {c["name"] for c in obj["checks"]} == set(cal.TOLERANCE_PCT)
    for c in obj["checks"]:
        assert c["passed"] is (c["error_pct"] <= c["tolerance_pct"])
        assert c["tolerance_pct"] == cal.TOLERANCE_PCT[c["name"]]
        if c["metric"] == "MAPE":
            assert c["mape_pct"] == c["error_pct"]


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
    assert "exists and is not a directory" in res.err


def test_hardware_list_json(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("hardware", "list", "--json")
    assert res.code == 0
    obj = json.loads(res.out)
    pairs = {(p["gpu"], p["model"]): p for p in obj["pairs"]}
    h = pairs[("h100-sxm", "llama-3.3-70b")]
    assert h["max_clock_mhz"] == 1980 and h["min_tp"] == 2
    assert h["kv_capacity_tokens_min_tp"] > 0
    assert ("a100-sxm-80gb", "llama-3.1-8b") in pairs


def test_hardware_list_table(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("hardware", "list")
    assert res.code == 0 and "h100-sxm" in res.out


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
