"""Planners: ``plan(observation) -> Placement`` at every window boundary (default every 5 minutes).

Planners are registered by name in :data:`PLANNERS` as factories ``(placement, schedule) -> Planner`` (the initial
placement and an optional ``[(from_s, placement), ...]`` schedule from the run configuration).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

from biscale.control.placement import Placement
from biscale.control.state import ClusterObservation
from biscale.errors import InputError
from biscale.registry import Registry

#: ``(initial placement, schedule) -> planner``.
PlannerFactory = Callable[[Placement, Sequence[tuple[float, Placement]]], "Planner"]


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


@PLANNERS.register("static", "keep the initial placement (never asked)")
def _static(placement: Placement, schedule: Sequence[tuple[float, Placement]]) -> Planner:
    return StaticPlanner(placement)


@PLANNERS.register("scheduled", "follow the configured schedule of placements")
def _scheduled(placement: Placement, schedule: Sequence[tuple[float, Placement]]) -> Planner:
    if not schedule:
        raise InputError("the scheduled planner needs a schedule of [from_s, placement] entries", field="schedule")
    return ScheduledPlanner(schedule)
