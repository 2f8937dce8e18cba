"""From a capacity table and a forecast to a :class:`~biscale.control.placement.Placement` with its prediction.

Two methods share the reporting and the infeasible path:

* ``biscale``: the energy-minimising integer program over every tabulated (phase, TP, baseline clock)
  (:func:`biscale.plan.milp.solve_energy`);
* ``distserve``: DistServe's rule: per phase the TP degree with the highest SLO-attaining goodput per GPU
  (R_c / TP) at the top clock, replicated to cover (1 + alpha) x forecast, every GPU at the top clock.

Infeasible (a phase's SLO unreachable at every tabulated configuration, or the cluster too small): the answer says
so (``feasible=False``, the reason, the GPUs and nodes a sufficient cluster would need) and carries the fallback:
the placement with the most capacity at the top clock. Never an exception, never a silent under-provisioned plan.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from biscale.control.placement import InstanceSpec, PhasePrediction, Placement, PlanPrediction
from biscale.errors import InputError
from biscale.limits import check_gpus
from biscale.plan.capacity import PHASES, CapacityTable, ConfigCapacity
from biscale.plan.milp import Problem, Solution, assign_nodes, solve_energy, solve_max_capacity, solve_min_nodes

METHODS = ("biscale", "distserve")


@dataclass(frozen=True)
class PlanSettings:
    """Planner settings (defaults and why in docs/planning.md)."""

    alpha: float = 0.2
    """Headroom: each phase's capacity >= (1 + alpha) x forecast. 0.2 covers the largest rise between consecutive
    5-minute windows of the bundled Azure conv trace (+21 %) when the forecast is the previous window."""
    unassigned_gpu_power_w: float | None = None
    """Power of a GPU in no instance, W; ``None``: the artifact's deep idle under the default governor (what the
    simulator charges by default); 0: GPUs powered off or lent out."""
    levels: int = 12
    """Utilisation levels per phase in the integer program (the objective is exact within one level step)."""
    clocks_mhz: tuple[int, ...] | None = None
    """Restrict baseline clocks to these (MHz, from the table); ``None``: every tabulated clock."""
    hysteresis_pct: float = 0.0
    """Keep the current placement when it still meets the headroom and the new plan saves less than this % of the
    current predicted cluster power (0: off, the paper's behaviour)."""
    transition_startup_s: float = 0.0
    """Transition cost: seconds each new instance spends starting (drawing idle power, serving nothing). The
    ``biscale`` program prices every instance it adds beyond the current placement at this energy spread over the
    window, so it changes the placement only where the window's saving pays for it (0: off)."""
    transition_energy_j_per_gpu: float = 0.0
    """Transition cost: extra energy per GPU of each new instance (weight loading, warm-up), J (0: off)."""

    def __post_init__(self) -> None:
        if not (self.alpha >= 0 and math.isfinite(self.alpha)):
            raise InputError(f"alpha must be >= 0, got {self.alpha}", field="alpha")
        p_un = self.unassigned_gpu_power_w
        if p_un is not None and not (p_un >= 0 and math.isfinite(p_un)):  # the program's costs must be finite
            raise InputError(
                f"unassigned GPU power must be a finite number >= 0 W, got {p_un}", field="unassigned_gpu_power_w"
            )
        if self.levels < 1:
            raise InputError("levels must be >= 1", field="levels")
        costs = (self.hysteresis_pct, self.transition_startup_s, self.transition_energy_j_per_gpu)
        if not all(c >= 0 and math.isfinite(c) for c in costs):
            raise InputError("hysteresis and transition costs must be finite numbers >= 0", field="hysteresis")


@dataclass(frozen=True)
class Cluster:
    """Nodes x GPUs per node (a TP group never spans nodes)."""

    nodes: int
    gpus_per_node: int = 8

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 1:
            raise InputError("a cluster needs >= 1 node and >= 1 GPU per node", field="gpus")

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @classmethod
    def of_gpus(cls, gpus: int, gpus_per_node: int = 8) -> Cluster:
        """``gpus`` GPUs in nodes of ``gpus_per_node`` (a single smaller node when ``gpus < gpus_per_node``)."""
        if gpus < 1 or gpus_per_node < 1:
            raise InputError(f"--gpus and --gpus-per-node must be >= 1 (got {gpus}, {gpus_per_node})", field="gpus")
        check_gpus(gpus)
        check_gpus(gpus_per_node, field="gpus-per-node")
        if gpus < gpus_per_node:
            return cls(1, gpus)
        if gpus % gpus_per_node:
            raise InputError(
                f"{gpus} GPUs do not divide into nodes of {gpus_per_node} (use a multiple of --gpus-per-node)",
                field="gpus",
            )
        return cls(gpus // gpus_per_node, gpus_per_node)


@dataclass(frozen=True)
class Demand:
    """The load to plan for: forecast rate and the mean request lengths (for KV and J/token)."""

    rate_rps: float
    mean_input_tokens: float
    mean_output_tokens: float

    @classmethod
    def of(
        cls,
        table: CapacityTable,
        rate_rps: float,
        mean_input_tokens: float | None = None,
        mean_output_tokens: float | None = None,
    ) -> Demand:
        """The forecast with mean lengths (the table's workload where not given or not finite)."""
        if not (math.isfinite(rate_rps) and rate_rps >= 0):
            raise InputError(f"forecast rate must be a number >= 0 req/s, got {rate_rps}", field="rate")

        def pick(v: float | None, default: float) -> float:
            return float(v) if v is not None and math.isfinite(v) and v > 0 else default

        return cls(
            rate_rps,
            pick(mean_input_tokens, table.mean_input_tokens),
            pick(mean_output_tokens, table.mean_output_tokens),
        )


def kv_token_s_per_request(table: CapacityTable, demand: Demand) -> float:
    """KV token-seconds one request holds per second of TPOT: E[(in + out)(out - 1)] (full reservation for the
    decode lifetime), estimated from the mean lengths and the table workload's length correlation."""
    m_in, m_out = demand.mean_input_tokens, demand.mean_output_tokens
    return float(table.workload.get("kv_shape_factor", 1.0)) * (m_in + m_out) * max(m_out - 1.0, 0.0)


def usable_configs(
    table: CapacityTable, cluster: Cluster, settings: PlanSettings, *, top_only: bool = False
) -> list[ConfigCapacity]:
    """Configurations the plan may use: capacity > 0, TP fits a node, clock allowed."""
    out = []
    for c in table.configs:
        if c.capacity_rps <= 0 or c.tp > cluster.gpus_per_node:
            continue
        if top_only and c.clock_mhz != table.top_clock_mhz:
            continue
        if settings.clocks_mhz is not None and not top_only and c.clock_mhz not in settings.clocks_mhz:
            continue
        out.append(c)
    return out


def _problem(
    table: CapacityTable,
    cluster: Cluster,
    demand: Demand,
    settings: PlanSettings,
    configs: list[ConfigCapacity],
    current: Mapping[tuple[str, int, int], int] | None = None,
    window_s: float = 300.0,
) -> Problem:
    add_cost = {
        c.key: (settings.transition_startup_s * c.idle_power_w + settings.transition_energy_j_per_gpu * c.tp) / window_s
        for c in configs
    }
    return Problem(
        current=tuple(sorted((current or {}).items())),
        new_instance_cost_w=tuple(sorted((k, v) for k, v in add_cost.items() if v > 0 and current is not None)),
        configs=tuple(configs),
        forecast_rps=demand.rate_rps,
        nodes=cluster.nodes,
        gpus_per_node=cluster.gpus_per_node,
        alpha=settings.alpha,
        unassigned_gpu_power_w=unassigned_power(table, settings),
        levels=settings.levels,
        kv_token_s_per_request=kv_token_s_per_request(table, demand),
    )


def unassigned_power(table: CapacityTable, settings: PlanSettings) -> float:
    return table.unassigned_gpu_power_w if settings.unassigned_gpu_power_w is None else settings.unassigned_gpu_power_w


def distserve_counts(problem: Problem) -> Solution | None:
    """DistServe's replication: per phase the best R_c / TP configuration, enough copies for the headroom and KV."""
    counts: dict[tuple[str, int, int], int] = {}
    for ph in PHASES:
        mine = [c for c in problem.configs if c.phase == ph]
        if not mine:
            return None
        best = max(mine, key=lambda c: (c.capacity_rps / c.tp, c.capacity_rps))
        u = min(problem.u_max, problem.max_util(best))
        if u <= 0:
            return None
        counts[best.key] = max(1, math.ceil(problem.forecast_rps / (u * best.capacity_rps) - 1e-9))
    return Solution(counts)


def plan_placement(
    table: CapacityTable,
    cluster: Cluster,
    demand: Demand,
    settings: PlanSettings | None = None,
    *,
    method: str = "biscale",
    planner_name: str | None = None,
) -> Placement | None:
    """The placement for ``demand`` (with its :class:`PlanPrediction`), the fallback if infeasible, or ``None``
    when not even one instance per phase fits the cluster (the prediction then says why: see
    :func:`plan_outcome`)."""
    return plan_outcome(table, cluster, demand, settings, method=method, planner_name=planner_name)[0]


def plan_outcome(
    table: CapacityTable,
    cluster: Cluster,
    demand: Demand,
    settings: PlanSettings | None = None,
    *,
    method: str = "biscale",
    planner_name: str | None = None,
    current: Placement | None = None,
    window_s: float = 300.0,
) -> tuple[Placement | None, PlanPrediction]:
    """(placement or ``None``, prediction). See :func:`plan_placement`. ``current`` (the placement in force) and
    ``window_s`` price the transition cost of the settings (``biscale`` method only)."""
    settings = settings or PlanSettings()
    if method not in METHODS:
        raise InputError(f"unknown planning method {method!r} (known: {', '.join(METHODS)})", field="planner")
    name = planner_name or method
    configs = usable_configs(table, cluster, settings, top_only=method == "distserve")
    have = None if current is None else placement_counts(table, current)
    problem = _problem(table, cluster, demand, settings, configs, have, window_s)
    unreachable = [ph for ph in PHASES if not any(c.phase == ph for c in configs)]
    sol: Solution | None = None
    if not unreachable:
        sol = solve_energy(problem) if method == "biscale" else distserve_counts(problem)
    nodes = None if sol is None else _assign(sol.counts, cluster)
    if sol is not None and nodes is not None:
        return _build(table, cluster, demand, settings, sol.counts, nodes, name, True, None, None, None)
    # infeasible: why, what would suffice, and the fallback
    if unreachable:
        which = " and ".join(unreachable)
        reason = (
            f"SLO unreachable: no tabulated {which} configuration meets the P99 target"
            f"{' at the top clock' if method == 'distserve' else ''} (TTFT {table.slo.ttft_s * 1e3:g} ms, "
            f"TPOT {table.slo.tpot_s * 1e3:g} ms) with TP <= {cluster.gpus_per_node}"
        )
        need = None
    else:
        need = solve_min_nodes(problem) if method == "biscale" else _distserve_need(problem, sol)
        reason = f"cluster too small: {demand.rate_rps:g} req/s with {settings.alpha:g} headroom needs " + (
            f"{need[1]} GPUs in instances on {need[0]} nodes of {cluster.gpus_per_node}"
            if need is not None
            else "more KV memory than any configuration offers"
        )
        reason += f" (have {cluster.gpus} GPUs)"
    top = usable_configs_all_capacity(table, cluster)
    proxy = {c.key: (c.capacity_rps if c.capacity_rps > 0 else c.throughput_est_rps) for c in top}
    fb = solve_max_capacity(_problem(table, cluster, demand, settings, top), proxy) if top else None
    fb_nodes = None if fb is None else _assign(fb.counts, cluster)
    if fb is None or fb_nodes is None:
        reason += "; no fallback: the cluster cannot hold one prefill and one decode instance"
        pred = _prediction(table, cluster, demand, settings, {}, name, False, reason, need, {})
        return None, pred
    reason += "; fallback: the most capacity at the top clock"
    return _build(table, cluster, demand, settings, fb.counts, fb_nodes, name, False, reason, need, proxy)


def usable_configs_all_capacity(table: CapacityTable, cluster: Cluster) -> list[ConfigCapacity]:
    """Top-clock configurations that fit a node, whatever their capacity (the fallback's candidates)."""
    return [c for c in table.configs if c.clock_mhz == table.top_clock_mhz and c.tp <= cluster.gpus_per_node]


def _distserve_need(problem: Problem, sol: Solution | None) -> tuple[int, int] | None:
    if sol is None:
        return None
    tps = [k[1] for k, n in sol.counts.items() for _ in range(n)]
    gpus = sum(tps)
    nodes = math.ceil(gpus / problem.gpus_per_node)
    while assign_nodes(tps, nodes, problem.gpus_per_node) is None:
        nodes += 1
    return nodes, gpus


def _ordered(counts: Mapping[tuple[str, int, int], int]) -> list[tuple[tuple[str, int, int], int]]:
    """Groups in placement order: prefill then decode, larger TP first, higher clock first."""
    return sorted(counts.items(), key=lambda kv: (PHASES.index(kv[0][0]), -kv[0][1], -kv[0][2]))


def _assign(counts: Mapping[tuple[str, int, int], int], cluster: Cluster) -> list[int] | None:
    tps = [key[1] for key, n in _ordered(counts) for _ in range(n)]
    return assign_nodes(tps, cluster.nodes, cluster.gpus_per_node)


def _build(
    table: CapacityTable,
    cluster: Cluster,
    demand: Demand,
    settings: PlanSettings,
    counts: Mapping[tuple[str, int, int], int],
    nodes: list[int],
    name: str,
    feasible: bool,
    reason: str | None,
    need: tuple[int, int] | None,
    proxy: Mapping[tuple[str, int, int], float] | None,
) -> tuple[Placement, PlanPrediction]:
    caps = {k: proxy[k] if proxy is not None else _cfg(table, k).capacity_rps for k in counts}
    pred = _prediction(table, cluster, demand, settings, counts, name, feasible, reason, need, caps)
    util = {ph: _util(demand.rate_rps, counts, caps, ph) for ph in PHASES}
    groups = []
    i = 0
    for key, n in _ordered(counts):
        c = _cfg(table, key)
        load = util[key[0]] * caps[key]
        groups.append(
            InstanceSpec(
                phase=key[0],  # type: ignore[arg-type]
                tp=key[1],
                count=n,
                clock=key[2],
                capacity_rps=round(caps[key], 6),
                nodes=tuple(nodes[i : i + n]),
                load_rps=load,
                power_w=c.power_at(load),
            )
        )
        i += n
    return Placement(instances=tuple(groups), prediction=pred), pred


def _cfg(table: CapacityTable, key: tuple[str, int, int]) -> ConfigCapacity:
    c = table.get(*key)
    assert c is not None
    return c


def _util(
    rate: float, counts: Mapping[tuple[str, int, int], int], caps: Mapping[tuple[str, int, int], float], phase: str
) -> float:
    cap = sum(n * caps[k] for k, n in counts.items() if k[0] == phase)
    return rate / cap if cap > 0 else 0.0


def _prediction(
    table: CapacityTable,
    cluster: Cluster,
    demand: Demand,
    settings: PlanSettings,
    counts: Mapping[tuple[str, int, int], int],
    name: str,
    feasible: bool,
    reason: str | None,
    need: tuple[int, int] | None,
    caps: Mapping[tuple[str, int, int], float],
) -> PlanPrediction:
    """Predicted power under capacity-weighted routing: every instance of a phase at utilisation
    forecast / capacity, its power interpolated in the table."""
    rate = demand.rate_rps
    phases = {}
    used = 0
    for ph in PHASES:
        mine = {k: n for k, n in counts.items() if k[0] == ph}
        cap = sum(n * caps[k] for k, n in mine.items())
        u = rate / cap if cap > 0 else 0.0
        power = sum(n * _cfg(table, k).power_at(u * caps[k]) for k, n in mine.items())
        gpus = sum(n * k[1] for k, n in mine.items())
        used += gpus
        tokens = rate * (demand.mean_input_tokens if ph == "prefill" else max(demand.mean_output_tokens - 1.0, 0.0))
        phases[ph] = PhasePrediction(
            instances=sum(mine.values()),
            gpus=gpus,
            capacity_rps=cap,
            headroom_pct=100.0 * (cap / rate - 1.0) if rate > 0 else None,
            utilisation_pct=100.0 * u,
            power_w=power,
            energy_per_token_j=power / tokens if tokens > 0 else None,
        )
    p_un = unassigned_power(table, settings) * (cluster.gpus - used)
    return PlanPrediction(
        planner=name,
        feasible=feasible,
        reason=reason,
        forecast_rps=rate,
        alpha=settings.alpha,
        gpus_total=cluster.gpus,
        gpus_used=used,
        gpus_needed=None if need is None else need[1],
        nodes_needed=None if need is None else need[0],
        prefill=phases["prefill"],
        decode=phases["decode"],
        unassigned_power_w=p_un,
        cluster_power_w=phases["prefill"].power_w + phases["decode"].power_w + p_un,
        mean_input_tokens=demand.mean_input_tokens,
        mean_output_tokens=demand.mean_output_tokens,
        table_key=table.key,
    )


def placement_counts(table: CapacityTable, placement: Placement) -> dict[tuple[str, int, int], int] | None:
    """Instance counts per tabulated configuration of ``placement`` (clock ``max`` = the top clock), or ``None``
    when a group is not in the table (another planner's or a hand-written placement)."""
    counts: dict[tuple[str, int, int], int] = {}
    for g in placement.instances:
        clock = table.top_clock_mhz if g.clock == "max" else g.clock
        if not isinstance(clock, int) or table.get(g.phase, g.tp, clock) is None:
            return None
        key = (g.phase, g.tp, clock)
        counts[key] = counts.get(key, 0) + g.count
    return counts


def assess_placement(
    table: CapacityTable,
    cluster: Cluster,
    demand: Demand,
    settings: PlanSettings,
    placement: Placement,
    name: str,
) -> tuple[PlanPrediction, bool] | None:
    """(prediction, whether it still meets the headroom and KV constraints) of an existing placement at
    ``demand``, or ``None`` when it uses configurations the table does not know."""
    counts = placement_counts(table, placement)
    if counts is None:
        return None
    caps = {k: _cfg(table, k).capacity_rps for k in counts}
    problem = _problem(table, cluster, demand, settings, [_cfg(table, k) for k in counts])
    ok = True
    for ph in PHASES:
        u = _util(demand.rate_rps, counts, caps, ph)
        cap = sum(n * caps[k] for k, n in counts.items() if k[0] == ph)
        if cap <= 0 or u > problem.u_max + 1e-9:
            ok = False
        if any(u > problem.max_util(_cfg(table, k)) + 1e-9 for k in counts if k[0] == ph):
            ok = False
    pred = _prediction(table, cluster, demand, settings, counts, name, ok, None, None, caps)
    return pred, ok
