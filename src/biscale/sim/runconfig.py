"""A whole simulation run as one serialisable configuration: :class:`SimulateConfig`.

``biscale simulate --config FILE`` reads it from TOML or JSON; every CLI option that is given overrides the file;
the defaults live here and in :class:`~biscale.sim.config.SimConfig`, nowhere else. Every output folder records
the resolved configuration as ``config.json``, which ``--config`` reads back (the same run again).
``biscale config schema`` prints the JSON schema. Evaluation scenarios extend this model.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from biscale.control.controllers import ClockController
from biscale.control.placement import Placement, load_placement
from biscale.control.planner import PLANNERS, Planner, PlannerContext
from biscale.costmodel import CostModel
from biscale.errors import InputError, validation_input_error
from biscale.jsonio import loads_json, read_text
from biscale.limits import MAX_SIM_REQUESTS, MAX_TIMELINE_ROWS
from biscale.sim.config import SimConfig
from biscale.sim.costmodels import COST_MODELS
from biscale.sim.results import SimResult, simulate
from biscale.workload.trace import Trace

_MODEL_CONFIG = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


#: A placement: a SPEC string (``prefill:2xTP2,decode:3xTP4``), the path of a placement JSON file, or the object.
PlacementSource = str | Placement


class ScheduledPlacement(BaseModel):
    """One entry of a placement schedule: from ``from_s`` on, serve ``placement``."""

    model_config = _MODEL_CONFIG

    from_s: float = Field(ge=0)
    """Start of this placement, seconds from the trace start (applied at the first window boundary at or after)."""
    placement: PlacementSource
    """SPEC string, placement JSON file, or placement object."""


class PhaseControllers(BaseModel):
    """A clock controller per phase (each like ``clock``); a phase left out uses ``clock``."""

    model_config = _MODEL_CONFIG

    prefill: str | int | None = None
    """Controller of prefill instances: MHz, ``max``, ``default``, ``baseline`` or a registered controller."""
    decode: str | int | None = None
    """Controller of decode instances (same choices)."""


class SimulateConfig(BaseModel):
    """Everything ``biscale simulate`` needs: workload, cluster, cost model, controllers, planner, simulator."""

    model_config = _MODEL_CONFIG

    trace: str
    """Bundled trace name (``biscale trace list``) or trace file."""
    placement: PlacementSource
    """Initial placement: SPEC string, placement JSON file, or placement object."""
    rate_rps: float | None = Field(default=None, gt=0)
    """Rescale the trace to this mean rate, req/s, keeping its burstiness (None: as recorded)."""
    lengths: str | None = None
    """Replace prompt/output lengths by seeded draws from this length table (bundled name or file)."""
    seed: int = Field(default=0, ge=0)
    """Seed for rate rescaling and length sampling."""
    gpu: str = "h100-sxm"
    """GPU of the cost model."""
    model: str = "llama-3.3-70b"
    """LLM of the cost model."""
    cost_model: str = "hardware"
    """What prices iterations: a name in :data:`biscale.sim.costmodels.COST_MODELS`."""
    clock: str | int | None = None
    """Controller of every instance: MHz (locked), ``max``, ``default`` (GPU governor), ``baseline`` or a registered
    controller. None: each instance keeps its placement's baseline clock (``sim.initial_clock`` if it has none)."""
    controllers: PhaseControllers | None = None
    """Per-phase controllers, overriding ``clock`` for the phases they name."""
    controller_options: dict[Literal["prefill", "decode"], dict[str, Any]] = Field(default_factory=dict)
    """Each phase's controller settings (its constructor's keyword arguments, e.g. ``{"prefill": {"horizon": 8}}``;
    see docs/control.md)."""
    predictors: str | None = None
    """Directory of the learned-predictor artifact the controllers believe (None: the bundled one of gpu/model)."""
    planner: str | None = None
    """Planner, a name in :data:`biscale.control.planner.PLANNERS` (None: ``scheduled`` with a schedule, else
    ``static``); asked every ``sim.window_s``."""
    schedule: tuple[ScheduledPlacement, ...] = ()
    """Placement schedule for the ``scheduled`` planner."""
    planner_options: dict[str, Any] = Field(default_factory=dict)
    """Planner-specific settings (tier-1 planners: ``forecaster``, ``alpha``, ``predictors``, ...; see
    docs/planning.md)."""
    sim: SimConfig = Field(default_factory=SimConfig)
    """Simulator settings."""

    @field_validator("cost_model")
    @classmethod
    def _known_cost_model(cls, v: str) -> str:
        if v not in COST_MODELS:
            raise ValueError(COST_MODELS.unknown_reason(v))
        return v

    @field_validator("planner")
    @classmethod
    def _known_planner(cls, v: str | None) -> str | None:
        if v is not None and v not in PLANNERS:
            raise ValueError(PLANNERS.unknown_reason(v))
        return v

    # ------------------------------------------------------------------ building the run
    def load_trace(self) -> Trace:
        """The trace, rescaled and with redrawn lengths as configured."""
        from biscale.workload import load_lengths, load_trace, rescale_rate, with_lengths

        trace = load_trace(self.trace)
        if self.rate_rps is not None:
            end = trace.duration_s if self.sim.duration_s is None else min(self.sim.duration_s, trace.duration_s)
            self._check_requests(self.rate_rps * end, "about ")  # before rescaling builds them
            trace = rescale_rate(trace, self.rate_rps, seed=self.seed)
        if self.lengths is not None:
            trace = with_lengths(trace, load_lengths(self.lengths), seed=self.seed)
        return trace

    def load_placement(self) -> Placement:
        return _placement(self.placement)

    def build_controllers(
        self, trace: Trace, placement: Placement, cost_model: CostModel
    ) -> dict[str, ClockController]:
        """One controller per phase, built by name with the run's context (the static baseline searches this
        trace and placement; the clairvoyant oracle gets the trace and ``cost_model`` as its truth)."""
        from biscale.control.factory import controller_from_clock

        per_phase = self.controllers or PhaseControllers()
        predictor = None
        if self.predictors is not None:
            from biscale.predict import load_predictor

            predictor = load_predictor(self.predictors)
        out = {}
        for phase in ("prefill", "decode"):
            own = getattr(per_phase, phase)
            field = f"controllers.{phase}" if own is not None else "clock"
            try:
                out[phase] = controller_from_clock(
                    own if own is not None else self.clock,
                    phase,
                    predictor=predictor,
                    options=self.controller_options.get(phase, {}),
                    gpu=self.gpu,
                    model=self.model,
                    slo=self.sim.slo,
                    trace=trace,
                    truth=cost_model,
                    placement=placement,
                    sim_config=self.sim,
                )
            except InputError as err:
                raise InputError(err.reason, field=field) from err
        return out

    def build_planner(self, placement: Placement, trace: Trace) -> Planner:
        name = self.planner or ("scheduled" if self.schedule else "static")
        sim = self.sim
        ctx = PlannerContext(
            name=name,
            placement=placement,
            schedule=[(e.from_s, _placement(e.placement)) for e in self.schedule],
            workload=trace,
            slo=sim.slo,
            nodes=sim.nodes,
            gpus_per_node=sim.gpus_per_node,
            window_s=sim.window_s,
            gpu=self.gpu,
            model=self.model,
            options=dict(self.planner_options),
        )
        return PLANNERS.get(name)(ctx)

    def check_clocks(self, supported_clocks_mhz: tuple[int, ...]) -> None:
        """Refuse locked clocks outside the GPU's supported range: ``sim.initial_clock``, fixed controllers and the
        schedule's placements (the simulator checks each placement it starts, :meth:`biscale.sim.fleet.Fleet.check`;
        this finds a scheduled one before the run, not when it is due)."""
        from biscale.control.controllers import check_clock_in_range, check_placement_clocks, parse_clock

        for i, entry in enumerate(self.schedule):
            check_placement_clocks(_placement(entry.placement), supported_clocks_mhz, field=f"schedule.{i}.placement")
        if isinstance(self.sim.initial_clock, int):
            check_clock_in_range(self.sim.initial_clock, supported_clocks_mhz, field="sim.initial_clock")
        per_phase = self.controllers or PhaseControllers()
        for phase in ("prefill", "decode"):
            own = getattr(per_phase, phase)
            name, options = parse_clock(own if own is not None else self.clock)
            clock = {**options, **self.controller_options.get(phase, {})}.get("clock_mhz")
            if name == "fixed" and isinstance(clock, int):
                field = f"controllers.{phase}" if own is not None else "clock"
                check_clock_in_range(clock, supported_clocks_mhz, field=field)

    def _check_requests(self, requests: float, about: str = "") -> None:
        if requests > MAX_SIM_REQUESTS:
            raise InputError(
                f"the run would simulate {about}{requests:,.0f} requests, more than the limit of {MAX_SIM_REQUESTS:,} "
                "(the simulator needs ~1 KB per request); lower the rate or the duration",
                field="rate_rps" if self.rate_rps is not None else "sim.duration_s",
            )

    def check_size(self, trace: Trace, placement: Placement) -> None:
        """Refuse, before it starts, a run whose tables would exhaust memory: more than :data:`MAX_SIM_REQUESTS`
        requests, or more than :data:`MAX_TIMELINE_ROWS` timeline rows (instances x span / sampling interval,
        counting only the arrival span: the least the run will record)."""
        sim = self.sim
        end = trace.duration_s if sim.duration_s is None else min(sim.duration_s, trace.duration_s)
        requests = len(trace) if sim.duration_s is None else int(np.searchsorted(trace.arrival_s, end, side="left"))
        if requests == 0:  # e.g. a rate so low that thinning kept nothing: a run of nothing reports only nulls
            raise InputError(
                f"the run has no request: rescaling trace {trace.name!r} to {self.rate_rps:g} req/s kept none of "
                "its requests; give a higher rate"
                if self.rate_rps is not None
                else f"the run has no request: trace {trace.name!r} is empty",
                field="rate_rps" if self.rate_rps is not None else "trace",
            )
        self._check_requests(requests)
        span = end if sim.max_time_s is None else min(end, sim.max_time_s)
        rows = placement.num_instances() * span / sim.sample_interval_s
        if rows > MAX_TIMELINE_ROWS:
            raise InputError(
                f"sampling every {sim.sample_interval_s:g} s would record at least {rows:.3g} timeline rows "
                f"({placement.num_instances()} instances over {span:.3g} s), more than the limit of "
                f"{MAX_TIMELINE_ROWS:,}; use a longer interval",
                field="sim.sample_interval_s",
            )

    def prepare(self) -> PreparedRun:
        """Load and build everything the run needs (bad input is an :class:`InputError`, placement first)."""
        placement = self.load_placement()
        cost_model = COST_MODELS.get(self.cost_model)(self.gpu, self.model)
        self.check_clocks(tuple(int(c) for c in cost_model.supported_clocks_mhz))
        trace = self.load_trace()
        self.check_size(trace, placement)
        controllers = self.build_controllers(trace, placement, cost_model)
        return PreparedRun(
            placement=placement,
            cost_model=cost_model,
            controllers=controllers,
            planner=self.build_planner(placement, trace),
            trace=trace,
        )

    def run(self, progress: Callable[[float], None] | None = None, prepared: PreparedRun | None = None) -> SimResult:
        """Simulate this configuration; the result records it (``config.json``) and where it ran."""
        p = prepared if prepared is not None else self.prepare()
        result = simulate(p.trace, p.placement, p.cost_model, p.controllers, p.planner, self.sim, progress)
        result.config = self.model_dump(mode="json", exclude_none=True)
        result.meta.update(
            {
                "gpu": self.gpu,
                "model": self.model,
                "cost_model": self.cost_model,
                "rate_rps": self.rate_rps,
                "lengths": self.lengths,
                "seed": self.seed,
            }
        )
        return result


