"""Tier-1 planners: re-plan the placement at every window from a :class:`ClusterObservation`.

* ``biscale``: forecast the next window's rate, solve the energy-minimising integer program over (phase, TP,
  baseline clock) (:mod:`biscale.plan.milp`);
* ``placeonly``: the same plan (the paper's tier-1-only ablation: run it with controllers that hold each
  instance's baseline clock, e.g. ``BaselineClock``);
* ``distserve``: DistServe's placement (best SLO goodput per GPU at the top clock, replicated for the same forecast
  and headroom), re-planned every window with the same forecaster, so a comparison isolates what BiScale adds;
* ``distserve-static``: DistServe's placement sized once for a given peak rate, never changed;
* ``distserve-lock``: DistServe's placement with each phase locked at the lowest tabulated clock that still covers
  the forecast with the same headroom (:func:`~biscale.plan.solve.lock_clocks`), chosen every window;
* ``clock-schedule``: another planner's placements with given clocks per window and phase (the clairvoyant
  ``hindsight-lock`` comparator's, :mod:`biscale.evaluate.hindsight`).

Optional, off by default (the paper re-plans each window on its own): hysteresis (keep the current placement when
the new plan saves less than a given share of its power) and a transition cost (start-up time and energy of each
instance added, priced inside the ``biscale`` program against the window's saving; see
:class:`~biscale.plan.solve.PlanSettings`). Every decision is recorded in ``planner.decisions``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import ClassVar

from biscale.control.placement import Placement, PlanPrediction
from biscale.control.planner import Planner, PlannerContext
from biscale.control.state import ClusterObservation
from biscale.errors import InputError
from biscale.plan.capacity import CapacityTable, build_capacity_table
from biscale.plan.forecast import Forecaster, make_forecaster, window_rates
from biscale.plan.solve import Cluster, Demand, PlanSettings, assess_placement, lock_clocks, plan_outcome


@dataclass(frozen=True)
class PlanDecision:
    """One window's decision (for reports and tests)."""

    time_s: float
    observed_rps: float
    forecast_rps: float
    placement: str
    """SPEC of the placement returned."""
    feasible: bool
    """Whether the forecast can be met on this cluster (the plan's answer, whatever was returned)."""
    changed: bool
    """True when the returned placement differs from the one in force (instances, TP, clocks)."""
    kept_because: str | None
    """Why the new plan was not taken: ``hysteresis`` or ``nothing fits`` (``None``: it was)."""
    predicted_power_w: float
    """Predicted cluster power of the returned placement at the forecast, W."""


def _structure(p: Placement) -> tuple[tuple[str, int, object, object, int], ...]:
    """What the simulator acts on (predictions and node hints excluded)."""
    return tuple(sorted((g.phase, g.tp, str(g.clock), g.capacity_rps, g.count) for g in p.instances))


