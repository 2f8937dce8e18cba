"""Arrival-rate validation shared by the synthetic arrival processes and by length tables loaded as traces."""

from __future__ import annotations

import math

from biscale.errors import InputError

#: Refuse to synthesise more requests than this (protects memory against typos such as rate 1e9).
MAX_SYNTH_REQUESTS = 50_000_000


def check_rate(rate_rps: float, duration_s: float) -> None:
    """Raise :class:`InputError` unless ``rate_rps`` and ``duration_s`` are positive, finite and not too many."""
    if not (math.isfinite(rate_rps) and rate_rps > 0):
        raise InputError(f"rate must be a positive number of requests per second (got {rate_rps})", field="rate_rps")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise InputError(f"duration must be a positive number of seconds (got {duration_s})", field="duration_s")
    if rate_rps * duration_s > MAX_SYNTH_REQUESTS:
        raise InputError(
            f"rate x duration = {rate_rps * duration_s:.3g} requests exceeds the limit of {MAX_SYNTH_REQUESTS}",
            field="rate_rps",
        )
