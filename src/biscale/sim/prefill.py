"""Prefill scheduling: routing prompts to prefill instances, forming chunked batches, finishing prompts.

Batch formation is a pure function (:func:`take_chunks`, :func:`prefill_shape`) so that anything that needs to
predict the next batch (an emulated engine, a controller's projection of the queue) forms it the same way.

The batching rule (FCFS, token budget, chunked head-of-line prompt): whole prompts are taken from the head of the
queue while they fit in the token budget (and the batch has fewer than ``max_seqs`` sequences). A prompt longer
than what is left is split only when it is at the head of an empty batch: it contributes a chunk of the whole
budget, keeps its place at the head and continues in the next iteration; its last (short) chunk may share a batch
with the prompts behind it. The prompt's prefill ends with its last chunk.
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
from biscale.sim.requests import RequestState, RequestTable
from biscale.sim.router import PrefillRouter
from biscale.sim.transfer import KvTransfers

_STARTING = int(InstanceStatus.STARTING)
_WAITING_PREFILL = int(RequestState.WAITING_PREFILL)
_PREFILLING = int(RequestState.PREFILLING)
_DONE = int(RequestState.DONE)
_PREFILL_END = int(Event.PREFILL_END)


def take_chunks(remaining_tokens: Iterable[int], token_budget: int, max_seqs: int) -> list[int]:
    """New tokens each queued prompt contributes to the next batch, FCFS from the head of the queue.

    ``remaining_tokens``: prompt tokens still to prefill per queued prompt, head first (read lazily: only as far
    as the batch reaches). The result is as long as the number of prompts the batch takes; all but possibly the
    first are whole. Rule in the module docstring.
    """
    chunks: list[int] = []
    left = token_budget
    for remaining in remaining_tokens:
        if len(chunks) >= max_seqs:
            break
        if remaining <= left:
            chunk = remaining
        elif not chunks:
            chunk = left
        else:
            break
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
    return PrefillShape(num_seqs=len(chunks), tokens_sum=n_tok, tokens_sq_sum=float(sq), attn_pairs=pairs)


class PrefillStage:
    """Routes arrivals to prefill instances (or the global queue), runs their batches, hands prompts to decode."""

    def __init__(
        self,
        requests: RequestTable,
        fleet: Fleet,
        transfers: KvTransfers,
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
        """Admitted requests waiting for a ready prefill instance (none is ready), FCFS."""

    def submit(self, r: int, t: float) -> None:
        """An admitted arrival: route it now, or queue it behind earlier ones."""
        self.requests.state[r] = _WAITING_PREFILL
        if self.waiting or not self.route(r, t):
            self.waiting.append(r)

    def flush(self, t: float) -> None:
        """Route globally queued requests while a prefill instance is ready."""
        waiting = self.waiting
        while waiting and self.fleet.ready_prefill():
            self.route(waiting.popleft(), t)

    def route(self, r: int, t: float) -> bool:
        """Send ``r`` to the router's choice of ready prefill instance; False when none is ready."""
        candidates = self.fleet.ready_prefill()
        if not candidates:
            return False
        rq = self.requests
        inst = self.router.choose(candidates, rq.input_tokens[r])
        inst.queue.append(r)
        inst.queued_prompt_tokens += rq.input_tokens[r] - rq.prefilled_tokens[r]
        rq.prefill_instance[r] = inst.id
        if not inst.busy:
            self.events.kick(inst, t)
        return True

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
        inp, done, state, start = rq.input_tokens, rq.prefilled_tokens, rq.state, rq.prefill_start_s
        chunks = take_chunks((inp[r] - done[r] for r in queue), self.token_budget, self.max_seqs)
        batch: list[tuple[int, int]] = []
        for chunk in chunks:
            r = queue.popleft()
            batch.append((r, chunk))
            if state[r] == _WAITING_PREFILL:
                state[r] = _PREFILLING
                start[r] = t
        inst.batch = batch
        shape = prefill_shape(chunks, [done[r] for r, _ in batch])
        self.clocks.prepare(inst, t)
        end = inst.ledger.price_iteration(t, self.prefill_cost, shape)
        inst.busy = True
        heapq.heappush(self.events.heap, (end, self.events.next_seq(), _PREFILL_END, inst))

    def end_batch(self, inst: PrefillInstance, t: float) -> None:
        """The batch of ``inst`` ended at ``t``: share its energy, finish prompts, start the next batch."""
        inst.busy = False
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
        unfinished: list[int] = []
        for r, chunk in batch:
            p_energy[r] += energy * chunk / n_tok
            done[r] += chunk
            if done[r] < inp[r]:
                unfinished.append(r)
                continue
            rq.prefill_end_s[r] = t
            if out[r] == 1:  # the prefill's token is the whole answer: no KV transfer, no decode
                rq.first_token_s[r] = rq.last_token_s[r] = t
                rq.max_tbt_s[r] = 0.0
                rq.state[r] = _DONE
                if self.completions is not None:
                    self.completions.append(r)
            else:
                self.transfers.submit(r, t)
        for r in reversed(unfinished):  # a chunked prompt keeps its place at the head
            inst.queue.appendleft(r)
        if inst.queue:
            self.start_batch(inst, t)
        else:
            self.fleet.maybe_stop(inst, t)
