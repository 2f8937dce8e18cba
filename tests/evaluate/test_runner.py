"""The grid: identical requests for every system, run directories in the shared layout, deterministic results on
any number of workers, sweep points equal to the main configuration run once, capacity search on the truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from biscale.evaluate import load_scenario, make_backend, read_results, run_evaluation
from biscale.evaluate.capacity import _candidates, search_capacity, whole_cluster_placement
from biscale.evaluate.runner import scenario_table
from biscale.results.layout import RUN_FILES

from .conftest import ALL, tiny_toml

#: Wall-clock figures: they differ between runs and are excluded from determinism checks.
TIMING_KEYS = {"setup_s", "sim_wall_s", "wall_s", "cpu_s"}


def comparable(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k not in TIMING_KEYS and "controller_time" not in k}


def test_every_system_ran_at_every_load_on_identical_requests(tiny_eval: tuple[Path, dict]) -> None:
    out, results = tiny_eval
    main = [r for r in results["runs"] if not r["sweep"]]
    assert sorted({r["system"] for r in main}) == sorted(ALL)
    assert sorted({r["load_label"] for r in main}) == ["50pct", "80pct"]
    for label, rate in (("50pct", 15.0), ("80pct", 24.0)):
        here = [r for r in main if r["load_label"] == label]
        assert len(here) == len(ALL)
        assert [r["rate_rps"] for r in here] == pytest.approx([rate] * len(ALL))
        arrivals = [pd.read_parquet(out / r["run_dir"] / "requests.parquet")["arrival_s"] for r in here]
        assert all(a.equals(arrivals[0]) for a in arrivals)  # the same requests for every system
        assert {r["requests_total"] for r in here} == {len(arrivals[0])}


def test_run_directories_follow_the_shared_layout(tiny_eval: tuple[Path, dict]) -> None:
    out, results = tiny_eval
    for r in results["runs"]:
        d = out / r["run_dir"]
        assert all((d / f).is_file() for f in RUN_FILES), d
        summary = json.loads((d / "summary.json").read_text())
        assert summary["meta"]["system"] == r["system"] and summary["meta"]["biscale_version"]
        assert summary["prefill_energy_per_prompt_token_j"] == pytest.approx(r["prefill_j_per_token"])
        config = json.loads((d / "config.json").read_text())
        assert config["system"] == r["system"] and config["scenario_config"]["name"] == "tiny"
    assert (out / "runs/tiny/50pct/biscale").is_dir()
    assert read_results(out)["runs"] == json.loads(json.dumps(results["runs"]))


def test_run_figures_are_consistent(tiny_eval: tuple[Path, dict]) -> None:
    _, results = tiny_eval
    for r in results["runs"]:
        assert r["energy_cluster_j"] >= r["energy_total_j"] > 0
        assert r["cluster_j_per_token"] == pytest.approx(
            r["energy_cluster_j"] / (r["prompt_tokens"] + r["decode_tokens"])
        )
        assert r["windows"] == 2 and 0 <= r["windows_slo_met"] <= 2
        assert r["slo_met_every_window"] == (r["windows_slo_met"] == 2)
    dyn = [r for r in results["runs"] if r["system"] in ("biscale", "oracle")]
    assert all(r["decisions"] > 0 and r["controller_time_per_decision_us"] > 0 for r in dyn)
    static = [r for r in results["runs"] if r["system"] in ("distserve", "placeonly", "static")]
    assert all(r["decisions"] == 0 and r["controller_time_per_decision_us"] is None for r in static)
    top = [r for r in results["runs"] if r["system"] in ("distserve", "distserve-static")]
    assert all(r["clock_switches"] == 0 for r in top)
    st = next(r for r in results["runs"] if r["system"] == "static")
    assert set(st["notes"]["static_clocks_mhz"]) == {"prefill", "decode"}


def test_no_run_within_its_slos_beats_the_certified_bound(tiny_eval: tuple[Path, dict]) -> None:
    """Every (scenario, load) has its bound; a run that met its SLOs reports at least the bound's J/token."""
    _, results = tiny_eval
    bounds = {(b["scenario"], b["load_label"]): b for b in results["bounds"]}
    labels = {(r["scenario"], r["load_label"]) for r in results["runs"]}
    assert set(bounds) == labels
    for b in bounds.values():
        assert b["method"] and b["cluster_j_per_token"] > 0
    main = [r for r in results["runs"] if r["sweep"] is None]
    assert main and all("gap_to_bound_pct" in r for r in main)
    for r in main:
        bound = bounds[(r["scenario"], r["load_label"])]["cluster_j_per_token"]
        assert r["gap_to_bound_pct"] == pytest.approx(100.0 * (r["cluster_j_per_token"] / bound - 1.0))
        if r["slo_met"]:
            assert r["cluster_j_per_token"] >= bound, (r["system"], r["load_label"])


