"""Static baseline: one locked clock per phase for the whole run, the lowest that meets both SLOs on the trace.

Found offline by search with the simulator on the **predictors** (``PredictorCostModel``, the belief side): the
static baseline is what an operator could pick in advance from their own profiling, without the ground truth. (A
search on the hardware model would hand the baseline knowledge no controller has.) The clocks found are then run on
whatever the evaluation uses as truth, where they may miss an SLO the beliefs said they meet: that is reported, not
corrected.

Search: with decode at the top clock, binary search over the supported clocks for the lowest prefill clock whose
run meets both P99 targets (``slo_met``); then, with prefill at that clock, the lowest decode clock. Both searches
assume that a higher clock never makes a run miss its SLOs (true of latency, which never grows with the clock).
When even the top clocks miss, both phases stay at the top and ``meets_slo`` is False. Each probe is one simulation
of the whole trace.

The prefill search starts from a guess: the lowest clock whose **prefill-isolated** runs (``SimConfig.isolate_phase``:
a request ends when its KV has left; no decode is simulated, several times cheaper) meet the TTFT target, found by
bisection on those cheap runs. From the guess the whole-trace probes gallop (the guess, one clock below, then
doubling steps) and bisect within the bracket they find, so every decision rests on whole-trace runs as before and,
under the same monotonicity, the result is the same clock; only fewer whole-trace runs are spent when the guess is
close (2-3 instead of ~7).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from biscale.control.controllers import ControllerContext, FixedClock
from biscale.control.placement import Placement
from biscale.errors import InputError
from biscale.predict.costmodel import PredictorCostModel
from biscale.predict.predictor import Predictor
from biscale.sim import SimConfig, simulate

if TYPE_CHECKING:
    from biscale.workload.trace import Trace


@dataclass(frozen=True)
class StaticClocks:
    """The result of :func:`search_static_clocks`."""

    prefill_mhz: int
    decode_mhz: int
    meets_slo: bool
    """Whether the chosen pair meets both SLOs on the predictors (False: even the top clocks miss)."""
    runs: int
    """Simulations the search ran."""
    summary: dict[str, Any]
    """The summary of the run at the chosen pair (on the predictors)."""


_CACHE: dict[str, StaticClocks] = {}

#: Decode-cost interpolation step of the search's per-shape cache (the capacity table's, max error ~1e-4; see
#: :class:`~biscale.predict.costmodel.PredictorCostModel`). Exact decode queries made one search of an hour of the
#: Azure trace at 46 req/s on 16 GPUs take ~4 minutes; cached, 2-3x less.
DECODE_CONTEXT_STEP_TOKENS = 1024


def _key(trace: Trace, placement: Placement, predictor: Predictor, config: SimConfig | None) -> str:
    h = hashlib.sha256()
    for a in (trace.arrival_s, trace.input_tokens, trace.output_tokens):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(placement.spec().encode())
    h.update(repr(config).encode())
    h.update(f"{predictor.gpu}/{predictor.model}/{predictor.path}/{id(predictor.models)}".encode())
    return h.hexdigest()


def lowest_meeting(clocks: Sequence[int], ok: Callable[[int], bool], guess: int | None = None) -> int:
    """The lowest of the sorted ``clocks`` for which ``ok`` holds, assuming it holds at the top and, once it holds,
    at every higher clock. ``guess`` (an index): gallop from it to a bracket (the guess, one below or above, then
    doubling steps), then bisect; two calls of ``ok`` when the guess is right, about 2 log2(distance) when not."""
    lo, hi = 0, len(clocks) - 1  # invariant: clocks[hi] meets, every clock below clocks[lo] misses
    if guess is not None and guess < hi:
        if ok(clocks[guess]):
            hi, step = guess, 1
            while hi - step >= lo and ok(clocks[hi - step]):
                hi, step = hi - step, step * 2
            lo = max(lo, hi - step + 1)
        else:
            lo, step = guess + 1, 1
            while lo + step - 1 < hi and not ok(clocks[lo + step - 1]):
                lo, step = lo + step, step * 2
            hi = min(hi, lo + step - 1)
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(clocks[mid]):
            hi = mid
        else:
            lo = mid + 1
    return clocks[hi]


def search_static_clocks(
    trace: Trace, placement: Placement, predictor: Predictor, config: SimConfig | None = None
) -> StaticClocks:
    """The lowest per-phase static clocks meeting both SLOs on ``trace`` (simulated on the predictors); cached."""
    key = _key(trace, placement, predictor, config)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    cfg = config or SimConfig()
    cm = PredictorCostModel(predictor, decode_context_step_tokens=DECODE_CONTEXT_STEP_TOKENS)
    clocks = cm.supported_clocks_mhz
    runs = 0
    summaries: dict[tuple[int, int], dict[str, Any]] = {}

    def run(p: int, d: int) -> dict[str, Any]:
        nonlocal runs
        if (p, d) not in summaries:
            runs += 1
            res = simulate(trace, placement, cm, {"prefill": FixedClock(p), "decode": FixedClock(d)}, config=cfg)
            summaries[(p, d)] = res.summary
        return summaries[(p, d)]

    top = clocks[-1]

    if not run(top, top)["slo_met"]:
        result = StaticClocks(top, top, False, runs, run(top, top))
    else:
        iso = cfg.model_copy(update={"isolate_phase": "prefill"})
        slo = cfg.slo

        def prefill_alone_meets(c: int) -> bool:
            req = simulate(
                trace, placement, cm, {"prefill": FixedClock(c), "decode": FixedClock(top)}, config=iso
            ).requests
            keep = (req["status"] != "not_arrived").to_numpy()
            good = ((req["status"] == "completed").to_numpy() & (req["ttft_s"].to_numpy() <= slo.ttft_s))[keep]
            return bool(good.size == 0 or 100.0 * good.mean() >= slo.percentile)

        guess = clocks.index(lowest_meeting(clocks, prefill_alone_meets))
        p = lowest_meeting(clocks, lambda c: run(c, top)["slo_met"], guess)
        d = lowest_meeting(clocks, lambda c: run(p, c)["slo_met"])
        result = StaticClocks(p, d, True, runs, run(p, d))
    _CACHE[key] = result
    return result


class StaticClock(FixedClock):
    """A :class:`FixedClock` that remembers the search that chose it."""

    name = "static"

    def __init__(self, clock_mhz: int, search: StaticClocks) -> None:
        super().__init__(clock_mhz)
        self.search = search


def static_from_context(ctx: ControllerContext) -> StaticClock:
    """The :data:`~biscale.control.controllers.CONTROLLERS` factory of ``static``: the run's ``trace`` and
    ``placement`` are searched offline on the predictors (``sim_config``: the run's simulator settings)."""
    if ctx.trace is None or ctx.placement is None:
        raise InputError("the static baseline needs the run's trace and placement", field="controller")
    if ctx.options:
        raise InputError(f"controller 'static' takes no options, got {sorted(ctx.options)}", field="controller")
    found = search_static_clocks(ctx.trace, ctx.placement, ctx.load_predictor(), ctx.sim_config)
    return StaticClock(found.prefill_mhz if ctx.phase == "prefill" else found.decode_mhz, found)
