"""The placement integer programs (HiGHS through :func:`scipy.optimize.milp`).

Why this formulation (docs/planning.md has the derivation):

* **Utilisation levels.** Routers spread a phase's load over its instances in proportion to their capacity, so
  every instance of a phase runs at the same utilisation u = forecast / (sum of n_c R_c). Decode power is strongly
  concave in load (an instance with any request in its batch iterates back to back), so pricing an instance at a
  linear "idle + energy per request" would understate lightly loaded instances. Instead each phase picks one level
  u_j from ``0, u_max/J, ..., u_max`` (u_max = 1 / (1 + alpha): the headroom) with a binary w_j, and integer
  n_{c,j} counts instances of configuration c when the phase runs at u_j: the capacity constraint
  sum n_{c,j} R_c u_j >= forecast makes the solver pick the smallest level at or above the true utilisation, and
  each instance is priced at the table's power at that load, P_c(u_j R_c). The objective is therefore an upper
  bound of the predicted power, within one level step.
* **KV memory.** Little's law per decode configuration: an instance at load u R_c holds on average
  u R_c x (tokens x seconds per request) of KV; levels where that exceeds its KV capacity are not allowed.
* **Nodes without per-node variables.** Node patterns are the maximal multisets of TP degrees that fit one node;
  y_p nodes use pattern p; sum y_p <= nodes and, per TP degree t, sum_p y_p count_t(p) >= instances of TP t. A
  TP group therefore never spans nodes, and the model size does not grow with the cluster (4,096 GPUs solve in
  well under a second). :func:`assign_nodes` turns counts into a deterministic node per instance.
* **Unassigned GPUs** draw ``unassigned_gpu_power_w`` each (default: deep idle under the default governor).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from biscale.plan.capacity import ConfigCapacity

#: Solver wall-time limit per integer program, seconds (the plan answers with the best solution found by then).
TIME_LIMIT_S = 20.0


def node_patterns(tps: Sequence[int], gpus_per_node: int) -> list[tuple[int, ...]]:
    """Maximal multisets (descending tuples) of TP degrees from ``tps`` whose sum fits one node.

    Maximal = no further degree of ``tps`` fits; with ``>=`` covering constraints the others are dominated."""
    sizes = sorted({t for t in tps if t <= gpus_per_node}, reverse=True)
    if not sizes:
        return []
    smallest = sizes[-1]
    out: list[tuple[int, ...]] = []

    def grow(prefix: tuple[int, ...], start: int, left: int) -> None:
        if left < smallest:  # nothing else fits: maximal
            out.append(prefix)
            return
        for i in range(start, len(sizes)):  # descending sizes from ``start``: each multiset built once
            if sizes[i] <= left:
                grow((*prefix, sizes[i]), i, left - sizes[i])

    grow((), 0, gpus_per_node)
    return sorted(set(out), reverse=True)


@dataclass(frozen=True)
class Problem:
    """One placement decision: usable configurations, the forecast, the cluster and the planner's settings."""

    configs: tuple[ConfigCapacity, ...]
    """Candidate configurations (both phases; capacity > 0, TP <= gpus_per_node)."""
    forecast_rps: float
    nodes: int
    gpus_per_node: int
    alpha: float = 0.2
    """Headroom: capacity >= (1 + alpha) x forecast in each phase."""
    unassigned_gpu_power_w: float = 0.0
    """Power of each GPU in no instance, W."""
    levels: int = 12
    """Utilisation levels per phase besides 0 (J)."""
    kv_token_s_per_request: float = 0.0
    """Decode KV held per request, tokens x seconds per second of TPOT: the instance holds
    ``rate x kv_token_s_per_request x mean TPOT`` tokens (Little's law); 0 disables the check."""
    current: tuple[tuple[tuple[str, int, int], int], ...] = ()
    """Instances in force per configuration (for the transition cost)."""
    new_instance_cost_w: tuple[tuple[tuple[str, int, int], float], ...] = ()
    """Transition cost of each instance added beyond ``current``, amortised over the window, W."""

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def u_max(self) -> float:
        return 1.0 / (1.0 + self.alpha)

    def u_levels(self) -> np.ndarray:
        return self.u_max * np.arange(self.levels + 1) / self.levels

    def max_util(self, c: ConfigCapacity) -> float:
        """Highest utilisation at which configuration c's KV memory holds its share (Little's law), <= 1."""
        if c.phase != "decode" or self.kv_token_s_per_request <= 0 or not math.isfinite(c.mean_latency_ms):
            return 1.0
        held_per_rps = self.kv_token_s_per_request * c.mean_latency_ms / 1e3
        return min(1.0, c.kv_capacity_tokens / (held_per_rps * c.capacity_rps))


