"""Validation shared by everything that makes or reshapes a workload: arrival rates, seeds, and the cap on how
many requests one operation may create."""

from __future__ import annotations

import math
import numbers

from biscale.errors import InputError

#: Refuse to synthesise more requests than this (protects memory against typos such as rate 1e9): a trace of
#: this size takes ~1.2 GB as arrays (arrival time, prompt and output tokens: 24 bytes a request).
MAX_SYNTH_REQUESTS = 50_000_000


def check_request_count(requests: float, what: str) -> None:
    """Raise :class:`InputError` naming ``what`` and the count when it would create too many requests."""
    if requests > MAX_SYNTH_REQUESTS:
        raise InputError(
            f"{what} would create {requests:.3g} requests, more than the limit of {MAX_SYNTH_REQUESTS:,} "
            "(a guard against exhausting memory)",
            field="rate_rps",
        )


def check_rate(rate_rps: float, duration_s: float) -> None:
    """Raise :class:`InputError` unless ``rate_rps`` and ``duration_s`` are positive, finite and not too many."""
    if not (math.isfinite(rate_rps) and rate_rps > 0):
        raise InputError(f"rate must be a positive number of requests per second (got {rate_rps})", field="rate_rps")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise InputError(f"duration must be a positive number of seconds (got {duration_s})", field="duration_s")
    check_request_count(rate_rps * duration_s, f"rate {rate_rps:g} req/s x duration {duration_s:g} s")


def check_seed(seed: object) -> int:
    """A seed as an ``int``: a whole number >= 0 (numpy's ``SeedSequence`` refuses anything else)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise InputError(f"seed must be a whole number >= 0 (got {seed!r})", field="seed")
    return int(seed)
