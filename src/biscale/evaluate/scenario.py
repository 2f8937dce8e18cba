"""Evaluation scenarios: the workload, cluster, SLOs, loads and systems of one experiment, as a TOML file.

A scenario is a :class:`Scenario` (pydantic, frozen, unknown keys rejected). The bundled ones live in
``biscale/evaluate/scenarios/*.toml`` (``biscale evaluate --list``); users write their own and pass
``--config FILE``. Command-line flags override fields (:func:`load_scenario`). The simulator settings are a whole
:class:`~biscale.sim.config.SimConfig` under ``sim`` (the same model ``biscale simulate --config`` reads), so a
scenario is a run configuration plus what an evaluation adds: how the load is set (fractions of a searched
capacity or absolute rates), which systems run, and the sweep.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from biscale.errors import InputError
from biscale.hardware.base import HardwareModel
from biscale.limits import MAX_CLUSTER_GPUS
from biscale.results.catalog import ALL_SYSTEMS, DEFAULT_SYSTEMS
from biscale.sim.config import SimConfig
from biscale.sim.runconfig import merge_overrides, read_config_file
from biscale.workload.trace import Trace

_MODEL_CONFIG = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

#: The value of ``workload.lengths`` that keeps the trace's own prompt and output lengths.
NATIVE_LENGTHS = "native"
#: Slice simulated by ``--quick`` (smoke tests, CI), seconds.
QUICK_DURATION_S = 600.0
#: What a scenario's name (and a sweep's text value) may be: one directory name under ``--out``/runs.
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
#: Default gap CV of the Gamma arrivals of the ``controlled`` scenario (bursty: the paper's controlled experiments
#: use Gamma arrivals; a CV of 2 is four times the variance of Poisson arrivals).
DEFAULT_GAMMA_CV = 2.0


class WorkloadSpec(BaseModel):
    """Where requests come from: a trace's arrival pattern (rescaled to each load) or a Gamma process."""

    model_config = _MODEL_CONFIG

    arrivals: Literal["trace", "gamma"] = "trace"
    """``trace``: the arrival pattern of ``trace``, rescaled to each load keeping its burstiness; ``gamma``: a Gamma
    renewal process at each rate with gap CV ``cv``."""
    trace: str | None = "azure-conv"
    """Bundled trace name (``biscale trace list``) or trace file (``arrivals = "trace"``)."""
    lengths: str = "sharegpt-v3"
    """Prompt/output lengths: a length table (bundled name or file) to draw from, or ``native`` (the trace's own)."""
    cv: float = Field(default=DEFAULT_GAMMA_CV, gt=0)
    """Inter-arrival coefficient of variation of the Gamma arrivals (1 = Poisson)."""
    duration_s: float | None = Field(default=None, gt=0)
    """Trace arrivals: submit only requests arriving in the first ``duration_s`` seconds (None: the whole trace).
    Gamma arrivals: the length of the generated trace (required)."""

    @model_validator(mode="after")
    def _consistent(self) -> WorkloadSpec:
        if self.arrivals == "trace" and not self.trace:
            raise ValueError("trace arrivals need a trace (workload.trace)")
        if self.arrivals == "gamma":
            if self.duration_s is None:
                raise ValueError("gamma arrivals need workload.duration_s")
            if self.lengths == NATIVE_LENGTHS:
                raise ValueError("gamma arrivals have no native lengths: give a length table")
        return self

    # ------------------------------------------------------------------ traces
    def base_trace(self, seed: int) -> Trace:
        """The workload at its own rate (trace) or at ``reference_rate_rps`` (gamma is generated per rate, see
        :meth:`trace_at`): what the tier-1 capacity table is built on (one table serves every load)."""
        from biscale.workload import load_lengths, load_trace, with_lengths

        assert self.trace is not None
        trace = load_trace(self.trace)
        if self.lengths != NATIVE_LENGTHS:
            trace = with_lengths(trace, load_lengths(self.lengths), seed=seed)
        return trace

    def trace_at(self, rate_rps: float, seed: int) -> Trace:
        """The requests of one run at mean rate ``rate_rps``.

        Trace arrivals: the whole trace rescaled to ``rate_rps`` (burstiness kept), then the lengths drawn, in the
        order ``biscale simulate --rate R --lengths L`` uses, so a run's ``config.json`` repeats it; the first
        ``duration_s`` seconds are submitted (the simulator's ``duration_s``). Gamma: a fresh process at the rate."""
        from biscale.workload import gamma_trace, load_lengths, load_trace, rescale_rate, with_lengths

        if self.arrivals == "gamma":
            assert self.duration_s is not None
            return gamma_trace(rate_rps, self.cv, self.duration_s, self.lengths, seed=seed)
        assert self.trace is not None
        trace = rescale_rate(load_trace(self.trace), rate_rps, seed=seed)
        if self.lengths != NATIVE_LENGTHS:
            trace = with_lengths(trace, load_lengths(self.lengths), seed=seed)
        return trace

    def describe(self) -> str:
        lengths = "native lengths" if self.lengths == NATIVE_LENGTHS else f"{self.lengths} lengths"
        if self.arrivals == "gamma":
            return f"Gamma arrivals (CV {self.cv:g}), {lengths}, {self.duration_s:g} s"
        span = "" if self.duration_s is None else f", first {self.duration_s:g} s"
        return f"{self.trace} arrivals, {lengths}{span}"


