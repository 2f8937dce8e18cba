"""Tier 1: placement planning. Capacity table (what one instance of each configuration sustains, on the learned
predictors), the energy-minimising placement program, load forecasters and the planners. See docs/planning.md."""

from biscale.plan.capacity import CapacitySettings, CapacityTable, ConfigCapacity, build_capacity_table
from biscale.plan.forecast import FORECASTERS, Forecaster, make_forecaster, score_forecasters
from biscale.plan.planners import PLANNER_CLASSES, PlanDecision
from biscale.plan.solve import Cluster, Demand, PlanSettings, plan_outcome, plan_placement

__all__ = [
    "FORECASTERS",
    "PLANNER_CLASSES",
    "CapacitySettings",
    "CapacityTable",
    "Cluster",
    "ConfigCapacity",
    "Demand",
    "Forecaster",
    "PlanDecision",
    "PlanSettings",
    "build_capacity_table",
    "make_forecaster",
    "plan_outcome",
    "plan_placement",
    "score_forecasters",
]
