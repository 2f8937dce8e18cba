"""The certified lower bound (:mod:`biscale.bound`) of each (scenario, load) an evaluation runs, as its ``bounds[]``
row: every result sits beside a number no system on that cluster can beat on those requests within the SLOs."""

from __future__ import annotations

import math
from typing import Any

from biscale.evaluate.scenario import Scenario


def scenario_bound(sc: Scenario, load_label: str, rate_rps: float) -> dict[str, Any]:
    """The bound of ``sc`` at ``rate_rps`` on the requests its runs replay (same trace, truth and simulator
    settings); ``cluster_j_per_token`` is None where no iteration can meet the SLOs (the bound is infinite)."""
    from biscale.bound import bound_record

    truth = sc.truth()
    trace = sc.workload.trace_at(rate_rps, sc.seed)
    row = bound_record(sc.name, None, load_label, rate_rps, trace, truth, sc.sim_config())
    for key in ("scenario", "load", "load_label"):  # the runner names the (scenario, load) itself
        row.pop(key)
    for key, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            row[key] = None
    return row
