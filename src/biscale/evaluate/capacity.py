"""The cluster's capacity on a scenario: what its loads (67 %, 85 %, ...) are fractions of.

Capacity = the highest mean request rate at which ``distserve-static`` on the **whole cluster** at the top clock
meets both P99 SLOs over the run, measured on the simulator's truth (the hardware model) on the scenario's own
trace. "The whole cluster": DistServe's placement (per phase the best goodput per GPU at the top clock, replicated)
for the highest rate whose placement still fits the cluster. The search then probes rates on that fixed placement:
each probe is one simulation of the scenario's trace rescaled to the rate (burstiness kept), top clock, no
re-planning, stopped at the horizon after which no unfinished request could still meet its SLOs (which changes
no verdict; :func:`slo_horizon`). ``probes_per_round`` rates are probed per round (in
parallel on the backend); the sequence of probes depends only on that setting, so the capacity is the same on every
backend and worker count. The search brackets
the capacity (x1.25 steps), then splits the bracket geometrically until the lowest failing rate is within
``rel_tol`` above the highest passing one; the capacity is that passing rate.

Results are cached (JSON) under ``<cache>/evaluate/capacity/`` keyed by everything that determines them, the code of
the simulator and the hardware model included (:func:`code_fingerprint`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from biscale.cache import cache_key, code_fingerprint, entry_path, load_entry, store_entry
from biscale.control.placement import Placement
from biscale.errors import InputError
from biscale.evaluate.backends import Backend
from biscale.evaluate.scenario import Scenario
from biscale.plan.capacity import CapacityTable
from biscale.plan.solve import Cluster, Demand, PlanSettings, plan_outcome
from biscale.sim.config import SimConfig
from biscale.workload.trace import Trace

CAPACITY_FORMAT = "biscale-evaluate-capacity"
CAPACITY_VERSION = 1
#: Bracketing step of the search.
STEP = 1.25
#: Most rounds before the search gives up (a non-monotone SLO boundary).
MAX_ROUNDS = 24


def whole_cluster_placement(table: CapacityTable, scenario: Scenario) -> tuple[Placement, float]:
    """DistServe's placement for the highest rate that fits the cluster, and that rate (req/s, as planned)."""
    cluster = Cluster(scenario.nodes, min(scenario.gpus, scenario.gpus_per_node))
    settings = PlanSettings(alpha=0.0)

    def plan(rate: float) -> Placement | None:
        placement, pred = plan_outcome(table, cluster, Demand.of(table, rate), settings, method="distserve")
        return placement if pred.feasible else None

    lo = 1e-3
    best = plan(lo)
    if best is None:
        raise InputError(
            f"DistServe's placement does not fit {scenario.gpus} GPUs even at {lo} req/s (SLO unreachable at the "
            "top clock on this workload, or the cluster cannot hold one instance per phase)",
            field="gpus",
        )
    hi = lo
    while (p := plan(hi * 2)) is not None:
        hi *= 2
        best = p
        if hi > 1e7:
            break
    lo, hi = hi, hi * 2
    while hi / lo - 1 > 1e-3:
        mid = math.sqrt(lo * hi)
        p = plan(mid)
        if p is None:
            hi = mid
        else:
            lo, best = mid, p
    return best, lo


@dataclass(frozen=True)
class CapacityProbe:
    """One probe: the scenario (JSON), the placement (JSON) and the rate; plain data for any backend."""

    scenario: dict[str, Any]
    placement: dict[str, Any]
    rate_rps: float


def run_probe(probe: CapacityProbe) -> dict[str, Any]:
    """Simulate the scenario's trace at ``rate_rps`` on the placement at the top clock, on the truth."""
    from biscale.control import MaxClock
    from biscale.sim import simulate

    sc = Scenario.model_validate(probe.scenario)
    trace = sc.workload.trace_at(probe.rate_rps, sc.seed)
    truth = sc.truth()
    sim = slo_horizon(trace, sc.sim_config())
    res = simulate(trace, Placement.model_validate(probe.placement), truth, MaxClock(), config=sim)
    s = res.summary
    return {
        "rate_rps": probe.rate_rps,
        "slo_met": bool(s["slo_met"]),
        "slo_attainment_pct": s["slo_attainment_pct"],
        "p99_ttft_ms": s["ttft_p99_ms"],
        "p99_tpot_ms": s["tpot_p99_ms"],
        "requests": s["requests_total"],
    }


