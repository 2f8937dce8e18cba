"""Lower-bound speed: the certified bound (biscale.bound) on the default evaluation scenario (bundled Azure conv
trace, ShareGPT v3 lengths, 16 H100, Llama-3.3-70B, default SLOs) at the given rates, each in a fresh process-level
state (the hardware model's caches are cleared between rates). Last stdout line: one JSON object.

Target: a few seconds per load on one core (docs/evaluate.md, "Lower bound"); CPU (process) time is the steadier
figure on a shared machine. Run: ``python benchmarks/bound_speed.py [--rates 31.4,39.9]``.
"""

from __future__ import annotations

import argparse
import json
import time

from biscale.bound import cluster_lower_bound
from biscale.evaluate.scenario import load_scenario
from biscale.hardware import get_hardware
from biscale.hardware.registry import clear_caches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rates", default="31.4,39.9", help="arrival rates, req/s, comma-separated")
    args = ap.parse_args()
    sc = load_scenario()
    sim = sc.sim_config()
    runs = []
    for rate in (float(r) for r in args.rates.split(",")):
        trace = sc.workload.trace_at(rate, sc.seed)
        clear_caches()
        truth = get_hardware(sc.gpu, sc.model)
        wall, cpu = time.perf_counter(), time.process_time()
        bound = cluster_lower_bound(trace, truth, sim)
        runs.append(
            {
                "rate_rps": rate,
                "cluster_j_per_token": bound.cluster_j_per_token,
                "wall_s": time.perf_counter() - wall,
                "cpu_s": time.process_time() - cpu,
                "lp_columns": bound.lp_columns,
            }
        )
        print(f"{rate:g} req/s: {bound.cluster_j_per_token:.4f} J/token, {runs[-1]['cpu_s']:.2f} s CPU")
    print(json.dumps({"runs": runs, "max_cpu_s": max(r["cpu_s"] for r in runs)}))


if __name__ == "__main__":
    main()
