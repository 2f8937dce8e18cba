"""The control seam: placements, state snapshots, clock controllers and planners.

Everything a controller or planner sees is in :mod:`biscale.control.state` (what a real engine can observe);
none of it reads the cost model. Tier 2 (per-iteration clocks, ``docs/control.md``): :mod:`clocks`, :mod:`mpc`,
:mod:`slack`, :mod:`bias`, :mod:`oracle` (the one truth reader), VoltanaLLM's EcoFreq (:mod:`voltana`, a peer
system's controller) and :mod:`factory`, which registers them in ``CONTROLLERS`` on import (the static baseline's
offline search lives in :mod:`biscale.plan.static`).
"""

from biscale.control.controllers import (
    CONTROLLERS,
    BaselineClock,
    ClockController,
    ControllerContext,
    DefaultGovernor,
    FixedClock,
    MaxClock,
    snap_clock,
)
from biscale.control.factory import (
    controller_from_clock,
    controllers_from_spec,
    make_controller,
    parse_controller_spec,
)
from biscale.control.mpc import PrefillMpc
from biscale.control.placement import InstanceSpec, Placement, load_placement, parse_placement
from biscale.control.planner import PLANNERS, Planner, PlannerContext, ScheduledPlanner, StaticPlanner
from biscale.control.slack import DecodeSlack
from biscale.control.state import GOVERNOR_MHZ, ClusterObservation, InstanceState, InstanceSummary, Slo

__all__ = [
    "CONTROLLERS",
    "GOVERNOR_MHZ",
    "PLANNERS",
    "BaselineClock",
    "ClockController",
    "ClusterObservation",
    "ControllerContext",
    "DecodeSlack",
    "DefaultGovernor",
    "FixedClock",
    "InstanceSpec",
    "InstanceState",
    "InstanceSummary",
    "MaxClock",
    "Placement",
    "Planner",
    "PlannerContext",
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
