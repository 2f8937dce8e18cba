"""Trace operations: rescale the mean rate keeping burstiness, replace lengths, cut time windows."""

from __future__ import annotations

import math

import numpy as np

from biscale.errors import InputError
from biscale.workload.lengths import LengthTable
from biscale.workload.rate import check_request_count, check_seed
from biscale.workload.trace import Trace

#: Default largest time shift of a superposed copy when rescaling up, seconds.
DEFAULT_SHIFT_S = 60.0
#: The ways :func:`rescale_rate` changes the rate.
RESCALE_METHODS = ("sample", "time")


def _rebase(arrival_s: np.ndarray) -> np.ndarray:
    return arrival_s - arrival_s[0] if arrival_s.size else arrival_s


def rescale_rate(
    trace: Trace,
    target_rate_rps: float,
    seed: int = 0,
    *,
    method: str = "sample",
    shift_s: float = DEFAULT_SHIFT_S,
) -> Trace:
    """The trace at mean rate ``target_rate_rps``, keeping its burstiness.

    ``method="sample"`` (default, the paper's "change the rate by sampling the trace") keeps the span and the
    time-of-day shape. With f = target / current rate: when f < 1 each request is kept with probability f
    (seeded Bernoulli thinning); when f >= 1 the result superposes floor(f) copies plus one copy thinned to
    f - floor(f). Copy j > 0 is shifted by a seeded uniform offset in [0, ``shift_s``) and wrapped around the
    span, so its rate profile (the shape on scales above ``shift_s``) lines up with the original while its
    fine-grained gaps do not coincide with the other copies'. Every request keeps its own lengths. Thinning
    moves the inter-arrival CV towards 1 (CV'^2 = f CV^2 + 1 - f for a renewal process): negligible for the
    Azure conv trace (CV 1.09), large for very bursty traces such as Azure code (CV 13).

    ``method="time"`` divides every arrival time by f instead: the inter-arrival CV and the order of requests are
    kept exactly, but the span shrinks (or grows) by f, so a 1 h trace at 4x lasts 15 min. See docs/workloads.md.
    """
    if not (math.isfinite(target_rate_rps) and target_rate_rps > 0):
        raise InputError(f"target rate must be a positive number (got {target_rate_rps})", field="rate_rps")
    if len(trace) < 2 or trace.duration_s <= 0:
        raise InputError(f"trace {trace.name!r} needs at least two requests over a positive span to rescale")
    if not (math.isfinite(shift_s) and shift_s >= 0):
        raise InputError(f"shift must be >= 0 seconds (got {shift_s})", field="shift_s")
    if method not in RESCALE_METHODS:
        raise InputError(f"unknown rescale method {method!r} (known: {', '.join(RESCALE_METHODS)})", field="method")
    seed = check_seed(seed)
    factor = target_rate_rps / trace.mean_rate_rps
    if method == "sample":
        check_request_count(
            factor * len(trace),
            f"rescaling {trace.name!r} ({len(trace):,} requests over {trace.duration_s:,.0f} s) to "
            f"{target_rate_rps:g} req/s",
        )
    meta = dict(trace.meta)
    meta.update({"rescaled_from_rps": trace.mean_rate_rps, "rescale_factor": factor, "rescale_seed": seed})
    if method == "time":
        meta["rescale_method"] = "time"
        return Trace(
            trace.arrival_s / factor,
            trace.input_tokens.copy(),
            trace.output_tokens.copy(),
            name=trace.name,
            source=trace.source,
            meta=meta,
        )
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    span = trace.duration_s
    whole = math.floor(factor)
    frac = factor - whole
    times: list[np.ndarray] = []
    index: list[np.ndarray] = []
    n = len(trace)
    for copy in range(whole + (1 if frac > 1e-12 else 0)):
        idx = np.arange(n) if copy < whole else np.flatnonzero(rng.random(n) < frac)
        t = trace.arrival_s[idx]
        if copy > 0:
            offset = float(rng.uniform(0.0, min(shift_s, span)))
            t = np.where(t + offset <= span, t + offset, t + offset - span)
        times.append(t)
        index.append(idx)
    all_t = np.concatenate(times) if times else np.zeros(0)
    all_i = np.concatenate(index) if index else np.zeros(0, dtype=np.int64)
    order = np.argsort(all_t, kind="stable")
    all_t, all_i = all_t[order], all_i[order]
    meta["rescale_method"] = "thinning" if factor < 1 else "superposition"
    meta["rescale_shift_s"] = shift_s
    return Trace(
        _rebase(all_t),
        trace.input_tokens[all_i],
        trace.output_tokens[all_i],
        name=trace.name,
        source=trace.source,
        meta=meta,
    )


def with_lengths(trace: Trace, lengths: LengthTable, seed: int = 0) -> Trace:
    """The same arrivals with (prompt, output) pairs drawn uniformly with replacement from ``lengths`` (seeded)."""
    rng = np.random.default_rng(np.random.SeedSequence(check_seed(seed)))
    inp, out = lengths.sample(len(trace), rng)
    meta = dict(trace.meta)
    meta.update({"lengths": lengths.name, "lengths_source": lengths.source, "lengths_seed": seed})
    return Trace(trace.arrival_s.copy(), inp, out, name=trace.name, source=trace.source, meta=meta)


def slice_window(trace: Trace, start_s: float, end_s: float) -> Trace:
    """Requests arriving in [start_s, end_s), re-based so the first of them arrives at 0.

    ``meta["window_offset_s"]`` keeps the gap between ``start_s`` and that first arrival.
    """
    if not (math.isfinite(start_s) and math.isfinite(end_s)) or start_s < 0 or end_s <= start_s:
        raise InputError(f"window must satisfy 0 <= start < end (got start {start_s} s, end {end_s} s)")
    lo, hi = np.searchsorted(trace.arrival_s, [start_s, end_s], side="left")
    t = trace.arrival_s[lo:hi]
    meta = dict(trace.meta)
    meta.update(
        {
            "window_start_s": start_s,
            "window_end_s": end_s,
            "window_offset_s": float(t[0] - start_s) if t.size else math.nan,
        }
    )
    return Trace(
        _rebase(t),
        trace.input_tokens[lo:hi],
        trace.output_tokens[lo:hi],
        name=trace.name,
        source=trace.source,
        meta=meta,
    )
