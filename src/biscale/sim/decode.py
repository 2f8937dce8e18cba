"""Decode scheduling: continuous batching, one token per running request per iteration; KV growth, preemption and
recomputation.

At each iteration boundary, requests whose KV arrived join the batch (FCFS) up to ``max_batch``; a request needing
``O`` output tokens runs ``O - 1`` iterations (its first token came from prefill) and leaves right after its last,
freeing its KV. While the batch is not empty iterations run back to back.

Before each iteration the KV policy (:mod:`biscale.sim.kv`) allocates what the iteration needs. When it cannot
(paged KV ran out), the most recently admitted running request is **preempted** (vLLM's recompute preemption): its
KV is freed and it waits on this instance, ahead of the others, to be **recomputed**. A recomputation is an
iteration of its own on the decode instance, priced by the cost model as a *prefill* iteration over the request's
prompt plus the tokens it had generated (all but the last, which the next decode iteration feeds); it runs when
the memory for that KV plus the admission watermark is free (or when nothing else holds memory), taking the
preempted requests in order up to the prefill token budget; the running batch pauses during it (vLLM schedules a
step of prefills alone). Its energy is shared among the recomputed requests by tokens (it counts as their decode
energy); the resumed requests then rejoin the batch. While requests wait to be recomputed the decode router sends
the instance no new transfers.

Per iteration the work is O(1) plus O(requests joining or leaving): batch statistics are updated incrementally
(``sq += 2 * sum + B; sum += B``), a request's finishing iteration is known when it joins, its energy share is a
difference of a running prefix sum of ``energy / batch size``, and its largest token gap one binary search in the
suffix maxima of the iterations' gaps. When nothing joins, the clock is static, no switch is in flight and the KV
policy can allocate the next iteration, that iteration is priced straight from the end of the last one (the hot
path).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left

from biscale.costmodel import CostModel, DecodeShape, PrefillShape
from biscale.sim.clocks import ClockControl
from biscale.sim.events import Event, EventQueue
from biscale.sim.fleet import Fleet
from biscale.sim.instance import DecodeInstance
from biscale.sim.kv import KvPolicy
from biscale.sim.requests import RequestState, RequestTable
from biscale.sim.transfer import KvTransfers

_DECODING = int(RequestState.DECODING)
_WAITING_DECODE = int(RequestState.WAITING_DECODE)
_PREEMPTED = int(RequestState.PREEMPTED)
_DONE = int(RequestState.DONE)
_DECODE_END = int(Event.DECODE_END)
_RECOMPUTE_END = int(Event.RECOMPUTE_END)
_shape = tuple.__new__
"""Builds a named-tuple shape from a tuple without its Python-level ``__new__`` (2x faster; once per iteration)."""


class DecodeStage:
    """Runs decode instances' iterations."""

    def __init__(
        self,
        requests: RequestTable,
        fleet: Fleet,
        transfers: KvTransfers,
        kv: KvPolicy,
        clocks: ClockControl,
        events: EventQueue,
        cost_model: CostModel,
        max_batch: int,
        recompute_token_budget: int,
        horizon_s: float,
        completions: list[int] | None,
    ) -> None:
        self.requests = requests
        self.fleet = fleet
        self.transfers = transfers
        self.kv = kv
        self.clocks = clocks
        self.decode_cost = cost_model.decode_cost
        self.prefill_cost = cost_model.prefill_cost
        self.max_batch = max_batch
        self.recompute_token_budget = recompute_token_budget
        self.horizon_s = horizon_s
        self.completions = completions
        """Requests completed, for the planner's window counters; None: not tracked."""
        self._heap = events.heap
        self._next_seq = events.next_seq
        self._block = kv.unit_tokens
        """Tokens per KV block of a paged policy (instances of other policies have no ``kv_cross``)."""

    def on_kick(self, inst: DecodeInstance, t: float) -> None:
        """The kick scheduled when ``inst`` got work while idle."""
        inst.kick_pending = False
        if not inst.busy:
            self.start_iteration(inst, t)

    def start_iteration(self, inst: DecodeInstance, t: float) -> None:
        """Recompute preempted requests if memory allows, else admit ready requests into the batch of ``inst``,
        allocate the iteration's KV (preempting if short), let its controller see the batch, price it."""
        if t > self.horizon_s:
            return
        running = inst.running
        while True:
            if inst.preempted and self._start_recompute(inst, t):
                return
            if inst.ready and len(running) < self.max_batch:
                self._admit(inst)
            if self.kv.grow(inst):
                break
            self._preempt(inst, t)
            if running:
                break
            # everything was preempted: recompute alone, or admit what the freed memory lets run
        b = len(running)
        if b == 0:
            inst.paused_since_s = None
            self.fleet.maybe_stop(inst, t)
            return
        self.clocks.prepare(inst, t)
        led = inst.ledger
        end = led.price_iteration(
            t, self.decode_cost, _shape(DecodeShape, (b, inst.context_sum, float(inst.context_sq_sum)))
        )
        if inst.paused_since_s is not None:  # the batch waited for recomputations: its token gap began earlier
            led.iteration_start_s = inst.paused_since_s
            inst.paused_since_s = None
        inst.busy = True
        heapq.heappush(self._heap, (end, self._next_seq(), _DECODE_END, inst))

    def _admit(self, inst: DecodeInstance) -> None:
        """Ready requests join the running batch (FCFS) up to ``max_batch``."""
        ready = inst.ready
        running = inst.running
        max_b = self.max_batch
        k = inst.iteration
        rq = self.requests
        inp, out, state, join, resumed = (
            rq.input_tokens,
            rq.output_tokens,
            rq.state,
            rq.decode_join_iteration,
            rq.resumed_tokens,
        )
        finishing_at = inst.finishing_at
        joined = inst.joined
        kv_join = self.kv.join
        ctx_sum, ctx_sq = inst.context_sum, inst.context_sq_sum
        while ready and len(running) < max_b:
            r = ready.popleft()
            running[r] = None
            join[r] = k
            state[r] = _DECODING
            done = resumed[r]
            ctx = inp[r] + 1 + done
            ctx_sum += ctx
            ctx_sq += ctx * ctx
            k_last = k + out[r] - 2 - done
            lst = finishing_at.get(k_last)
            if lst is None:
                finishing_at[k_last] = [r]
            else:
                lst.append(r)
            joined.append(r)
            kv_join(inst, r)
        inst.context_sum, inst.context_sq_sum = ctx_sum, ctx_sq

    def end_iteration(self, inst: DecodeInstance, t: float) -> None:
        """An iteration of ``inst`` ended at ``t``: one token per running request; finished requests leave. The
        instance stays busy until the next iteration is decided (a draining instance never stops in between)."""
        led = inst.ledger
        running = inst.running
        b = len(running)
        prefix = inst.energy_share_prefix_j
        prefix.append(prefix[-1] + led.iteration_energy_j / b)
        k = inst.iteration
        gap = t - led.iteration_start_s
        gap_s, gap_from = inst.gap_max_s, inst.gap_max_from
        while gap_s and gap_s[-1] <= gap:  # keep the suffix maxima (see DecodeInstance.gap_max_from)
            gap_s.pop()
            gap_from.pop()
        gap_s.append(gap)
        gap_from.append(k)
        inst.tokens += b
        if inst.joined:
            first_tok, max_gap = self.requests.first_token_s, self.requests.max_tbt_s
            resume_from = inst.resume_from_s
            for r in inst.joined:
                if resume_from and r in resume_from:
                    gap = t - resume_from.pop(r)
                    if gap > max_gap[r]:
                        max_gap[r] = gap
                else:
                    max_gap[r] = t - first_tok[r]
            inst.joined = []
        ctx_sum = inst.context_sum
        inst.context_sq_sum += 2 * ctx_sum + b
        inst.context_sum = ctx_sum + b
        inst.iteration = k + 1
        finished = inst.finishing_at.pop(k, None)
        if finished:
            rq = self.requests
            inp, out, join, max_gap, last_tok, d_energy, state = (
                rq.input_tokens,
                rq.output_tokens,
                rq.decode_join_iteration,
                rq.max_tbt_s,
                rq.last_token_s,
                rq.decode_energy_j,
                rq.state,
            )
            e_end = prefix[k + 1]
            for r in finished:
                k0 = join[r]
                d_energy[r] += e_end - prefix[k0]
                last_tok[r] = t
                if k > k0:
                    g = gap_s[bisect_left(gap_from, k0 + 1)]
                    if g > max_gap[r]:
                        max_gap[r] = g
                size = inp[r] + out[r]  # the request's final context
                inst.context_sum -= size
                inst.context_sq_sum -= size * size
                del running[r]
                state[r] = _DONE
            self.kv.release(inst, finished)
            if self.completions is not None:
                self.completions.extend(finished)
            if self.transfers.waiting:
                self.transfers.place_waiting(t)
        if (
            inst.ready
            or not running
            or inst.dynamic
            or led.pending_clock_mhz is not None
            or t > self.horizon_s
            or inst.preempted
        ):
            inst.busy = False
            self.start_iteration(inst, t)
            return
        cross = inst.kv_cross
        if cross:  # paged KV: the next iteration's new blocks (PagedKv.grow inlined: this is the hot path)
            need = cross[(k + 1) % self._block]
            if need:
                used = inst.kv_blocks_used + need
                if used > inst.kv_blocks_total:  # out of blocks: the general path preempts
                    inst.busy = False
                    self.start_iteration(inst, t)
                    return
                inst.kv_blocks_used = used
                tokens = inst.kv_used_tokens = used * self._block
                if tokens > inst.kv_peak_tokens:
                    inst.kv_peak_tokens = tokens
        # hot path: the same batch runs on back to back at a static clock (no idle gap, nothing to decide)
        end = led.price_iteration(
            t, self.decode_cost, _shape(DecodeShape, (len(running), inst.context_sum, float(inst.context_sq_sum)))
        )
        heapq.heappush(self._heap, (end, self._next_seq(), _DECODE_END, inst))

    # ------------------------------------------------------------------ preemption and recomputation
    def _preempt(self, inst: DecodeInstance, t: float) -> None:
        """Preempt the most recently admitted running requests until the iteration's KV can be allocated."""
        while not self.kv.grow(inst):
            self._evict(inst, next(reversed(inst.running)), t)

    def _evict(self, inst: DecodeInstance, r: int, t: float) -> None:
        """Preempt running request ``r`` before iteration ``inst.iteration``: free its KV, keep its progress."""
        rq = self.requests
        k = inst.iteration
        k0 = rq.decode_join_iteration[r]
        done = rq.resumed_tokens[r]
        ran = k - k0
        prefix = inst.energy_share_prefix_j
        rq.decode_energy_j[r] += prefix[k] - prefix[k0]
        if ran > 1:
            g = inst.gap_max_s[bisect_left(inst.gap_max_from, k0 + 1)]
            if g > rq.max_tbt_s[r]:
                rq.max_tbt_s[r] = g
        if ran:  # its last token came at the end of the last decode iteration
            inst.resume_from_s[r] = t if inst.paused_since_s is None else inst.paused_since_s
        else:
            inst.joined.remove(r)
        self.kv.evict(inst, r)
        ctx = rq.input_tokens[r] + 1 + done + ran
        inst.context_sum -= ctx
        inst.context_sq_sum -= ctx * ctx
        k_last = k0 + rq.output_tokens[r] - 2 - done
        lst = inst.finishing_at[k_last]
        lst.remove(r)
        if not lst:
            del inst.finishing_at[k_last]
        del inst.running[r]
        rq.resumed_tokens[r] = done + ran
        rq.state[r] = _PREEMPTED
        rq.preemptions[r] += 1
        inst.preemptions += 1
        inst.preempted.appendleft(r)  # vLLM puts preempted requests at the front of the waiting queue

    def _start_recompute(self, inst: DecodeInstance, t: float) -> bool:
        """Start recomputing the preempted requests at the head of the line whose memory is free; False if none."""
        rq = self.requests
        inp, resumed = rq.input_tokens, rq.resumed_tokens
        kv = self.kv
        preempted = inst.preempted
        batch: list[int] = []
        lengths: list[int] = []
        total = 0
        while preempted:
            r = preempted[0]
            n = inp[r] + resumed[r]
            alone = not batch and not inst.running and not inst.ready and not inst.incoming
            if (batch and total + n > self.recompute_token_budget) or not kv.resume_fits(inst, r, alone):
                break
            preempted.popleft()
            kv.reserve_resume(inst, r)
            batch.append(r)
            lengths.append(n)
            total += n
        if not batch:
            return False
        inst.recompute = batch
        inst.recomputed_tokens += total
        if inst.running and inst.paused_since_s is None:
            inst.paused_since_s = t
        self.clocks.prepare(inst, t)
        end = inst.ledger.price_iteration(t, self.prefill_cost, PrefillShape.from_lengths(lengths))
        inst.busy = True
        heapq.heappush(self._heap, (end, self._next_seq(), _RECOMPUTE_END, inst))
        return True

    def end_recompute(self, inst: DecodeInstance, t: float) -> None:
        """A recomputation ended: share its energy by tokens; the resumed requests rejoin first."""
        inst.busy = False
        rq = self.requests
        inp, resumed, d_energy = rq.input_tokens, rq.resumed_tokens, rq.decode_energy_j
        batch = inst.recompute
        inst.recompute = []
        energy = inst.ledger.iteration_energy_j
        total = 0
        for r in batch:
            total += inp[r] + resumed[r]
        for r in reversed(batch):
            d_energy[r] += energy * (inp[r] + resumed[r]) / total
            rq.state[r] = _WAITING_DECODE
            inst.ready.appendleft(r)
        self.start_iteration(inst, t)

    def settle(self) -> None:
        """At the end of a run: decode energy and tokens so far of requests still in a running batch or
        preempted."""
        rq = self.requests
        join, resumed = rq.decode_join_iteration, rq.resumed_tokens
        for inst in self.fleet.decode_instances:
            for r in inst.running:
                rq.decode_energy_j[r] += inst.decode_energy_since(join[r])
                rq.tokens_generated[r] = inst.generated_tokens(join[r], resumed[r])
            for r in (*inst.preempted, *inst.recompute, *inst.ready):
                if resumed[r]:
                    rq.tokens_generated[r] = 1 + resumed[r]
