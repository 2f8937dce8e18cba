"""Synthetic arrival processes: Poisson and Gamma renewal processes with lengths sampled from a table.

Inter-arrival gaps are i.i.d.: exponential with mean 1/rate (Poisson), or Gamma with shape k = 1/cv^2 and
scale theta = cv^2/rate, so the mean gap is k*theta = 1/rate and the gap CV is 1/sqrt(k) = cv. cv = 1 is Poisson;
cv > 1 is bursty (the paper's controlled experiments use Gamma arrivals).
"""

from __future__ import annotations

import math

import numpy as np

from biscale.errors import InputError
from biscale.workload.lengths import LengthTable
from biscale.workload.loaders import load_lengths
from biscale.workload.rate import check_rate, check_seed
from biscale.workload.trace import Trace


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for arrivals and lengths: changing the length table never moves the arrivals."""
    a, b = np.random.SeedSequence(check_seed(seed)).spawn(2)
    return np.random.default_rng(a), np.random.default_rng(b)


def gamma_arrivals(rate_rps: float, cv: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times in [0, duration_s]: the first at 0, then i.i.d. Gamma gaps (mean 1/rate, CV ``cv``)."""
    check_rate(rate_rps, duration_s)
    if not (math.isfinite(cv) and cv > 0):
        raise InputError(f"coefficient of variation must be > 0 (got {cv})", field="cv")
    shape = 1.0 / (cv * cv)
    scale = cv * cv / rate_rps
    expected = rate_rps * duration_s
    chunk = int(expected + 6.0 * math.sqrt(expected) * max(cv, 1.0) + 16)
    parts: list[np.ndarray] = [np.zeros(1)]
    t_end = 0.0
    while t_end <= duration_s:
        gaps = rng.exponential(1.0 / rate_rps, size=chunk) if cv == 1.0 else rng.gamma(shape, scale, size=chunk)
        times = t_end + np.cumsum(gaps)
        parts.append(times)
        t_end = float(times[-1])
    arrivals = np.concatenate(parts)
    return arrivals[arrivals <= duration_s]


def _from_arrivals(
    arrivals: np.ndarray, lengths: LengthTable | str, rng: np.random.Generator, name: str, meta: dict[str, object]
) -> Trace:
    table = load_lengths(lengths) if isinstance(lengths, str) else lengths
    inp, out = table.sample(arrivals.size, rng)
    return Trace(
        arrivals, inp, out, name=name, source=f"synthetic ({meta['process']}, lengths {table.name})", meta=meta
    )


def poisson_trace(rate_rps: float, duration_s: float, lengths: LengthTable | str, seed: int = 0) -> Trace:
    """Poisson arrivals at ``rate_rps`` over ``duration_s`` seconds (first at 0); lengths drawn from ``lengths``."""
    arr_rng, len_rng = _streams(seed)
    arrivals = gamma_arrivals(rate_rps, 1.0, duration_s, arr_rng)
    meta: dict[str, object] = {"process": "poisson", "rate_rps": rate_rps, "duration_s": duration_s, "seed": seed}
    return _from_arrivals(arrivals, lengths, len_rng, f"poisson-{rate_rps:g}rps", meta)


def gamma_trace(rate_rps: float, cv: float, duration_s: float, lengths: LengthTable | str, seed: int = 0) -> Trace:
    """Gamma renewal arrivals (mean rate ``rate_rps``, inter-arrival CV ``cv``) over ``duration_s`` seconds."""
    arr_rng, len_rng = _streams(seed)
    arrivals = gamma_arrivals(rate_rps, cv, duration_s, arr_rng)
    meta: dict[str, object] = {
        "process": "gamma",
        "rate_rps": rate_rps,
        "cv": cv,
        "duration_s": duration_s,
        "seed": seed,
    }
    return _from_arrivals(arrivals, lengths, len_rng, f"gamma-{rate_rps:g}rps-cv{cv:g}", meta)
