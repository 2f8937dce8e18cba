"""Run an evaluation: capacity tables and searches, the grid of (scenario, load, system[, sweep point]) runs on a
backend, and the results (files, savings, oracle gaps).

Each run is a :class:`RunTask` of plain data executed by :func:`execute_run` wherever the backend puts it; it
returns the run's tables as Parquet bytes and its figures, and this process writes the run directory. Runs whose
resolved configurations are identical (a sweep point equal to the main configuration) run once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biscale.errors import InputError
from biscale.evaluate.backends import Backend
from biscale.evaluate.bounds import scenario_bound
from biscale.evaluate.capacity import search_capacity
from biscale.evaluate.scenario import Scenario, apply_sweep_point, load_label, rate_label
from biscale.evaluate.systems import build_system, system_sim_config
from biscale.plan.capacity import CapacityTable, build_capacity_table
from biscale.results.catalog import SYSTEMS, systems_in_order
from biscale.results.layout import RESULTS_FORMAT, RESULTS_VERSION, derive, write_run_dir
from biscale.results.record import run_record

#: ``on_event(kind, payload)``: ``stage`` (a line of text), ``probe`` (a capacity probe), ``run`` (a finished run's
#: record), ``planned`` (the number of runs).
OnEvent = Callable[[str, Any], None]

#: ``bound_of(scenario, load_label, rate_rps)`` -> a ``bounds[]`` row (``cluster_j_per_token``, ``method``, ...)
#: or None: the hook a lower-bound module plugs into (see :func:`run_evaluation`).
BoundOf = Callable[[Scenario, str, float], "dict[str, Any] | None"]


#: Rough CPU cost of a run of each system relative to ``distserve`` at the same rate (measured on the Azure trace;
#: only the order in which runs start depends on it, never a result).
RELATIVE_COST = {
    "oracle": 40.0,
    "static": 30.0,  # its offline search when the cache has none (the default evaluation's ship with the package)
    "hindsight-lock": 12.0,
    "biscale": 6.0,
    "biscale-route": 6.0,
    "voltana": 3.0,
    "voltana-route": 3.0,
    "voltana-on-biscale": 3.0,
    "placeonly": 1.5,
}


def _noop(kind: str, payload: Any) -> None:
    return None


@dataclass(frozen=True)
class RunTask:
    """One simulation of the grid, as plain data."""

    scenario: dict[str, Any]
    """The resolved scenario (at a sweep point, the swept one)."""
    system: str
    load_label: str
    load: float | None
    """Fraction of capacity (None for rate-given scenarios)."""
    rate_rps: float
    capacity_rps: float | None
    table: dict[str, Any]
    """The capacity table (``CapacityTable.to_dict``)."""
    run_dir: str
    """Relative to the evaluation's output directory."""
    cache_dir: str | None = None
    """Cache of the static baseline's search (None: the default cache directory of the worker)."""
    use_cache: bool = True

    @property
    def key(self) -> str:
        """Identity of the run's resolved configuration (duplicates run once)."""
        payload = {k: self.scenario[k] for k in self.scenario if k not in ("name", "description", "sweep")}
        payload.update(system=self.system, rate=round(self.rate_rps, 9))
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _parquet(df: Any) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def execute_run(task: RunTask) -> dict[str, Any]:
    """Simulate one run on the truth; return its record, summary, configuration and tables (Parquet bytes)."""
    from biscale import __version__
    from biscale.predict import default_predictor, load_predictor
    from biscale.sim import simulate

    t_start = time.perf_counter()
    c_start = time.process_time()
    sc = Scenario.model_validate(task.scenario)
    sim = system_sim_config(sc, task.system)
    trace = sc.workload.trace_at(task.rate_rps, sc.seed)
    truth = sc.truth()
    predictor = load_predictor(sc.predictors) if sc.predictors else default_predictor(sc.gpu, sc.model)
    table = CapacityTable.from_dict(task.table)
    built = build_system(
        sc,
        task.system,
        trace=trace,
        table=table,
        truth=truth,
        predictor=predictor,
        cache_dir=task.cache_dir,
        use_cache=task.use_cache,
    )
    setup_s = time.perf_counter() - t_start
    t_sim = time.perf_counter()
    res = simulate(trace, built.placement, truth, built.controllers, built.planner, sim)
    sim_s = time.perf_counter() - t_sim
    spec = SYSTEMS[task.system]
    identity = {
        "scenario": sc.name,
        "load": task.load,
        "load_label": task.load_label,
        "rate_rps": task.rate_rps,
        "capacity_rps": task.capacity_rps,
        "system": task.system,
        "run_dir": task.run_dir,
    }
    config = {
        "format": "biscale-run-config",
        "version": 1,
        **identity,
        "system_definition": {
            "planner": spec.planner,
            "prefill": spec.prefill,
            "decode": spec.decode,
            "decode_router": sim.decode_router,
        },
        "initial_placement": built.placement.model_dump(mode="json", exclude_none=True),
        "capacity_table_key": table.key,
        "scenario_config": task.scenario,
        "sim": sim.model_dump(mode="json"),
    }
    res.meta.update(identity)
    res.meta.update({"gpu": sc.gpu, "model": sc.model, "seed": sc.seed, "biscale_version": __version__})
    record = run_record(
        res.summary,
        res.requests,
        res.instances,
        sim.slo,
        sim.window_s,
        total_gpus=sc.gpus,
        unassigned_power_w=truth.governor.idle_power_w,
    )
    decisions = [
        {
            "time_s": d.time_s,
            "observed_rps": d.observed_rps,
            "forecast_rps": d.forecast_rps,
            "placement": d.placement,
            "feasible": d.feasible,
            "changed": d.changed,
        }
        for d in getattr(built.planner, "decisions", [])
    ]
    record.update(identity)
    record.update(built.controller_time())
    record.update(
        {
            "initial_placement": built.placement.spec(),
            "placement_changes": sum(1 for d in decisions if d["changed"]),
            "placements": decisions,
            "notes": built.notes,
            "setup_s": setup_s,
            "sim_wall_s": sim_s,
            "wall_s": time.perf_counter() - t_start,
            "cpu_s": time.process_time() - c_start,
        }
    )
    return {
        "record": record,
        "summary": {**res.summary, "meta": res.meta},
        "config": config,
        "files": {
            "requests.parquet": _parquet(res.requests),
            "timeline.parquet": _parquet(res.timeline),
            "instances.parquet": _parquet(res.instances),
        },
    }


