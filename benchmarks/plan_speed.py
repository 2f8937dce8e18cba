"""Tier-1 planning speed: build the default capacity table from an empty cache, then solve placements.

Prints one JSON object (last stdout line): ``table_build_s`` (default table: 2 phases x 3 TP x 7 clocks on the
bundled H100 / Llama-3.3-70B predictor, Azure conv arrivals with ShareGPT v3 lengths, ``--workers`` processes;
bar <= 120 s on 2 cores), ``table_cpu_s`` (CPU seconds of all processes: the wall time an idle machine would
need is about this over the worker count; ``load_avg_at_start`` shows how busy the machine was),
``table_simulations`` and ``table_configs``, ``solve_16_gpus_s`` (25 req/s on 2 x 8;
bar <= 1 s), ``solve_4096_gpus_s`` (3,000 req/s on 512 x 8; bar <= 10 s; best of ``--repeats``), and the
per-shape cache's effect on one capacity probe (``probe_exact_s`` / ``probe_cached_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

from biscale.control.state import Slo
from biscale.plan.capacity import CapacitySettings, ProbeContext, build_capacity_table, probe
from biscale.plan.solve import Cluster, Demand, plan_outcome
from biscale.predict import default_predictor
from biscale.workload import load_lengths, load_trace, slice_window, with_lengths
from timing import best_wall_s  # benchmarks/timing.py (scripts run with their folder on sys.path)


def _cpu_s() -> float:
    """CPU seconds of this process and its reaped children (the pool's workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    pred = default_predictor()
    workload = with_lengths(load_trace("azure-conv"), load_lengths("sharegpt-v3"), seed=0)
    settings = CapacitySettings()
    with tempfile.TemporaryDirectory() as cache:
        t0, c0, load0 = time.perf_counter(), _cpu_s(), os.getloadavg()[0]
        table = build_capacity_table(pred, workload, Slo(), settings, workers=args.workers, cache_dir=cache)
        build_s, build_cpu_s = time.perf_counter() - t0, _cpu_s() - c0
    solve16 = best_wall_s(lambda: plan_outcome(table, Cluster(2, 8), Demand.of(table, 25.0)), args.repeats)
    out4096 = plan_outcome(table, Cluster(512, 8), Demand.of(table, 3000.0))
    solve4096 = best_wall_s(lambda: plan_outcome(table, Cluster(512, 8), Demand.of(table, 3000.0)), args.repeats)
    # the per-shape cache on one probe (decode TP4 at 1185 MHz, 20 req/s, 300 s slice)
    base = slice_window(workload, 0.0, settings.probe_duration_s)
    exact = ProbeContext.build(pred, base, Slo(), CapacitySettings(decode_context_step_tokens=0))
    cached = ProbeContext.build(pred, base, Slo(), settings)
    probe_exact = best_wall_s(lambda: probe(exact, "decode", 4, 1185, 20.0), 1)
    probe_cached = best_wall_s(lambda: probe(cached, "decode", 4, 1185, 20.0), 1)
    result = {
        "table_build_s": round(build_s, 2),
        "table_cpu_s": round(build_cpu_s, 1),
        "load_avg_at_start": round(load0, 2),
        "table_configs": len(table.configs),
        "table_simulations": sum(c.probes for c in table.configs),
        "workers": args.workers,
        "solve_16_gpus_s": round(solve16, 4),
        "solve_4096_gpus_s": round(solve4096, 4),
        "plan_4096_feasible": out4096[1].feasible,
        "plan_4096_gpus_used": out4096[1].gpus_used,
        "probe_exact_s": round(probe_exact, 3),
        "probe_cached_s": round(probe_cached, 3),
        "meets_bars": build_s <= 120 and solve16 <= 1 and solve4096 <= 10,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
