"""``biscale evaluate``: the bundled list, flags over scenario fields, one JSON object, one line per run without a
TTY, the paper-shaped table, and one-line errors (exit 2) for bad input and experimental hardware."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from biscale.evaluate import read_results

from .conftest import tiny_toml


def test_list_shows_the_bundled_scenarios(run_cli) -> None:
    r = run_cli("evaluate", "--list", "--json")
    assert r.code == 0, r.err
    items = {i["name"]: i for i in json.loads(r.out)["scenarios"]}
    assert set(items) == {"azure-conv", "azure-code", "azure-conv-native", "azure-code-native", "controlled"}
    assert items["azure-conv"]["loads"] == "67 %, 85 %" and items["azure-conv"]["sweep"] == {"idle_top_w": [125.0]}
    r = run_cli("evaluate", "--list")
    assert r.code == 0 and "controlled" in r.out


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--config", "nope"], "no bundled scenario 'nope'"),
        (["--systems", "biscale,foo"], "unknown system(s) foo"),
        (["--loads", "0.5,x"], "field '--loads': expected numbers"),
        (["--gpus", "12"], "12 GPUs do not divide into nodes of 8"),
        (["--sweep", "bogus=1,2"], "unknown sweep parameter 'bogus'"),
        (["--sweep", "switch_latency_ms=1", "--no-sweep"], "exclude each other"),
        (["--backend", "spark"], "unknown backend 'spark'"),
        (["--address", "x:1"], "--address is for the Ray backend"),
        (["--lengths", "nope"], "nope"),
    ],
)
def test_bad_input_exits_2_with_one_line(run_cli, args: list[str], text: str, tmp_path: Path) -> None:
    r = run_cli("evaluate", "--out", str(tmp_path / "o"), *args)
    assert r.code == 2, (r.out, r.err)
    assert text in r.err and r.err.startswith("biscale: error:") and r.err.count("\n") == 1


def test_experimental_hardware_is_refused(run_cli, tmp_path: Path) -> None:
    f = tiny_toml(tmp_path / "t.toml", systems=["distserve"])
    f.write_text(f.read_text().replace('name = "tiny"', 'name = "tiny"\ngpu = "a100-sxm-80gb"\nmodel = "llama-3.1-8b"'))
    r = run_cli("evaluate", "--config", str(f), "--out", str(tmp_path / "o"))
    assert r.code == 2 and "experimental" in r.err and "a100-sxm-80gb" in r.err


def test_a_small_evaluation_end_to_end(run_cli, tmp_path: Path) -> None:
    f = tiny_toml(tmp_path / "t.toml", systems=["distserve", "placeonly"], duration=45.0)
    f.write_text(f.read_text().replace('name = "tiny"', 'name = "tiny"\nseed = 3'))
    out = tmp_path / "o"
    r = run_cli("evaluate", "--config", str(f), "--loads", "0.6", "--seed", "0", "--workers", "1", "--out", str(out))
    assert r.code == 0, r.err
    assert "prefill J/tok" in r.out and "placeonly" in r.out and "wrote" in r.out
    row = next(line for line in r.out.splitlines() if "placeonly" in line)
    assert re.search(r"\d\.\d{3} \(-\d+\.\d%\)", row)  # J/token and its change against distserve
    lines = [x for x in r.err.splitlines() if " run " in x]
    assert len(lines) == 2 and all("J/tok" in x for x in lines)  # one line per finished run, no TTY
    res = read_results(out)
    assert {x["system"] for x in res["runs"]} == {"distserve", "placeonly"}
    assert res["runs"][0]["load"] == 0.6 and res["config"]["scenarios"][0]["seed"] == 0  # --seed over the file
    assert (out / "report.html").exists()
    r = run_cli(
        "evaluate", "--config", str(f), "--loads", "0.6", "--seed", "0", "--workers", "1", "--out", str(out),
        "--systems", "distserve", "--json", "--no-report",
    )  # fmt: skip
    assert r.code == 0, r.err
    obj = json.loads(r.out)  # exactly one JSON object on stdout
    assert obj["format"] == "biscale-results" and obj["report"] is None and obj["out"] == str(out)
    assert [x["system"] for x in obj["runs"]] == ["distserve"]
    assert obj["runs"][0]["prefill_j_per_token"] == pytest.approx(res["runs"][0]["prefill_j_per_token"])


def test_quick_and_sweep_flags_resolve(tmp_path: Path) -> None:
    from biscale.evaluate import QUICK_DURATION_S, load_scenario
    from biscale.evaluate.scenario import scenario_with

    sc = load_scenario("controlled")
    assert sc.workload.duration_s == 600.0 == QUICK_DURATION_S
    sc = scenario_with(load_scenario(), {"workload.duration_s": QUICK_DURATION_S})
    assert sc.sim_config().duration_s == QUICK_DURATION_S