class TablePlanner(Planner):
    """A forecaster plus a placement method over a capacity table. Subclasses fix the method and name."""

    name: ClassVar[str] = "biscale"
    method: ClassVar[str] = "biscale"

    def __init__(
        self,
        table: CapacityTable,
        cluster: Cluster,
        settings: PlanSettings | None = None,
        *,
        forecaster: str | Forecaster = "previous",
    ) -> None:
        self.table = table
        self.cluster = cluster
        self.settings = settings or PlanSettings()
        self.forecaster = make_forecaster(forecaster)
        self.decisions: list[PlanDecision] = []

    def plan_for(
        self, rate_rps: float, mean_input_tokens: float | None = None, mean_output_tokens: float | None = None
    ) -> tuple[Placement | None, PlanPrediction]:
        """This planner's placement for a given rate (no forecasting, no hysteresis)."""
        demand = Demand.of(self.table, rate_rps, mean_input_tokens, mean_output_tokens)
        placement, pred = plan_outcome(
            self.table, self.cluster, demand, self.settings, method=self.method, planner_name=self.name
        )
        return (None if placement is None else self.refine(placement, demand)), pred

    def refine(self, placement: Placement, demand: Demand) -> Placement:
        """The placement this planner returns for a planned one (a subclass may change its clocks)."""
        return placement

    def initial_placement(self, rate_rps: float) -> Placement:
        """The placement to start a run with, planned for ``rate_rps`` (e.g. the first window's expected rate)."""
        placement, pred = self.plan_for(rate_rps)
        if placement is None:
            raise InputError(f"{self.name}: {pred.reason}", field="gpus")
        return placement

    def plan(self, observation: ClusterObservation) -> Placement:
        obs = observation
        self.forecaster.observe(obs.arrival_rate_rps)
        forecast = self.forecaster.forecast(obs.arrival_rate_rps)
        assert forecast is not None
        demand = Demand.of(self.table, forecast, obs.mean_input_tokens, obs.mean_output_tokens)
        new, pred = plan_outcome(
            self.table,
            self.cluster,
            demand,
            self.settings,
            method=self.method,
            planner_name=self.name,
            current=obs.placement,
            window_s=obs.window_s,
        )
        if new is not None:
            new = self.refine(new, demand)
        chosen, kept, power = self._weigh(obs, new, pred, demand)
        self.decisions.append(
            PlanDecision(
                time_s=obs.time_s,
                observed_rps=obs.arrival_rate_rps,
                forecast_rps=forecast,
                placement=chosen.spec(),
                feasible=pred.feasible,
                changed=_structure(chosen) != _structure(obs.placement),
                kept_because=kept,
                predicted_power_w=power,
            )
        )
        return chosen

    def _weigh(
        self, obs: ClusterObservation, new: Placement | None, pred: PlanPrediction, demand: Demand
    ) -> tuple[Placement, str | None, float]:
        """The new plan, unless hysteresis says to keep the current placement."""
        current = obs.placement
        if new is None:
            return current, "nothing fits", float("nan")
        st = self.settings
        if _structure(new) == _structure(current) or st.hysteresis_pct <= 0:
            return new, None, pred.cluster_power_w
        assessed = assess_placement(self.table, self.cluster, demand, st, current, self.name)
        if assessed is None or not assessed[1]:
            return new, None, pred.cluster_power_w
        cur_pred = assessed[0]
        if cur_pred.cluster_power_w - pred.cluster_power_w < st.hysteresis_pct / 100.0 * cur_pred.cluster_power_w:
            return current, "hysteresis", cur_pred.cluster_power_w
        return new, None, pred.cluster_power_w


class BiScalePlanner(TablePlanner):
    """The energy-minimising placement with baseline clocks (tier 1 of BiScale)."""

    name = "biscale"
    method = "biscale"


class PlaceOnlyPlanner(TablePlanner):
    """BiScale's placement, meant to run with clocks held at each instance's baseline (tier 1 alone)."""

    name = "placeonly"
    method = "biscale"


class DistServePlanner(TablePlanner):
    """DistServe's placement (top clock, best goodput per GPU), re-planned every window."""

    name = "distserve"
    method = "distserve"


class DistServeStaticPlanner(TablePlanner):
    """DistServe's placement sized once for ``peak_rps`` (e.g. the run's peak window) and never changed."""

    is_static = True
    name = "distserve-static"
    method = "distserve"

    def __init__(
        self, table: CapacityTable, cluster: Cluster, settings: PlanSettings | None = None, *, peak_rps: float
    ) -> None:
        super().__init__(table, cluster, settings)
        self.peak_rps = float(peak_rps)
        self.placement = super().initial_placement(self.peak_rps)

    def initial_placement(self, rate_rps: float | None = None) -> Placement:
        """Always the placement sized for the peak (``rate_rps`` is ignored)."""
        return self.placement

    def plan(self, observation: ClusterObservation) -> Placement:
        return self.placement


class DistServeLockPlanner(TablePlanner):
    """DistServe's placement, each phase locked at the lowest clock that covers the forecast with the headroom
    (:func:`~biscale.plan.solve.lock_clocks`), re-planned every window: per-window locked clocks chosen online from
    the forecast and the capacity table, with no per-iteration control."""

    name = "distserve-lock"
    method = "distserve"

    def refine(self, placement: Placement, demand: Demand) -> Placement:
        return lock_clocks(self.table, self.cluster, demand, self.settings, placement)


