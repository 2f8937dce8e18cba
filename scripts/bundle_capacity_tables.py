"""Build the tier-1 capacity table of every bundled evaluation scenario and copy it into the package
(``src/biscale/evaluate/data/capacity/``), so a fresh install skips the build. Run after anything that changes a
table's key (predictor artifact, SLOs, capacity settings, package version, the code in ``biscale.cache.CAPACITY_CODE``:
sim/, hardware/, plan/, predict/, control/); ``tests/evaluate/test_bundled.py`` says when. Prints one JSON object
(per scenario: key, built or cached, seconds) as its last line."""

from __future__ import annotations

import json
import time

from biscale.evaluate import bundled_scenarios, load_scenario
from biscale.evaluate.bundled import bundled_table_dir, bundled_table_path
from biscale.evaluate.runner import scenario_table


def main() -> None:
    out = {}
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
    print(json.dumps({"tables": out, "dir": str(dst_dir)}))


if __name__ == "__main__":
    main()
