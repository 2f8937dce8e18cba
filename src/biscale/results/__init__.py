"""What an evaluation or a live run leaves behind, and how it is read back: the results layout (``results.json`` and
one directory per run, docs/results.md), a run's record (its figures from its tables), the systems a results file
names (the catalog), the printed summary table and the HTML report.

Kept apart from :mod:`biscale.evaluate` (which runs simulations) so that live runs (:mod:`biscale.live`) and
``biscale report`` write and read results without importing the simulator's evaluation machinery.
"""

from biscale.results.layout import (
    RESULTS_FORMAT,
    RESULTS_VERSION,
    one_run_results,
    read_results,
    write_results,
    write_run_dir,
)
from biscale.results.record import run_record

__all__ = [
    "RESULTS_FORMAT",
    "RESULTS_VERSION",
    "one_run_results",
    "read_results",
    "run_record",
    "write_results",
    "write_run_dir",
]
