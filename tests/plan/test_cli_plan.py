"""``biscale plan`` and ``biscale forecast`` end to end (small capacity tables in a temporary cache)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biscale.control.placement import Placement

#: A small table: one clock, TP8 only, 60 s probes (seconds to build; cached in the test's cache dir).
FAST = ("--clocks", "1980", "--tps", "8", "--probe-s", "60", "--workers", "1")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("plan-cache")


def test_plan_table_and_json_round_trip_into_simulate(run_cli, cache: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base = ("plan", "--rate", "10", "--gpus", "16", "--cache-dir", str(cache), *FAST)
    res = run_cli(*base)
    assert res.code == 0, res.err
    assert "feasible" in res.out and "placement: prefill:" in res.out and "capacity table" in res.out
    out = tmp_path / "plan.json"
    js = run_cli(*base, "--format", "json", "--out", str(out))
    assert js.code == 0, js.err
    data = json.loads(js.out)
    plc = Placement.model_validate(data)
    assert plc == Placement.load(out)
    assert plc.prediction is not None and plc.prediction.feasible and plc.prediction.forecast_rps == 10.0
    assert all(g.tp == 8 and g.clock == 1980 and g.capacity_rps for g in plc.instances)
    assert run_cli(*base, "--json").out == js.out  # --json is --format json
    sim = run_cli(
        "simulate",
        "--trace",
        "azure-conv",
        "--rate",
        "10",
        "--lengths",
        "sharegpt-v3",
        "--placement",
        str(out),
        "--duration",
        "20",
        "--json",
    )
    assert sim.code == 0, sim.err
    assert json.loads(sim.out)["requests_completed"] > 0


def test_plan_for_the_peak_window_of_a_trace_and_distserve(run_cli, cache: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli(
        "plan",
        "--trace",
        "azure-conv",
        "--lengths",
        "sharegpt-v3",
        "--planner",
        "distserve",
        "--gpus",
        "16",
        "--cache-dir",
        str(cache),
        *FAST,
        "--json",
    )
    assert res.code == 0, res.err
    pred = json.loads(res.out)["prediction"]
    assert pred["planner"] == "distserve"
    assert pred["forecast_rps"] == pytest.approx(7.4633, rel=1e-3)  # the busiest 300 s window of azure-conv


def test_infeasible_plan_exits_1_with_the_reason_and_a_fallback(run_cli, cache: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("plan", "--rate", "500", "--gpus", "16", "--cache-dir", str(cache), *FAST, "--json")
    assert res.code == 1
    pred = json.loads(res.out)["prediction"]
    assert pred["feasible"] is False and pred["reason"].startswith("cluster too small")
    assert pred["gpus_needed"] > 16 and pred["nodes_needed"] > 2
    big = run_cli("plan", "--rate", "500", "--gpus", "4096", "--cache-dir", str(cache), *FAST, "--json")
    assert big.code == 0 and json.loads(big.out)["prediction"]["feasible"]


@pytest.mark.parametrize(
    "args, message",
    [
        (("--gpus", "16"), "give --rate R"),
        (("--rate", "-3"), "rate must be a number >= 0"),
        (("--rate", "5", "--gpus", "12"), "12 GPUs do not divide into nodes of 8"),
        (("--rate", "5", "--format", "xml"), "unknown format 'xml'"),
        (("--rate", "5", "--planner", "magic"), "unknown planner 'magic'"),
        (("--rate", "5", "--slo-ttft-ms", "0"), "field 'slo-ttft-ms': must be > 0"),
        (("--rate", "5", "--unassigned-power-w", "lots"), "expected watts or 'off'"),
        (("--rate", "5", "--clocks", "fast"), "--clocks must be comma-separated whole numbers"),
        (("--rate", "5", "--predictors", "/nonexistent/dir"), "not a predictor artifact"),
        (("--trace", "/nonexistent.csv"), "nonexistent.csv"),
    ],
)
def test_bad_input_exits_2_with_one_line(run_cli, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("plan", *args)
    assert res.code == 2
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("biscale: error:")


def test_forecast_command(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("forecast", "--trace", "azure-conv", "--window-s", "300", "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert data["windows"] == 11 and set(data["forecasters"]) == {"previous", "ewma", "peak", "quantile"}
    prev = data["forecasters"]["previous"]
    assert prev["windows_scored"] == 10 and 0 < prev["mape_pct"] < 100 and 0 <= prev["under_forecast_pct"] <= 100
    table = run_cli("forecast", "--trace", "azure-conv", "--rate", "20")
    assert table.code == 0 and "previous" in table.out and "MAPE" in table.out
    bad = run_cli("forecast", "--trace", "azure-conv", "--window-s", "4000")
    assert bad.code == 2 and "fewer than 2 full windows" in bad.err
