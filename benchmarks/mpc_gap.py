"""How far the paper's greedy MPC search is from the exact optimum, on random realistic states and along a trace.

Random: prefill states as in ``controller_overhead.py`` (ShareGPT v3 prompts, TP 2/4/8, budgets 256-8,192 tokens,
queues of 1-64 prompts, waits over 0-450 ms), K = 8, N = 7, bundled predictor. Trace: every state the MPC sees
while the simulator replays a slice of the Azure conversation trace (ShareGPT lengths) on one TP4 prefill and one
TP4 decode instance (hardware model as truth). For each state both solvers run on the same predicted table; the
gap is ``greedy energy / exact energy - 1`` over the K projected batches, reported for the states where the
search matters (``constrained``: neither all-top nor each batch's cheapest clock is the answer), with how often the
first batch's clock (the one applied) differs.

Prints one JSON object as its last stdout line (``*_gap_*_pct`` keys in percent).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from biscale.control import MaxClock, parse_placement
from biscale.control.controllers import ClockController
from biscale.control.mpc import PrefillMpc, solve_exact, solve_greedy
from biscale.control.state import InstanceState
from biscale.hardware import get_hardware
from biscale.predict import Predictor, PredictorCostModel, default_predictor
from biscale.sim import SimConfig, simulate
from biscale.workload import load_lengths, load_trace, rescale_rate, slice_window, with_lengths
from controller_overhead import prefill_state, regime


def gaps(mpc: PrefillMpc, states: list[InstanceState]) -> dict[str, float]:
    """Gap statistics of the greedy vs the exact solver over ``states``."""
    out: list[float] = []
    first_differs = 0
    regimes = {"loose": 0, "constrained": 0, "infeasible": 0}
    for s in states:
        r = regime(mpc, s)
        regimes[r] += 1
        if r != "constrained":
            continue
        clocks = mpc.clocks.get("prefill", s.tp, s.supported_clocks_mhz, s.token_budget)
        proj = mpc.project(s)
        pred = mpc.predictor.predict("prefill", s.tp, proj.raw, clocks)
        dl = proj.deadlines_s(mpc.budget_s(s))
        ex = solve_exact(pred.latency_s, pred.energy_j, dl)
        gr = solve_greedy(pred.latency_s, pred.energy_j, dl)
        out.append(100.0 * (gr.energy_j / ex.energy_j - 1.0))
        first_differs += int(gr.levels[0] != ex.levels[0])
    g = np.array(out) if out else np.zeros(1)
    n = max(len(out), 1)
    return {
        "states": len(states),
        **{f"{k}_pct": 100.0 * v / len(states) for k, v in regimes.items()},
        "constrained_states": len(out),
        "gap_nonzero_pct": 100.0 * float(np.mean(g > 1e-9)),
        "gap_mean_pct": float(g.mean()),
        "gap_p50_pct": float(np.percentile(g, 50)),
        "gap_p90_pct": float(np.percentile(g, 90)),
        "gap_p99_pct": float(np.percentile(g, 99)),
        "gap_max_pct": float(g.max()),
        "first_clock_differs_pct": 100.0 * first_differs / n,
    }


class _Recorder(ClockController):
    """The exact MPC, keeping every state it was asked about."""

    def __init__(self, predictor: Predictor) -> None:
        self.mpc = PrefillMpc(predictor)
        self.states: list[InstanceState] = []

    def decide(self, state: InstanceState) -> int | None:
        self.states.append(state)
        return self.mpc.decide(state)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--states", type=int, default=3000, help="random states")
    ap.add_argument("--rate", type=float, default=45.0, help="trace rate, req/s")
    ap.add_argument("--minutes", type=float, default=10.0, help="trace slice, minutes")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    pred = default_predictor("h100-sxm", "llama-3.3-70b")
    cm = PredictorCostModel(pred)
    table = load_lengths("sharegpt-v3")
    rng = np.random.default_rng(args.seed)
    mpc = PrefillMpc(pred)
    random_states = [
        prefill_state(
            cm,
            table,
            rng,
            tp=(2, 4, 8)[i % 3],
            token_budget=int(rng.choice((256, 512, 1024, 2048, 8192))),
            queue_len=int(rng.integers(1, 65)),
            span_s=rng.uniform(0.0, 0.45),
            instance_id=i,
        )
        for i in range(args.states)
    ]
    out: dict[str, object] = {"benchmark": "mpc_gap", "k_batches": mpc.horizon, "n_clocks": 7}
    out.update({f"random_{k}": v for k, v in gaps(mpc, random_states).items()})
    trace = rescale_rate(load_trace("azure-conv"), args.rate, seed=args.seed)
    trace = with_lengths(slice_window(trace, 0.0, 60.0 * args.minutes), table, seed=args.seed)
    rec = _Recorder(pred)
    simulate(
        trace,
        parse_placement("prefill:1xTP4,decode:1xTP4"),
        get_hardware("h100-sxm", "llama-3.3-70b"),
        {"prefill": rec, "decode": MaxClock()},
        config=SimConfig(nodes=1, gpus_per_node=8),
    )
    out["azure_rate_rps"] = args.rate
    out["azure_minutes"] = args.minutes
    out["azure_engine_shows_batch"] = any(s.batch_new_tokens.size for s in rec.states)
    out.update({f"azure_{k}": v for k, v in gaps(mpc, rec.states).items()})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
