"""Decode scheduling: continuous batching, one token per running request per iteration; KV growth, preemption and
recomputation.

At each iteration boundary, requests whose KV arrived join the batch (FCFS) up to ``max_batch``; a request needing
``O`` output tokens runs ``O - 1`` iterations (its first token came from prefill) and leaves right after its last,
freeing its KV. While the batch is not empty iterations run back to back.

Before each step the KV policy (:mod:`biscale.sim.kv`) allocates what the step needs. When it cannot (paged KV ran
out), the most recently scheduled request is **preempted** (vLLM's recompute preemption): its KV is freed and it
waits on this instance, ahead of the others, to be **recomputed** as vLLM 0.33's v1 scheduler does it
(``vllm/v1/core/sched/scheduler.py``: ``_preempt_request`` resets ``num_computed_tokens`` to 0; ``schedule`` runs
the running requests first, then the waiting ones in the token budget left, never in a step that preempted): a
later step runs the running requests' decodes together with chunks of the preempted requests' prompt plus
generated tokens (a prefill, chunked to the budget the decodes leave), and a request whose whole context is
computed samples its next token in that step and rejoins the batch. Such a mixed step is priced as the cost model's
prefill of the chunks plus decode of the batch; its energy is shared between the two parts in proportion to their
energies (the recomputation's share, by tokens, is its requests' decode energy). While requests wait to be
recomputed the decode router sends the instance no new transfers.

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

from biscale.costmodel import CostModel, DecodeShape, IterationCost, PrefillShape
from biscale.sim.clocks import ClockControl
from biscale.sim.events import Event, EventQueue
from biscale.sim.fleet import Fleet
from biscale.sim.instance import DecodeInstance
from biscale.sim.kv import KvPolicy
from biscale.sim.prefill import prefill_shape
from biscale.sim.requests import RequestState, RequestTable
from biscale.sim.transfer import KvTransfers

_DECODING = int(RequestState.DECODING)
_WAITING_DECODE = int(RequestState.WAITING_DECODE)
_PREEMPTED = int(RequestState.PREEMPTED)
_DONE = int(RequestState.DONE)
_DECODE_END = int(Event.DECODE_END)
_MixedShape = tuple[PrefillShape, DecodeShape | None]
"""A step with recomputation chunks: their prefill shape and the running requests' decode shape (None: none)."""
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
        """Form the next step of ``inst`` as vLLM's scheduler does: admit ready requests into the running batch,
        allocate the step's KV (preempting if short), then, if nothing was preempted, fill the rest of the token
        budget with recomputation chunks of preempted requests; let the controller see it, price it."""
        if t > self.horizon_s:
            return
        running = inst.running
        while True:
            if inst.ready and len(running) + len(inst.resuming) < self.max_batch:
                self._admit(inst)
            preempted_now = False
            while not self.kv.grow(inst):
                self._preempt_one(inst, t)
                preempted_now = True
            if not preempted_now or running:
                break
            # everything was preempted: that step is empty and the next one forms at once
        # vLLM schedules no waiting request in a step that preempted
        chunks = self._recompute_chunks(inst) if (inst.preempted or inst.resuming) and not preempted_now else None
        b = len(running)
        if b == 0 and not chunks:
            self.clocks.park(inst, t)
            self.fleet.maybe_stop(inst, t)
            return
        self.clocks.prepare(inst, t)
        led = inst.ledger
        decode = _shape(DecodeShape, (b, inst.context_sum, float(inst.context_sq_sum)))
        if chunks:
            inst.recompute = chunks
            recompute = prefill_shape([c for _, c in chunks], [inst.resuming[r] for r, _ in chunks])
            for r, c in chunks:
                inst.resuming[r] += c
            shape = (recompute, decode if b else None)
            inst.recompute_energy_frac = self._recompute_energy_frac(shape, inst.tp, led.clock_mhz or None)
            end = led.price_iteration(t, self._mixed_cost, shape)
        else:
            end = led.price_iteration(t, self.decode_cost, decode)
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
        base_np, first_np, first_tok = rq.decode_base_np, rq.decode_first_token_np, rq.first_token_s
        ctx_sum, ctx_sq = inst.context_sum, inst.context_sq_sum
        while ready and len(running) < max_b:
            r = ready.popleft()
            running[r] = None
            join[r] = k
            state[r] = _DECODING
            done = resumed[r]
            base_np[r] = 1 + done - k  # the snapshots' columns (RequestTable.decode_base_np)
            first_np[r] = first_tok[r]
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
        energy = led.iteration_energy_j
        if inst.recompute:  # a mixed step: the recomputation's share of the energy goes to its requests
            chunks = inst.recompute
            inst.recompute = []
            share = energy * inst.recompute_energy_frac
            energy -= share
            self._end_recompute(inst, chunks, share, t)
            if not b:
                inst.busy = False
                self.start_iteration(inst, t)
                return
        prefix = inst.energy_share_prefix_j
        prefix.append(prefix[-1] + energy / b)
        k = inst.iteration
        gap = t - led.iteration_start_s
        gap_s, gap_from = inst.gap_max_s, inst.gap_max_from
        while gap_s and gap_s[-1] <= gap:  # keep the suffix maxima (see DecodeInstance.gap_max_from)
            gap_s.pop()
            gap_from.pop()
        gap_s.append(gap)
        gap_from.append(k)
        inst.tokens += b
        own = 0
        if inst.joined:
            first_tok, max_gap = self.requests.first_token_s, self.requests.max_tbt_s
            resume_from = inst.resume_from_s
            own_gaps, own_tokens = inst.token_gap_s, inst.token_gap_tokens
            for r in inst.joined:
                if resume_from and r in resume_from:
                    g = t - resume_from.pop(r)
                    if g > max_gap[r]:
                        max_gap[r] = g
                else:
                    g = max_gap[r] = t - first_tok[r]
                own_gaps.append(g)
                own_tokens.append(1)
            own = len(inst.joined)
            inst.joined = []
        if b > own:
            inst.token_gap_s.append(gap)
            inst.token_gap_tokens.append(b - own)
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
            or inst.resuming
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
    def _preempt_one(self, inst: DecodeInstance, t: float) -> None:
        """Free memory for the step: preempt the most recently scheduled request (a request being recomputed
        before the running ones: vLLM appends a resumed request to its running list)."""
        if inst.resuming:
            r = next(reversed(inst.resuming))
            del inst.resuming[r]
            self.kv.release_resume(inst, r)
            self._requeue(inst, r)
        else:
            self._evict(inst, next(reversed(inst.running)), t)

    def _requeue(self, inst: DecodeInstance, r: int) -> None:
        rq = self.requests
        rq.state[r] = _PREEMPTED
        rq.preemptions[r] += 1
        inst.preemptions += 1
        inst.preempted.appendleft(r)  # vLLM puts preempted requests at the front of the waiting queue

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
        if ran:  # its last token came at the end of the last decode iteration (steps run back to back)
            inst.resume_from_s[r] = t
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
        self._requeue(inst, r)

    def _recompute_chunks(self, inst: DecodeInstance) -> list[tuple[int, int]]:
        """This step's recomputation work: ``(request, new tokens)``, FCFS, in the token budget the running
        requests leave (one token each) and the batch's free slots. Requests already being recomputed continue
        first; a preempted request starts when the KV of its whole context fits (reserved then). A preempted
        request recomputes its prompt and every token it had generated (vLLM resets ``num_computed_tokens`` to 0),
        chunked like a prompt when it does not fit what is left of the budget."""
        rq = self.requests
        inp, resumed = rq.input_tokens, rq.resumed_tokens
        left = self.recompute_token_budget - len(inst.running)
        chunks: list[tuple[int, int]] = []
        for r, done in inst.resuming.items():
            if left <= 0:
                return chunks
            c = min(inp[r] + 1 + resumed[r] - done, left)
            chunks.append((r, c))
            left -= c
        kv = self.kv
        preempted = inst.preempted
        slots = self.max_batch - len(inst.running) - len(inst.resuming)
        while preempted and left > 0 and slots > 0:
            r = preempted[0]
            alone = not (chunks or inst.running or inst.ready or inst.incoming)
            if not kv.resume_fits(inst, r, alone):
                break
            preempted.popleft()
            kv.reserve_resume(inst, r)
            inst.resuming[r] = 0
            c = min(inp[r] + 1 + resumed[r], left)
            chunks.append((r, c))
            left -= c
            slots -= 1
        inst.recomputed_tokens += sum(c for _, c in chunks)
        return chunks

    def _recompute_energy_frac(
        self, shape: tuple[PrefillShape, DecodeShape | None], tp: int, clock: int | None
    ) -> float:
        """The recomputation's share of a mixed step's energy (at the clock the step starts at)."""
        if shape[1] is None:
            return 1.0
        pre, dec = self.prefill_cost(shape[0], tp, clock), self.decode_cost(shape[1], tp, clock)
        e_pre = pre.latency_s * pre.power_w
        return e_pre / (e_pre + dec.latency_s * dec.power_w)

    def _mixed_cost(self, shape: _MixedShape, tp: int, clock: int | None) -> IterationCost:
        """One step with recomputation chunks and decodes: the cost model prices the two parts (it has no mixed
        batch), the step takes both latencies at their energy's mean power (an upper bound: a real mixed batch
        reads the weights once)."""
        pre = self.prefill_cost(shape[0], tp, clock)
        if shape[1] is None:
            return pre
        dec = self.decode_cost(shape[1], tp, clock)
        lat = pre.latency_s + dec.latency_s
        energy = pre.latency_s * pre.power_w + dec.latency_s * dec.power_w
        f_eff = (pre.latency_s * pre.effective_clock_mhz + dec.latency_s * dec.effective_clock_mhz) / lat
        return IterationCost(lat, energy / lat, f_eff)

    def _end_recompute(self, inst: DecodeInstance, chunks: list[tuple[int, int]], energy: float, t: float) -> None:
        """Recomputation chunks ended at ``t`` with ``energy`` (shared by tokens; decode energy of their requests).
        A request whose whole context is recomputed samples its next token in this step (its gap since its last
        token counts in ``max_tbt_s``) and rejoins the batch first, or finishes if that was its last."""
        rq = self.requests
        inp, out, resumed, d_energy = rq.input_tokens, rq.output_tokens, rq.resumed_tokens, rq.decode_energy_j
        total = 0
        for _, c in chunks:
            total += c
        resumes: list[int] = []
        for r, c in chunks:
            d_energy[r] += energy * c / total
            if inst.resuming[r] < inp[r] + 1 + resumed[r]:
                continue  # more chunks to go
            del inst.resuming[r]
            last = inst.resume_from_s.pop(r, None)
            gap = t - (rq.first_token_s[r] if last is None else last)
            if not gap <= rq.max_tbt_s[r]:  # (NaN: no gap recorded yet)
                rq.max_tbt_s[r] = gap
            inst.token_gap_s.append(gap)  # the token its recompute step sampled, in the ITL distribution too
            inst.token_gap_tokens.append(1)
            inst.tokens += 1
            if resumed[r] + 2 >= out[r]:  # that was its last token
                self.kv.release_resume(inst, r)
                resumed[r] += 1
                rq.last_token_s[r] = t
                rq.state[r] = _DONE
                if self.completions is not None:
                    self.completions.append(r)
                continue
            resumed[r] += 1
            inst.resume_from_s[r] = t
            rq.state[r] = _WAITING_DECODE
            resumes.append(r)
        inst.ready.extendleft(reversed(resumes))
        if self.transfers.waiting:  # memory may have been freed, or the instance may take transfers again
            self.transfers.place_waiting(t)

    def settle(self) -> None:
        """At the end of a run: decode energy and tokens so far of requests still in a running batch or
        preempted."""
        rq = self.requests
        join, resumed = rq.decode_join_iteration, rq.resumed_tokens
        for inst in self.fleet.decode_instances:
            for r in inst.running:
                rq.decode_energy_j[r] += inst.decode_energy_since(join[r])
                rq.tokens_generated[r] = inst.generated_tokens(join[r], resumed[r])
            for r in (*inst.preempted, *inst.resuming, *inst.ready):
                if resumed[r]:
                    rq.tokens_generated[r] = 1 + resumed[r]
