"""Summary statistics of a trace (what ``biscale trace stats`` prints)."""

from __future__ import annotations

import math

import numpy as np

from biscale.workload.lengths import LengthTable
from biscale.workload.trace import Trace

#: Window for the peak-rate statistic, seconds (short enough to see bursts, long enough to average noise).
PEAK_WINDOW_S = 60.0


def interarrival_cv(arrival_s: np.ndarray) -> float:
    """Coefficient of variation (std/mean, population std) of the gaps between consecutive arrivals."""
    if arrival_s.size < 3:
        return math.nan
    gaps = np.diff(arrival_s)
    mean = float(gaps.mean())
    return float(gaps.std()) / mean if mean > 0 else math.nan


def peak_rate_rps(arrival_s: np.ndarray, window_s: float = PEAK_WINDOW_S) -> float:
    """Highest request count in any fixed ``window_s`` bin (bins from t = 0), divided by ``window_s``."""
    if arrival_s.size == 0:
        return math.nan
    # Only occupied bins are counted (float bin numbers: any span fits): memory follows the requests, not the span.
    _, counts = np.unique(arrival_s // window_s, return_counts=True)
    return float(counts.max()) / window_s


def trace_stats(trace: Trace | LengthTable) -> dict[str, object]:
    """Requests, span, mean and peak rate, inter-arrival CV, and length mean/p50/p90/p99/max (tokens).

    Keys carry their unit; ``requests`` is a count. Percentiles use linear interpolation. ``mean_rate_rps`` is
    requests / span (the span runs from the first to the last arrival). A :class:`LengthTable` has no arrival
    keys (``has_arrivals`` is false).
    """
    n = len(trace)
    out: dict[str, object] = {"name": trace.name, "source": trace.source, "requests": n}
    if isinstance(trace, Trace):
        out["has_arrivals"] = True
        out["span_s"] = trace.duration_s
        out["mean_rate_rps"] = trace.mean_rate_rps
        out["peak_rate_60s_rps"] = peak_rate_rps(trace.arrival_s)
        out["interarrival_cv"] = interarrival_cv(trace.arrival_s)
    else:
        out["has_arrivals"] = False
    for label, arr in (("input", trace.input_tokens), ("output", trace.output_tokens)):
        if n:
            p50, p90, p99 = np.percentile(arr, [50, 90, 99])
            mean, top = float(arr.mean()), int(arr.max())
        else:
            p50 = p90 = p99 = mean = math.nan
            top = 0
        out[f"{label}_mean_tokens"] = mean
        out[f"{label}_p50_tokens"] = float(p50)
        out[f"{label}_p90_tokens"] = float(p90)
        out[f"{label}_p99_tokens"] = float(p99)
        out[f"{label}_max_tokens"] = top
    for key in ("excluded_failed_requests", "out_of_order_rows"):
        if key in trace.meta:
            out[key] = trace.meta[key]
    return out
