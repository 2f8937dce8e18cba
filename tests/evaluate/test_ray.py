"""The Ray backend gives the same results as the process pool on a small grid (a local Ray instance)."""

from __future__ import annotations

from pathlib import Path

import pytest

from biscale.evaluate import load_scenario, make_backend, run_evaluation

from .conftest import tiny_toml
from .test_runner import comparable


def test_ray_and_the_pool_give_identical_results(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the 'ray' extra is not installed (pip install 'biscale[ray]'; .ci/run does)")
    sc = load_scenario(
        tiny_toml(tmp_path / "t.toml", systems=["distserve", "placeonly", "biscale"], duration=45.0),
        {"capacity.capacity_rps": None, "capacity.rel_tol": 0.15},
    )
    with make_backend("pool", workers=2) as pool:
        a = run_evaluation([sc], tmp_path / "pool", pool)
    with make_backend("ray", workers=2) as ray:
        assert ray.name == "ray" and ray.workers == 2
        b = run_evaluation([sc], tmp_path / "ray", ray)
    assert a["scenarios"][0]["capacity"]["probes"] == b["scenarios"][0]["capacity"]["probes"]
    assert a["scenarios"][0]["capacity_rps"] == b["scenarios"][0]["capacity_rps"]
    assert [comparable(r) for r in a["runs"]] == [comparable(r) for r in b["runs"]]
    for r in a["runs"]:
        assert (tmp_path / "ray" / r["run_dir"] / "requests.parquet").read_bytes() == (
            tmp_path / "pool" / r["run_dir"] / "requests.parquet"
        ).read_bytes()
