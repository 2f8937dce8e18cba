"""The :class:`Placement` type: which instances a cluster runs (phase, TP degree, count, baseline clock).

One schema for every producer and consumer: ``biscale plan`` writes it, ``biscale simulate``
and the live runtime read it. Two spellings:

* the compact SPEC string ``prefill:2xTP2,decode:3xTP4@1410`` (grammar in ``docs/simulator.md``);
* a JSON file ``{"instances": [{"phase": "prefill", "tp": 2, "count": 2, "clock": 1410}, ...]}``.

A planner may add what it predicts (all optional, ignored by the simulator): per group the node of each instance
(``nodes``), the planned load (``load_rps``) and power (``power_w``) of one instance; per placement a
:class:`PlanPrediction` (forecast, feasibility, power and J/token per phase, headroom).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from biscale.errors import InputError, validation_input_error
from biscale.jsonio import read_json_object
from biscale.limits import MAX_CLUSTER_GPUS

Phase = Literal["prefill", "decode"]
PHASES: tuple[str, str] = ("prefill", "decode")

#: A baseline clock: a lockable SM clock in MHz, ``"max"`` (the top clock) or ``"default"`` (the GPU's governor).
ClockSetting = int | Literal["max", "default"]


def clock_setting(value: object) -> ClockSetting:
    """``value`` as a :data:`ClockSetting`, or a ``ValueError`` with one message for every wrong form (a pydantic
    ``before`` validator: the union's per-member errors would say "valid integer" for ``"fast"``)."""
    if value in ("max", "default"):
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ValueError(f"clock must be a whole number of MHz > 0, 'max' or 'default' (got {value!r})")


class InstanceSpec(BaseModel):
    """A group of identical instances."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    phase: Phase
    """``prefill`` or ``decode``."""
    tp: int = Field(ge=1)
    """Tensor-parallel degree (GPUs per instance; a TP group never spans nodes)."""
    count: int = Field(default=1, ge=1, le=MAX_CLUSTER_GPUS)
    """Number of instances of this kind (at most :data:`MAX_CLUSTER_GPUS`)."""
    clock: ClockSetting | None = None
    """Baseline SM clock (MHz, ``"max"`` or ``"default"``); ``None``: the run's default (top clock)."""
    capacity_rps: float | None = Field(default=None, gt=0)
    """Sustainable request rate of one such instance, req/s (the planner's R_c); routers weight by it."""
    nodes: tuple[int, ...] | None = None
    """Planner's node (0-based) for each instance of the group (length ``count``); informative: the simulator
    packs instances itself (largest TP first, best fit)."""
    load_rps: float | None = Field(default=None, ge=0)
    """Planned mean request rate of one instance, req/s."""
    power_w: float | None = Field(default=None, ge=0)
    """Predicted mean power of one instance (all its GPUs) at ``load_rps``, W."""

    @field_validator("clock", mode="before")
    @classmethod
    def _clock(cls, v: object) -> ClockSetting | None:
        return None if v is None else clock_setting(v)

    @model_validator(mode="after")
    def _nodes_per_instance(self) -> InstanceSpec:
        if self.nodes is not None and (len(self.nodes) != self.count or min(self.nodes, default=0) < 0):
            raise ValueError(f"nodes must list one node index >= 0 per instance ({self.count}), got {self.nodes}")
        return self

    def token(self) -> str:
        """This group in SPEC syntax, e.g. ``prefill:2xTP2@1410``."""
        clock = "" if self.clock is None else f"@{self.clock}"
        return f"{self.phase}:{self.count}xTP{self.tp}{clock}"


class PhasePrediction(BaseModel):
    """What a planner predicts for one phase (all instances of the phase)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instances: int = Field(ge=0)
    gpus: int = Field(ge=0)
    capacity_rps: float = Field(ge=0)
    """Sum of the instances' capacities R_c, req/s."""
    headroom_pct: float | None = None
    """Capacity above the forecast, % of the forecast (``None`` for a zero forecast)."""
    utilisation_pct: float = Field(ge=0)
    """Forecast / capacity, % (each instance's load under capacity-weighted routing)."""
    power_w: float = Field(ge=0)
    """Predicted mean power of the phase's instances, W."""
    energy_per_token_j: float | None = None
    """Power / token rate: prompt tokens (prefill), decode-generated tokens (decode), J/token."""


class PlanPrediction(BaseModel):
    """A planner's forecast, feasibility and predicted power for a placement (from its capacity table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    planner: str
    feasible: bool
    """False: the SLOs cannot be met on this cluster (see ``reason``); the placement is the fallback."""
    reason: str | None = None
    forecast_rps: float = Field(ge=0)
    alpha: float = Field(ge=0)
    """Headroom factor: capacity >= (1 + alpha) x forecast per phase."""
    gpus_total: int = Field(ge=0)
    gpus_used: int = Field(ge=0)
    gpus_needed: int | None = None
    """When infeasible: GPUs in instances of the smallest sufficient cluster (``None``: no cluster suffices)."""
    nodes_needed: int | None = None
    """When infeasible: nodes of that cluster."""
    prefill: PhasePrediction
    decode: PhasePrediction
    unassigned_power_w: float = Field(ge=0)
    """Power of the GPUs in no instance, W."""
    cluster_power_w: float = Field(ge=0)
    """Prefill + decode + unassigned, W."""
    mean_input_tokens: float = Field(ge=0)
    mean_output_tokens: float = Field(ge=0)
    table_key: str = ""
    """Key of the capacity table the prediction comes from."""


class Placement(BaseModel):
    """A cluster placement: a list of instance groups. Order is kept (it fixes instance ids)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instances: tuple[InstanceSpec, ...]
    """The instance groups; at least one prefill and one decode instance."""
    prediction: PlanPrediction | None = None
    """What the planner that wrote it predicts (optional; ignored by the simulator)."""

    @field_validator("instances")
    @classmethod
    def _both_phases(cls, v: tuple[InstanceSpec, ...]) -> tuple[InstanceSpec, ...]:
        phases = {g.phase for g in v}
        for phase in PHASES:
            if phase not in phases:
                raise ValueError(f"a placement needs at least one {phase} instance")
        return v

    # --- views -------------------------------------------------------------------------------------------
    def expand(self) -> Iterator[InstanceSpec]:
        """One spec (count 1) per instance, in placement order."""
        for group in self.instances:
            for i in range(group.count):
                nodes = None if group.nodes is None else (group.nodes[i],)
                yield group.model_copy(update={"count": 1, "nodes": nodes})

    def num_instances(self, phase: str | None = None) -> int:
        return sum(g.count for g in self.instances if phase is None or g.phase == phase)

    @property
    def total_gpus(self) -> int:
        """GPUs the placement occupies."""
        return sum(g.count * g.tp for g in self.instances)

    def spec(self) -> str:
        """The compact SPEC string (round-trips through :meth:`parse`)."""
        return ",".join(g.token() for g in self.instances)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=True)

    # --- constructors ------------------------------------------------------------------------------------
    @classmethod
    def parse(cls, spec: str) -> Placement:
        """Parse a SPEC string; a bad token raises :class:`InputError` naming it."""
        return parse_placement(spec)

    @classmethod
    def load(cls, path: str | Path) -> Placement:
        """Read a placement JSON file."""
        p = Path(path)
        data = read_json_object(p, "placement file", ': {"instances": [{"phase": ..., "tp": ...}, ...]}')
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise validation_input_error(err, path=p) from err


