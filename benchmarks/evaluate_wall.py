"""Wall time of the default ``biscale evaluate`` from an empty cache (a fresh clone: ``BISCALE_CACHE_DIR`` empty, the
bundled capacity tables and static searches only), then of a cached rerun.

Runs ``biscale evaluate --json`` (the report included) in a subprocess with a temporary cache (``--quick`` for a smoke
run, ``--no-sweep`` to leave the sweep out, ``--no-report`` to leave the report out, ``--no-rerun`` to skip the cached
rerun, ``--keep DIR`` to keep the cold run's output). Prints one JSON object (last stdout
line): ``cold_wall_s`` (bar <= 180 s on the 2-core box), ``cold_cpu_s`` (CPU seconds of the command and its pool
workers: on a shared machine the wall time of an idle one is about this over the worker count),
``cold_runs_s`` / ``cold_capacity_s`` (the command's own timings), ``warm_wall_s`` / ``warm_cpu_s`` (the cached
rerun), ``runs`` and ``load_avg_at_start`` (how busy the machine was).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _children_cpu_s() -> float:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


def run_once(args: list[str], cache: str, out: Path) -> tuple[float, float, dict[str, Any]]:
    """(wall s, CPU s, the results object) of one ``biscale evaluate``."""
    env = {**os.environ, "BISCALE_CACHE_DIR": cache}
    cmd = [
        sys.executable,
        "-c",
        "from biscale.cli.main import main; main()",
        "evaluate",
        "--json",
        "--out",
        str(out),
        *args,
    ]
    t0, c0 = time.perf_counter(), _children_cpu_s()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - t0, _children_cpu_s() - c0
    if proc.returncode != 0:
        sys.exit(f"biscale evaluate failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return wall, cpu, json.loads(proc.stdout)


def cpu_by_system(runs: list[dict[str, Any]]) -> dict[str, float]:
    """CPU seconds of each system's runs (its searches included: they run inside its first run), summed over loads
    and sweep points."""
    out: dict[str, float] = {}
    seen: set[str] = set()
    for r in runs:  # a sweep point equal to the main configuration repeats its record: count it once
        if r["run_dir"] not in seen:
            seen.add(r["run_dir"])
            out[r["system"]] = out.get(r["system"], 0.0) + float(r.get("cpu_s") or 0.0)
    return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="first 10 minutes of the trace only (a smoke run)")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--no-rerun", action="store_true", help="skip the cached rerun")
    ap.add_argument("--keep", type=Path, help="keep the cold run's output directory here (results.json, run dirs)")
    args = ap.parse_args()
    extra = [*(["--quick"] if args.quick else []), *(["--no-sweep"] if args.no_sweep else [])]
    extra += ["--no-report"] if args.no_report else []
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        cold_out = args.keep if args.keep is not None else Path(out) / "cold"
        cold_wall, cold_cpu, res = run_once(extra, cache, cold_out)
        result: dict[str, Any] = {
            "cold_wall_s": cold_wall,
            "cold_cpu_s": cold_cpu,
            "cold_runs_s": res["timings"].get("runs_s"),
            "cold_capacity_s": sum(v for k, v in res["timings"].items() if k.endswith("_capacity_s")),
            "runs": len(res["runs"]),
            "cold_cpu_by_system_s": cpu_by_system(res["runs"]),
            "quick": args.quick,
            "sweep": not args.no_sweep,
            "report": not args.no_report,
            "load_avg_at_start": load0,
            "cpus": os.cpu_count(),
        }
        if not args.no_rerun:
            warm_wall, warm_cpu, _ = run_once(extra, cache, Path(out) / "warm")
            result.update(warm_wall_s=warm_wall, warm_cpu_s=warm_cpu)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
