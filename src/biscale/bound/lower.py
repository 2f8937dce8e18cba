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
from scipy.optimize import linprog

from biscale.bound.columns import DECODE, PREFILL, ColumnBuilder, Columns, Group, Limits
from biscale.bound.demand import Demand, demand_of
from biscale.costmodel import CostModel, DecodeShape
from biscale.sim.config import SimConfig
from biscale.sim.engine import unassigned_gpu_power
from biscale.workload.trace import Trace

#: What the bound is, in one line (``bounds[].method`` in results.json).
METHOD = (
    "idle floor x GPUs x shortest horizon + LP over iterations (HiGHS): prompt tokens and attention pairs under "
    "a per-iteration TTFT cap; decode tokens, KV context and mean latency per token within TPOT; GPU-time"
)
#: Refinement rounds of the brackets the optimum uses (each round is a valid bound; later ones are tighter, and slower).
MAX_ROUNDS = 0
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
    refine_rounds: int
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


def _min_decode_latency(cost_model: CostModel, tps: Sequence[int]) -> float:
    """A lower bound on any decode iteration's latency: one request reading one token of context, any TP and
    clock (latency does not fall with batch or context, premise M)."""
    shape = DecodeShape(1, 1, 1.0)
    return min(
        cost_model.decode_cost(shape, tp, c).latency_s
        for tp in tps
        for c in (*cost_model.supported_clocks_mhz, None)
    )


@dataclass(frozen=True)
class _Program:
    """The LP ``min c x  s.t.  A x <= b, 0 <= x <= upper`` over every column plus the horizon (the last
    variable, >= the shortest run); rows and objective scaled to O(1)."""

    c: np.ndarray
    a: np.ndarray
    b: np.ndarray
    usable: np.ndarray  # columns an SLO-meeting schedule may use (the horizon included)
    min_horizon_s: float
    obj_scale: float


def _program(cols: Columns, demand: Demand, sim: SimConfig, gpus: int, floor_w: float) -> _Program:
    """Rows: prefill tokens and attention pairs >= demand; decode tokens, context and context profile >= demand;
    decode latency x requests charged <= TPOT x decode tokens; GPU-time of all iterations <= GPUs x horizon.
    Prefill columns over the TTFT budget are unusable; affine prefill groups are cut where their latency reaches
    it (resource, latency and excess interpolated: they are affine there)."""
    ttft_cap = sim.slo.ttft_s - sim.frontend_overhead_s
    pre = cols.phase == PREFILL
    dec = cols.phase == DECODE
    res = cols.resource.copy()
    exc = cols.excess_j.copy()
    lat = cols.latency_s.copy()
    over = pre & (lat > ttft_cap)
    j = np.where(cols.pair >= 0, cols.pair, 0)
    cut = over & (cols.pair >= 0) & (cols.latency_s[j] <= ttft_cap)
    w = np.zeros(res.size)
    w[cut] = (ttft_cap - lat[j[cut]]) / (lat[cut] - lat[j[cut]])
    res[cut] = cols.resource[j[cut]] + w[cut] * (cols.resource[cut] - cols.resource[j[cut]])
    exc[cut] = cols.excess_j[j[cut]] + w[cut] * (cols.excess_j[cut] - cols.excess_j[j[cut]])
    lat[cut] = ttft_cap
    usable = np.append(~over | cut, True)
    n = res.size
    need_p, need_d = float(demand.prompt_tokens_met), float(demand.decode_tokens_met)
    profile = demand.context_profile_met
    a = np.zeros((6 + len(profile), n + 1))
    rhs = np.zeros(6 + len(profile))

    def row(k: int, values: np.ndarray, target: float, at_least: bool) -> None:
        scale = max(abs(target), 1.0)
        sign = -1.0 if at_least else 1.0
        a[k, :n] = sign * values / scale
        rhs[k] = sign * target / scale

    row(0, np.where(pre, cols.tokens, 0.0), need_p, True)
    row(1, np.where(pre, res, 0.0), demand.pairs_met, True)
    row(2, np.where(dec, cols.tokens, 0.0), need_d, True)
    row(3, np.where(dec, lat * cols.size_lo, 0.0), sim.slo.tpot_s * demand.decode_tokens, False)
    row(4, np.where(dec, res, 0.0), demand.context_met, True)
    scale_t = max(demand.min_horizon_s, 1.0) * gpus
    a[5, :n] = cols.tp * lat / scale_t
    a[5, n] = -gpus / scale_t
    for k, (c, m) in enumerate(profile):
        row(6 + k, np.where(dec, np.minimum(res, cols.tokens * c), 0.0), m, True)
    obj_scale = max(floor_w * gpus * demand.min_horizon_s, 1.0)
    return _Program(np.append(exc, floor_w * gpus) / obj_scale, a, rhs, usable, demand.min_horizon_s, obj_scale)


@dataclass(frozen=True)
class _Solution:
    value_j: float
    x: np.ndarray  # per column (the horizon excluded)
    horizon_s: float


#: Columns added to the restricted program per pricing round, at most.
_ADD_PER_ROUND = 64
#: Cost of an artificial unit of a row's demand (the restricted program stays feasible); far above any column's.
_ARTIFICIAL_COST = 1e6


