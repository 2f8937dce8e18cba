"""A certified lower bound on a cluster's energy for serving a trace within its SLOs (docs/evaluate.md,
"Lower bound"): the idle floor of every GPU over the shortest possible run, plus the least energy above that
floor any set of iterations can spend serving the requests' tokens, from a linear program over the iterations
the engine allows (HiGHS).

Pure and deterministic: the same inputs give the same bound; no simulation runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from biscale.bound.columns import DECODE, PREFILL, ColumnBuilder, Columns, Limits
from biscale.bound.demand import Demand, demand_of, shortest_context, submitted
from biscale.costmodel import CostModel
from biscale.sim.config import SimConfig
from biscale.sim.engine import unassigned_gpu_power
from biscale.workload.trace import Trace

#: What the bound is, in one line (``bounds[].method`` in results.json).
METHOD = (
    "idle floor x GPUs x shortest horizon + LP over iterations (HiGHS): prompt tokens and attention pairs under "
    "a per-iteration TTFT cap; decode tokens, KV context and mean latency per token within TPOT; GPU-time"
)
#: Relative margin subtracted from the LP optimum for the solver's tolerances (HiGHS: 1e-7).
SOLVER_MARGIN = 1e-6


@dataclass(frozen=True)
class Bound:
    """A lower bound on the cluster energy (and J/token) of any system serving the requests within the SLOs."""

    cluster_j: float
    """No system's cluster energy on these requests is below this, J."""
    cluster_j_per_token: float
    """``cluster_j`` / (prompt + decode tokens of every request): no system's cluster J/token is below it."""
    method: str
    floor_j: float
    """Idle floor: GPUs x least idle power x the LP's horizon, J."""
    prefill_excess_j: float
    """Least energy above the floor of the prefill iterations, J."""
    decode_excess_j: float
    """Least energy above the floor of the decode iterations, J."""
    horizon_s: float
    """The LP's run length (>= ``min_horizon_s``; longer only when GPU-time forces it), s."""
    min_horizon_s: float
    idle_floor_w: float
    """Least power a GPU draws at any time: the least idle power of any clock, or the unassigned GPUs' power, W."""
    gpus: int
    tokens: int
    """Prompt + decode tokens of every request (the J/token denominator, at most)."""
    exempt_requests: int
    """Requests the SLO percentile lets miss each target (left out of the demand, most favourably)."""
    base_cluster_j_per_token: float
    """The unconstrained bound (floor over ``min_horizon_s`` + every token at the least energy per token of any
    iteration, no SLO, context or GPU-time constraint), J/token: what the LP adds is the difference."""
    lp_columns: int
    compute_s: float
    """Wall time to compute the bound, s (reported, never asserted)."""

    def gap_pct(self, cluster_j_per_token: float) -> float:
        """How far a run's cluster J/token lies above the bound, % (negative would disprove the bound)."""
        return 100.0 * (cluster_j_per_token / self.cluster_j_per_token - 1.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tp_degrees(cost_model: CostModel, gpus_per_node: int) -> list[int]:
    """TP degrees an instance can have: at most a node, at least the model's ``min_tp``, supported by the cost
    model (its KV capacity is defined)."""
    least = int(getattr(cost_model, "min_tp", 1))
    out = []
    for tp in range(max(1, least), gpus_per_node + 1):
        try:
            if cost_model.kv_capacity_tokens(tp) > 0:
                out.append(tp)
        except ValueError:
            continue
    if not out:
        raise ValueError(f"no TP degree up to {gpus_per_node} GPUs is supported by the cost model")
    return out


def idle_floor_w(cost_model: CostModel, tps: Sequence[int], unassigned_w: float) -> float:
    """Least per-GPU power at any instant: every clock's idle power (the governor's too) and the power of a GPU
    in no instance. Iterations draw at least their clock's idle power (checked: no column has negative excess)."""
    gov = cost_model.governor
    powers = [unassigned_w, gov.idle_power_w, gov.shallow_idle_power_w]
    for tp in tps:
        powers.extend(cost_model.idle_power_w(tp, c) for c in (*cost_model.supported_clocks_mhz, None))
    return float(min(powers))


def _service_s(cols: Columns, inp: np.ndarray, out: np.ndarray, budget: int) -> np.ndarray:
    """Per request, a lower bound on arrival to last token: the iteration holding its first chunk, which holds at
    least ``min(L, budget)`` tokens (the engine chunks a prompt only to fill the budget), so it lasts at least as
    long as the fastest prefill column priced at the largest size up to that (premise M); plus ``output - 1``
    times the fastest decode iteration (batch 1 at the shortest context)."""
    pre = cols.phase == PREFILL
    sizes, first = np.unique(cols.size_lo[pre], return_inverse=True)
    fastest = np.full(sizes.size, np.inf)
    np.minimum.at(fastest, first, cols.latency_s[pre])
    at = np.searchsorted(sizes, np.minimum(inp, budget), side="right") - 1
    prefill = np.where(at >= 0, fastest[np.clip(at, 0, None)], 0.0)
    one = (cols.phase == DECODE) & (cols.size_lo == 1)
    decode = float(cols.latency_s[one].min()) if one.any() else 0.0
    return prefill + (out - 1) * decode


@dataclass(frozen=True)
class _Program:
    """The LP ``min c x  s.t.  A x <= b, lower <= x`` over every column, then the horizon; rows and objective
    scaled to O(1)."""

    c: np.ndarray
    a: sparse.csc_matrix
    b: np.ndarray
    lower: np.ndarray
    usable: np.ndarray  # variables an SLO-meeting schedule may use (the horizon included)
    columns: int
    obj_scale: float


def _program(cols: Columns, demand: Demand, sim: SimConfig, gpus: int, floor_w: float) -> _Program:
    """Rows: prefill tokens and attention pairs >= demand; decode tokens and context >= demand;
    decode latency x requests charged <= TPOT x tokens credited; decode tokens credited at the priced size <= every
    request's; GPU-time of all iterations <= GPUs x horizon. Prefill columns over the TTFT budget are unusable;
    affine prefill groups are cut where their latency reaches it (resource, latency and excess interpolated: they
    are affine there)."""
    budget = sim.slo.ttft_s - sim.frontend_overhead_s
    pre = cols.phase == PREFILL
    dec = cols.phase == DECODE
    res = cols.resource.copy()
    exc = cols.excess_j.copy()
    lat = cols.latency_s.copy()
    over = pre & (lat > budget)
    j = np.where(cols.pair >= 0, cols.pair, 0)
    cut = over & (cols.pair >= 0) & (cols.latency_s[j] <= budget)
    w = np.zeros(res.size)
    w[cut] = (budget - lat[j[cut]]) / (lat[cut] - lat[j[cut]])
    res[cut] = cols.resource[j[cut]] + w[cut] * (cols.resource[cut] - cols.resource[j[cut]])
    exc[cut] = cols.excess_j[j[cut]] + w[cut] * (cols.excess_j[cut] - cols.excess_j[j[cut]])
    lat[cut] = budget
    usable = np.append(~over | cut, True)
    n = res.size
    nvar = n + 1
    horizon = nvar - 1
    rows_i: list[np.ndarray] = []
    cols_i: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    rhs: list[float] = []

    def row(entries: np.ndarray, values: np.ndarray, target: float, at_least: bool, scale: float = 0.0) -> None:
        scale = scale or max(abs(target), 1.0)
        sign = -1.0 if at_least else 1.0
        keep = values != 0.0
        rows_i.append(np.full(int(keep.sum()), len(rhs)))
        cols_i.append(entries[keep])
        vals.append(sign * values[keep] / scale)
        rhs.append(sign * target / scale)

    every = np.arange(n)
    need_p, need_d = float(demand.prompt_tokens_met), float(demand.decode_tokens_met)
    row(every, np.where(pre, cols.tokens, 0.0), need_p, True)
    row(every, np.where(pre, res, 0.0), demand.pairs_met, True)
    row(every, np.where(dec, cols.tokens, 0.0), need_d, True)
    # Each decode token meeting TPOT waits at most TPOT on average: sum(latency x requests) <= TPOT x tokens.
    row(every, np.where(dec, lat * cols.size_lo - sim.slo.tpot_s * cols.tokens, 0.0), 0.0, False, need_d)
    row(every, np.where(dec, cols.size_lo, 0.0), float(demand.decode_tokens), False)
    row(every, np.where(dec, res, 0.0), demand.context_met, True)
    gpu_scale = max(demand.min_horizon_s, 1.0) * gpus
    row(np.append(every, horizon), np.append(cols.tp * lat, -float(gpus)), 0.0, False, gpu_scale)
    a = sparse.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows_i), np.concatenate(cols_i))), shape=(len(rhs), nvar)
    )
    obj_scale = max(floor_w * gpus * demand.min_horizon_s, 1.0)
    c = np.append(exc, floor_w * gpus) / obj_scale
    lower = np.zeros(nvar)
    lower[horizon] = demand.min_horizon_s
    return _Program(c, a, np.asarray(rhs), lower, usable, n, obj_scale)


