"""Planners: ``plan(observation) -> Placement`` at every window boundary (default every 5 minutes)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from biscale.control.placement import Placement
from biscale.control.state import ClusterObservation


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


def _tier1(name: str) -> Callable[..., Planner]:
    """A factory for a tier-1 planner of :mod:`biscale.plan.planners`, imported on first use (the control seam
    stays free of scipy and the capacity machinery)."""

    def make(*args: Any, **kwargs: Any) -> Planner:
        from biscale.plan.planners import PLANNER_CLASSES

        return PLANNER_CLASSES[name](*args, **kwargs)

    make.__name__ = make.__qualname__ = f"make_{name.replace('-', '_')}_planner"
    return make


PLANNERS: dict[str, Callable[..., Planner]] = {
    "static": StaticPlanner,
    "scheduled": ScheduledPlanner,
    # tier 1 (biscale.plan): factories take (table, cluster, settings=None, *, forecaster=... | peak_rps=...)
    **{name: _tier1(name) for name in ("biscale", "placeonly", "distserve", "distserve-static")},
}
