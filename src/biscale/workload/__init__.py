"""Workloads: production traces (Azure, BurstGPT, Mooncake), length tables (ShareGPT), synthetic arrivals,
and the operations the simulator and planner need (rate rescaling that keeps burstiness, length replacement,
time windows, summary statistics). See ``docs/workloads.md``."""

from biscale.workload.arrivals import gamma_trace, poisson_trace
from biscale.workload.bundled import BUNDLED_LENGTHS, BUNDLED_TRACES, BundledDataset
from biscale.workload.lengths import LengthTable
from biscale.workload.loaders import (
    TRACE_FORMATS,
    TraceFormat,
    TraceOrderWarning,
    load_any,
    load_lengths,
    load_trace,
    register_trace_format,
    save_trace,
)
from biscale.workload.ops import RESCALE_METHODS, rescale_rate, slice_window, with_lengths
from biscale.workload.rate import MAX_SYNTH_REQUESTS
from biscale.workload.stats import trace_stats
from biscale.workload.trace import Trace

__all__ = [
    "BUNDLED_LENGTHS",
    "BUNDLED_TRACES",
    "MAX_SYNTH_REQUESTS",
    "RESCALE_METHODS",
    "TRACE_FORMATS",
    "BundledDataset",
    "LengthTable",
    "Trace",
    "TraceFormat",
    "TraceOrderWarning",
    "gamma_trace",
    "load_any",
    "load_lengths",
    "load_trace",
    "poisson_trace",
    "register_trace_format",
    "rescale_rate",
    "save_trace",
    "slice_window",
    "trace_stats",
    "with_lengths",
]
