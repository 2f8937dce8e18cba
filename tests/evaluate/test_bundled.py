"""The offline artifacts shipped with the package are current: the bundled scenarios' capacity tables (their keys match
what the planner computes now) and the default evaluation's static searches (made by the code installed now), so a
fresh install computes neither; regenerate with ``python scripts/bundle_capacity_tables.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biscale import __version__
from biscale.cache import RESULT_CODE, code_fingerprint
from biscale.evaluate import bundled_scenarios, load_scenario
from biscale.evaluate.bundled import bundled_static_dir, bundled_table_dir, bundled_table_path, seed_cache, seed_static
from biscale.evaluate.runner import base_workload
from biscale.plan.capacity import CapacitySettings, CapacityTable, table_key
from biscale.predict import default_predictor


@pytest.mark.parametrize("name", sorted(bundled_scenarios()))
def test_each_bundled_scenario_has_a_current_table(name: str) -> None:
    sc = load_scenario(name)
    key = table_key(default_predictor(sc.gpu, sc.model), base_workload(sc), sc.sim.slo, CapacitySettings())
    path = bundled_table_path(key)
    assert path.exists(), f"stale or missing bundled table for {name}: run python scripts/bundle_capacity_tables.py"
    table = CapacityTable.load(path)
    assert table.key == key and len(table.configs) == 42
    assert {c.phase for c in table.configs if c.capacity_rps > 0} == {"prefill", "decode"}


def test_no_orphan_tables_are_shipped() -> None:
    keys = set()
    for name in bundled_scenarios():
        sc = load_scenario(name)
        keys.add(table_key(default_predictor(sc.gpu, sc.model), base_workload(sc), sc.sim.slo, CapacitySettings()))
    shipped = {p.name for p in bundled_table_dir().glob("*.json")}
    assert shipped == {bundled_table_path(k).name for k in keys}


def test_seeding_copies_only_into_an_empty_slot(tmp_path: Path) -> None:
    sc = load_scenario()
    pred, wl = default_predictor(), base_workload(sc)
    assert seed_cache(pred, wl, sc.sim.slo, tmp_path)
    key = table_key(pred, wl, sc.sim.slo, CapacitySettings())
    copied = tmp_path / "capacity" / f"{key[:24]}.json"
    assert json.loads(copied.read_text())["key"] == key
    assert not seed_cache(pred, wl, sc.sim.slo, tmp_path)  # already there
    other = load_scenario("azure-conv", {"sim.slo.ttft_s": 0.5})
    assert not seed_cache(pred, wl, other.sim.slo, tmp_path)  # another SLO: nothing bundled, nothing copied


def test_the_default_evaluations_static_searches_are_shipped_and_current() -> None:
    index = json.loads((bundled_static_dir() / "index.json").read_text())
    stale = "static searches made by other code: run python scripts/bundle_capacity_tables.py"
    assert index["code"] == code_fingerprint(RESULT_CODE) and index["package_version"] == __version__, stale
    sc = load_scenario()
    assert index["scenario"] == sc.name and [ld["load_label"] for ld in index["loads"]] == ["67pct", "85pct"]
    assert len(index["entries"]) == len(sc.loads)  # one search per load (the 125 W sweep point runs no static)
    for name in index["entries"]:
        entry = json.loads((bundled_static_dir() / name).read_text())
        assert entry["format"] == "biscale-evaluate-static" and name == f"{entry['key'][:24]}.json"
        assert entry["result"]["meets_slo"] in (True, False) and entry["result"]["runs"] >= 1


def test_static_seeding_copies_only_into_an_empty_slot(tmp_path: Path) -> None:
    name = json.loads((bundled_static_dir() / "index.json").read_text())["entries"][0]
    dst = tmp_path / "evaluate" / "static" / name
    assert seed_static(dst) and dst.read_bytes() == (bundled_static_dir() / name).read_bytes()
    assert not seed_static(dst)  # already there
    assert not seed_static(tmp_path / "evaluate" / "static" / f"{'0' * 24}.json")  # nothing bundled
