"""The capacity tables shipped for the bundled scenarios are current (their keys match what the planner computes
now), so a fresh install skips the build; regenerate with ``python scripts/bundle_capacity_tables.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biscale.evaluate import bundled_scenarios, load_scenario
from biscale.evaluate.bundled import bundled_table_dir, bundled_table_path, seed_cache
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