@dataclass(frozen=True)
class PreparedRun:
    """The objects a :class:`SimulateConfig` describes, built and validated."""

    placement: Placement
    cost_model: CostModel
    controllers: dict[str, ClockController]
    planner: Planner
    trace: Trace


def _placement(source: PlacementSource) -> Placement:
    return source if isinstance(source, Placement) else load_placement(source)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping in a ``.toml`` or ``.json`` configuration file (bad files are :class:`InputError`)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise InputError("a configuration file must end in .toml or .json", path=p)
    text = read_text(p, "configuration file")
    if suffix == ".json":
        data = loads_json(text, p)
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise InputError(f"not valid TOML: {err}", path=p) from err
        except RecursionError as err:
            raise InputError("not valid TOML: nested too deeply", path=p) from err
    if not isinstance(data, dict):
        raise InputError("a configuration file must hold one object (a table)", path=p)
    return data


def merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied; override keys are dotted paths (``sim.slo.ttft_s``)."""
    out: dict[str, Any] = copy.deepcopy(dict(base))
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        node[leaf] = value
    return out


def load_simulate_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> SimulateConfig:
    """The run configuration from ``path`` (TOML/JSON, optional) with ``overrides`` (dotted paths) applied.

    A validation error is an :class:`InputError` naming the field (and the file, unless the value came from an
    override).
    """
    overrides = dict(overrides or {})
    data = read_config_file(path) if path is not None else {}
    merged = merge_overrides(data, overrides)
    try:
        return SimulateConfig.model_validate(merged)
    except ValidationError as err:
        loc = ".".join(str(x) for x in err.errors()[0]["loc"])
        from_override = any(loc == k or loc.startswith(k + ".") for k in overrides)
        raise validation_input_error(
            err,
            path=None if from_override or path is None else path,
            missing="missing (give it in the configuration file or as a command-line option)",
        ) from err


def config_schema() -> dict[str, Any]:
    """The JSON schema of :class:`SimulateConfig`."""
    return SimulateConfig.model_json_schema()