@dataclass(frozen=True)
class _Solution:
    value_j: float
    x: np.ndarray  # per column (the horizon excluded)
    horizon_s: float


#: Columns added to the restricted program per pricing round, at most.
_ADD_PER_ROUND = 64
#: Least total artificial slack (in units of the rows' scaled demands) that makes the program infeasible, above
#: the solver's feasibility tolerance (1e-7).
_INFEASIBLE = 1e-6


def _generate(prog: _Program, cost: np.ndarray, chosen: np.ndarray, artificial: bool) -> tuple[np.ndarray, Any]:
    """Column generation with objective ``cost``: solve on the restricted set ``chosen`` (with an artificial slack
    per row, of cost 1, when ``artificial``), price every usable column with the duals, add the most negative
    reduced costs, until none is left (the restricted optimum is then the full one)."""
    rows = prog.b.size
    candidates = np.flatnonzero(prog.usable)
    a_t = prog.a[:, candidates].T.tocsr()
    in_set = np.zeros(prog.c.size, dtype=bool)
    in_set[chosen] = True
    while True:
        a_s = prog.a[:, chosen]
        cs = cost[chosen]
        bounds = [(float(prog.lower[i]), None) for i in chosen]
        if artificial:
            a_s = sparse.hstack([a_s, -sparse.identity(rows, format="csc")], format="csc")
            cs = np.concatenate([cs, np.ones(rows)])
            bounds += [(0.0, None)] * rows
        out = linprog(cs, A_ub=a_s, b_ub=prog.b, bounds=bounds, method="highs")
        if out.status != 0:
            raise RuntimeError(f"lower-bound LP failed: {out.message}")
        y = np.asarray(out.ineqlin.marginals)  # <= 0: the objective's change per unit of each row's bound
        reduced = cost[candidates] - a_t @ y
        fresh = (reduced < -1e-9) & ~in_set[candidates]
        if not fresh.any():
            return chosen, out
        idx = np.flatnonzero(fresh)
        add = candidates[idx[np.argsort(reduced[idx])[:_ADD_PER_ROUND]]]
        in_set[add] = True
        chosen = np.sort(np.concatenate([chosen, add]))