class CapacitySpec(BaseModel):
    """How the cluster's capacity is found: the highest mean rate at which ``distserve-static`` on the whole cluster
    at the top clock meets both P99 SLOs on the scenario's trace, searched on the simulator's truth."""

    model_config = _MODEL_CONFIG

    capacity_rps: float | None = Field(default=None, gt=0)
    """Use this capacity, req/s, instead of searching."""
    rel_tol: float = Field(default=0.02, gt=0, lt=1)
    """The search stops when the lowest failing rate is within this fraction above the highest passing one."""
    probes_per_round: int = Field(default=2, ge=1, le=8)
    """Rates probed in parallel per round. It fixes the sequence of probes (so the result does not depend on the
    backend or the number of workers); 2 suits a 2-core machine."""


class SweepSpec(BaseModel):
    """A sensitivity sweep: ``params`` over a grid (cartesian product), each point run for ``systems`` at
    ``loads`` at the main scenario's rates; savings are plotted against the parameter."""

    model_config = _MODEL_CONFIG

    params: dict[str, tuple[float | int | str | bool, ...]]
    """Parameter -> values (``switch_latency_ms``, a field of the scenario by dotted path such as ``sim.startup_s``
    or ``planner.alpha``, or a bare ``SimConfig`` / planner field)."""
    loads: tuple[float, ...] | None = None
    """Loads (fractions of capacity, or rates for rate-given scenarios) the sweep runs at (None: the first)."""
    systems: tuple[str, ...] = ("biscale", "distserve")
    """Systems run at every point, among those the scenario runs (the savings' baseline must be among them)."""
    combine: Literal["product", "each"] = "product"
    """``product``: every combination of the parameters' values; ``each``: one parameter at a time, the others at
    the scenario's own values (a point per value)."""

    @model_validator(mode="before")
    @classmethod
    def _flat_table(cls, data: Any) -> Any:
        """``[sweep]`` in TOML lists parameters beside ``loads`` / ``systems``: move them under ``params``."""
        if isinstance(data, Mapping) and "params" not in data:
            data = dict(data)
            params = {k: data.pop(k) for k in list(data) if k not in ("loads", "systems", "combine")}
            data["params"] = params
        return data

    @field_validator("params")
    @classmethod
    def _grid(cls, v: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
        if not v:
            raise ValueError("a sweep needs at least one parameter with a list of values")
        for name, values in v.items():
            if not values:
                raise ValueError(f"sweep parameter '{name}' has no values")
        return v

    def points(self) -> list[dict[str, Any]]:
        """Every point of the grid, in a fixed order."""
        if self.combine == "each":
            return [{name: v} for name, values in self.params.items() for v in values]
        names = list(self.params)
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(self.params[n] for n in names))]


