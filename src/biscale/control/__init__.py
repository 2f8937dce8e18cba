"""The control seam: placements, state snapshots, clock controllers and planners.

Everything a controller or planner sees is in :mod:`biscale.control.state` (what a real engine can observe);
none of it reads the cost model. Tier 2 (per-iteration clocks, ``docs/control.md``): :mod:`clocks`, :mod:`mpc`,
:mod:`slack`, :mod:`bias`, :mod:`oracle` (the one truth reader), :mod:`static`, and :mod:`factory`, which registers
them in ``CONTROLLERS`` on import.
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
from biscale.control.factory import TIER2, controllers_from_spec, make_controller, parse_controller_spec
from biscale.control.mpc import PrefillMpc
from biscale.control.placement import InstanceSpec, Placement, load_placement, parse_placement
from biscale.control.planner import PLANNERS, Planner, ScheduledPlanner, StaticPlanner
from biscale.control.slack import DecodeSlack
from biscale.control.state import GOVERNOR_MHZ, ClusterObservation, InstanceState, InstanceSummary, Slo

__all__ = [
    "CONTROLLERS",
    "GOVERNOR_MHZ",
    "PLANNERS",
    "TIER2",
    "BaselineClock",
    "ClockController",
    "ClusterObservation",
    "DecodeSlack",
    "DefaultGovernor",
    "FixedClock",
    "InstanceSpec",
    "InstanceState",
    "InstanceSummary",
    "MaxClock",
    "Placement",
    "Planner",
    "PrefillMpc",
    "ScheduledPlanner",
    "Slo",
    "StaticPlanner",
    "controller_from_clock",
    "controllers_from_spec",
    "load_placement",
    "make_controller",
    "parse_controller_spec",
    "parse_placement",
    "snap_clock",
]
