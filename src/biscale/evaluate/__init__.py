"""``biscale evaluate``: the paper's evaluation end to end (docs/evaluate.md).

Scenarios (bundled TOML files or your own) name a workload, a cluster, SLOs, loads and the systems to compare; the
runner finds the cluster's capacity, runs every (load, system) on identical requests on a process pool or Ray,
writes one run directory per run and ``results.json`` (docs/results.md), and the report turns them into one
self-contained HTML page.
"""

from biscale.evaluate.backends import Backend, PoolBackend, RayBackend, make_backend
from biscale.evaluate.runner import RunTask, execute_run, run_evaluation
from biscale.evaluate.scenario import (
    ALL_SYSTEMS,
    DEFAULT_SCENARIO,
    QUICK_DURATION_S,
    Scenario,
    bundled_scenarios,
    load_scenario,
)
from biscale.results.catalog import DEFAULT_SYSTEMS, SYSTEMS
from biscale.results.layout import RESULTS_FORMAT, RESULTS_VERSION, one_run_results, read_results, write_results

__all__ = [
    "ALL_SYSTEMS",
    "DEFAULT_SCENARIO",
    "DEFAULT_SYSTEMS",
    "QUICK_DURATION_S",
    "RESULTS_FORMAT",
    "RESULTS_VERSION",
    "SYSTEMS",
    "Backend",
    "PoolBackend",
    "RayBackend",
    "RunTask",
    "Scenario",
    "bundled_scenarios",
    "execute_run",
    "load_scenario",
    "make_backend",
    "one_run_results",
    "read_results",
    "run_evaluation",
    "write_results",
]
