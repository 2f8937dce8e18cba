"""Capacity tables shipped with the package for the bundled scenarios, so a fresh install skips the ~2-minute
build (the planner's cache, pre-filled).

A bundled table is used only when its key equals the key the planner computes (a hash of the predictor artifact,
the SLOs, the workload, the capacity settings and the package version; docs/planning.md): any change to those
inputs rebuilds the table as usual. ``python scripts/bundle_capacity_tables.py`` regenerates them;
``tests/evaluate/test_bundled.py`` fails when a bundled scenario's table is missing or stale.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from biscale.cache import entry_path
from biscale.control.state import Slo
from biscale.plan.capacity import CapacitySettings, table_key
from biscale.predict.predictor import Predictor
from biscale.workload.trace import Trace


def bundled_table_dir() -> Path:
    return Path(str(resources.files("biscale.evaluate") / "data" / "capacity"))


def bundled_table_path(key: str) -> Path:
    """Where the bundled table of ``key`` is (whether or not it exists)."""
    return bundled_table_dir() / f"{key[:24]}.json"


def seed_cache(predictor: Predictor, workload: Trace, slo: Slo, cache_dir: str | Path | None = None) -> bool:
    """Copy the bundled table of this (predictor, workload, SLO) with default settings into the cache when the
    cache lacks it; True when it did."""
    key = table_key(predictor, workload, slo, CapacitySettings())
    src = bundled_table_path(key)
    dst = entry_path("capacity", key, cache_dir)
    if not src.exists() or dst.exists():
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return True