def test_sweep_points_run_and_the_main_point_is_not_repeated(tiny_eval: tuple[Path, dict]) -> None:
    _, results = tiny_eval
    sweep = [r for r in results["runs"] if r["sweep"]]
    assert sorted((r["sweep"]["switch_latency_ms"], r["system"]) for r in sweep) == [
        (1, "biscale"),
        (1, "distserve"),
        (50, "biscale"),
        (50, "distserve"),
    ]
    assert {r["load_label"] for r in sweep} == {"50pct"}
    gaps = {r["sweep"]["switch_latency_ms"]: r for r in sweep if r["system"] == "biscale"}
    assert gaps[1]["run_dir"] != gaps[50]["run_dir"]
    assert any(s["sweep"] for s in results["savings"])


def test_results_do_not_depend_on_the_worker_count(tiny_eval: tuple[Path, dict], tmp_path: Path) -> None:
    _, results = tiny_eval
    sc = load_scenario(tiny_toml(tmp_path / "t.toml", systems=["distserve", "biscale", "static"]))
    with make_backend("pool", workers=1) as backend:
        again = run_evaluation([sc], tmp_path / "out", backend)
    want = {(r["load_label"], r["system"]): comparable(r) for r in results["runs"] if not r["sweep"]}
    for r in again["runs"]:
        assert comparable(r) == want[(r["load_label"], r["system"])]


def test_duplicate_runs_execute_once(tmp_path: Path) -> None:
    sc = load_scenario(
        tiny_toml(
            tmp_path / "t.toml", systems=["distserve"], duration=30.0, extra="[sweep]\nswitch_latency_ms = [10]\n"
        ),
        {"loads": [0.5]},
    )
    events: list[tuple[str, Any]] = []
    with make_backend("pool", workers=1) as backend:
        res = run_evaluation([sc], tmp_path / "out", backend, on_event=lambda k, p: events.append((k, p)))
    assert ("planned", 1) in events  # the sweep point (10 ms) is the main configuration
    assert len(res["runs"]) == 2 and res["runs"][0]["run_dir"] == res["runs"][1]["run_dir"]


def test_an_idle_power_sweep_point_changes_the_truths_idle_energy_only(tmp_path: Path) -> None:
    """``idle_top_w = 125`` (a bare CUDA context's measured idle at the top clock) against the model's 181 W:
    distserve idles at the top clock, so its idle energy falls by the ratio of the idle powers; the requests and the
    placement stay. Latency moves only where the power cap throttles a prefill (its engine step now draws less, so
    the mean power is lower): within 1 %."""
    sc = load_scenario(
        tiny_toml(tmp_path / "t.toml", systems=["distserve"], duration=30.0, extra="[sweep]\nidle_top_w = [125.0]\n"),
        {"loads": [0.5]},
    )
    with make_backend("pool", workers=1) as backend:
        res = run_evaluation([sc], tmp_path / "out", backend, bound_of=None)
    (main,) = [r for r in res["runs"] if r["sweep"] is None]
    (low,) = [r for r in res["runs"] if r["sweep"] == {"idle_top_w": 125.0}]
    assert 0 < low["energy_idle_j"] < main["energy_idle_j"]
    assert low["energy_idle_j"] / main["energy_idle_j"] == pytest.approx(125.0 / 181.2, rel=0.01)
    assert low["requests_completed"] == main["requests_completed"]
    assert low["p99_ttft_ms"] <= main["p99_ttft_ms"] and low["p99_ttft_ms"] == pytest.approx(
        main["p99_ttft_ms"], rel=0.01
    )
    assert 0 < main["energy_decode_j"] - low["energy_decode_j"] < 0.1 * main["energy_decode_j"]