@dataclass
class Solution:
    """Instance counts per configuration (key -> count) and each phase's utilisation level."""

    counts: dict[tuple[str, int, int], int]
    utilisation: dict[str, float] = field(default_factory=dict)
    objective_w: float = float("nan")
    """The program's objective (upper bound of the predicted cluster power), W."""
    gap_pct: float = 0.0
    """Relative MIP gap at termination, % (0 when proven optimal)."""


def _pattern_rows(problem: Problem, tps: list[int]) -> tuple[list[tuple[int, ...]], np.ndarray]:
    pats = node_patterns(tps, problem.gpus_per_node)
    count = np.array([[p.count(t) for p in pats] for t in tps], dtype=np.float64).reshape(len(tps), len(pats))
    return pats, count


def _run(
    c: np.ndarray,
    integrality: np.ndarray,
    lb: np.ndarray,
    ub: np.ndarray,
    rows: list[np.ndarray],
    r_lo: list[float],
    r_hi: list[float],
) -> tuple[np.ndarray, float, float] | None:
    cons = [LinearConstraint(np.vstack(rows), np.array(r_lo), np.array(r_hi))] if rows else []
    res = milp(
        c,
        integrality=integrality,
        bounds=Bounds(lb, ub),
        constraints=cons,
        options={"disp": False, "time_limit": TIME_LIMIT_S, "mip_rel_gap": 1e-7},
    )
    if res.x is None:
        return None
    gap = float(getattr(res, "mip_gap", 0.0) or 0.0)
    return np.asarray(res.x), float(res.fun), gap


def solve_energy(problem: Problem) -> Solution | None:
    """The least-power placement meeting headroom, KV and packing constraints, or ``None`` if none exists."""
    cfgs = list(problem.configs)
    phases = ("prefill", "decode")
    if any(not any(c.phase == ph for c in cfgs) for ph in phases):
        return None
    u = problem.u_levels()
    n_lv = u.size
    tps = sorted({c.tp for c in cfgs})
    pats, pcount = _pattern_rows(problem, tps)
    n_c = len(cfgs)
    # variables: n_{c,j} (c-major), w_{phase,j}, y_p, a_c (instances added beyond the current ones)
    i_w = n_c * n_lv
    i_y = i_w + 2 * n_lv
    i_a = i_y + len(pats)
    nv = i_a + n_c
    cost = np.zeros(nv)
    lb = np.zeros(nv)
    ub = np.zeros(nv)
    integ = np.ones(nv)
    integ[i_a:] = 0
    big = problem.total_gpus
    current = dict(problem.current)
    add_cost = dict(problem.new_instance_cost_w)
    for ci, c in enumerate(cfgs):
        m = big // c.tp
        limit = problem.max_util(c)
        for j in range(n_lv):
            k = ci * n_lv + j
            cost[k] = c.power_at(u[j] * c.capacity_rps) - c.tp * problem.unassigned_gpu_power_w
            ub[k] = m if u[j] <= limit + 1e-12 else 0
    ub[i_w:i_y] = 1
    ub[i_y:i_a] = problem.nodes
    ub[i_a:] = np.inf
    rows: list[np.ndarray] = []
    lo: list[float] = []
    hi: list[float] = []
    for ci, c in enumerate(cfgs):  # a_c >= n_c - current_c (a_c >= 0): priced at the transition cost
        cost[i_a + ci] = add_cost.get(c.key, 0.0)
        if cost[i_a + ci] > 0:
            r = np.zeros(nv)
            r[ci * n_lv : (ci + 1) * n_lv] = 1
            r[i_a + ci] = -1
            rows.append(r)
            lo.append(-np.inf)
            hi.append(current.get(c.key, 0))
    for pi, ph in enumerate(phases):
        mine = [ci for ci, c in enumerate(cfgs) if c.phase == ph]
        # one level per phase
        r = np.zeros(nv)
        r[i_w + pi * n_lv : i_w + (pi + 1) * n_lv] = 1
        rows.append(r)
        lo.append(1)
        hi.append(1)
        # capacity at the chosen level covers the forecast
        r = np.zeros(nv)
        for ci in mine:
            r[ci * n_lv : (ci + 1) * n_lv] = cfgs[ci].capacity_rps * u
        rows.append(r)
        lo.append(problem.forecast_rps)
        hi.append(np.inf)
        # at least one instance
        r = np.zeros(nv)
        for ci in mine:
            r[ci * n_lv : (ci + 1) * n_lv] = 1
        rows.append(r)
        lo.append(1)
        hi.append(np.inf)
        # n_{c,j} only at the chosen level: n_{c,j} - M w_j <= 0
        for ci in mine:
            m = big // cfgs[ci].tp
            for j in range(n_lv):
                r = np.zeros(nv)
                r[ci * n_lv + j] = 1
                r[i_w + pi * n_lv + j] = -m
                rows.append(r)
                lo.append(-np.inf)
                hi.append(0)
    _packing_rows(problem, cfgs, n_lv, i_y, i_a, nv, tps, pcount, rows, lo, hi)
    out = _run(cost, integ, lb, ub, rows, lo, hi)
    if out is None:
        return None
    x, fun, gap = out
    fun -= float(cost[i_a:] @ x[i_a:])  # report power only (the transition cost is not drawn every second)
    counts: dict[tuple[str, int, int], int] = {}
    util: dict[str, float] = {}
    for ci, c in enumerate(cfgs):
        n = round(float(x[ci * n_lv : (ci + 1) * n_lv].sum()))
        if n:
            counts[c.key] = n
    for pi, ph in enumerate(phases):
        util[ph] = float(u[int(np.argmax(x[i_w + pi * n_lv : i_w + (pi + 1) * n_lv]))])
    return Solution(counts, util, fun + problem.total_gpus * problem.unassigned_gpu_power_w, 100.0 * gap)


