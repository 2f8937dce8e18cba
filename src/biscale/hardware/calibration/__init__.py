"""Calibration of the roofline hardware model against the reference measurements (``biscale calibrate``).

A package per concern: :mod:`.datasets` (the measurements, read into tables), :mod:`.comparisons` (model vs
measurement, one function per dataset), :mod:`.checks` (one record per check: dataset, source, role, metric,
tolerance; and their run), :mod:`.fitting` (the constants fitted to the allowed data, with leave-one-dataset-out
errors), :mod:`.transfer` (the H100 constants carried to the A100s), :mod:`.plots` (predicted-vs-measured PNGs).
Published 70B-on-H100 results are held out: no fit residual reads them.
"""

from biscale.hardware.calibration.checks import (
    CHECK_BY_NAME,
    CHECKS,
    HELD_OUT,
    IN_SAMPLE,
    OUT_OF_SAMPLE,
    Check,
    CheckSpec,
    calibrated_pairs,
    checks_table,
    run_checks,
    select_checks,
    stored_lodo_errors,
)
from biscale.hardware.calibration.datasets import Datasets, calibration_dir, load_datasets, measured_dir
from biscale.hardware.calibration.fitting import FIT_DATASETS, fit_constants, lodo_errors, refit_all
from biscale.hardware.calibration.plots import plot_checks

__all__ = [
    "CHECKS",
    "CHECK_BY_NAME",
    "FIT_DATASETS",
    "HELD_OUT",
    "IN_SAMPLE",
    "OUT_OF_SAMPLE",
    "Check",
    "CheckSpec",
    "Datasets",
    "calibrated_pairs",
    "calibration_dir",
    "checks_table",
    "fit_constants",
    "load_datasets",
    "lodo_errors",
    "measured_dir",
    "plot_checks",
    "refit_all",
    "run_checks",
    "select_checks",
    "stored_lodo_errors",
]
