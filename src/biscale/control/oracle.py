"""The clairvoyant oracle: a **heuristic** choosing per-iteration clocks with the future arrivals and the true costs.

It removes every source of error an online controller has (prediction error, unknown arrivals and output lengths,
safety margins), so it shows what better forecasts could buy on the same placement; it is **not a bound** (what it
leaves out is listed below, and an online controller may beat it). The certified lower bound is
:mod:`biscale.bound`. It is the one controller allowed to read the ground truth (the simulator's cost model,
normally the hardware model; ``tests/test_architecture.py`` names this module as the only exception).

The exact optimum over a whole run (every iteration's clock, jointly, with batching that depends on the clocks) is
intractable, so the oracle is a **clairvoyant receding-horizon controller**, computed as follows. An instance with
no work waits at the **lowest supported clock** (an idle GPU's power grows with its locked clock), as the MPC's
default ``idle_clock="lowest"``.

Prefill (:class:`OraclePrefill`), before each iteration:

1. Work: the scheduled batch, the rest of its chunked prompts, the queue, and **this instance's share of the future
   arrivals** from the trace up to ``lookahead_s`` ahead (default 2 x the TTFT target), FCFS. The share follows
   the router's weights (:mod:`biscale.sim.router`: capacity, i.e. the TP degree, as the state carries no
   ``capacity_rps``): every prefill instance of the phase shares this controller, so the ready instances are those
   that decided within ``instance_memory_s`` (default 30 s), and an instance of weight ``w`` out of ``T`` is
   charged a ``w / T`` share of the arrivals spread evenly (equal weights: exactly round robin). With
   ``prefill_instances`` = n the split is n equal shares by instance id. The router's actual choice (least work)
   depends on the future state of the other instances, which the oracle does not simulate.
2. Batches: the simulator's batching rule (vLLM chunked prefill: token budget and sequence limit from the state)
   applied as the instance would form them at the top clock, up to ``horizon`` batches (default 16): a batch takes
   only prompts that have arrived when it starts, and a batch that waits for an arrival gets that **release time**.
3. Costs: the latency and energy of every batch at every oracle clock from the **cost model itself** (no
   prediction error). When the plan covers all the work it knows of, the instance idles afterwards at the lowest
   clock, so time a faster batch saves is spent idle: each batch is priced at its power **above that idle power**
   (``idle_in_objective``, default on; as the MPC's ``net_of_idle``); with work beyond the horizon it runs back to
   back and the whole energy counts. Oracle clocks: ``n_clocks`` (default 16) from the truth's lowest
   energy-optimal clock (of the energy so priced) to the top (:mod:`clocks` explains the range), finer than the
   online controllers' 7.
4. Deadlines: every request's TTFT = its completion - its arrival + the front-end overhead + the KV-transfer
   estimate must meet the target, with **no safety margin**.
5. Solve exactly (:func:`biscale.control.mpc.solve_exact` with release times) for the least energy; run the
   first batch's clock (receding horizon). When even the top clock misses, run the top clock.

Decode (:class:`OracleDecode`), before each iteration: it knows each running request's **exact output length**
(request ids from the state, looked up in the trace), hence its exact remaining life. Request i with ``g`` tokens
out of ``O``, ``tau`` seconds after its first token, meets its TPOT target iff its remaining ``O - g`` iterations take
at most ``T (O - 1) - tau`` in all; at the current batch's latency for the rest of its life that allows
``(T (O - 1) - tau) / (O - g)`` per iteration. The oracle runs the lowest of its clocks (``n_clocks`` from the lowest
supported clock to the top: a busy decode instance's energy is its power times the time, and power falls with the
clock, :mod:`clocks`) whose **true** latency is within the smallest such allowance (the top clock when none is).
The SLO is a percentile, so the oracle may give up a request whose allowance alone forces a higher clock than every
other running request needs, as long as it has given up at most ``sacrifice_share`` (default half) of the
percentile's allowance of the requests it has seen (0.5 % at P99); the online controllers do not know which
requests those are. It keeps the online controller's guards (top clock with requests waiting or the batch at 90 % of
the sequence limit; no clock whose latency would grow the batch past that, by Little's law), for a fair comparison.

What it does not know or do (why it is a heuristic, not a bound): which instance the router will actually give
each future arrival (only its weighted share); how slower clocks would change later batches' composition (batches
are formed at top-clock timing, then re-planned every iteration); work beyond its lookahead; decode batches' future
composition (joins and leaves) and preemptions; and the switch latency. Prefill meets every request's target rather
than the P99, and decode spends only half of the percentile's allowance (a P99-constrained optimum could give up
the hardest 1 % exactly).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from biscale.control.clocks import probe_features, spread_clocks
from biscale.control.controllers import ClockController
from biscale.control.mpc import KV_LINK_BW_BYTES_PER_S, solve_exact
from biscale.control.slack import DEFAULT_BATCH_GUARD_PCT, growth_guarded
from biscale.control.state import DEFAULT_PREFILL_TOKEN_BUDGET, InstanceState
from biscale.costmodel import CostModel, DecodeShape, PrefillShape
from biscale.errors import InputError
from biscale.hardware import get_hardware
from biscale.workload.trace import Trace

DEFAULT_ORACLE_CLOCKS = 16
"""Oracle candidate clocks (finer than the online controllers' 7)."""
DEFAULT_ORACLE_HORIZON = 16
"""Prefill batches the oracle plans over."""
DEFAULT_INSTANCE_MEMORY_S = 30.0
"""A prefill instance counts as ready (sharing the future arrivals) until this long after its last decision, s."""
DEFAULT_SACRIFICE_SHARE = 0.5
"""Share of the SLO percentile's allowance (1 % of requests at P99) the decode oracle may spend on giving up the
TPOT target of a request that alone would force a higher clock."""


def true_energy_optimal_clock(
    cost_model: CostModel, tp: int, supported: Sequence[int], *, net_of_idle: bool = False
) -> int:
    """The lowest clock at which some representative prefill batch (:mod:`clocks`' probes) has its least true
    energy (``net_of_idle``: of its energy above the idle power at the lowest clock), MHz."""
    best = supported[-1]
    idle_w = cost_model.idle_power_w(tp, min(supported)) if net_of_idle else 0.0
    for row in probe_features("prefill"):
        shape = PrefillShape(int(row[0]), int(row[1]), 0.0, float(row[2]))
        costs = (cost_model.prefill_cost(shape, tp, c) for c in supported)
        energy = [x.latency_s * (x.power_w - idle_w) for x in costs]
        best = min(best, supported[int(np.argmin(energy))])
    return int(best)


def idle_clock(state: InstanceState) -> int | None:
    """Where an instance with no work waits: the lowest supported clock (an idle GPU's power grows with its locked
    clock; the next batch pays one switch), as the MPC's default ``idle_clock="lowest"``."""
    supported = state.supported_clocks_mhz
    return min(supported) if supported else state.baseline_clock_mhz


class _OracleBase(ClockController):
    name = "oracle"

    def __init__(self, cost_model: CostModel, trace: Trace, clocks_mhz: Sequence[int] | None, n_clocks: int) -> None:
        self.cost_model = cost_model
        self.trace = trace
        self.fixed = None if clocks_mhz is None else tuple(int(c) for c in clocks_mhz)
        self.n_clocks = int(n_clocks)
        self.stats: Counter[str] = Counter()
        """Decisions by outcome: ``planned``, ``infeasible`` (top clock), ``idle``."""
        self._clocks: dict[tuple[str, int, tuple[int, ...], bool], tuple[int, ...]] = {}

    def clocks(self, phase: str, tp: int, supported: tuple[int, ...], net_of_idle: bool = False) -> tuple[int, ...]:
        """The oracle's candidate clocks for (phase, TP), ascending, MHz (prefill ``net_of_idle``: from the clock of
        least energy above idle power, lower than the busy one)."""
        key = (phase, tp, supported, net_of_idle)
        hit = self._clocks.get(key)
        if hit is None:
            if self.fixed is not None:
                hit = tuple(sorted({*self.fixed, supported[-1]}))
            elif phase == "decode":
                hit = spread_clocks(min(supported), supported, self.n_clocks)
            else:
                low = true_energy_optimal_clock(self.cost_model, tp, supported, net_of_idle=net_of_idle)
                hit = spread_clocks(low, supported, self.n_clocks)
            self._clocks[key] = hit
        return hit


class OraclePrefill(_OracleBase):
    """Clairvoyant prefill clock control (see the module docstring)."""

    def __init__(
        self,
        cost_model: CostModel,
        trace: Trace,
        *,
        clocks_mhz: Sequence[int] | None = None,
        n_clocks: int = DEFAULT_ORACLE_CLOCKS,
        horizon: int = DEFAULT_ORACLE_HORIZON,
        lookahead_s: float | None = None,
        prefill_instances: int | None = None,
        instance_memory_s: float = DEFAULT_INSTANCE_MEMORY_S,
        idle_in_objective: bool = True,
        frontend_overhead_s: float | None = None,
        kv_transfer_s_per_token: float | None = None,
    ) -> None:
        super().__init__(cost_model, trace, clocks_mhz, n_clocks)
        if horizon < 1 or (prefill_instances is not None and prefill_instances < 1):
            raise InputError("oracle horizon and prefill_instances must be >= 1", field="oracle")
        if not instance_memory_s > 0:
            raise InputError(f"instance_memory_s must be > 0 s, got {instance_memory_s}", field="oracle")
        self.horizon = int(horizon)
        self.lookahead_s = lookahead_s
        self.prefill_instances = None if prefill_instances is None else int(prefill_instances)
        """Fixed number of equal prefill instances to split future arrivals over; None: the instances seen."""
        self.instance_memory_s = float(instance_memory_s)
        self.idle_in_objective = bool(idle_in_objective)
        self._seen_at: dict[int, tuple[float, int]] = {}
        """Prefill instance id -> (time of its last decision, its TP): the ready instances the router splits over."""
        self.frontend_overhead_s = frontend_overhead_s
        """Front-end cost added to every TTFT, s; None: the engine's ``state.frontend_overhead_s``."""
        self.kv_transfer_s_per_token = kv_transfer_s_per_token
        self._arrival = np.asarray(trace.arrival_s, dtype=np.float64)
        self._input = np.asarray(trace.input_tokens, dtype=np.int64)

    def arrival_share(self, state: InstanceState) -> tuple[int, int, int]:
        """This instance's share of the future arrivals as integers ``(weight, offset, total)``: it is charged
        arrival ``k`` iff ``((k + 1) w + o) // T > (k w + o) // T``, a ``w / T`` share spread evenly (for equal
        weights exactly round robin, each instance a different residue).

        The weights are the router's (``sim.router``: the placement's ``capacity_rps``, else the TP degree); the
        state carries the TP degree only, so each ready instance weighs its TP. Ready instances: those that decided
        within the last ``instance_memory_s`` (every prefill instance of the phase shares this controller), or
        ``prefill_instances`` equal ones when set."""
        iid = state.instance_id
        if self.prefill_instances is not None:
            n = self.prefill_instances
            return 1, iid % n, n
        seen = {**self._seen_at, iid: (state.time_s, state.tp)}
        live = [(i, tp) for i, (t, tp) in seen.items() if t >= state.time_s - self.instance_memory_s]
        total = sum(tp for _, tp in live)
        offset = sum(tp for i, tp in live if i < iid)
        return state.tp, offset, total

    def _kv_s_per_token(self, tp: int) -> float:
        if self.kv_transfer_s_per_token is not None:
            return self.kv_transfer_s_per_token
        return self.cost_model.kv_bytes_per_token / (tp * KV_LINK_BW_BYTES_PER_S)

    def _work(self, state: InstanceState, kv: float) -> list[list[float]]:
        """FCFS items ``[tokens left, prefix, arrival time, deadline age]`` after the scheduled batch."""
        now = state.time_s
        items: list[list[float]] = []
        bn, bp, bq = state.batch_new_tokens, state.batch_prefix_tokens, state.batch_prompt_tokens
        for n, p, q, w in zip(bn.tolist(), bp.tolist(), bq.tolist(), state.batch_waiting_time_s.tolist(), strict=True):
            if p + n < q:
                items.append([q - p - n, p + n, now - w, w + kv * q])
        for q, w in zip(state.waiting_prompt_tokens.tolist(), state.waiting_time_s.tolist(), strict=True):
            items.append([q, 0, now - w, w + kv * q])
        ahead = self.lookahead_s if self.lookahead_s is not None else 2.0 * state.slo.ttft_s
        lo = int(np.searchsorted(self._arrival, now, side="right"))
        hi = int(np.searchsorted(self._arrival, now + ahead, side="right"))
        for i in self.future_arrivals(state, lo, hi).tolist():
            a = float(self._arrival[i])
            q = int(self._input[i])
            items.append([q, 0, a, now - a + kv * q])
        return items

    def future_arrivals(self, state: InstanceState, lo: int, hi: int) -> np.ndarray:
        """Trace indices in ``[lo, hi)`` charged to this instance (its :meth:`arrival_share`)."""
        w, o, total = self.arrival_share(state)
        k = np.arange(lo, hi, dtype=np.int64)
        return k[((k + 1) * w + o) // total > (k * w + o) // total]

    def decide(self, state: InstanceState) -> int | None:
        supported = state.supported_clocks_mhz
        self._seen_at[state.instance_id] = (state.time_s, state.tp)
        if state.batch_new_tokens.size == 0 and state.waiting_prompt_tokens.size == 0:
            self.stats["idle"] += 1
            return idle_clock(state)
        top = supported[-1]
        tp = state.tp
        cm = self.cost_model
        kv = self._kv_s_per_token(tp)
        budget = state.token_budget or DEFAULT_PREFILL_TOKEN_BUDGET
        max_seqs = state.max_batch_seqs or (1 << 60)
        now = state.time_s
        items = self._work(state, kv)
        shapes: list[PrefillShape] = []
        ages: list[float] = []
        release: list[float] = []
        t = 0.0  # formation timing at the top clock, seconds from now
        if state.batch_new_tokens.size:
            bn = state.batch_new_tokens
            done = state.batch_prefix_tokens + bn >= state.batch_prompt_tokens
            w = state.batch_waiting_time_s + kv * state.batch_prompt_tokens
            shapes.append(PrefillShape.from_lengths(bn, state.batch_prefix_tokens))
            ages.append(float(w[done].max()) if done.any() else -math.inf)
            release.append(0.0)
            t = cm.prefill_cost(shapes[0], tp, top).latency_s
        i = 0
        while len(shapes) < self.horizon and i < len(items):
            start = max(t, items[i][2] - now)
            lengths: list[int] = []
            prefixes: list[int] = []
            left = budget
            age = -math.inf
            while i < len(items) and len(lengths) < max_seqs and left > 0 and items[i][2] - now <= start:
                it = items[i]
                chunk = int(min(it[0], left))
                lengths.append(chunk)
                prefixes.append(int(it[1]))
                left -= chunk
                if chunk == it[0]:
                    age = max(age, it[3])
                    i += 1
                else:
                    it[0] -= chunk
                    it[1] += chunk
            shape = PrefillShape.from_lengths(lengths, prefixes)
            shapes.append(shape)
            ages.append(age)
            release.append(start)
            t = start + cm.prefill_cost(shape, tp, top).latency_s
        # when the plan covers all the work it knows of, the instance idles afterwards (at the lowest clock): time a
        # faster batch saves is spent idle, so a batch costs its power above that idle power (as the MPC's
        # net_of_idle); with work beyond the horizon it is busy back to back and the whole energy counts
        net = self.idle_in_objective and i >= len(items)
        idle_w = cm.idle_power_w(tp, min(supported)) if net else 0.0
        clocks = self.clocks("prefill", tp, supported, net)
        k, n = len(shapes), len(clocks)
        lat = np.empty((k, n))
        energy = np.empty((k, n))
        for j, shape in enumerate(shapes):
            for c, clock in enumerate(clocks):
                cost = cm.prefill_cost(shape, tp, clock)
                lat[j, c] = cost.latency_s
                energy[j, c] = cost.latency_s * (cost.power_w - idle_w)
        if net:
            self.stats["net_of_idle"] += 1
        overhead = state.frontend_overhead_s if self.frontend_overhead_s is None else self.frontend_overhead_s
        budget_s = state.slo.ttft_s - overhead
        deadlines = budget_s - np.array(ages)
        if i < len(items):  # requests beyond the horizon complete after the last batch
            deadlines[-1] = min(deadlines[-1], budget_s - max(it[3] for it in items[i:]))
        plan = solve_exact(lat, energy, deadlines, np.array(release))
        self.stats["planned" if plan.feasible else "infeasible"] += 1
        return clocks[int(plan.levels[0])]


class OracleDecode(_OracleBase):
    """Clairvoyant decode clock control (see the module docstring)."""

    def __init__(
        self,
        cost_model: CostModel,
        trace: Trace,
        *,
        clocks_mhz: Sequence[int] | None = None,
        n_clocks: int = DEFAULT_ORACLE_CLOCKS,
        sacrifice_share: float = DEFAULT_SACRIFICE_SHARE,
    ) -> None:
        super().__init__(cost_model, trace, clocks_mhz, n_clocks)
        if not 0.0 <= sacrifice_share <= 1.0:
            raise InputError(f"sacrifice_share must be in [0, 1], got {sacrifice_share}", field="sacrifice_share")
        self.sacrifice_share = float(sacrifice_share)
        self._output = np.asarray(trace.output_tokens, dtype=np.int64)
        self._arrival = np.asarray(trace.arrival_s, dtype=np.float64)
        self._seen: set[int] = set()
        self.sacrificed: set[int] = set()
        """Requests whose TPOT target the oracle gave up (within the percentile's allowance)."""

    def decide(self, state: InstanceState) -> int | None:
        b = state.batch_size
        if b == 0:
            self.stats["idle"] += 1
            return idle_clock(state)
        ids = state.running_request_ids
        if ids.size != b or state.running_decode_time_s.size != b:
            raise InputError(
                "the decode oracle needs the running requests' ids and decode times in the state "
                "(InstanceState.running_request_ids, running_decode_time_s)",
                field="controller",
            )
        clocks = self.clocks("decode", state.tp, state.supported_clocks_mhz)
        if state.queue_len:  # saturated: requests wait to join; as the online controller, drain them at the top
            self.stats["waiting_guard"] += 1
            return clocks[-1]
        if state.batch_use_pct >= DEFAULT_BATCH_GUARD_PCT:
            self.stats["batch_guard"] += 1  # nearly saturated: the online controller's guard, for a fair bound
            return clocks[-1]
        ctx = state.running_context_tokens
        shape = DecodeShape(b, int(ctx.sum()), float(np.dot(ctx, ctx)))
        lat = [self.cost_model.decode_cost(shape, state.tp, c).latency_s for c in clocks]

        def lowest(allowed: float) -> int:
            return next((i for i, x in enumerate(lat) if x <= allowed), len(lat) - 1)

        id_list = ids.tolist()
        self._seen.update(id_list)
        out = self._output[ids]
        allowance = (state.slo.tpot_s * (out - 1) - state.running_decode_time_s) / np.maximum(
            out - state.running_generated_tokens, 1
        )
        keep = [(a, r) for a, r in sorted(zip(allowance.tolist(), id_list, strict=True)) if r not in self.sacrificed]
        budget = self.sacrifice_share * (100.0 - state.slo.percentile) / 100.0 * len(self._seen)
        while len(keep) > 1 and len(self.sacrificed) + 1 <= budget and lowest(keep[0][0]) > lowest(keep[1][0]):
            self.sacrificed.add(keep.pop(0)[1])
        level = lowest(keep[0][0]) if keep else 0
        self.stats["planned" if not keep or lat[level] <= keep[0][0] else "infeasible"] += 1
        if state.max_batch_seqs and level < len(lat) - 1:
            # the online controller's growth guard, for a fair comparison: at a steady arrival rate the batch grows
            # with the iteration's latency (Little's law); a clock that would carry it past the batch guard is not
            # taken (the guard would then force the top clock, and the clock would swing between the two)
            current = state.pending_clock_mhz if state.pending_clock_mhz is not None else state.clock_mhz
            grown = growth_guarded(level, lat, clocks, current, b, DEFAULT_BATCH_GUARD_PCT, state.max_batch_seqs)
            if grown != level:
                self.stats["growth_guard"] += 1
                level = grown
        left = int(np.max(out - state.running_generated_tokens))
        if self._arrival.size and self._arrival[-1] <= state.time_s + left * lat[-1]:
            # the run is draining: no request arrives before this batch is done, so the number of iterations left
            # is fixed and the cheapest feasible *iteration* wins (no batch growth to pay for a slower clock)
            energy = [self.cost_model.decode_cost(shape, state.tp, c).energy_per_gpu_j for c in clocks[level:]]
            level += int(np.argmin(energy))
        return clocks[level]


def make_oracle(
    phase: str,
    *,
    trace: Trace | None = None,
    cost_model: CostModel | None = None,
    gpu: str = "h100-sxm",
    model: str = "llama-3.3-70b",
    **options: Any,
) -> ClockController:
    """The oracle for ``phase``: ``trace`` is the run's requests (exactly those the simulator is given) and
    ``cost_model`` the simulator's truth (default: the hardware model of ``gpu`` / ``model``)."""
    if trace is None:
        raise InputError("the oracle needs the run's trace (trace=)", field="oracle")
    if cost_model is None:
        cost_model = get_hardware(gpu, model)
    if phase == "prefill":
        return OraclePrefill(cost_model, trace, **options)
    return OracleDecode(cost_model, trace, **options)