def _packing_rows(
    problem: Problem,
    cfgs: list[ConfigCapacity],
    per_cfg: int,
    i_y: int,
    i_end: int,
    nv: int,
    tps: list[int],
    pcount: np.ndarray,
    rows: list[np.ndarray],
    lo: list[float],
    hi: list[float],
) -> None:
    """sum_p y_p <= nodes; per TP degree, pattern slots >= instances (columns ``per_cfg`` per configuration)."""
    r = np.zeros(nv)
    r[i_y:i_end] = 1
    rows.append(r)
    lo.append(-np.inf)
    hi.append(problem.nodes)
    for ti, t in enumerate(tps):
        r = np.zeros(nv)
        r[i_y:i_end] = pcount[ti]
        for ci, c in enumerate(cfgs):
            if c.tp == t:
                r[ci * per_cfg : (ci + 1) * per_cfg] -= 1
        rows.append(r)
        lo.append(0)
        hi.append(np.inf)


def solve_max_capacity(problem: Problem, capacity_of: dict[tuple[str, int, int], float]) -> Solution | None:
    """The placement with the most capacity relative to the forecast (max-min over phases of capacity /
    ((1 + alpha) forecast)), at least one instance per phase; ties go to more total capacity.

    ``capacity_of`` gives each configuration's capacity (R_c, or a proxy where R_c is 0). The fallback of an
    infeasible plan."""
    cfgs = list(problem.configs)
    phases = ("prefill", "decode")
    if any(not any(c.phase == ph for c in cfgs) for ph in phases):
        return None
    tps = sorted({c.tp for c in cfgs})
    pats, pcount = _pattern_rows(problem, tps)
    n_c = len(cfgs)
    i_lam = n_c
    i_y = n_c + 1
    nv = i_y + len(pats)
    need = {ph: max((1.0 + problem.alpha) * problem.forecast_rps, 1e-9) for ph in phases}
    cost = np.zeros(nv)
    cost[i_lam] = -1.0
    for ci, c in enumerate(cfgs):  # tie-break: more capacity (scaled well below one unit of lambda)
        cost[ci] = -1e-6 * capacity_of[c.key] / need[c.phase] / max(problem.total_gpus, 1)
    lb = np.zeros(nv)
    ub = np.full(nv, float(problem.total_gpus))
    ub[i_lam] = np.inf
    ub[i_y:] = problem.nodes
    integ = np.ones(nv)
    integ[i_lam] = 0
    rows: list[np.ndarray] = []
    lo: list[float] = []
    hi: list[float] = []
    for ph in phases:
        r, q = _phase_rows(cfgs, ph, nv, [capacity_of[c.key] / need[ph] for c in cfgs])
        r[i_lam] = -1
        rows.extend([r, q])
        lo.extend([0, 1])
        hi.extend([np.inf, np.inf])
    _packing_rows(problem, cfgs, 1, i_y, nv, nv, tps, pcount, rows, lo, hi)
    out = _run(cost, integ, lb, ub, rows, lo, hi)
    if out is None:
        return None
    x = out[0]
    counts = {c.key: round(float(x[ci])) for ci, c in enumerate(cfgs) if round(float(x[ci])) > 0}
    return Solution(counts, objective_w=float("nan"))


