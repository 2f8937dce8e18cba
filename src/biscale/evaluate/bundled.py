"""Offline planning artifacts shipped with the package, so a fresh install skips computing them: the capacity
tables of the bundled scenarios (~2 minutes each) and the static baseline's clock searches of the default
evaluation (~100 CPU-s). Both are computed on the **predictors** (what an operator profiles and plans once, offline),
never on the truth: every result of an evaluation (its runs, the capacity search, hindsight-lock's search) is
computed on the spot.

A bundled entry is used only when its key equals the key computed for the run (a hash of every input and of the
code it depends on; docs/planning.md): any change to those inputs computes it again as usual.
``python scripts/bundle_capacity_tables.py`` regenerates them; ``tests/evaluate/test_bundled.py`` fails when a
bundled scenario's table is missing or stale, or when the static searches were made by other code.
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
    return _copy_if_missing(bundled_table_path(key), entry_path("capacity", key, cache_dir))


def bundled_static_dir() -> Path:
    return Path(str(resources.files("biscale.evaluate") / "data" / "static"))


def seed_static(dst: Path) -> bool:
    """Copy the bundled static-baseline search of the cache entry ``dst`` (same file name: the key's prefix) into
    the cache when the cache lacks it; True when it did."""
    return _copy_if_missing(bundled_static_dir() / dst.name, dst)


def _copy_if_missing(src: Path, dst: Path) -> bool:
    """Copy the shipped entry ``src`` to the cache entry ``dst`` unless ``src`` is absent or ``dst`` present."""
    if not src.exists() or dst.exists():
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return True