def _solve(prog: _Program, start: np.ndarray) -> _Solution | None:
    """The LP in two phases of column generation (:func:`_generate`): first the least artificial slack (none
    left: feasible; else None, no schedule meets the SLOs), then the least cost from the feasible set found."""
    n = prog.columns
    nvar = prog.c.size
    chosen = np.union1d(np.intersect1d(start, np.flatnonzero(prog.usable)), [nvar - 1])
    chosen, out = _generate(prog, np.zeros(nvar), chosen, artificial=True)
    if float(np.sum(out.x[chosen.size :])) > _INFEASIBLE:
        return None
    chosen, out = _generate(prog, prog.c, chosen, artificial=False)
    x_all = np.zeros(nvar)
    x_all[chosen] = out.x
    return _Solution(float(out.fun) * prog.obj_scale, x_all[:n], float(x_all[nvar - 1]))


def _cheapest(cols: Columns, per_phase: int = 32) -> np.ndarray:
    """A starting set for column generation: the columns with the least excess per token of each phase."""
    per = cols.excess_j / cols.tokens
    out = [np.flatnonzero(cols.phase == ph)[np.argsort(per[cols.phase == ph])[:per_phase]] for ph in (PREFILL, DECODE)]
    return np.concatenate(out)


def _base_per_token(cols: Columns) -> tuple[float, float]:
    """Least excess per token of any prefill / decode column (no SLO, context or GPU-time constraint), J."""
    per = cols.excess_j / cols.tokens
    pre = per[cols.phase == PREFILL]
    dec = per[cols.phase == DECODE]
    return (float(pre.min()) if pre.size else 0.0), (float(dec.min()) if dec.size else 0.0)


