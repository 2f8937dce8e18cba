"""A certified lower bound on the cluster energy of serving a trace within its SLOs, whatever the placement and
clocks (docs/evaluate.md, "Lower bound"): :func:`cluster_lower_bound` returns a :class:`Bound`;
:func:`bound_record` is its ``bounds[]`` entry in results.json."""

from biscale.bound.demand import Demand, allowed_misses, demand_of
from biscale.bound.lower import METHOD, Bound, cluster_lower_bound
from biscale.bound.record import bound_record

__all__ = ["METHOD", "Bound", "Demand", "allowed_misses", "bound_record", "cluster_lower_bound", "demand_of"]
