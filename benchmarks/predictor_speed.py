"""Predictor query speed: K = 8 projected prefill batches x N = 7 candidate clocks in one call (the MPC's inner loop).

Prints one JSON object (last stdout line) with ``median_us`` and ``p99_us`` per call; the bar is median <= 50 us.
Uses the bundled h100-sxm / llama-3.3-70b predictor (or ``--artifact DIR``).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from biscale.predict import default_predictor, load_predictor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--artifact", default=None, help="artifact directory (default: bundled predictor)")
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--tp", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    pred = load_predictor(args.artifact) if args.artifact else default_predictor("h100-sxm", "llama-3.3-70b")
    grid = pred.clocks_mhz("prefill", args.tp)
    clocks = tuple(int(c) for c in np.linspace(grid[len(grid) // 3], grid[-1], 7).round(-1))
    rng = np.random.default_rng(args.seed)
    k = 8
    # A pool of realistic projected-batch sets (varying per call, as in the MPC).
    pool = []
    for _ in range(64):
        n = rng.integers(1, 16, size=k).astype(np.float64)
        tokens = n * rng.uniform(50, 600, size=k)
        pairs = tokens * (tokens / n + 1) / 2
        pool.append((n, tokens, pairs))
    times = np.empty(args.calls)
    for i in range(args.calls):
        n, tokens, pairs = pool[i % len(pool)]
        t0 = time.perf_counter_ns()
        p = pred.predict_prefill(args.tp, clocks, num_seqs=n, tokens_sum=tokens, attn_pairs=pairs)
        times[i] = (time.perf_counter_ns() - t0) / 1e3
        assert p.latency_s.shape == (k, 7)
    warm = times[args.calls // 10 :]
    # Decode (K = 1 x N = 7: the slack controller's call).
    dtimes = np.empty(args.calls)
    for i in range(args.calls):
        t0 = time.perf_counter_ns()
        pred.predict_decode(args.tp, clocks, batch_size=[64.0], context_sum=[64.0 * 420])
        dtimes[i] = (time.perf_counter_ns() - t0) / 1e3
    dwarm = dtimes[args.calls // 10 :]
    result = {
        "benchmark": "predictor_speed",
        "k_batches": k,
        "n_clocks": 7,
        "calls": int(warm.size),
        "median_us": float(np.median(warm)),
        "p99_us": float(np.percentile(warm, 99)),
        "decode_k1_median_us": float(np.median(dwarm)),
        "decode_k1_p99_us": float(np.percentile(dwarm, 99)),
        "bar_median_us": 50.0,
        "meets_bar": bool(np.median(warm) <= 50.0),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
