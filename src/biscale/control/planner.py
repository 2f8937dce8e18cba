"""Planners: ``plan(observation) -> Placement`` at every window boundary (default every 5 minutes).

Planners are registered by name in :data:`PLANNERS` as factories ``PlannerContext -> Planner`` (the run's initial
placement, an optional schedule, the workload, the cluster, the SLOs and planner options).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from biscale.control.placement import Placement
from biscale.control.state import ClusterObservation, Slo
from biscale.errors import InputError
from biscale.registry import Registry

if TYPE_CHECKING:
    from biscale.workload.trace import Trace


@dataclass(frozen=True)
class PlannerContext:
    """What a planner factory may use to build the planner of one run."""

    name: str
    """The registry name the planner was asked by (one factory may serve several names)."""
    placement: Placement
    """The run's initial placement."""
    schedule: Sequence[tuple[float, Placement]] = ()
    """``[(from_s, placement), ...]`` for the ``scheduled`` planner."""
    workload: Trace | None = None
    """The run's trace: tier 1 builds its capacity table from its arrival pattern and length mix."""
    slo: Slo = field(default_factory=Slo)
    nodes: int = 2
    gpus_per_node: int = 8
    window_s: float = 300.0
    """Planner window, seconds."""
    gpu: str = "h100-sxm"
    """GPU whose learned predictors a planner may load."""
    model: str = "llama-3.3-70b"
    """LLM whose learned predictors a planner may load."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Planner-specific settings (e.g. ``forecaster``, ``alpha``); each planner documents its own."""


#: ``context -> planner``.
PlannerFactory = Callable[[PlannerContext], "Planner"]


class Planner(ABC):
    """Decides the placement for the next window from what was observed in the last one."""

    is_static: ClassVar[bool] = False
    """True when the plan never changes (the simulator then skips building observations)."""
    name: ClassVar[str] = "planner"

    @abstractmethod
    def plan(self, observation: ClusterObservation) -> Placement:
        """The placement for the next window."""


class StaticPlanner(Planner):
    """Always the given placement."""

    is_static = True
    name = "static"

    def __init__(self, placement: Placement) -> None:
        self.placement = placement

    def plan(self, observation: ClusterObservation) -> Placement:
        return self.placement


class ScheduledPlanner(Planner):
    """A fixed schedule of placements: ``[(from_time_s, placement), ...]`` (for experiments and tests)."""

    name = "scheduled"

    def __init__(self, schedule: Sequence[tuple[float, Placement]]) -> None:
        if not schedule:
            raise ValueError("schedule must not be empty")
        self.schedule = sorted(schedule, key=lambda x: x[0])

    def plan(self, observation: ClusterObservation) -> Placement:
        current = self.schedule[0][1]
        for start, placement in self.schedule:
            if start <= observation.time_s + 1e-9:
                current = placement
        return current


#: Registry: name -> :data:`PlannerFactory`.
PLANNERS: Registry[PlannerFactory] = Registry("planner", field="planner")


def _no_options(ctx: PlannerContext) -> None:
    """The static and scheduled planners take no options: refuse any instead of ignoring them."""
    if ctx.options:
        raise InputError(
            f"planner '{ctx.name}' takes no options, got {sorted(ctx.options)} (planner_options are for biscale, "
            "placeonly, distserve and distserve-static)",
            field="planner_options",
        )


@PLANNERS.register("static", "keep the initial placement (never asked)")
def _static(ctx: PlannerContext) -> Planner:
    _no_options(ctx)
    return StaticPlanner(ctx.placement)


@PLANNERS.register("scheduled", "follow the configured schedule of placements")
def _scheduled(ctx: PlannerContext) -> Planner:
    _no_options(ctx)
    if not ctx.schedule:
        raise InputError("the scheduled planner needs a schedule of [from_s, placement] entries", field="schedule")
    return ScheduledPlanner(ctx.schedule)


# Tier 1 (biscale.plan) plugs in here by name; it runs the simulator, so it is referenced, not imported.
for _name, _help in (
    ("biscale", "tier 1 of BiScale: the energy-minimising placement with baseline clocks, re-planned every window"),
    ("placeonly", "BiScale's placement, to run with clocks held at each baseline (tier 1 alone)"),
    ("distserve", "DistServe: best SLO goodput per GPU at the top clock, re-planned every window"),
    ("distserve-static", "DistServe's placement sized once for the run's peak window, never changed"),
):
    PLANNERS.register_lazy(_name, _help, "biscale.plan.planners:planner_from_context")