_TOKEN = re.compile(r"^(?P<phase>[a-z]+):(?:(?P<count>\d+)x)?tp(?P<tp>\d+)(?:@(?P<clock>\d+|max|default))?$")


def parse_placement(spec: str) -> Placement:
    """Parse ``PHASE:[N x]TP<k>[@CLOCK]`` groups separated by commas (case-insensitive, spaces ignored)."""
    text = spec.strip()
    if not text:
        raise InputError("empty placement spec (expected e.g. 'prefill:2xTP2,decode:3xTP4')", field="placement")
    groups: list[InstanceSpec] = []
    for raw in text.split(","):
        token = "".join(raw.split()).lower()
        m = _TOKEN.match(token)
        if m is None:
            raise InputError(
                f"bad placement token '{raw.strip()}' (expected PHASE:NxTPk[@MHZ|max|default], e.g. 'prefill:2xTP2')",
                field="placement",
            )
        phase = m.group("phase")
        if phase not in PHASES:
            raise InputError(
                f"bad placement token '{raw.strip()}': phase must be 'prefill' or 'decode'", field="placement"
            )
        count = int(m.group("count")) if m.group("count") is not None else 1
        tp = int(m.group("tp"))
        if count < 1 or tp < 1:
            raise InputError(f"bad placement token '{raw.strip()}': count and TP must be >= 1", field="placement")
        clock_text = m.group("clock")
        clock: ClockSetting | None
        if clock_text is None:
            clock = None
        elif clock_text in ("max", "default"):
            clock = clock_text  # type: ignore[assignment]
        else:
            clock = int(clock_text)
            if clock <= 0:
                raise InputError(f"bad placement token '{raw.strip()}': clock must be > 0 MHz", field="placement")
        try:
            groups.append(InstanceSpec(phase=phase, tp=tp, count=count, clock=clock))  # type: ignore[arg-type]
        except ValidationError as err:
            reason = validation_input_error(err).reason
            raise InputError(f"bad placement token '{raw.strip()}': {reason}", field="placement") from err
    try:
        return Placement(instances=tuple(groups))
    except ValidationError as err:
        raise InputError(f"bad placement '{spec}': {validation_input_error(err).reason}", field="placement") from err


def load_placement(spec_or_path: str) -> Placement:
    """A SPEC string, or the path of a placement JSON file (anything ending in ``.json`` or an existing file)."""
    p = Path(spec_or_path)
    if spec_or_path.endswith(".json") or (":" not in spec_or_path and p.exists()):
        if not p.exists():
            raise InputError("placement file not found", path=p)
        return Placement.load(p)
    return parse_placement(spec_or_path)