def _phase_rows(
    cfgs: Sequence[ConfigCapacity], phase: str, nv: int, weights: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Two constraint rows over the config counts of one phase: the capacity (``weights``, one per config) and
    the instance count (the latter bounded below by 1 so both phases are served)."""
    r = np.zeros(nv)
    q = np.zeros(nv)
    for ci, c in enumerate(cfgs):
        if c.phase == phase:
            r[ci] = weights[ci]
            q[ci] = 1
    return r, q


def solve_min_nodes(problem: Problem) -> tuple[int, int] | None:
    """(nodes, GPUs in instances) of the smallest cluster (fewest nodes, then fewest GPUs) that meets the
    headroom and KV constraints, or ``None`` when no cluster size would (SLO unreachable)."""
    cfgs = [c for c in problem.configs if problem.max_util(c) >= problem.u_max - 1e-12]
    phases = ("prefill", "decode")
    if any(not any(c.phase == ph for c in cfgs) for ph in phases):
        return None
    need = (1.0 + problem.alpha) * problem.forecast_rps
    bound = 0
    for ph in phases:  # a cluster that surely suffices: the best capacity-per-GPU config, one node per instance
        best = max((c for c in cfgs if c.phase == ph), key=lambda c: c.capacity_rps / c.tp)
        bound += max(1, math.ceil(need / best.capacity_rps))
    big = Problem(
        configs=tuple(cfgs),
        forecast_rps=problem.forecast_rps,
        nodes=bound,
        gpus_per_node=problem.gpus_per_node,
        alpha=problem.alpha,
    )
    tps = sorted({c.tp for c in cfgs})
    pats, pcount = _pattern_rows(big, tps)
    n_c = len(cfgs)
    i_y = n_c
    nv = i_y + len(pats)
    cost = np.zeros(nv)
    for ci, c in enumerate(cfgs):
        cost[ci] = c.tp
    cost[i_y:] = big.total_gpus + 1.0  # a node costs more than any GPU count
    lb = np.zeros(nv)
    ub = np.full(nv, float(big.total_gpus))
    ub[i_y:] = bound
    rows: list[np.ndarray] = []
    lo: list[float] = []
    hi: list[float] = []
    for ph in phases:
        rows.extend(_phase_rows(cfgs, ph, nv, [c.capacity_rps for c in cfgs]))
        lo.extend([need, 1])
        hi.extend([np.inf, np.inf])
    _packing_rows(big, cfgs, 1, i_y, nv, nv, tps, pcount, rows, lo, hi)
    out = _run(cost, np.ones(nv), lb, ub, rows, lo, hi)
    if out is None:  # pragma: no cover - the bound above always fits
        return None
    x = out[0]
    nodes = round(float(x[i_y:].sum()))
    gpus = round(float(sum(x[ci] * c.tp for ci, c in enumerate(cfgs))))
    return nodes, gpus


def assign_nodes(tps: Sequence[int], nodes: int, gpus_per_node: int) -> list[int] | None:
    """A node for each instance (given by its TP degree, in order) so that no node is over-full, or ``None``.

    Deterministic: a pattern per node from a small covering program (fewest nodes used), nodes filled in order,
    instances placed largest TP first, in their given order within a TP degree."""
    if not tps:
        return []
    if max(tps) > gpus_per_node:
        return None
    need = Counter(tps)
    sizes = sorted(need)
    pats = node_patterns(sizes, gpus_per_node)
    nv = len(pats)
    rows = [np.array([float(p.count(t)) for p in pats]) for t in sizes]
    lo = [float(need[t]) for t in sizes]
    hi = [np.inf] * len(sizes)
    rows.append(np.ones(nv))
    lo.append(-np.inf)
    hi.append(float(nodes))
    cost = np.array([1.0 + 1e-3 * i for i in range(nv)])  # fewest nodes; ties: earlier (larger) patterns
    out = _run(cost, np.ones(nv), np.zeros(nv), np.full(nv, float(nodes)), rows, lo, hi)
    if out is None:
        return None
    y = [round(float(v)) for v in out[0]]
    slots: dict[int, list[int]] = {t: [] for t in sizes}
    node = 0
    for p, k in zip(pats, y, strict=True):
        for _ in range(k):
            for t in p:
                if t in slots:
                    slots[t].append(node)
            node += 1
    order = sorted(range(len(tps)), key=lambda i: -tps[i])
    result = [0] * len(tps)
    used = dict.fromkeys(sizes, 0)
    for i in order:
        t = tps[i]
        result[i] = slots[t][used[t]]
        used[t] += 1
    return result
