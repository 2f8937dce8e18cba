"""Prefill scheduling: routing prompts to prefill instances, forming chunked batches, finishing prompts.

Batch formation is a pure function (:func:`take_chunks`, :func:`prefill_shape`) so that anything that needs to
predict the next batch (an emulated engine, a controller's projection of the queue) forms it the same way.

The batching rule (vLLM chunked prefill: FCFS, token budget): prompts are taken from the head of the queue while the
batch has new tokens left in the budget (and fewer than ``max_seqs`` sequences); the prompt that does not fit what
is left is chunked to fill the budget, keeps its place at the head and continues in the next iteration, where its
next chunk may share a batch with the prompts behind it. The prompt's prefill ends with its last chunk.

Memory (:class:`~biscale.sim.kv.PrefillKv`): a prompt starts only if its whole KV fits the instance's free KV; the
KV is held until the prompt's transfer has ended. When the head of the queue cannot start, the instance forms no
batch (backpressure) until KV leaves; the time spent so is the instance's ``kv_blocked_s``.

Routing: the prefill router picks among the ready instances whose KV capacity holds the prompt; a prompt that fits
no ready instance (only one still starting) waits in the global queue without holding up the prompts behind it.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Sequence

from biscale.costmodel import CostModel, PrefillShape
from biscale.sim.clocks import ClockControl
from biscale.sim.events import Event, EventQueue
from biscale.sim.fleet import Fleet
from biscale.sim.instance import InstanceStatus, PrefillInstance
from biscale.sim.kv import PrefillKv
from biscale.sim.requests import RequestState, RequestTable
from biscale.sim.router import PrefillRouter
from biscale.sim.transfer import KvTransfers

_STARTING = int(InstanceStatus.STARTING)
_DRAINING = int(InstanceStatus.DRAINING)
_WAITING_PREFILL = int(RequestState.WAITING_PREFILL)
_PREFILLING = int(RequestState.PREFILLING)
_DONE = int(RequestState.DONE)
_PREFILL_END = int(Event.PREFILL_END)
_shape = tuple.__new__
"""Builds a named-tuple shape from a tuple without its Python-level ``__new__`` (2x faster; once per batch)."""


def take_chunks(remaining_tokens: Iterable[int], token_budget: int, max_seqs: int) -> list[int]:
    """New tokens each queued prompt contributes to the next batch, FCFS from the head of the queue.

    ``remaining_tokens``: prompt tokens still to prefill per queued prompt, head first (read lazily: only as far
    as the batch reaches). The result is as long as the number of prompts the batch takes; all but the last are
    whole (the last is chunked when it does not fit the budget). Rule in the module docstring.
    """
    chunks: list[int] = []
    left = token_budget
    for remaining in remaining_tokens:
        if len(chunks) >= max_seqs:
            break
        chunk = remaining if remaining <= left else left
        chunks.append(chunk)
        left -= chunk
        if left == 0:
            break
    return chunks


def prefill_shape(chunks: Sequence[int], prefix_tokens: Sequence[int]) -> PrefillShape:
    """The cost model's description of a batch: new tokens per sequence and tokens already prefilled before each."""
    n_tok = 0
    sq = 0
    pairs = 0.0
    for chunk, prefix in zip(chunks, prefix_tokens, strict=True):
        n_tok += chunk
        sq += chunk * chunk
        pairs += chunk * (prefix + (chunk + 1) / 2.0)
    return _shape(PrefillShape, (len(chunks), n_tok, float(sq), pairs))  # (num_seqs, tokens_sum, tokens_sq_sum, pairs)