# ------------------------------------------------------------------------------------------------ preparation
def base_workload(scenario: Scenario) -> Any:
    """The workload the scenario's capacity table is built on: the trace at its own rate with the scenario's
    lengths, or a Gamma process at the scenario's highest given rate (20 req/s when loads are fractions)."""
    wl = scenario.workload
    if wl.arrivals == "gamma":
        ref = max(scenario.rates_rps) if scenario.rates_rps else 20.0
        return wl.trace_at(ref, scenario.seed)
    return wl.base_trace(scenario.seed)


def scenario_table(scenario: Scenario, *, workers: int | None, cache_dir: str | Path | None, use_cache: bool) -> Any:
    """The tier-1 capacity table of the scenario (cached, see docs/planning.md)."""
    from biscale.evaluate.bundled import seed_cache
    from biscale.predict import default_predictor, load_predictor

    predictor = (
        load_predictor(scenario.predictors) if scenario.predictors else default_predictor(scenario.gpu, scenario.model)
    )
    workload = base_workload(scenario)
    if use_cache:
        seed_cache(predictor, workload, scenario.sim.slo, cache_dir)
    return build_capacity_table(
        predictor, workload, scenario.sim.slo, workers=workers, cache_dir=cache_dir, use_cache=use_cache
    )


def check_hardware(scenario: Scenario) -> None:
    """Refuse experimental hardware models (a saving is a difference of two modelled energies)."""
    from biscale.hardware import experimental_reason, get_hardware

    get_hardware(scenario.gpu, scenario.model)
    why = experimental_reason(scenario.gpu)
    if why:
        raise InputError(
            f"{scenario.gpu} is experimental ({why}); evaluations report savings only on calibrated GPUs", field="gpu"
        )


def grid(
    scenario: Scenario, capacity_rps: float | None, table: dict[str, Any], *, sweep: bool = True
) -> list[tuple[RunTask, dict[str, Any] | None]]:
    """The runs of one scenario: every (load, system), then every sweep point's (load, system); with the point."""
    tasks: list[tuple[RunTask, dict[str, Any] | None]] = []
    rates: dict[str, tuple[float | None, float]] = {}
    for label, frac, rate in scenario.load_points:
        r = rate if rate is not None else (frac or 0.0) * (capacity_rps or 0.0)
        load = frac if frac is not None else (rate / capacity_rps if capacity_rps and rate is not None else None)
        rates[label] = (load, r)
        for system in systems_in_order(scenario.systems):
            tasks.append(
                (
                    RunTask(
                        scenario.resolved(),
                        system,
                        label,
                        load,
                        r,
                        capacity_rps,
                        table,
                        f"runs/{scenario.name}/{label}/{system}",
                    ),
                    None,
                )
            )
    if sweep and scenario.sweep is not None:
        sw = scenario.sweep
        labels = [label for label, *_ in scenario.load_points]
        want = (
            [load_label(v) if scenario.rates_rps is None else rate_label(v) for v in sw.loads]
            if sw.loads
            else labels[:1]
        )
        missing = [w for w in want if w not in rates]
        if missing:
            raise InputError(f"sweep loads {missing} are not among the scenario's loads {labels}", field="sweep.loads")
        for point in sw.points():
            variant = apply_sweep_point(scenario, point)
            tag = "-".join(f"{k}={v}" for k, v in point.items())
            for label in want:
                load, r = rates[label]
                for system in systems_in_order([s for s in sw.systems if s in scenario.systems]):
                    tasks.append(
                        (
                            RunTask(
                                variant.resolved(),
                                system,
                                label,
                                load,
                                r,
                                capacity_rps,
                                table,
                                f"runs/{scenario.name}/sweep/{tag}/{label}/{system}",
                            ),
                            point,
                        )
                    )
    return tasks