def _solve(prog: _Program, start: np.ndarray) -> _Solution | None:
    """The LP by column generation: solve it on a restricted set of columns (from ``start``) with artificial
    slack on every row, price every usable column with the duals, add those with negative reduced cost, until
    none is left (then the restricted optimum is the full one). None: infeasible (artificial slack left)."""
    n = prog.c.size - 1
    horizon = n
    rows = prog.b.size
    candidates = np.flatnonzero(prog.usable[:n])
    chosen = np.union1d(np.intersect1d(start, candidates), [horizon])
    while True:
        cs = np.concatenate([prog.c[chosen], np.full(rows, _ARTIFICIAL_COST)])
        a_s = np.hstack([prog.a[:, chosen], -np.eye(rows)])
        bounds = [(prog.min_horizon_s, None) if i == horizon else (0.0, None) for i in chosen] + [(0.0, None)] * rows
        out = linprog(cs, A_ub=a_s, b_ub=prog.b, bounds=bounds, method="highs")
        if out.status != 0:
            raise RuntimeError(f"lower-bound LP failed: {out.message}")
        y = np.asarray(out.ineqlin.marginals)  # <= 0: the objective's change per unit of each row's bound
        reduced = prog.c[candidates] - prog.a[:, candidates].T @ y
        fresh = candidates[(reduced < -1e-9) & ~np.isin(candidates, chosen)]
        if fresh.size == 0:
            break
        order = np.argsort(prog.c[fresh] - prog.a[:, fresh].T @ y)[:_ADD_PER_ROUND]
        chosen = np.union1d(chosen, fresh[order])
    if float(np.asarray(out.x[chosen.size :]).max(initial=0.0)) > 1e-9:
        return None
    x = np.zeros(n)
    k = chosen != horizon
    x[chosen[k]] = out.x[: chosen.size][k]
    t_h = float(out.x[: chosen.size][~k][0])
    return _Solution(float(out.fun) * prog.obj_scale, x, t_h)


def _cheapest(cols: Columns, per_phase: int = 32) -> np.ndarray:
    """A starting set for column generation: the columns with the least excess per token of each phase."""
    per = cols.excess_j / cols.tokens
    out = [np.flatnonzero(cols.phase == ph)[np.argsort(per[cols.phase == ph])[:per_phase]] for ph in (PREFILL, DECODE)]
    return np.concatenate(out)


def _base_per_token(cols: Columns, demand: Demand) -> tuple[float, float]:
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
    Raises ValueError if a premise of the bound fails on this cost model (an iteration below the idle floor)."""
    t0 = time.perf_counter()
    gpus = sim.total_gpus
    tps = list(tps) if tps is not None else tp_degrees(cost_model, sim.gpus_per_node)
    floor_w = idle_floor_w(cost_model, tps, unassigned_gpu_power(sim.unassigned_gpu_power_w, cost_model))
    demand = demand_of(trace, sim, _min_decode_latency(cost_model, tps))
    limits = Limits(
        idle_floor_w=floor_w,
        decode_max_batch=sim.decode_max_batch,
        prefill_token_budget=sim.prefill_token_budget,
        prefill_max_seqs=sim.prefill_max_seqs,
        min_context=demand.min_context,
        max_prompt=demand.max_prompt,
        context_thresholds=tuple(c for c, _ in demand.context_profile_met),
    )
    builder = ColumnBuilder(cost_model, tps, limits)
    groups: list[Group] = builder.initial_groups()
    cols = builder.columns(groups)
    if cols.excess_j.size and float(cols.excess_j.min()) < 0.0:
        raise ValueError(
            f"an iteration draws less than the idle floor of {floor_w:.1f} W per GPU: the bound's premise fails "
            "on this cost model"
        )
    base_p, base_d = _base_per_token(cols, demand)
    base_j = (
        floor_w * gpus * demand.min_horizon_s + base_p * demand.prompt_tokens_met + base_d * demand.decode_tokens_met
    )
    rounds = 0
    start = _cheapest(cols)
    sol = _solve(_program(cols, demand, sim, gpus, floor_w), start)
    while sol is not None and rounds < MAX_ROUNDS:
        used = {int(g) for g in np.unique(cols.group[sol.x > 0.0])}
        if all(groups[i].hi == groups[i].lo for i in used):
            break
        kept = [groups[i] for i in sorted(used)]
        groups = builder.refine(groups, used)
        cols = builder.columns(groups)
        index = {g: i for i, g in enumerate(groups)}
        near = [index[g] for g in kept if g in index] + [index[g] for g in builder.last_refined if g in index]
        start = np.union1d(_cheapest(cols), np.flatnonzero(np.isin(cols.group, near)))
        sol = _solve(_program(cols, demand, sim, gpus, floor_w), start)
        rounds += 1
    tokens = demand.tokens
    if sol is None:
        value = math.inf
        floor_j = pre_j = dec_j = math.inf
        horizon = math.nan
    else:
        value = sol.value_j * (1.0 - SOLVER_MARGIN)
        floor_j = floor_w * gpus * sol.horizon_s
        pre_j = float(np.dot(sol.x[cols.phase == PREFILL], cols.excess_j[cols.phase == PREFILL]))
        dec_j = float(np.dot(sol.x[cols.phase == DECODE], cols.excess_j[cols.phase == DECODE]))
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
        refine_rounds=rounds,
        compute_s=time.perf_counter() - t0,
    )
