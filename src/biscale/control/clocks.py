"""Candidate clocks: the N SM clocks tier 2 chooses among (default N = 7), evenly spread up to the top clock.

The top clock is always a candidate (the guards and the "even the top misses" rule run it). The lower end differs
by phase, because what a lower clock saves differs:

* **Prefill**: from the lowest *energy-optimal* clock of representative batches. A batch's energy ``latency(f) x
  power(f)`` has a minimum over the clock: above it power grows faster than latency falls, below it latency (and
  the static floor of the power draw) grows faster than power falls. A clock below the lowest energy-optimal clock
  of every representative batch is both slower and costlier for every batch -- dominated -- and the MPC, which
  minimises the batches' energy, would never pick it (up to the predictor's interpolation ripple between profiled
  clocks, < 0.5 %). On the bundled H100 / Llama-3.3-70B predictor the optimum of prefill batches of 64-8,192 tokens
  lies at 990-1,200 MHz (the top clock costs 22-69 % more energy per batch), so the TP4 set is 1,050-1,980 MHz in
  ~155 MHz steps.
* **Decode**: from the *lowest supported clock*. A decode instance with work runs iterations back to back, so its
  energy over a period is its power times that period, whatever the batch: at a given token rate a slower iteration
  simply carries a larger batch. The predictor's decode power falls monotonically with the clock (by construction),
  so energy per token at a fixed token rate keeps falling to the lowest clock, below the per-iteration optimum
  (~1,000 MHz, which assumes a fixed batch). What stops the descent is
  latency (each iteration must keep the running requests on their TPOT target), KV memory and the batch limit --
  exactly the slack controller's checks and guards. (Measured end to end: decode energy at 20 req/s on one TP4
  instance falls by 19 % when the lowest candidate moves from 990 to 345 MHz, with the TPOT SLO still met.)

How to choose N: more clocks give finer control (the gap to the best single clock between two candidates shrinks
as 1/N) but the prefill search grows (greedy: <= N levels of <= 2^K combinations; exact: Pareto fronts of up to N
labels per kept label and batch). N = 7 (the paper's choice) puts prefill candidates ~165 MHz apart; a batch's
energy varies by < 2 % between neighbouring candidates around the optimum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from biscale.control.state import DEFAULT_PREFILL_TOKEN_BUDGET
from biscale.errors import InputError
from biscale.predict.predictor import Predictor

DEFAULT_N_CLOCKS = 7
"""Candidate clocks per phase (the paper's N)."""

#: Representative batches for locating the energy-optimal clock: prefill token sums (tokens) ...
PREFILL_PROBE_TOKENS = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
PREFILL_PROBE_PROMPT_TOKENS = 300
"""Mean prompt of a probe prefill batch, tokens (sets its sequence count and attention pairs)."""
#: ... and decode batch sizes (requests), each with this mean context (tokens; about ShareGPT v3's prompt+output mean).
DECODE_PROBE_BATCHES = (1, 4, 16, 64, 128, 256)
DECODE_PROBE_CONTEXT_TOKENS = 700


def snap_to(clocks_mhz: Sequence[int], supported: Sequence[int]) -> tuple[int, ...]:
    """Each clock snapped to the nearest supported one (ties go up), duplicates removed, ascending, MHz."""
    sup = np.asarray(supported, dtype=np.int64)
    out = set()
    for c in clocks_mhz:
        d = np.abs(sup - int(c))
        out.add(int(sup[np.flatnonzero(d == d.min())[-1]]))
    return tuple(sorted(out))


def spread_clocks(lowest_mhz: int, supported: Sequence[int], n: int = DEFAULT_N_CLOCKS) -> tuple[int, ...]:
    """``n`` clocks evenly spaced from ``lowest_mhz`` to the top supported clock, snapped, ascending, MHz.

    Fewer than ``n`` come back only when the range holds fewer supported clocks.
    """
    if n < 1:
        raise InputError(f"need at least 1 candidate clock, got {n}", field="n_clocks")
    sup = tuple(sorted(int(c) for c in supported))
    if not sup:
        raise InputError("no supported clocks", field="supported_clocks_mhz")
    top = sup[-1]
    lo = min(max(int(lowest_mhz), sup[0]), top)
    if n == 1 or lo == top:
        return (top,)
    return snap_to(np.linspace(lo, top, n).round().astype(int).tolist(), [c for c in sup if c >= lo])


def probe_features(phase: str, token_budget: int = DEFAULT_PREFILL_TOKEN_BUDGET) -> np.ndarray:
    """Raw predictor features (K, R) of the representative batches of ``phase`` (see the module docstring)."""
    if phase == "prefill":
        tokens = np.array([t for t in PREFILL_PROBE_TOKENS if t <= max(token_budget, PREFILL_PROBE_TOKENS[0])], float)
        seqs = np.maximum(1.0, np.round(tokens / PREFILL_PROBE_PROMPT_TOKENS))
        pairs = tokens * (tokens / seqs + 1.0) / 2.0
        return np.column_stack([seqs, tokens, pairs])
    if phase == "decode":
        b = np.array(DECODE_PROBE_BATCHES, dtype=np.float64)
        return np.column_stack([b, b * DECODE_PROBE_CONTEXT_TOKENS])
    raise InputError(f"unknown phase '{phase}' (expected 'prefill' or 'decode')", field="phase")


def energy_optimal_clock(
    predictor: Predictor,
    phase: str,
    tp: int,
    supported: Sequence[int],
    token_budget: int = DEFAULT_PREFILL_TOKEN_BUDGET,
) -> int:
    """The lowest clock at which some representative batch of ``phase`` has its least predicted energy, MHz."""
    clocks = tuple(int(c) for c in supported)
    pred = predictor.predict(phase, tp, probe_features(phase, token_budget), clocks)
    best = np.argmin(pred.energy_j, axis=1)
    return int(clocks[int(best.min())])


def default_candidates(
    predictor: Predictor,
    phase: str,
    tp: int,
    supported: Sequence[int],
    n: int = DEFAULT_N_CLOCKS,
    token_budget: int = DEFAULT_PREFILL_TOKEN_BUDGET,
) -> tuple[int, ...]:
    """The default candidate set, MHz: ``n`` clocks up to the top, from the predictor's energy-optimal clock
    (prefill) or the lowest supported clock (decode) (see the module docstring)."""
    if phase == "decode":
        return spread_clocks(min(supported), supported, n)
    return spread_clocks(energy_optimal_clock(predictor, phase, tp, supported, token_budget), supported, n)


class CandidateClocks:
    """Per-(phase, TP, supported list) cache of the candidate set (computed once, on first use).

    ``fixed`` overrides the default: those clocks (snapped to the supported list; the top clock is always added).
    """

    def __init__(self, predictor: Predictor, n: int = DEFAULT_N_CLOCKS, fixed: Sequence[int] | None = None) -> None:
        if n < 1:
            raise InputError(f"need at least 1 candidate clock, got {n}", field="n_clocks")
        self.predictor = predictor
        self.n = int(n)
        self.fixed = None if fixed is None else tuple(int(c) for c in fixed)
        if self.fixed is not None and (not self.fixed or min(self.fixed) <= 0):
            raise InputError("candidate clocks must be positive MHz values", field="clocks")
        self._cache: dict[tuple[str, int, tuple[int, ...], int], tuple[int, ...]] = {}

    def get(
        self, phase: str, tp: int, supported: tuple[int, ...], token_budget: int = DEFAULT_PREFILL_TOKEN_BUDGET
    ) -> tuple[int, ...]:
        """Candidate clocks, ascending, MHz (the last is the top supported clock)."""
        key = (phase, tp, supported, token_budget)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if self.fixed is not None:
            out = snap_to([*self.fixed, supported[-1]], supported)
        else:
            out = default_candidates(
                self.predictor, phase, tp, supported, self.n, token_budget or DEFAULT_PREFILL_TOKEN_BUDGET
            )
        self._cache[key] = out
        return out
