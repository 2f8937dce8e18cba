"""Decode slack control: before each decode iteration, the lowest candidate clock that keeps every running request
on its TPOT target.

A request's TPOT is ``(last token - first token) / (output tokens - 1)``: the mean time between its tokens. After
``g`` tokens (first included) and ``tau`` seconds since its first token, it stays within the target ``T`` (minus a
safety margin) if the coming iterations take at most ``T`` each on average -- but a request that is behind (``tau >
T (g - 1)``) must catch up and one that is ahead has banked slack. The controller lets a request spread its catch-up
over the next ``H`` tokens (``catchup_tokens``): iteration latency ``l`` is acceptable for it when

    (tau + H l) / (g - 1 + H) <= T (1 - margin)   <=>   l <= T (1 - margin) - (tau - T (1 - margin) (g - 1)) / H

and the batch's allowed latency is the minimum over its requests (ahead-of-schedule requests never allow more than
their fresh neighbours, so slack is not "spent" on one of them). With no history in the state
(``running_decode_time_s`` empty) every request counts as on schedule: ``l <= T (1 - margin)`` (the paper's rule).

The predictor gives the iteration's latency at each candidate clock (through :class:`DecodeLatencyTable`, a
per-TP table of its predictions that answers in a few microseconds); it is corrected online for bias (:mod:`bias`);
the lowest clock whose corrected latency is allowed wins. Banked slack never buys an iteration longer than the ITL
target (``slo.itl_target_s``, minus the margin): a request ahead of its TPOT would otherwise see one long gap,
a stall a streaming user notices though its mean stays within the target. Guards run the top clock: KV use at or above
``kv_guard_pct``, ``waiting_guard`` or more requests waiting to join the batch, a running batch at ``batch_guard_pct``
of the engine's sequence limit, or a preemption in the last
``preemption_hold_s``. The growth guard (``growth_guard``, on by default) acts before the batch guard would: the
running batch grows in proportion to the iteration's latency (Little's law at a given arrival rate), so a clock whose
predicted latency, relative to the clock in force, would carry the batch past ``batch_guard_pct`` of the limit is
not taken; without it the clock swings between the top and a low one and requests that wait outside a full batch
see one long gap (measured: the P99 largest gap 275 ms at 85 % load on ten minutes of the Azure trace).
Hysteresis: a higher clock is taken at once (latency is at stake); a lower one only after it
has been wanted for ``down_dwell`` decisions in a row and saves at least ``min_saving_pct`` of the predicted power
(a busy decode instance's energy is its power times the time, :mod:`clocks`), so a switch (which costs the switch
latency and may have to be undone) is made only when it pays.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from biscale.control.bias import DEFAULT_ALPHA, LatencyBias
from biscale.control.clocks import DEFAULT_N_CLOCKS, CandidateClocks
from biscale.control.controllers import ClockController
from biscale.control.state import InstanceState
from biscale.errors import InputError
from biscale.predict.predictor import Predictor

DEFAULT_MARGIN_PCT = 10.0
"""Safety margin taken off the TPOT target, percent."""
DEFAULT_CATCHUP_TOKENS = 4
"""Tokens over which a request that is behind its TPOT target must catch up."""
DEFAULT_KV_GUARD_PCT = 90.0
"""KV use at which the top clock is forced, percent (the paper's precursor's threshold)."""
DEFAULT_BATCH_GUARD_PCT = 90.0
"""Batch occupancy (running requests as a share of the engine's ``max_batch_seqs``) at which the top clock is
forced, percent. Why: a lower clock lengthens iterations, so at a given arrival rate the running batch grows
(requests stay longer); near the engine's sequence limit, newcomers would wait outside the batch, and that wait
lands in their TPOT (a request with a few output tokens misses its target on one such wait). Running the top
clock there shrinks the batch before the limit is hit; the paper's rule "jump to the highest clock when requests
pile up", applied one step before they do."""
DEFAULT_WAITING_GUARD = 1
"""Requests waiting to join the batch at which the top clock is forced (a waiting request means the instance is
saturated: faster iterations free batch slots and KV sooner)."""
DEFAULT_PREEMPTION_HOLD_S = 1.0
"""Seconds at the top clock after a preemption."""
DEFAULT_DOWN_DWELL = 3
"""Consecutive decisions a lower clock must be wanted before stepping down."""
DEFAULT_MIN_SAVING_PCT = 1.0
"""Least predicted power saving worth a downward switch, percent."""


TABLE_POINTS = 33
"""Context-sum knots per batch size in :class:`DecodeLatencyTable` (log-spaced over the training range)."""


class DecodeLatencyTable:
    """Predicted decode-iteration latency and power at fixed candidate clocks, tabulated for fast lookup.

    Why: one predictor query costs ~25-35 us of numpy overhead, most of the decode controller's budget. The
    predictor is, at a fixed batch size and clock, affine in the batch's context sum except where its monotone
    fix-up across clocks changes branch (and power, energy / latency, nearly so), so a table over every batch size
    of the predictor's training range times :data:`TABLE_POINTS` log-spaced context sums, interpolated linearly in
    the context sum, reproduces it to within 0.1 % (latency) and 0.5 % (power) (tested). It is built with one
    predictor call on first use.
    Shapes outside the training range are not in the table (``None``): the caller asks the predictor.
    """

    def __init__(self, predictor: Predictor, tp: int, clocks_mhz: tuple[int, ...], points: int = TABLE_POINTS) -> None:
        model = predictor.models[("decode", tp)]
        self.b_lo = max(1, math.ceil(model.lo[0]))
        self.b_hi = int(model.hi[0])
        self.ctx_lo = float(model.lo[1])
        self.ctx_hi = float(model.hi[1])
        ctx = np.geomspace(self.ctx_lo, self.ctx_hi, points)
        ctx[0], ctx[-1] = self.ctx_lo, self.ctx_hi
        b = np.arange(self.b_lo, self.b_hi + 1, dtype=np.float64)
        raw = np.column_stack([np.repeat(b, points), np.tile(ctx, b.size)])
        pred = predictor.predict("decode", tp, raw, clocks_mhz)
        shape = (b.size, points, len(clocks_mhz))
        self.latency_s = pred.latency_s.reshape(shape)
        """Latency, seconds (batch size - b_lo, knot, clock)."""
        self.power_w = pred.power_w.reshape(shape)
        """Power per GPU, watts (same axes)."""
        self.ctx = ctx
        self._ctx = ctx.tolist()
        self._lat_rows: list[list[list[float]]] = self.latency_s.tolist()
        self._log_lo = math.log(self.ctx_lo)
        self._inv_log_step = (points - 1) / math.log(self.ctx_hi / self.ctx_lo) if self.ctx_hi > self.ctx_lo else 0.0
        self._last = points - 2

    def _knot(self, batch_size: int, context_sum: float) -> tuple[int, float] | None:
        """(knot index, fraction of the way to the next knot), or ``None`` outside the table."""
        if not (self.b_lo <= batch_size <= self.b_hi and self.ctx_lo <= context_sum <= self.ctx_hi):
            return None
        i = min(int((math.log(context_sum) - self._log_lo) * self._inv_log_step), self._last)
        c0 = self._ctx[i]
        return i, (context_sum - c0) / (self._ctx[i + 1] - c0)

    def latency(self, batch_size: int, context_sum: float) -> list[float] | None:
        """Latency at each clock (N values), seconds; ``None`` outside the table (plain floats: the hot path)."""
        at = self._knot(batch_size, context_sum)
        if at is None:
            return None
        i, f = at
        row = self._lat_rows[batch_size - self.b_lo]
        return [a + f * (b - a) for a, b in zip(row[i], row[i + 1], strict=True)]

    def power(self, batch_size: int, context_sum: float) -> np.ndarray | None:
        """Power per GPU at each clock (N,), watts; ``None`` outside the table."""
        at = self._knot(batch_size, context_sum)
        if at is None:
            return None
        i, f = at
        row = self.power_w[batch_size - self.b_lo]
        return row[i] + f * (row[i + 1] - row[i])


@dataclass(slots=True)
class _Memory:
    preemptions: int = 0
    hold_until_s: float = -math.inf
    dwell: int = 0


def growth_guarded(
    level: int,
    latency_s: Sequence[float],
    clocks: Sequence[int],
    current_mhz: int | None,
    batch_size: int,
    batch_guard_pct: float,
    max_batch_seqs: int,
) -> int:
    """The lowest clock index from ``level`` up whose iteration latency keeps the running batch within the batch
    guard: at a steady arrival rate the batch grows with the iteration's latency (Little's law), relative to the
    latency at the clock in force (``current_mhz``; the top clock's when it is not a candidate). The batch guard
    would only react once the batch is there, and the clock would then swing between the top and a low one."""
    cap = batch_guard_pct / 100.0 * max_batch_seqs
    top = len(latency_s) - 1
    ref = latency_s[clocks.index(current_mhz)] if current_mhz in clocks else latency_s[top]
    while level < top and batch_size * latency_s[level] / ref > cap:
        level += 1
    return level


class DecodeSlack(ClockController):
    """Slack-aware clock selection for decode instances (see the module docstring)."""

    name = "slack"

    def __init__(
        self,
        predictor: Predictor,
        *,
        n_clocks: int = DEFAULT_N_CLOCKS,
        clocks_mhz: Sequence[int] | None = None,
        margin_pct: float = DEFAULT_MARGIN_PCT,
        catchup_tokens: int = DEFAULT_CATCHUP_TOKENS,
        kv_guard_pct: float = DEFAULT_KV_GUARD_PCT,
        batch_guard_pct: float = DEFAULT_BATCH_GUARD_PCT,
        waiting_guard: int = DEFAULT_WAITING_GUARD,
        preemption_hold_s: float = DEFAULT_PREEMPTION_HOLD_S,
        down_dwell: int = DEFAULT_DOWN_DWELL,
        min_saving_pct: float = DEFAULT_MIN_SAVING_PCT,
        bias_alpha: float = DEFAULT_ALPHA,
        growth_guard: bool = True,
    ) -> None:
        if not 0.0 <= margin_pct < 100.0:
            raise InputError(f"margin must be in [0, 100) percent, got {margin_pct}", field="margin_pct")
        self.growth_guard = bool(growth_guard)
        if catchup_tokens < 1:
            raise InputError(f"catch-up horizon must be >= 1 token, got {catchup_tokens}", field="catchup_tokens")
        if waiting_guard < 1 or down_dwell < 1 or preemption_hold_s < 0:
            raise InputError("waiting_guard and down_dwell must be >= 1, preemption_hold_s >= 0", field="slack")
        self.predictor = predictor
        self.margin = float(margin_pct) / 100.0
        self.catchup_tokens = int(catchup_tokens)
        self.kv_guard_pct = float(kv_guard_pct)
        if not 0.0 < batch_guard_pct <= 100.0:
            raise InputError(f"batch guard must be in (0, 100] percent, got {batch_guard_pct}", field="batch_guard_pct")
        self.batch_guard_pct = float(batch_guard_pct)
        self.waiting_guard = int(waiting_guard)
        self.preemption_hold_s = float(preemption_hold_s)
        self.down_dwell = int(down_dwell)
        self.min_saving = float(min_saving_pct) / 100.0
        self.clocks = CandidateClocks(predictor, n_clocks, clocks_mhz)
        self.bias = LatencyBias(bias_alpha)
        self.stats: Counter[str] = Counter()
        """Decisions by outcome: ``planned``, ``infeasible`` (top: even the top clock is too slow), ``kv_guard``,
        ``waiting_guard``, ``batch_guard``, ``preemption_guard``, ``held`` (a lower clock was wanted; hysteresis kept
        the clock), ``idle``."""
        self._memory: dict[int, _Memory] = {}
        self._tables: dict[tuple[int, tuple[int, ...]], DecodeLatencyTable] = {}

    def _table(self, tp: int, clocks: tuple[int, ...]) -> DecodeLatencyTable:
        table = self._tables.get((tp, clocks))
        if table is None:
            table = self._tables[(tp, clocks)] = DecodeLatencyTable(self.predictor, tp, clocks)
        return table

    def predicted_latency_s(self, tp: int, clocks: tuple[int, ...], batch_size: int, context_sum: int) -> list[float]:
        """The predictor's latency of the next iteration at each of ``clocks``, seconds (uncorrected)."""
        lat = self._table(tp, clocks).latency(batch_size, context_sum)
        if lat is None:
            raw = np.array([[batch_size, context_sum]], dtype=np.float64)
            lat = self.predictor.predict("decode", tp, raw, clocks).latency_s[0].tolist()
        return lat

    def predicted_power_w(self, tp: int, clocks: tuple[int, ...], batch_size: int, context_sum: int) -> np.ndarray:
        """The predictor's power per GPU during the next iteration at each of ``clocks`` (N,), watts."""
        power = self._table(tp, clocks).power(batch_size, context_sum)
        if power is None:
            raw = np.array([[batch_size, context_sum]], dtype=np.float64)
            power = self.predictor.predict("decode", tp, raw, clocks).power_w[0]
        return power

    def allowed_latency_s(self, state: InstanceState) -> float:
        """The longest next iteration that keeps every running request on its (margined) TPOT target, seconds."""
        target = state.slo.tpot_s * (1.0 - self.margin)
        itl_cap = state.slo.itl_target_s * (1.0 - self.margin)
        tau = state.running_decode_time_s
        if tau.size != state.running_generated_tokens.size or tau.size == 0:
            return min(target, itl_cap)
        behind = float((tau - target * state.running_generated_tokens).max()) + target
        return min(target - behind / self.catchup_tokens, itl_cap)

    def decide(self, state: InstanceState) -> int | None:
        factor = self.bias.observe(state)
        if state.batch_size == 0:
            self.stats["idle"] += 1
            return state.baseline_clock_mhz
        clocks = self.clocks.get("decode", state.tp, state.supported_clocks_mhz)
        top = len(clocks) - 1
        mem = self._memory.get(state.instance_id)
        if mem is None:
            mem = self._memory[state.instance_id] = _Memory(preemptions=state.preemptions)
        if state.preemptions > mem.preemptions:
            mem.preemptions = state.preemptions
            mem.hold_until_s = state.time_s + self.preemption_hold_s
        guard = None
        if state.kv_capacity_tokens and state.kv_use_pct >= self.kv_guard_pct:
            guard = "kv_guard"
        elif state.queue_len >= self.waiting_guard:
            guard = "waiting_guard"
        elif state.batch_use_pct >= self.batch_guard_pct:
            guard = "batch_guard"
        elif state.time_s < mem.hold_until_s:
            guard = "preemption_guard"
        if guard is not None:
            self.stats[guard] += 1
            mem.dwell = 0
            self.bias.expect(state, math.nan, clocks[top])
            return clocks[top]
        ctx = int(state.running_context_tokens.sum())
        lat = self.predicted_latency_s(state.tp, clocks, state.batch_size, ctx)
        allowed = self.allowed_latency_s(state) / factor
        want = top
        for i, x in enumerate(lat):
            if x <= allowed:
                want = i
                break
        self.stats["planned" if lat[want] <= allowed else "infeasible"] += 1
        current = state.pending_clock_mhz if state.pending_clock_mhz is not None else state.clock_mhz
        if self.growth_guard and state.max_batch_seqs and want < top:
            grown = growth_guarded(
                want, lat, clocks, current, state.batch_size, self.batch_guard_pct, state.max_batch_seqs
            )
            if grown != want:
                self.stats["growth_guard"] += 1
                want = grown
        if current in clocks and want < (cur := clocks.index(current)):
            mem.dwell += 1
            if mem.dwell < self.down_dwell or not self._pays(state.tp, clocks, state.batch_size, ctx, want, cur):
                self.stats["held"] += 1
                want = cur
            else:
                mem.dwell = 0
        else:
            mem.dwell = 0
        self.bias.expect(state, lat[want] * factor, clocks[want])
        return clocks[want]

    def _pays(self, tp: int, clocks: tuple[int, ...], batch_size: int, context_sum: int, low: int, cur: int) -> bool:
        """Whether stepping down from ``clocks[cur]`` to ``clocks[low]`` saves ``min_saving_pct`` of the power."""
        power = self.predicted_power_w(tp, clocks, batch_size, context_sum)
        return bool(power[low] <= (1.0 - self.min_saving) * power[cur])
