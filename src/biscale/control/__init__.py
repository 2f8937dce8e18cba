"""The control seam: placements, state snapshots, clock controllers and planners.

Everything a controller or planner sees is in :mod:`biscale.control.state` (what a real engine can observe);
none of it reads the cost model.
"""

from biscale.control.controllers import (
    CONTROLLERS,
    BaselineClock,
    ClockController,
    DefaultGovernor,
    FixedClock,
    MaxClock,
    controller_from_clock,
    snap_clock,
)
from biscale.control.placement import InstanceSpec, Placement, load_placement, parse_placement
from biscale.control.planner import PLANNERS, Planner, PlannerContext, ScheduledPlanner, StaticPlanner
from biscale.control.state import GOVERNOR_MHZ, ClusterObservation, InstanceState, InstanceSummary, Slo

__all__ = [
    "CONTROLLERS",
    "GOVERNOR_MHZ",
    "PLANNERS",
    "BaselineClock",
    "ClockController",
    "ClusterObservation",
    "DefaultGovernor",
    "FixedClock",
    "InstanceSpec",
    "InstanceState",
    "InstanceSummary",
    "MaxClock",
    "Placement",
    "Planner",
    "PlannerContext",
    "ScheduledPlanner",
    "Slo",
    "StaticPlanner",
    "controller_from_clock",
    "load_placement",
    "parse_placement",
    "snap_clock",
]