def test_candidates_bracket_then_split() -> None:
    assert _candidates(None, None, 10.0, 1) == [10.0]
    assert _candidates(None, None, 10.0, 2) == pytest.approx([10 / 1.25**0.5, 10 * 1.25**0.5])
    assert _candidates(8.0, None, 10.0, 2) == pytest.approx([10.0, 12.5])
    assert _candidates(None, 8.0, 10.0, 2) == pytest.approx([6.4, 5.12])
    assert _candidates(8.0, 27.0, 10.0, 2) == pytest.approx([12.0, 18.0])


def test_capacity_search_brackets_the_slo_boundary_on_the_truth(tmp_path: Path) -> None:
    sc = load_scenario(
        tiny_toml(tmp_path / "t.toml", systems=["distserve"], duration=60.0, extra=""),
        {"capacity.capacity_rps": None, "capacity.rel_tol": 0.1},
    )
    table = scenario_table(sc, workers=1, cache_dir=None, use_cache=True)
    placement, planned = whole_cluster_placement(table, sc)
    assert sum(g.count * g.tp for g in placement.instances) > 12  # it fills the cluster (16 GPUs)
    assert all(g.clock in (table.top_clock_mhz, "max") for g in placement.instances)
    with make_backend("pool", workers=1) as backend:
        cap = search_capacity(sc, table, backend, cache_dir=tmp_path)
        again = search_capacity(sc, table, backend, cache_dir=tmp_path)
    assert cap["searched"] and not cap["from_cache"] and again["from_cache"]
    assert again["capacity_rps"] == cap["capacity_rps"]
    passing = [p for p in cap["probes"] if p["slo_met"]]
    failing = [p for p in cap["probes"] if not p["slo_met"]]
    assert cap["capacity_rps"] == max(p["rate_rps"] for p in passing)
    assert cap["lowest_failing_rps"] <= cap["capacity_rps"] * 1.1 + 1e-9
    assert min(p["rate_rps"] for p in failing) == cap["lowest_failing_rps"]
    assert 0.3 * planned < cap["capacity_rps"] < 3 * planned


def test_a_system_with_its_own_decode_router_runs_with_it(tmp_path: Path) -> None:
    """voltana-route and biscale-route run VoltanaLLM's state-space router; their run configurations record it;
    voltana runs the scenario's router on the same requests."""
    from biscale.evaluate.systems import system_sim_config

    sc = load_scenario(tiny_toml(tmp_path / "t.toml", systems=["voltana", "voltana-route"], duration=30.0))
    assert system_sim_config(sc, "voltana").decode_router == sc.sim.decode_router == "most-free-kv"
    assert system_sim_config(sc, "voltana-route").decode_router == "state-space"
    assert system_sim_config(sc, "biscale-route").decode_router == "state-space"
    with make_backend("pool", workers=1) as backend:
        res = run_evaluation([sc], tmp_path / "out", backend, bound_of=None, sweep=False)
    routers = {}
    for r in res["runs"]:
        config = json.loads((tmp_path / "out" / r["run_dir"] / "config.json").read_text())
        assert config["system_definition"]["decode_router"] == config["sim"]["decode_router"]
        routers[r["system"]] = config["sim"]["decode_router"]
        assert r["decisions"] > 0 and r["slo_met"]  # EcoFreq decides every iteration
    assert routers == {"voltana": "most-free-kv", "voltana-route": "state-space"}
