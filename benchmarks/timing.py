"""What the benchmarks share: the best wall time of repeated runs (the least disturbed one on a shared machine)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_wall_s(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of ``repeat`` calls of ``fn``, seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