def _candidates(lo: float | None, hi: float | None, guess: float, k: int) -> list[float]:
    if lo is None and hi is None:
        return [guess * STEP ** (i - (k - 1) / 2) for i in range(k)]
    if hi is None:
        assert lo is not None
        return [lo * STEP ** (i + 1) for i in range(k)]
    if lo is None:
        return [hi / STEP ** (i + 1) for i in range(k)]
    return [lo * (hi / lo) ** ((i + 1) / (k + 1)) for i in range(k)]


def slo_horizon(trace: Trace, sim: SimConfig) -> SimConfig:
    """``sim`` with a horizon after which no request still unfinished could meet its SLOs: request i finishes by
    ``arrival + TTFT target + TPOT target x (output - 1)`` or misses one of them, so stopping at the latest such time
    changes no pass/fail verdict of a run, only how long a hopelessly overloaded one takes to simulate (an offline
    search's probes at rates or clocks that cannot serve the load)."""
    a = np.asarray(trace.arrival_s, dtype=np.float64)
    out = np.asarray(trace.output_tokens, dtype=np.float64)
    if sim.duration_s is not None:
        keep = a < sim.duration_s
        a, out = a[keep], out[keep]
    if not a.size:
        return sim
    slo = sim.slo
    horizon = float(np.max(a + slo.ttft_s + slo.tpot_s * np.maximum(out - 1.0, 0.0))) + 1.0
    if sim.max_time_s is not None:
        horizon = min(horizon, sim.max_time_s)
    return sim.model_copy(update={"max_time_s": horizon})


def capacity_key(scenario: Scenario, placement: Placement) -> str:
    from biscale import __version__

    payload = {
        "format": CAPACITY_VERSION,
        "version": __version__,
        "code": code_fingerprint(),
        "scenario": scenario.fingerprint(),
        "placement": placement.spec(),
    }
    return cache_key(payload)


def search_capacity(
    scenario: Scenario,
    table: CapacityTable,
    backend: Backend,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    on_probe: Any = None,
) -> dict[str, Any]:
    """The scenario's capacity (req/s) with the placement, every probe and how long the search took.

    ``on_probe(result)`` is called as each probe finishes. A ``capacity.capacity_rps`` given in the scenario is
    returned as is (``searched: False``)."""
    placement, planned = whole_cluster_placement(table, scenario)
    base = {"placement": placement.spec(), "planned_capacity_rps": planned}
    spec = scenario.capacity
    if spec.capacity_rps is not None:
        return {**base, "capacity_rps": spec.capacity_rps, "searched": False, "probes": [], "search_s": 0.0}
    key = capacity_key(scenario, placement)
    path = entry_path("evaluate/capacity", key, cache_dir)
    cached = load_entry(path, key, CAPACITY_FORMAT) if use_cache else None
    if isinstance(cached, dict):
        return {**cached, "from_cache": True}
    t0 = time.perf_counter()
    lo: float | None = None
    hi: float | None = None
    probes: list[dict[str, Any]] = []
    sc_json = scenario.resolved()
    pl_json = placement.model_dump(mode="json")
    for _ in range(MAX_ROUNDS):
        if lo is not None and hi is not None and hi / lo - 1 <= spec.rel_tol:
            break
        if lo is not None and lo > 1e7:
            raise InputError("the capacity search found no rate that misses the SLOs", field="capacity")
        if hi is not None and hi < 1e-3:
            raise InputError(
                f"{scenario.name}: distserve-static misses the SLOs even at {hi:.2g} req/s on this cluster",
                field="capacity",
            )
        rates = _candidates(lo, hi, planned, spec.probes_per_round)
        tasks = [CapacityProbe(sc_json, pl_json, r) for r in rates]
        results = backend.map(run_probe, tasks, on_done=(lambda _i, r: on_probe(r)) if on_probe else None)
        probes.extend(results)
        passing = [r["rate_rps"] for r in probes if r["slo_met"]]
        lo = max(passing) if passing else None
        failing = [r["rate_rps"] for r in probes if not r["slo_met"] and (lo is None or r["rate_rps"] > lo)]
        hi = min(failing) if failing else None
    if lo is None:
        raise InputError(f"{scenario.name}: the capacity search found no rate meeting the SLOs", field="capacity")
    result = {
        **base,
        "capacity_rps": lo,
        "searched": True,
        "rel_tol": spec.rel_tol,
        "lowest_failing_rps": hi,
        "probes": probes,
        "search_s": time.perf_counter() - t0,
    }
    if use_cache:
        store_entry(path, key, CAPACITY_FORMAT, result)
    return {**result, "from_cache": False}
