"""Workload speed: loading the bundled traces and the operations the planner calls in its capacity search.

Target: the 19,366-row Azure conv trace loads in well under a second (``load_conv_s`` < 0.25 s is the
budget). Last stdout line: one JSON object. Run: ``python benchmarks/workload_speed.py [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import json

from biscale.workload import (
    gamma_trace,
    load_lengths,
    load_trace,
    rescale_rate,
    slice_window,
    trace_stats,
    with_lengths,
)
from timing import best_wall_s  # benchmarks/timing.py (scripts run with their folder on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    conv = load_trace("azure-conv")
    lengths = load_lengths("sharegpt-v3")
    result = {
        "load_conv_s": best_wall_s(lambda: load_trace("azure-conv"), args.repeat),
        "load_code_s": best_wall_s(lambda: load_trace("azure-code"), args.repeat),
        "load_sharegpt_s": best_wall_s(lambda: load_lengths("sharegpt-v3"), args.repeat),
        "rescale_conv_x0p5_s": best_wall_s(lambda: rescale_rate(conv, 0.5 * conv.mean_rate_rps), args.repeat),
        "rescale_conv_x4_s": best_wall_s(lambda: rescale_rate(conv, 4 * conv.mean_rate_rps), args.repeat),
        "with_lengths_conv_s": best_wall_s(lambda: with_lengths(conv, lengths), args.repeat),
        "slice_conv_s": best_wall_s(lambda: slice_window(conv, 600, 900), args.repeat),
        "stats_conv_s": best_wall_s(lambda: trace_stats(conv), args.repeat),
        "gamma_20rps_1h_s": best_wall_s(lambda: gamma_trace(20.0, 2.0, 3600.0, lengths), args.repeat),
        "conv_requests": len(conv),
    }
    result["load_conv_within_budget"] = result["load_conv_s"] < 0.25
    for key, value in result.items():
        print(f"{key:>26}: {value:.4f}" if isinstance(value, float) else f"{key:>26}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
