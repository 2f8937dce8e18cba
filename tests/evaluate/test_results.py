"""results.json: savings against every baseline, gaps to the oracle, the headline, and a validating reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biscale.errors import InputError
from biscale.results.layout import PAPER_BAR, derive, one_run_results, read_results, write_results


def run(system: str, prefill: float, decode: float, *, load: float = 0.67, slo: bool = True, sweep=None) -> dict:
    return {
        "scenario": "s",
        "load": load,
        "load_label": f"{100 * load:g}pct",
        "system": system,
        "prefill_j_per_token": prefill,
        "decode_j_per_token": decode,
        "cluster_j_per_token": (prefill + decode) / 2,
        "energy_cluster_j": 1e6 * (prefill + decode),
        "p99_ttft_ms": 200.0,
        "p99_tpot_ms": 50.0,
        "slo_met": slo,
        "slo_met_every_window": slo,
        "sweep": sweep,
    }


def test_savings_gaps_and_headline_numbers() -> None:
    runs = [run("distserve", 0.4, 0.8), run("biscale", 0.24, 0.4), run("oracle", 0.23, 0.39)]
    d = derive(runs)
    s = next(x for x in d["savings"] if x["system"] == "biscale" and x["baseline"] == "distserve")
    assert s["prefill_savings_pct"] == pytest.approx(40.0)
    assert s["decode_savings_pct"] == pytest.approx(50.0)
    assert s["cluster_savings_pct"] == pytest.approx(100 * (1 - 0.32 / 0.6))
    assert len(d["savings"]) == 6  # every ordered pair
    g = next(x for x in d["oracle_gap"] if x["system"] == "biscale")
    assert g["prefill_gap_pct"] == pytest.approx(100 * (0.24 / 0.23 - 1))
    (h,) = d["headline"]
    assert h["oracle_gap_pct"] == pytest.approx(100 * (0.24 / 0.23 - 1))
    assert h["bar"] == PAPER_BAR and h["bar_met"]


@pytest.mark.parametrize(
    "runs",
    [
        [run("distserve", 0.4, 0.8), run("biscale", 0.26, 0.4), run("oracle", 0.25, 0.39)],  # prefill -35 %
        [run("distserve", 0.4, 0.8), run("biscale", 0.24, 0.4, slo=False), run("oracle", 0.23, 0.39)],  # SLO missed
        [run("distserve", 0.4, 0.8), run("biscale", 0.24, 0.4), run("oracle", 0.2, 0.39)],  # 20 % above the oracle
        [run("distserve", 0.4, 0.8), run("biscale", 0.24, 0.4)],  # no oracle: the gap is unknown
    ],
)
def test_the_bar_needs_every_condition(runs: list[dict]) -> None:
    (h,) = derive(runs)["headline"]
    assert not h["bar_met"]


def test_sweep_points_and_loads_are_compared_only_with_themselves() -> None:
    runs = [
        run("distserve", 0.4, 0.8),
        run("biscale", 0.2, 0.4),
        run("distserve", 0.5, 0.8, load=0.85),
        run("biscale", 0.4, 0.4, load=0.85),
        run("distserve", 0.4, 0.8, sweep={"switch_latency_ms": 50}),
        run("biscale", 0.3, 0.4, sweep={"switch_latency_ms": 50}),
    ]
    d = derive(runs)
    by = {(x["load_label"], json.dumps(x["sweep"])): x for x in d["savings"] if x["system"] == "biscale"}
    assert by[("67pct", "null")]["prefill_savings_pct"] == pytest.approx(50.0)
    assert by[("85pct", "null")]["prefill_savings_pct"] == pytest.approx(20.0)
    assert by[("67pct", '{"switch_latency_ms": 50}')]["prefill_savings_pct"] == pytest.approx(25.0)
    assert len(d["headline"]) == 2  # sweeps are not headlines


def test_reader_validates(tmp_path: Path) -> None:
    results = {"format": "biscale-results", "version": 1, "runs": [run("distserve", 0.4, 0.8)]}
    write_results(tmp_path, results)
    back = read_results(tmp_path)
    assert back["runs"][0]["prefill_j_per_token"] == 0.4 and back["savings"] == []
    (tmp_path / "results.json").write_text(json.dumps({**results, "version": 99}))
    with pytest.raises(InputError, match="newer than this biscale reads"):
        read_results(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({**results, "format": "other"}))
    with pytest.raises(InputError, match="not a biscale-results file"):
        read_results(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({**results, "runs": [{"scenario": "s"}]}))
    with pytest.raises(InputError) as err:
        read_results(tmp_path)
    assert err.value.field == "runs.0.load"
    (tmp_path / "results.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        read_results(tmp_path)
    with pytest.raises(InputError, match=r"no results\.json"):
        read_results(tmp_path / "..")
    with pytest.raises(InputError, match="not a directory"):
        read_results(tmp_path / "nope")


def test_a_simulated_run_directory_reads_as_one_run(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "sim"
    r = run_cli(
        "simulate", "--trace", "azure-conv", "--rate", "8", "--duration", "60", "--lengths", "sharegpt-v3",
        "--placement", "prefill:1xTP4,decode:1xTP4", "--out", str(out), "--json",
    )  # fmt: skip
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    res = read_results(out)  # no results.json: built from the files
    (rec,) = res["runs"]
    assert rec["run_dir"] == "." and rec["scenario"] == "live"
    assert rec["prefill_j_per_token"] == pytest.approx(summary["prefill_energy_per_prompt_token_j"])
    assert rec["p99_tpot_ms"] == pytest.approx(summary["tpot_p99_ms"])
    assert rec["windows"] == 1 and rec["slo_met"] == summary["slo_met"]
    write_results(out, one_run_results(out, system="max-clock"))
    assert read_results(out)["runs"][0]["system"] == "max-clock"


def test_decomposition_least_energy_and_bound_gaps() -> None:
    from biscale.results.layout import derive

    def run(system: str, c: float, ok: bool = True) -> dict:  # type: ignore[type-arg]
        return {
            "scenario": "s",
            "load": 0.5,
            "load_label": "50pct",
            "system": system,
            "prefill_j_per_token": c,
            "decode_j_per_token": c,
            "cluster_j_per_token": c,
            "energy_cluster_j": c,
            "slo_met": ok,
            "slo_met_every_window": ok,
        }

    runs = [
        run("distserve", 1.0),
        run("placement-top", 0.9),
        run("placeonly", 0.6),
        run("placeonly-idlelow", 0.5),
        run("biscale", 0.45),
        run("static", 0.4, ok=False),  # cheaper but misses a window: not the least-energy system meeting the SLOs
        run("oracle", 0.3),  # the clairvoyant heuristic is set aside
    ]
    out = derive(runs, [{"scenario": "s", "load_label": "50pct", "cluster_j_per_token": 0.4}])
    steps = out["decomposition"]
    assert [r["system"] for r in steps] == ["distserve", "placement-top", "placeonly", "placeonly-idlelow", "biscale"]
    assert steps[0]["cluster_change_pct"] is None
    assert steps[2]["cluster_change_pct"] == pytest.approx(100 * (0.6 / 0.9 - 1))
    assert out["headline"][0]["least_energy_meeting_slos"] == "biscale"
    gaps = {r["system"]: r["gap_to_bound_pct"] for r in runs}
    assert gaps["biscale"] == pytest.approx(12.5) and gaps["static"] == pytest.approx(0.0)