class Scenario(BaseModel):
    """One experiment: workload, cluster, SLOs, loads and systems (fields in docs/evaluate.md)."""

    model_config = _MODEL_CONFIG

    name: str
    """Short name (directory names and tables)."""
    description: str = ""
    """One line for ``biscale evaluate --list`` and the report."""
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    """Arrivals and lengths."""
    loads: tuple[float, ...] = (0.67, 0.85)
    """Loads as fractions of the searched capacity (the paper: 67 % and 85 %)."""
    rates_rps: tuple[float, ...] | None = None
    """Absolute mean rates, req/s, instead of ``loads`` (the controlled experiments: 10 to 85 req/s)."""
    systems: tuple[str, ...] = DEFAULT_SYSTEMS
    """Systems run side by side on identical requests."""
    gpus: int = Field(default=16, ge=1, le=MAX_CLUSTER_GPUS)
    """GPUs in the cluster."""
    gpus_per_node: int = Field(default=8, ge=1, le=MAX_CLUSTER_GPUS)
    """GPUs per node (a TP group never spans nodes)."""
    gpu: str = "h100-sxm"
    """GPU of the hardware model (the simulator's truth)."""
    model: str = "llama-3.3-70b"
    """LLM served."""
    idle_top_w: float | None = Field(default=None, gt=0)
    """Idle power per GPU at the top clock in the truth (the hardware model the simulator runs), W; the lowest
    clock's idle power stays (None: the fitted idle law, 181 W on the H100). The predictors the controllers
    believe do not change."""
    predictors: str | None = None
    """Learned-predictor artifact directory the planners and controllers believe (None: the bundled one)."""
    seed: int = Field(default=0, ge=0)
    """Seed of rate rescaling, length draws and synthetic arrivals."""
    sim: SimConfig = Field(default_factory=SimConfig)
    """Simulator settings (window, SLOs, switch latency, ...); the cluster shape comes from ``gpus``."""
    planner: dict[str, Any] = Field(default_factory=dict)
    """Tier-1 settings for every planner: ``forecaster`` and any ``PlanSettings`` field (docs/planning.md)."""
    controller_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Settings per controller name (``mpc``, ``slack``, ``oracle``, ``ecofreq``): constructor keyword arguments
    (docs/control.md)."""
    capacity: CapacitySpec = Field(default_factory=CapacitySpec)
    """Capacity search (or a given capacity)."""
    sweep: SweepSpec | None = None
    """Sensitivity sweep (None: none)."""

    @field_validator("loads")
    @classmethod
    def _fractions(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        from biscale.limits import MAX_LOAD_FRACTION

        for x in v:
            if not (math.isfinite(x) and x > 0):
                raise ValueError(f"loads must be fractions of capacity > 0, got {x}")
            if x > MAX_LOAD_FRACTION:  # a percentage typed for a fraction would start runs of millions of requests
                hint = f" (for {x:g} % write {x / 100:g})" if x <= 100 else ""
                raise ValueError(
                    f"loads are fractions of the searched capacity, at most {MAX_LOAD_FRACTION:g}; got {x:g}{hint}"
                )
        return v

    @field_validator("idle_top_w")
    @classmethod
    def _idle_in_range(cls, v: float | None, info: ValidationInfo) -> float | None:
        """Within the GPU's range (above the lowest clock's idle power, at most the power cap); an unknown GPU or
        model is reported on its own field."""
        from biscale.hardware import get_hardware

        gpu, model = info.data.get("gpu"), info.data.get("model")
        if v is not None and gpu is not None and model is not None:
            try:
                get_hardware(gpu, model, idle_top_w=v)
            except InputError as err:
                if err.field == "idle_top_w":
                    raise ValueError(err.reason) from None
        return v

    @field_validator("rates_rps")
    @classmethod
    def _rates(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        for x in v or ():
            if not (math.isfinite(x) and x > 0):
                raise ValueError(f"rates must be > 0 req/s, got {x}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _cluster_from_gpus(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            sim = data.get("sim")
            if isinstance(sim, Mapping) and ({"nodes", "gpus_per_node"} & set(sim)):
                raise ValueError("set the cluster with 'gpus' and 'gpus_per_node', not sim.nodes / sim.gpus_per_node")
        return data

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        from biscale.plan.solve import PlanSettings

        if self.gpus >= self.gpus_per_node and self.gpus % self.gpus_per_node:
            raise ValueError(f"{self.gpus} GPUs do not divide into nodes of {self.gpus_per_node}")
        if not self.systems:
            raise ValueError("no systems to run")
        unknown = [s for s in self.systems if s not in ALL_SYSTEMS]
        if unknown:
            raise ValueError(f"unknown system(s) {', '.join(unknown)} (known: {', '.join(ALL_SYSTEMS)})")
        if len(set(self.systems)) != len(self.systems):
            raise ValueError("a system is listed twice")
        if self.rates_rps is None and not self.loads:
            raise ValueError("give loads (fractions of capacity) or rates_rps")
        names = {f.name for f in fields(PlanSettings)} | {"forecaster"}
        bad = sorted(set(self.planner) - names)
        if bad:
            raise ValueError(f"unknown planner setting(s) {bad} (known: forecaster and PlanSettings fields)")
        try:
            PlanSettings(**{k: v for k, v in self.planner.items() if k != "forecaster"})
        except (TypeError, InputError) as err:
            raise ValueError(f"planner: {err}") from err
        bad = sorted(set(self.controller_options) - {"mpc", "mpc-greedy", "slack", "oracle", "ecofreq"})
        if bad:
            raise ValueError(
                f"options for unknown controller(s) {bad} (known: mpc, mpc-greedy, slack, oracle, ecofreq)"
            )
        self._check_controller_options()
        if self.sweep is not None:
            missing = [s for s in self.sweep.systems if s not in ALL_SYSTEMS]
            if missing:
                raise ValueError(f"sweep: unknown system(s) {', '.join(missing)}")
        self._check_inputs()
        return self

    def _check_inputs(self) -> None:
        """Everything else a run would find wrong minutes in, checked when the scenario loads (issue 21): the name
        is one safe directory name, the load lists are non-empty and within :mod:`biscale.limits`, the forecaster
        and the predictor artifact exist, the trace loads, and every sweep point is itself a valid scenario."""
        from biscale.limits import MAX_SWEEP_POINTS, check_count

        if not SAFE_NAME.fullmatch(self.name) or self.name in (".", ".."):
            raise ValueError(
                f"name {self.name!r} names the runs' directory: use letters, digits, '.', '_' and '-' only"
            )
        if self.rates_rps is not None and not self.rates_rps:
            raise ValueError("rates_rps is empty: give at least one rate, or leave it out to use loads")
        if "forecaster" in self.planner:
            from biscale.plan.forecast import FORECASTERS

            if self.planner["forecaster"] not in FORECASTERS.names():
                raise ValueError(
                    f"planner.forecaster: unknown forecaster {self.planner['forecaster']!r} "
                    f"(known: {', '.join(FORECASTERS.names())})"
                )
        if self.predictors is not None:
            from biscale.predict.predictor import load_predictor

            try:
                load_predictor(self.predictors)
            except InputError as err:
                raise ValueError(f"predictors: {err}") from err
        if self.workload.arrivals == "trace":
            top = max(self.rates_rps) if self.rates_rps else None
            if top is None and self.capacity.capacity_rps is not None:
                top = max(self.loads) * self.capacity.capacity_rps
            if top is not None:
                self.check_run_requests(top)
        elif self.rates_rps:
            self.check_run_requests(max(self.rates_rps))
        if self.sweep is not None:
            labels = [label for label, *_ in self.load_points]
            if self.sweep.loads is not None:
                want = [load_label(v) if self.rates_rps is None else rate_label(v) for v in self.sweep.loads]
                missing = [w for w in want if w not in labels]
                if missing:
                    raise ValueError(f"sweep.loads {missing} are not among the scenario's loads {labels}")
            points = len(self.sweep.points())
            try:
                check_count(points, MAX_SWEEP_POINTS, field="sweep", what="sweep points")
            except InputError as err:
                raise ValueError(f"sweep: {err.reason}") from None
            for name, values in self.sweep.params.items():
                for v in values:
                    if isinstance(v, str) and not SAFE_NAME.fullmatch(v):
                        raise ValueError(
                            f"sweep.{name}: value {v!r} names a run directory: use letters, digits, '.', '_' and '-'"
                        )
            for point in self.sweep.points():
                try:
                    apply_sweep_point(self, point)
                except InputError as err:
                    raise ValueError(f"sweep.{', '.join(point)}: {err}") from None

    def run_span_s(self) -> float:
        """Seconds of arrivals one run submits (the trace's span, or ``workload.duration_s``)."""
        wl = self.workload
        if wl.arrivals == "gamma" or wl.duration_s is not None:
            assert wl.duration_s is not None
            return wl.duration_s
        from biscale.workload import load_trace

        assert wl.trace is not None
        try:
            return load_trace(wl.trace).duration_s
        except InputError as err:
            raise ValueError(f"workload.trace: {err}") from None

    def check_run_requests(self, rate_rps: float) -> None:
        """A run of this scenario at ``rate_rps`` holds at most :data:`biscale.limits.MAX_SIM_REQUESTS` requests,
        as ``biscale simulate``'s runs (an :class:`InputError` naming the loads)."""
        from biscale.limits import check_requests

        field = "rates_rps" if self.rates_rps is not None else "loads"
        check_requests(rate_rps, self.run_span_s(), field=field, what=f"a run at {rate_rps:g} req/s")

    def _check_controller_options(self) -> None:
        """Every controller option is known and in range, checked now rather than minutes into the runs: the
        online controllers are built once on the bundled predictors; the oracle's names are checked against its
        constructors (it needs the run's trace to be built)."""
        import inspect

        from biscale.control.factory import make_controller
        from biscale.control.oracle import OracleDecode, OraclePrefill
        from biscale.predict.predictor import default_predictor

        for name, opts in self.controller_options.items():
            per_phase = {p: opts[p] for p in ("prefill", "decode") if isinstance(opts.get(p), dict)}
            common = {k: v for k, v in opts.items() if k not in per_phase}
            if name == "oracle":
                for phase, cls in (("prefill", OraclePrefill), ("decode", OracleDecode)):
                    known = set(inspect.signature(cls.__init__).parameters) - {"self", "cost_model", "trace"}
                    unknown = sorted((set(common) | set(per_phase.get(phase, {}))) - known)
                    if unknown:
                        raise ValueError(f"controller_options.oracle: unknown {phase} option(s) {unknown}")
                continue
            phases = ("prefill", "decode") if name == "ecofreq" else ("decode",) if name == "slack" else ("prefill",)
            for phase in phases:  # built as a run builds it (the registry's factory), on the bundled predictors
                try:
                    options = {**common, **per_phase.get(phase, {})}
                    predictor = default_predictor(self.gpu, self.model)
                    make_controller(name, phase, predictor=predictor, options=options, gpu=self.gpu, model=self.model)
                except InputError as err:
                    raise ValueError(f"controller_options.{name}: {err.reason}") from err

    # ------------------------------------------------------------------ derived settings
    def truth(self) -> HardwareModel:
        """The hardware model the simulator runs (and clairvoyant comparators and the bound read)."""
        from biscale.hardware import get_hardware

        return get_hardware(self.gpu, self.model, idle_top_w=self.idle_top_w)

    @property
    def nodes(self) -> int:
        return 1 if self.gpus < self.gpus_per_node else self.gpus // self.gpus_per_node

    def sim_config(self) -> SimConfig:
        """The simulator settings with the cluster shape and the scenario's duration."""
        per_node = min(self.gpus, self.gpus_per_node)
        update: dict[str, Any] = {"nodes": self.nodes, "gpus_per_node": per_node}
        if self.workload.arrivals == "trace" and self.workload.duration_s is not None:
            update["duration_s"] = self.workload.duration_s
        return SimConfig.model_validate({**self.sim.model_dump(), **update})

    @property
    def load_points(self) -> list[tuple[str, float | None, float | None]]:
        """``(label, fraction of capacity or None, absolute rate or None)`` per load, in order."""
        if self.rates_rps is not None:
            return [(rate_label(r), None, float(r)) for r in self.rates_rps]
        return [(load_label(f), float(f), None) for f in self.loads]

    def resolved(self) -> dict[str, Any]:
        """The scenario as JSON (every default filled in): what results.json records."""
        return self.model_dump(mode="json", exclude={"sim": {"nodes", "gpus_per_node"}})

    def fingerprint(self) -> str:
        """SHA-256 of what determines a run's requests and cluster (cache keys)."""
        keep = self.resolved()
        for k in ("name", "description", "loads", "rates_rps", "systems", "sweep"):
            keep.pop(k, None)
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()


def load_label(fraction: float) -> str:
    """``0.67`` -> ``67pct`` (directory names)."""
    return f"{100.0 * fraction:g}pct"


def rate_label(rate_rps: float) -> str:
    """``10`` -> ``10rps``."""
    return f"{rate_rps:g}rps"


# ------------------------------------------------------------------ bundled scenarios and loading
def _bundled_dir() -> Path:
    return Path(str(resources.files("biscale.evaluate") / "scenarios"))


def bundled_scenarios() -> dict[str, Path]:
    """Bundled scenario name -> TOML file."""
    return {p.stem: p for p in sorted(_bundled_dir().glob("*.toml"))}


#: The scenario ``biscale evaluate`` runs without ``--config`` / ``--scenario``.
DEFAULT_SCENARIO = "azure-conv"


def _validation_error(err: ValidationError, path: Path | None, overrides: Mapping[str, Any]) -> InputError:
    first = err.errors()[0]
    loc = ".".join(str(x) for x in first["loc"])
    from_override = any(loc == k or loc.startswith(k + ".") for k in overrides)
    msg = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "missing":
        msg = "missing"
    given = first.get("input")
    scalar = isinstance(given, int | float | str) and not isinstance(given, bool) and len(repr(given)) <= 60
    if scalar and "(got " not in msg and f"got {given}" not in msg and repr(given) not in msg:
        msg += f" (got {given!r})"
    if not loc and overrides:  # a check across fields: the file and the options together
        msg += f" (with the command-line options {', '.join(sorted(overrides))})"
    return InputError(msg, path=None if from_override else path, field=loc or None)


def load_scenario(source: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Scenario:
    """A scenario by bundled name or TOML/JSON file (None: the default), with ``overrides`` (dotted paths such as
    ``workload.trace`` or ``sim.switch_latency_s``) applied; bad input is an :class:`InputError` naming the field."""
    overrides = dict(overrides or {})
    bundled = bundled_scenarios()
    name = DEFAULT_SCENARIO if source is None else str(source)
    path = bundled.get(name)
    if path is None:
        path = Path(name)
        if not path.exists():
            raise InputError(
                f"no bundled scenario '{name}' and no such file (bundled: {', '.join(bundled)})", field="config"
            )
    data = read_config_file(path)
    merged = merge_overrides(data, overrides)
    try:
        return Scenario.model_validate(merged)
    except ValidationError as err:
        raise _validation_error(err, path, overrides) from err


def scenario_with(scenario: Scenario, overrides: Mapping[str, Any], *, what: str = "override") -> Scenario:
    """``scenario`` with dotted-path overrides applied and validated (an :class:`InputError` names the field)."""
    data = merge_overrides(scenario.resolved(), overrides)
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise InputError(f"{what}: {msg}", field=loc or None) from err


# ------------------------------------------------------------------ sweep parameters
def sweep_path(name: str) -> tuple[str, float]:
    """The scenario field a sweep parameter sets (dotted path) and the factor its values are multiplied by.

    ``switch_latency_ms`` is ``sim.switch_latency_s`` in milliseconds (the unit the literature uses); a dotted path
    is taken as is; a bare name is looked up among the scenario's, the simulator's and the planner's fields."""
    from biscale.plan.solve import PlanSettings

    if name == "switch_latency_ms":
        return "sim.switch_latency_s", 1e-3
    if "." in name:
        return name, 1.0
    if name in Scenario.model_fields and name not in ("sim", "planner", "workload", "capacity", "sweep"):
        return name, 1.0
    if name in SimConfig.model_fields:
        return f"sim.{name}", 1.0
    if name in {f.name for f in fields(PlanSettings)} | {"forecaster"}:
        return f"planner.{name}", 1.0
    if name in WorkloadSpec.model_fields:
        return f"workload.{name}", 1.0
    raise InputError(
        f"unknown sweep parameter '{name}' (use switch_latency_ms, a dotted field path such as sim.startup_s, or a "
        "simulator / planner field name)",
        field="sweep",
    )


def apply_sweep_point(scenario: Scenario, point: Mapping[str, Any]) -> Scenario:
    """The scenario at one sweep point (no sweep of its own)."""
    overrides: dict[str, Any] = {"sweep": None}
    for name, value in point.items():
        path, factor = sweep_path(name)
        overrides[path] = value * factor if factor != 1.0 and isinstance(value, int | float) else value
    return scenario_with(scenario, overrides, what=f"sweep point {dict(point)}")


def parse_sweep_option(text: str) -> dict[str, tuple[Any, ...]]:
    """``"switch_latency_ms=1,10,50,200"`` (several separated by ``;``) -> ``{"switch_latency_ms": (1, 10, ...)}``."""
    out: dict[str, tuple[Any, ...]] = {}
    for part in text.split(";"):
        name, sep, values = part.partition("=")
        name = name.strip()
        if not sep or not name or not values.strip():
            raise InputError(f"bad sweep '{part.strip()}' (expected NAME=V1,V2,...)", field="--sweep")
        sweep_path(name)  # unknown names fail here, before anything runs
        out[name] = tuple(_scalar(v.strip()) for v in values.split(",") if v.strip())
    return out


def _scalar(text: str) -> float | int | str | bool:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_float_list(text: str, field: str) -> tuple[float, ...]:
    """``"0.67,0.85"`` -> ``(0.67, 0.85)``; an :class:`InputError` naming ``field`` otherwise."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise InputError(f"expected numbers separated by commas, got '{text}'", field=field) from err
    if not values:
        raise InputError("no values given", field=field)
    return values
