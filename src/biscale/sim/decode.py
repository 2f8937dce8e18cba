"""Decode scheduling: continuous batching, one token per running request per iteration.

At each iteration boundary, requests whose KV arrived join the batch (FCFS) up to ``max_batch``; a request needing
``O`` output tokens runs ``O - 1`` iterations (its first token came from prefill) and leaves right after its last,
freeing its KV. While the batch is not empty iterations run back to back.

Per iteration the work is O(1) plus O(requests joining or leaving): batch statistics are updated incrementally
(``sq += 2 * sum + B; sum += B``), a request's finishing iteration is known when it joins, its energy share is a
difference of a running prefix sum of ``energy / batch size``, and its largest token gap one ``max()`` over the
latencies it lived through. When nothing joins, the clock is static and no switch is in flight, the next
iteration is priced straight from the end of the last one (the hot path of a long run).
"""

from __future__ import annotations

import heapq

from biscale.costmodel import CostModel, DecodeShape
from biscale.sim.clocks import ClockControl
from biscale.sim.events import Event, EventQueue
from biscale.sim.fleet import Fleet
from biscale.sim.instance import DecodeInstance
from biscale.sim.kv import KvPolicy
from biscale.sim.requests import RequestState, RequestTable
from biscale.sim.transfer import KvTransfers

_DECODING = int(RequestState.DECODING)
_DONE = int(RequestState.DONE)
_DECODE_END = int(Event.DECODE_END)


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
        horizon_s: float,
        completions: list[int] | None,
    ) -> None:
        self.requests = requests
        self.fleet = fleet
        self.transfers = transfers
        self.kv = kv
        self.clocks = clocks
        self.decode_cost = cost_model.decode_cost
        self.max_batch = max_batch
        self.horizon_s = horizon_s
        self.completions = completions
        """Requests completed, for the planner's window counters; None: not tracked."""
        self._heap = events.heap
        self._next_seq = events.next_seq

    def on_kick(self, inst: DecodeInstance, t: float) -> None:
        """The kick scheduled when ``inst`` got work while idle."""
        inst.kick_pending = False
        if not inst.busy:
            self.start_iteration(inst, t)

    def start_iteration(self, inst: DecodeInstance, t: float) -> None:
        """Admit ready requests into the batch of ``inst``, let its controller see the batch, price it."""
        if t > self.horizon_s:
            return
        ready = inst.ready
        running = inst.running
        if ready:
            max_b = self.max_batch
            k = inst.iteration
            rq = self.requests
            inp, out, state, join = rq.input_tokens, rq.output_tokens, rq.state, rq.decode_join_iteration
            finishing_at = inst.finishing_at
            joined = inst.joined
            ctx_sum, ctx_sq = inst.context_sum, inst.context_sq_sum
            while ready and len(running) < max_b:
                r = ready.popleft()
                running[r] = None
                join[r] = k
                state[r] = _DECODING
                ctx = inp[r] + 1
                ctx_sum += ctx
                ctx_sq += ctx * ctx
                k_last = k + out[r] - 2
                lst = finishing_at.get(k_last)
                if lst is None:
                    finishing_at[k_last] = [r]
                else:
                    lst.append(r)
                joined.append(r)
            inst.context_sum, inst.context_sq_sum = ctx_sum, ctx_sq
        b = len(running)
        if b == 0:
            self.fleet.maybe_stop(inst, t)
            return
        self.clocks.prepare(inst, t)
        end = inst.ledger.price_iteration(
            t, self.decode_cost, DecodeShape(b, inst.context_sum, float(inst.context_sq_sum))
        )
        inst.busy = True
        heapq.heappush(self._heap, (end, self._next_seq(), _DECODE_END, inst))

    def end_iteration(self, inst: DecodeInstance, t: float) -> None:
        """An iteration of ``inst`` ended at ``t``: one token per running request; finished requests leave."""
        inst.busy = False
        led = inst.ledger
        running = inst.running
        b = len(running)
        prefix = inst.energy_share_prefix_j
        prefix.append(prefix[-1] + led.iteration_energy_j / b)
        lats = inst.latencies_s
        lats.append(t - led.iteration_start_s)
        inst.tokens += b
        if inst.joined:
            first_tok, max_gap = self.requests.first_token_s, self.requests.max_tbt_s
            for r in inst.joined:
                max_gap[r] = t - first_tok[r]
            inst.joined = []
        ctx_sum = inst.context_sum
        inst.context_sq_sum += 2 * ctx_sum + b
        inst.context_sum = ctx_sum + b
        k = inst.iteration
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
                d_energy[r] = e_end - prefix[k0]
                last_tok[r] = t
                if k > k0:
                    g = max(lats[k0 + 1 : k + 1])
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
        if inst.ready or not running or inst.dynamic or led.pending_clock_mhz is not None or t > self.horizon_s:
            self.start_iteration(inst, t)
            return
        # hot path: the same batch runs on back to back at a static clock (no idle gap, nothing to decide)
        end = led.price_iteration(
            t, self.decode_cost, DecodeShape(len(running), inst.context_sum, float(inst.context_sq_sum))
        )
        inst.busy = True
        heapq.heappush(self._heap, (end, self._next_seq(), _DECODE_END, inst))

    def settle(self) -> None:
        """At the end of a run: decode energy and tokens so far of requests still in a running batch."""
        rq = self.requests
        join = rq.decode_join_iteration
        for inst in self.fleet.decode_instances:
            for r in inst.running:
                rq.decode_energy_j[r] = inst.decode_energy_since(join[r])
                rq.tokens_generated[r] = inst.generated_tokens(join[r])
