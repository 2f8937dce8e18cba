"""Build the offline planning artifacts shipped with the package (:mod:`biscale.evaluate.bundled`): the tier-1
capacity table of every bundled evaluation scenario (``src/biscale/evaluate/data/capacity/``) and the static
baseline's clock searches of the default evaluation at its loads (``src/biscale/evaluate/data/static/``, with an
``index.json`` naming the code they were made with), so a fresh install computes neither.

Run after anything that changes their keys: the predictor artifact, SLOs, capacity settings, package version, the
code in ``biscale.cache.CAPACITY_CODE`` (tables) or ``RESULT_CODE`` (static searches: sim/, hardware/, plan/,
predict/, control/, workload/, ...); ``tests/evaluate/test_bundled.py`` says when. The static searches need the
default evaluation's capacity search first (on the truth, ~1 minute); ``--tables-only`` skips them. Prints one JSON
object (per scenario: key, built or cached, seconds) as its last line."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from biscale import __version__
from biscale.cache import RESULT_CODE, code_fingerprint
from biscale.evaluate import bundled_scenarios, load_scenario, make_backend
from biscale.evaluate.bundled import bundled_static_dir, bundled_table_dir, bundled_table_path
from biscale.evaluate.runner import run_evaluation, scenario_table
from biscale.evaluate.scenario import DEFAULT_SCENARIO, scenario_with


def bundle_tables() -> dict[str, object]:
    out: dict[str, object] = {}
    dst_dir = bundled_table_dir()
    dst_dir.mkdir(parents=True, exist_ok=True)
    keep = set()
    for name in bundled_scenarios():
        sc = load_scenario(name)
        t0 = time.perf_counter()
        table = scenario_table(sc, workers=None, cache_dir=None, use_cache=True)
        path = bundled_table_path(table.key)
        keep.add(path.name)
        if not path.exists():
            table.save(path)
        out[name] = {"key": table.key[:24], "from_cache": table.from_cache, "build_s": time.perf_counter() - t0}
        print(f"{name}: {table.key[:12]} ({'cached' if table.from_cache else 'built'})", flush=True)
    for stale in dst_dir.glob("*.json"):
        if stale.name not in keep:
            stale.unlink()
    return out


def bundle_static() -> dict[str, object]:
    """The default evaluation with the static baseline alone, in a private cache whose static searches are kept."""
    t0 = time.perf_counter()
    sc = scenario_with(load_scenario(DEFAULT_SCENARIO), {"systems": ["static"]})
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        res = run_evaluation([sc], Path(tmp) / "out", make_backend("pool"), cache_dir=cache, sweep=False, bound_of=None)
        found = sorted((cache / "evaluate" / "static").glob("*.json"))
        dst = bundled_static_dir()
        if dst.exists():
            shutil.rmtree(dst)
        dst.mkdir(parents=True)
        for f in found:
            shutil.copyfile(f, dst / f.name)
    loads = [{"load_label": r["load_label"], "rate_rps": r["rate_rps"]} for r in res["runs"]]
    index = {
        "scenario": DEFAULT_SCENARIO,
        "loads": loads,
        "entries": [f.name for f in found],
        "code": code_fingerprint(RESULT_CODE),
        "package_version": __version__,
    }
    (dst / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    print(f"static: {len(found)} searches ({time.perf_counter() - t0:.0f} s)", flush=True)
    return {"entries": len(found), "s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tables-only", action="store_true", help="leave the static searches as they are")
    args = ap.parse_args()
    out = {"tables": bundle_tables(), "dir": str(bundled_table_dir())}
    if not args.tables_only:
        out["static"] = bundle_static()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