class PrefillStage:
    """Routes arrivals to prefill instances (or the global queue), runs their batches, hands prompts to decode."""

    def __init__(
        self,
        requests: RequestTable,
        fleet: Fleet,
        transfers: KvTransfers,
        kv: PrefillKv,
        clocks: ClockControl,
        events: EventQueue,
        cost_model: CostModel,
        router: PrefillRouter,
        token_budget: int,
        max_seqs: int,
        horizon_s: float,
        completions: list[int] | None,
    ) -> None:
        self.requests = requests
        self.fleet = fleet
        self.transfers = transfers
        self.kv = kv
        self.clocks = clocks
        self.events = events
        self.prefill_cost = cost_model.prefill_cost
        self.router = router
        self.token_budget = token_budget
        self.max_seqs = max_seqs
        self.horizon_s = horizon_s
        self.completions = completions
        """Requests completed here (one-token answers), for the planner's window counters; None: not tracked."""
        self.waiting: deque[int] = deque()
        """Admitted requests waiting for a ready prefill instance that can hold them, FCFS."""
        transfers.on_prefill_freed = self.on_kv_freed

    def submit(self, r: int, t: float) -> None:
        """An admitted arrival: route it now, or queue it."""
        self.requests.state[r] = _WAITING_PREFILL
        if not self.route(r, t):
            self.waiting.append(r)

    def flush(self, t: float) -> None:
        """Route globally queued requests that a ready prefill instance can hold (the others keep waiting)."""
        if not self.waiting or not self.fleet.ready_prefill_list:
            return
        keep: deque[int] = deque()
        for r in self.waiting:
            if not self.route(r, t):
                keep.append(r)
        self.waiting = keep

    def recheck(self, t: float) -> None:
        """After a placement change: reject requests not yet prefilling that no instance of the new placement can
        hold (global queue and instance queues), then route the global queue."""
        rq = self.requests
        fleet = self.fleet
        keep: deque[int] = deque()
        for r in self.waiting:
            reason = fleet.arrival_misfit(rq.input_tokens[r], rq.output_tokens[r], late=True)
            if reason is None:
                keep.append(r)
            else:
                rq.reject(r, reason)
        self.waiting = keep
        for inst in fleet.prefill_instances:
            if not inst.queue:
                continue
            left: deque[int] = deque()
            for r in inst.queue:
                reason = None
                if rq.state[r] == _WAITING_PREFILL:
                    reason = fleet.decode_misfit(rq.input_tokens[r] + rq.output_tokens[r], late=True)
                if reason is None or rq.output_tokens[r] == 1:
                    left.append(r)
                else:
                    rq.reject(r, reason)
                    inst.queued_prompt_tokens -= rq.input_tokens[r]
            inst.queue = left
            if not left:
                self.on_kv_freed(inst, t)
        self.flush(t)

    def route(self, r: int, t: float) -> bool:
        """Send ``r`` to the router's choice of ready prefill instance that can hold it; False when none is."""
        candidates = self.fleet.ready_prefill_list
        if not candidates:
            return False
        rq = self.requests
        inp = rq.input_tokens[r]
        if inp > self.fleet.ready_prefill_min_kv_tokens:
            candidates = [i for i in candidates if i.kv_capacity_tokens >= inp]
            if not candidates:
                return False
        inst = self.router.choose(candidates, inp)
        inst.queue.append(r)
        inst.queued_prompt_tokens += inp - rq.prefilled_tokens[r]
        rq.prefill_instance[r] = inst.id
        if not inst.busy:
            self.events.kick(inst, t)
        return True

    def on_kv_freed(self, inst: PrefillInstance, t: float) -> None:
        """KV left ``inst`` (or its queue emptied): lift backpressure, or stop it if it is drained."""
        since = inst.blocked_since_s
        if since is not None:
            inst.kv_blocked_s += t - since
            inst.blocked_since_s = None
            if inst.queue and not inst.busy:
                self.events.kick(inst, t)
        if inst.status == _DRAINING:
            self.fleet.maybe_stop(inst, t)

    def settle(self, end_s: float) -> None:
        """At the end of a run: close backpressure stalls still open (at the horizon at the latest)."""
        stop = min(end_s, self.horizon_s)
        for inst in self.fleet.prefill_instances:
            since = inst.blocked_since_s
            if since is not None:
                inst.kv_blocked_s += max(0.0, stop - since)
                inst.blocked_since_s = None

    def on_kick(self, inst: PrefillInstance, t: float) -> None:
        """The kick scheduled when ``inst`` got work while idle."""
        inst.kick_pending = False
        if not inst.busy:
            self.start_batch(inst, t)

    def start_batch(self, inst: PrefillInstance, t: float) -> None:
        """Form the next batch of ``inst`` at ``t``, let its controller see it, price it, schedule its end."""
        queue = inst.queue
        if inst.busy or not queue or t > self.horizon_s or inst.status == _STARTING:
            return
        rq = self.requests
        done, state, start = rq.prefilled_tokens, rq.state, rq.prefill_start_s
        kv = self.kv
        if inst.kv_capacity_tokens - inst.kv_used_tokens >= inst.queued_prompt_tokens:  # every queued prompt fits
            chunks = take_chunks((rq.input_tokens[r] - done[r] for r in queue), self.token_budget, self.max_seqs)
        else:
            chunks = take_chunks(kv.startable(inst, queue), self.token_budget, self.max_seqs)
        if not chunks:  # backpressure: the head prompt does not fit the free KV
            if inst.blocked_since_s is None:
                inst.blocked_since_s = t
            return
        batch: list[tuple[int, int]] = []
        for chunk in chunks:
            r = queue.popleft()
            batch.append((r, chunk))
            if state[r] == _WAITING_PREFILL:
                state[r] = _PREFILLING
                start[r] = t
                kv.reserve(inst, r)
        inst.batch = batch
        shape = prefill_shape(chunks, [done[r] for r, _ in batch])
        self.clocks.prepare(inst, t)
        end = inst.ledger.price_iteration(t, self.prefill_cost, shape)
        inst.busy = True
        heapq.heappush(self.events.heap, (end, self.events.next_seq(), _PREFILL_END, inst))

    def end_batch(self, inst: PrefillInstance, t: float) -> None:
        """The batch of ``inst`` ended at ``t``: share its energy, finish prompts, start the next batch.

        The instance stays busy until its bookkeeping is done: handing a prompt to the transfers can free KV (a
        rejection), and a draining instance must not stop while a chunked prompt is out of its queue or a prompt
        of this batch has not been handed over yet."""
        batch = inst.batch
        inst.batch = []
        energy = inst.ledger.iteration_energy_j
        n_tok = 0
        for _, chunk in batch:
            n_tok += chunk
        inst.tokens += n_tok
        inst.queued_prompt_tokens -= n_tok
        rq = self.requests
        inp, done, out = rq.input_tokens, rq.prefilled_tokens, rq.output_tokens
        p_energy = rq.prefill_energy_j
        finished: list[int] = []
        unfinished: list[int] = []
        for r, chunk in batch:
            p_energy[r] += energy * chunk / n_tok
            done[r] += chunk
            if done[r] < inp[r]:
                unfinished.append(r)
            else:
                finished.append(r)
        for r in reversed(unfinished):  # a chunked prompt keeps its place at the head
            inst.queue.appendleft(r)
        for r in finished:
            rq.prefill_end_s[r] = t
            if out[r] == 1:  # the prefill's token is the whole answer: no KV transfer, no decode
                rq.first_token_s[r] = rq.last_token_s[r] = t
                rq.max_tbt_s[r] = 0.0
                rq.state[r] = _DONE
                self.kv.release(inst, r)
                if self.completions is not None:
                    self.completions.append(r)
            else:
                self.transfers.submit(r, t)
        inst.busy = False
        if inst.queue:
            self.start_batch(inst, t)
        else:
            self.clocks.idle(inst, t)
            self.fleet.maybe_stop(inst, t)
