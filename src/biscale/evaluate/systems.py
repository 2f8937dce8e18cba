"""The systems an evaluation compares: a tier-1 planner plus a clock controller per phase.

Every system runs on identical requests (the same trace, rescaled and with lengths drawn by the same seed), on the
same simulated cluster and hardware model (the truth), and believes the same learned predictors (VoltanaLLM its own
EcoPred tables, fitted on the same profile). The planners share one capacity table, built on the scenario's workload
at its own rate (the capacity search rescales it), so every difference between two systems is the difference of
their planning, control and (where a system names one) decode routing.

The systems are defined in :mod:`biscale.results.catalog` (docs/evaluate.md has the table).

``static`` runs on ``distserve-static``'s placement because its offline search needs one placement for the whole
run (a re-planned one changes every window), and the peak-sized DistServe placement is what an operator who fixes
clocks in advance would also fix; comparing it with ``distserve-static`` isolates what one static clock per phase
saves.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from biscale.cache import cached_search, code_fingerprint
from biscale.control.controllers import ClockController
from biscale.control.placement import Placement
from biscale.control.planner import Planner
from biscale.control.state import InstanceState
from biscale.costmodel import CostModel, IterationCost, PrefillShape
from biscale.evaluate.bundled import seed_static
from biscale.evaluate.capacity import slo_horizon
from biscale.evaluate.hindsight import cached_hindsight
from biscale.evaluate.planning import build_planner, submitted
from biscale.evaluate.scenario import Scenario
from biscale.plan.capacity import CapacityTable, artifact_hash, workload_fingerprint
from biscale.plan.static import StaticClock, StaticClocks, search_static_clocks
from biscale.predict.predictor import Predictor
from biscale.results.catalog import SYSTEMS
from biscale.sim.config import SimConfig
from biscale.workload.trace import Trace


class MemoTruth:
    """The truth with its prefill costs memoised on the exact batch shape, for the clairvoyant oracle.

    The oracle prices its whole projected work (16 batches x 16 clocks) before every prefill iteration, and
    consecutive decisions see mostly the same future batches; the hardware model is a pure function of
    (shape, TP, clock), so a memo returns identical numbers. Everything else is the wrapped model's."""

    #: Most memoised costs (the memo is cleared when it grows past this).
    LIMIT = 200_000

    def __init__(self, inner: CostModel) -> None:
        self._inner = inner
        self._prefill: dict[tuple[float, ...], IterationCost] = {}

    def prefill_cost(self, shape: PrefillShape, tp: int, sm_clock_mhz: int | None) -> IterationCost:
        key = (shape.num_seqs, shape.tokens_sum, shape.tokens_sq_sum, shape.attn_pairs, tp, sm_clock_mhz or 0)
        hit = self._prefill.get(key)
        if hit is None:
            if len(self._prefill) >= self.LIMIT:
                self._prefill.clear()
            hit = self._prefill[key] = self._inner.prefill_cost(shape, tp, sm_clock_mhz)
        return hit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class TimedController(ClockController):
    """A dynamic controller whose decisions are timed (wall clock, so not part of any determinism check)."""

    def __init__(self, inner: ClockController) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.decisions = 0
        self.time_ns = 0

    def decide(self, state: InstanceState) -> int | None:
        t0 = time.perf_counter_ns()
        out = self.inner.decide(state)
        self.time_ns += time.perf_counter_ns() - t0
        self.decisions += 1
        return out


@dataclass
class BuiltSystem:
    """Everything :func:`biscale.sim.simulate` needs for one system on one run, plus what the results record."""

    placement: Placement
    planner: Planner
    controllers: dict[str, ClockController]
    timed: dict[str, TimedController] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def controller_time(self) -> dict[str, float | int | None]:
        """Decisions and mean wall time per decision of the dynamic controllers, per phase and overall."""
        out: dict[str, float | int | None] = {}
        total_n = total_ns = 0
        for phase in ("prefill", "decode"):
            t = self.timed.get(phase)
            n = t.decisions if t is not None else 0
            ns = t.time_ns if t is not None else 0
            out[f"{phase}_decisions"] = n
            out[f"{phase}_controller_time_per_decision_us"] = ns / n / 1e3 if n else None
            total_n += n
            total_ns += ns
        out["decisions"] = total_n
        out["controller_time_per_decision_us"] = total_ns / total_n / 1e3 if total_n else None
        return out


def controller_options(scenario: Scenario, name: str, phase: str) -> dict[str, Any]:
    """The settings of controller ``name`` on ``phase`` instances: its table in ``controller_options``, where a
    ``prefill`` / ``decode`` sub-table holds settings for one phase only (the oracle's differ per phase)."""
    opts = dict(scenario.controller_options.get(name, {}))
    per_phase = {p: opts.pop(p) for p in ("prefill", "decode") if isinstance(opts.get(p), dict)}
    return {**opts, **per_phase.get(phase, {})}


