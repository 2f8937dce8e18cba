"""The bound as ``results.json`` records it: one ``bounds[]`` entry per (scenario, load)."""

from __future__ import annotations

from typing import Any

from biscale.bound.lower import Bound, cluster_lower_bound
from biscale.costmodel import CostModel
from biscale.sim.config import SimConfig
from biscale.workload.trace import Trace


def bound_record(
    scenario: str,
    load: float | None,
    load_label: str,
    rate_rps: float,
    trace: Trace,
    cost_model: CostModel,
    sim: SimConfig,
    bound: Bound | None = None,
) -> dict[str, Any]:
    """The ``bounds[]`` entry of one (scenario, load): what the evaluation runner has for a run (its trace, the
    truth, the scenario's simulator settings) in, the bound's J/token, energy and parts out (units in the keys).
    ``bound``: an already computed bound of these inputs (else it is computed)."""
    b = bound if bound is not None else cluster_lower_bound(trace, cost_model, sim)
    return {
        "scenario": scenario,
        "load": load,
        "load_label": load_label,
        "rate_rps": rate_rps,
        "cluster_j_per_token": b.cluster_j_per_token,
        "method": b.method,
        "energy_cluster_j": b.cluster_j,
        "floor_j": b.floor_j,
        "prefill_excess_j": b.prefill_excess_j,
        "decode_excess_j": b.decode_excess_j,
        "horizon_s": b.horizon_s,
        "min_horizon_s": b.min_horizon_s,
        "idle_floor_w": b.idle_floor_w,
        "gpus": b.gpus,
        "tokens": b.tokens,
        "exempt_requests": b.exempt_requests,
        "base_cluster_j_per_token": b.base_cluster_j_per_token,
        "compute_s": b.compute_s,
    }