def run_evaluation(
    scenarios: Sequence[Scenario],
    out: str | Path,
    backend: Backend,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    sweep: bool = True,
    on_event: OnEvent = _noop,
    command: str | None = None,
    bound_of: BoundOf | None = scenario_bound,
) -> dict[str, Any]:
    """Run every scenario's grid on ``backend``; write ``out`` (run directories, ``results.json``); return the
    results object (see docs/results.md). ``bound_of(scenario, load_label, rate_rps)``: a lower bound of cluster
    J/token for that (scenario, load) as a ``bounds[]`` row (``cluster_j_per_token``, ``method``), or None; each
    run then reports ``gap_to_bound_pct``; the default is the certified bound of :mod:`biscale.bound`, None leaves
    the bound out."""
    from biscale import __version__

    t0 = time.perf_counter()
    out = Path(out)
    for sc in scenarios:  # bad input fails here, before anything runs
        check_hardware(sc)
        try:
            base_workload(sc)
        except InputError as err:
            raise InputError(f"scenario {sc.name}: {err}", field="workload") from err
    scenario_infos: list[dict[str, Any]] = []
    all_tasks: list[tuple[RunTask, dict[str, Any] | None]] = []
    timings: dict[str, float] = {}
    for sc in scenarios:
        t = time.perf_counter()
        on_event("stage", f"{sc.name}: capacity table (tier 1, on the predictors)")
        table = scenario_table(sc, workers=backend.workers, cache_dir=cache_dir, use_cache=use_cache)
        timings[f"{sc.name}_table_s"] = time.perf_counter() - t
        t = time.perf_counter()
        on_event("stage", f"{sc.name}: capacity search (distserve-static, whole cluster, top clock, on the truth)")
        cap = search_capacity(
            sc, table, backend, cache_dir=cache_dir, use_cache=use_cache, on_probe=lambda r: on_event("probe", r)
        )
        timings[f"{sc.name}_capacity_s"] = time.perf_counter() - t
        table_json = table.to_dict()
        tasks = grid(sc, cap["capacity_rps"], table_json, sweep=sweep)
        for task, _ in tasks:  # the request cap of ``biscale simulate``, before any run starts
            try:
                sc.check_run_requests(task.rate_rps)
            except InputError as err:
                raise InputError(f"scenario {sc.name}: {err.reason}", field=err.field) from None
        all_tasks.extend(tasks)
        scenario_infos.append(
            {
                "name": sc.name,
                "description": sc.description,
                "workload": sc.workload.describe(),
                "capacity": cap,
                "capacity_rps": cap["capacity_rps"],
                "capacity_table": {"key": table.key, "from_cache": table.from_cache, "build_s": table.build_s},
                "loads": [
                    {"label": label, "load": task.load, "rate_rps": task.rate_rps}
                    for label, task in {t.load_label: t for t, p in tasks if p is None}.items()
                ],
                "sweep": None if sc.sweep is None or not sweep else sc.sweep.model_dump(mode="json"),
            }
        )
    cache_text = None if cache_dir is None else str(cache_dir)
    all_tasks = [
        (dataclasses.replace(task, cache_dir=cache_text, use_cache=use_cache), point) for task, point in all_tasks
    ]
    unique: dict[str, RunTask] = {}
    for task, _ in all_tasks:
        unique.setdefault(task.key, task)
    # the longest runs first, so that no long run starts last and keeps one worker busy alone
    order = sorted(unique.values(), key=lambda t: -RELATIVE_COST.get(t.system, 1.0) * t.rate_rps)
    on_event("planned", len(order))
    on_event("stage", f"{len(order)} runs on {backend.name} ({backend.workers} workers)")
    t = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict[str, Any]] = {}

    def done(i: int, output: dict[str, Any]) -> None:
        task = order[i]
        write_run_dir(out / task.run_dir, tables=output["files"], summary=output["summary"], config=output["config"])
        records[task.key] = output["record"]
        on_event("run", output["record"])

    backend.map(execute_run, order, on_done=done)
    timings["runs_s"] = time.perf_counter() - t
    runs: list[dict[str, Any]] = []
    for task, point in all_tasks:
        rec = dict(records[task.key])
        rec["sweep"] = point
        runs.append(rec)
    bounds: list[dict[str, Any]] = []
    if bound_of is not None:
        for sc, info in zip(scenarios, scenario_infos, strict=True):
            for ld in info["loads"]:
                row = bound_of(sc, ld["label"], ld["rate_rps"])
                if row is not None:
                    bounds.append({"scenario": sc.name, "load": ld["load"], "load_label": ld["label"], **row})
    timings["total_s"] = time.perf_counter() - t0
    results = {
        "format": RESULTS_FORMAT,
        "version": RESULTS_VERSION,
        "biscale_version": __version__,
        "config": {
            "command": command,
            "backend": backend.name,
            "workers": backend.workers,
            "scenarios": [sc.resolved() for sc in scenarios],
        },
        "scenarios": scenario_infos,
        "runs": runs,
        "bounds": bounds,
        "timings": timings,
    }
    results.update(derive(runs, bounds))
    return results