def cluster_lower_bound(
    trace: Trace, cost_model: CostModel, sim: SimConfig, *, tps: Sequence[int] | None = None
) -> Bound:
    """The certified lower bound for serving ``trace`` on the cluster of ``sim`` (nodes x GPUs, engine limits,
    SLOs, submission window, unassigned-GPU power) priced by ``cost_model`` (the simulator's truth).

    ``tps``: TP degrees an instance may have (default: every degree up to a node that the cost model supports).
    Raises ValueError if a premise of the bound fails on this cost model (an iteration below the idle floor), if
    no request is submitted, or if ``sim`` simulates one phase alone."""
    t0 = time.perf_counter()
    if sim.isolate_phase is not None:
        raise ValueError(f"the bound covers both phases; this configuration simulates {sim.isolate_phase} alone")
    gpus = sim.total_gpus
    tps = list(tps) if tps is not None else tp_degrees(cost_model, sim.gpus_per_node)
    floor_w = idle_floor_w(cost_model, tps, unassigned_gpu_power(sim.unassigned_gpu_power_w, cost_model))
    arrival, inp, out = submitted(trace, sim)
    if arrival.size == 0:
        raise ValueError("no request is submitted: the lower bound needs at least one")
    limits = Limits(
        idle_floor_w=floor_w,
        decode_max_batch=sim.decode_max_batch,
        prefill_token_budget=sim.prefill_token_budget,
        prefill_max_seqs=sim.prefill_max_seqs,
        min_context=shortest_context(inp, out),
        max_prompt=int(inp.max()),
    )
    builder = ColumnBuilder(cost_model, tps, limits)
    cols = builder.columns(builder.groups())
    demand = demand_of(arrival, inp, out, sim.slo.percentile, _service_s(cols, inp, out, sim.prefill_token_budget))
    if cols.excess_j.size and float(cols.excess_j.min()) < 0.0:
        raise ValueError(
            f"an iteration draws less than the idle floor of {floor_w:.1f} W per GPU: the bound's premise fails "
            "on this cost model"
        )
    base_p, base_d = _base_per_token(cols)
    base_j = (
        floor_w * gpus * demand.min_horizon_s + base_p * demand.prompt_tokens_met + base_d * demand.decode_tokens_met
    )
    prog = _program(cols, demand, sim, gpus, floor_w)
    sol = _solve(prog, _cheapest(cols))
    tokens = demand.tokens
    if sol is None:
        value = math.inf
        floor_j = pre_j = dec_j = math.inf
        horizon = math.nan
    else:
        value = sol.value_j * (1.0 - SOLVER_MARGIN)
        floor_j = floor_w * gpus * sol.horizon_s
        spent = sol.x * prog.c[: prog.columns] * prog.obj_scale
        pre_j = float(spent[cols.phase == PREFILL].sum())
        dec_j = float(spent[cols.phase == DECODE].sum())
        horizon = sol.horizon_s
    return Bound(
        cluster_j=value,
        cluster_j_per_token=value / tokens if tokens > 0 else math.nan,
        method=METHOD,
        floor_j=floor_j,
        prefill_excess_j=pre_j,
        decode_excess_j=dec_j,
        horizon_s=horizon,
        min_horizon_s=demand.min_horizon_s,
        idle_floor_w=floor_w,
        gpus=gpus,
        tokens=tokens,
        exempt_requests=demand.exempt,
        base_cluster_j_per_token=base_j / tokens if tokens > 0 else math.nan,
        lp_columns=int(cols.excess_j.size),
        compute_s=time.perf_counter() - t0,
    )