class ClockSchedulePlanner(Planner):
    """``inner``'s placements with every instance of a phase at ``clocks[phase][window]`` (MHz; a window beyond
    the schedule keeps the last entry). ``inner`` sees the placements it chose itself (its own clocks), so its
    decisions are those of a run of ``inner`` alone: only the clocks differ."""

    def __init__(self, inner: TablePlanner, clocks: dict[str, list[int]], first: Placement) -> None:
        self.inner = inner
        self.name = f"{inner.name}+clock-schedule"  # type: ignore[misc]
        self.clocks = clocks
        self._current = first
        self.decisions = inner.decisions

    def clocked(self, placement: Placement, window: int) -> Placement:
        """``placement`` with the schedule's clocks of ``window``."""
        groups = []
        for g in placement.instances:
            sched = self.clocks[g.phase]
            groups.append(g.model_copy(update={"clock": int(sched[min(window, len(sched) - 1)])}))
        return placement.model_copy(update={"instances": tuple(groups)})

    def plan(self, observation: ClusterObservation) -> Placement:
        obs = dataclasses.replace(observation, placement=self._current)
        self._current = self.inner.plan(obs)
        window = round(observation.time_s / observation.window_s) if observation.window_s > 0 else 0
        return self.clocked(self._current, window)


PLANNER_CLASSES: dict[str, type[TablePlanner]] = {
    "biscale": BiScalePlanner,
    "placeonly": PlaceOnlyPlanner,
    "distserve": DistServePlanner,
    "distserve-static": DistServeStaticPlanner,
    "distserve-lock": DistServeLockPlanner,
}
"""Tier-1 planners by name; :data:`biscale.control.planner.PLANNERS` reaches them through
:func:`planner_from_context`."""


def planner_from_context(ctx: PlannerContext) -> TablePlanner:
    """The :data:`~biscale.control.planner.PLANNERS` factory of every tier-1 planner.

    Builds (or loads from the cache) the capacity table of the run's workload on the learned predictors
    (``options["predictors"]``: an artifact directory; default: the bundled ones for ``ctx.gpu``/``ctx.model``).
    Options: every :class:`PlanSettings` field, ``forecaster`` (a name; default ``previous``), ``workers``
    (capacity-table processes) and, for ``distserve-static``, ``peak_rps`` (default: the busiest planner window of
    the workload, i.e. DistServe provisioned for the run's peak).
    """
    from biscale.predict import default_predictor, load_predictor

    if ctx.workload is None:
        raise InputError(f"planner '{ctx.name}' needs the run's workload to build its capacity table", field="planner")
    opts = dict(ctx.options)
    artifact = opts.pop("predictors", None)
    workers = opts.pop("workers", None)
    forecaster = opts.pop("forecaster", "previous")
    peak = opts.pop("peak_rps", None)
    names = {f.name for f in fields(PlanSettings)}
    settings = PlanSettings(**{k: opts.pop(k) for k in list(opts) if k in names})
    if opts:
        raise InputError(f"unknown option(s) {sorted(opts)} for planner '{ctx.name}'", field="planner_options")
    predictor = load_predictor(artifact) if artifact is not None else default_predictor(ctx.gpu, ctx.model)
    table = build_capacity_table(predictor, ctx.workload, ctx.slo, workers=workers)
    cluster = Cluster(ctx.nodes, ctx.gpus_per_node)
    cls = PLANNER_CLASSES[ctx.name]
    if cls is DistServeStaticPlanner:
        if peak is None:
            w = ctx.workload
            n_windows = int(w.duration_s // ctx.window_s)
            peak = float(window_rates(w, ctx.window_s).max()) if n_windows >= 2 else len(w) / max(w.duration_s, 1e-9)
        return DistServeStaticPlanner(table, cluster, settings, peak_rps=float(peak))
    return cls(table, cluster, settings, forecaster=forecaster)