STATIC_FORMAT = "biscale-evaluate-static"
STATIC_VERSION = 1


def static_search(
    trace: Trace,
    placement: Placement,
    predictor: Predictor,
    sim: SimConfig,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> StaticClocks:
    """The static baseline's offline search (:func:`biscale.plan.static.search_static_clocks`, ~9-16 simulations of the
    whole trace on the predictors), cached as JSON under ``<cache>/evaluate/static/`` keyed by everything it depends
    on (trace, placement, predictor artifact, simulator settings, package version, the simulator's code): a repeated
    evaluation reuses it, a changed input searches again. The default evaluation's searches ship with the package
    (:mod:`biscale.evaluate.bundled`) and seed the cache."""
    from biscale import __version__

    payload = {
        "format": STATIC_FORMAT,
        "version": STATIC_VERSION,
        "package_version": __version__,
        "code": code_fingerprint(),
        "gpu": predictor.gpu,
        "model": predictor.model,
        "artifact": artifact_hash(predictor),
        "workload": workload_fingerprint(trace),
        "placement": placement.spec(),
        "sim": sim.model_dump(mode="json"),
    }
    return cached_search(
        "evaluate/static",
        STATIC_FORMAT,
        payload,
        StaticClocks,
        lambda: search_static_clocks(trace, placement, predictor, sim),
        cache_dir=cache_dir,
        use_cache=use_cache,
        seed=seed_static,
    )


def system_sim_config(scenario: Scenario, system: str) -> SimConfig:
    """The simulator settings of ``system``'s runs: the scenario's, with the system's decode router if it names
    one (VoltanaLLM's EcoRoute)."""
    sim = scenario.sim_config()
    router = SYSTEMS.get(system).decode_router
    return sim if router is None else sim.model_copy(update={"decode_router": router})


def build_system(
    scenario: Scenario,
    system: str,
    *,
    trace: Trace,
    table: CapacityTable,
    truth: CostModel,
    predictor: Predictor,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> BuiltSystem:
    """Planner, initial placement and controllers of ``system`` for one run of ``scenario`` on ``trace``
    (``cache_dir`` / ``use_cache``: the static baseline's search cache, :func:`static_search`)."""
    from biscale.control.factory import make_controller

    spec = SYSTEMS.get(system)
    sim = system_sim_config(scenario, system)
    arrivals = submitted(trace, sim.duration_s)
    planner: Planner
    if spec.planner == "hindsight":
        from biscale.plan.planners import ClockSchedulePlanner

        found = cached_hindsight(scenario, trace, table, truth, cache_dir=cache_dir, use_cache=use_cache)
        inner, first, notes = build_planner(scenario, found.planner, table, arrivals)
        schedule = ClockSchedulePlanner(inner, {"prefill": found.prefill_mhz, "decode": found.decode_mhz}, first)
        planner, placement = schedule, schedule.clocked(first, 0)
        notes["hindsight"] = asdict(found)
    else:
        planner, placement, notes = build_planner(scenario, spec.planner, table, arrivals)
    controllers: dict[str, ClockController] = {}
    timed: dict[str, TimedController] = {}
    static_found: StaticClocks | None = None
    for phase, name in (("prefill", spec.prefill), ("decode", spec.decode)):
        ctrl: ClockController
        if name == "static":  # the registry's factory (it takes no options), with the search cached on disk
            if static_found is None:
                static_found = static_search(
                    trace, placement, predictor, slo_horizon(trace, sim), cache_dir=cache_dir, use_cache=use_cache
                )
            ctrl = StaticClock(
                static_found.prefill_mhz if phase == "prefill" else static_found.decode_mhz, static_found
            )
        else:
            ctrl = make_controller(
                name,
                phase,
                predictor=predictor,
                options=controller_options(scenario, name, phase),
                gpu=scenario.gpu,
                model=scenario.model,
                slo=sim.slo,
                trace=trace,
                truth=MemoTruth(truth) if name == "oracle" else truth,
                placement=placement,
                sim_config=sim,
            )
        if ctrl.is_static:
            controllers[phase] = ctrl
        else:
            timed[phase] = controllers[phase] = TimedController(ctrl)
        search = getattr(ctrl, "search", None)
        if search is not None:  # the static baseline: what its offline search found
            notes["static_clocks_mhz"] = {"prefill": search.prefill_mhz, "decode": search.decode_mhz}
            notes["static_meets_slo_on_predictors"] = search.meets_slo
            notes["static_search_runs"] = search.runs
    return BuiltSystem(placement, planner, controllers, timed, notes)
