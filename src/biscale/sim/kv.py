"""KV-cache memory accounting: decode instances behind a small policy interface, prefill instances' holdings.

**Decode** (:class:`KvPolicy`). An instance's usable capacity is its cost-model capacity in whole units of the
policy (``capacity_tokens``); a request can go to an instance whose capacity covers its ``input + output`` tokens
(the simulator knows the output length where a real router knows the request's ``max_tokens``). A policy answers
how many free KV tokens the decode router must see to admit a request now (``admission_tokens``, plus the policy's
own ``admits`` check), what admission reserves (``reserve``, at transfer start: the KV lands there), what each
iteration needs (``join``, ``grow``), what a finished request frees (``release``), what a preempted one frees
(``evict``), when it can be recomputed and what that holds (``resume_fits``, ``reserve_resume``, ``release_resume``).

* :class:`PagedKv` (the default, ``SimConfig.decode_kv_policy = "paged"``) does what vLLM's block manager does: KV
  lives in blocks of ``kv_block_tokens`` tokens (vLLM's default block size, 16); the transfer reserves the prompt's
  blocks; before every iteration each running request gets a new block when its next token starts one; an admission
  keeps a watermark of free blocks (vLLM's ``watermark``, default 1 % of the blocks; waived on an empty
  instance). When an iteration cannot get
  its blocks the decode stage preempts (:mod:`biscale.sim.decode`). O(1) per iteration: a request needs a new block
  before iteration ``k`` exactly when ``k`` is congruent to ``join - tokens held at join`` modulo the block size, so
  the requests are counted per residue class.
* :class:`FullReservation` (``"full"``) reserves the final footprint (``input + output`` tokens) at transfer start:
  a request never runs out of memory, batches are smaller than a paged engine's when memory is tight.

**Prefill** (:class:`PrefillKv`). A prompt's KV is reserved on its prefill instance when its first chunk is
scheduled (the whole prompt: its size is known, so a chunked prompt never needs memory it cannot get) and held
until its KV transfer has ended (the source blocks are read during the transfer); a one-token answer frees it at
prefill end. A prompt that does not fit the free KV cannot start: the instance stops forming batches
(backpressure) until transfers free memory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator

from biscale.sim.instance import DecodeInstance, Instance, PrefillInstance
from biscale.sim.requests import RequestTable


def _note_peak(inst: Instance) -> None:
    if inst.kv_used_tokens > inst.kv_peak_tokens:
        inst.kv_peak_tokens = inst.kv_used_tokens


class KvPolicy(ABC):
    """How a decode instance's KV memory is reserved, grown and freed."""

    #: Capacities are usable in units of this many tokens (a paged policy's block size).
    unit_tokens: int = 1

    def __init__(self, requests: RequestTable) -> None:
        self.requests = requests

    def capacity_tokens(self, raw_capacity_tokens: int) -> int:
        """Usable KV capacity of an instance whose cost model gives ``raw_capacity_tokens``, tokens."""
        u = self.unit_tokens
        return raw_capacity_tokens // u * u

    @abstractmethod
    def setup(self, inst: DecodeInstance) -> None:
        """Per-instance state of the policy (called once, when the instance is created)."""

    @abstractmethod
    def admission_tokens(self, r: int) -> int:
        """KV tokens that must be free on a decode instance to admit request ``r`` (its transfer starts then)."""

    def admits(self, inst: DecodeInstance, r: int) -> bool:
        """The policy's own admission check on the router's choice (beyond ``admission_tokens``)."""
        return True

    @abstractmethod
    def reserve(self, inst: DecodeInstance, r: int) -> None:
        """Admit ``r`` on ``inst``: reserve its memory (the router checked it fits)."""

    @abstractmethod
    def join(self, inst: DecodeInstance, r: int) -> None:
        """``r`` joins the running batch before iteration ``inst.iteration``."""

    def grow(self, inst: DecodeInstance) -> bool:
        """Allocate what the iteration ``inst.iteration`` about to run needs; False (nothing allocated) when memory
        is short (the caller preempts and asks again)."""
        return True

    @abstractmethod
    def release(self, inst: DecodeInstance, finished: list[int]) -> None:
        """Free the memory of requests that just finished on ``inst``."""

    @abstractmethod
    def evict(self, inst: DecodeInstance, r: int) -> None:
        """Free the memory of running request ``r`` (preempted before iteration ``inst.iteration``; its join
        iteration and resumed tokens are still those of its current stint)."""

    @abstractmethod
    def resume_fits(self, inst: DecodeInstance, r: int, alone: bool) -> bool:
        """Whether preempted ``r`` can be recomputed now (``alone``: nothing else holds memory there)."""

    @abstractmethod
    def reserve_resume(self, inst: DecodeInstance, r: int) -> None:
        """Reserve the memory of preempted ``r``'s recomputation (its whole context: prompt and generated tokens)."""

    @abstractmethod
    def release_resume(self, inst: DecodeInstance, r: int) -> None:
        """Free what :meth:`reserve_resume` reserved (``r`` preempted again, or finished by its recomputation's
        token)."""


class FullReservation(KvPolicy):
    """Reserve the request's final KV footprint (``input + output`` tokens) from the start of its transfer, so a
    running request never runs out of memory (no preemption). Batches may be smaller than a paged engine's."""

    def setup(self, inst: DecodeInstance) -> None:
        """Nothing to set up: the instance's token count is the whole account."""

    def admission_tokens(self, r: int) -> int:
        return self.requests.input_tokens[r] + self.requests.output_tokens[r]

    def reserve(self, inst: DecodeInstance, r: int) -> None:
        inst.kv_used_tokens += self.requests.input_tokens[r] + self.requests.output_tokens[r]
        _note_peak(inst)

    def join(self, inst: DecodeInstance, r: int) -> None:
        """Nothing to do: the request's memory was reserved whole at its transfer."""

    def release(self, inst: DecodeInstance, finished: list[int]) -> None:
        inp, out = self.requests.input_tokens, self.requests.output_tokens
        freed = 0
        for r in finished:
            freed += inp[r] + out[r]
        inst.kv_used_tokens -= freed

    def evict(self, inst: DecodeInstance, r: int) -> None:
        self.release(inst, [r])

    def resume_fits(self, inst: DecodeInstance, r: int, alone: bool) -> bool:
        return inst.kv_capacity_tokens - inst.kv_used_tokens >= self.admission_tokens(r)

    def reserve_resume(self, inst: DecodeInstance, r: int) -> None:
        self.reserve(inst, r)

    def release_resume(self, inst: DecodeInstance, r: int) -> None:
        self.release(inst, [r])


class PagedKv(KvPolicy):
    """vLLM-style paged KV: blocks of ``block_tokens`` allocated as tokens are generated (see the module docstring).

    Per instance: ``kv_blocks_total`` (capacity in blocks), ``kv_blocks_used``, ``kv_watermark_blocks`` and
    ``kv_cross[c]``, the running requests that need a new block before every iteration ``k`` with
    ``k % block_tokens == c``. ``kv_used_tokens`` is ``kv_blocks_used * block_tokens``."""

    def __init__(self, requests: RequestTable, block_tokens: int, watermark_frac: float) -> None:
        super().__init__(requests)
        self.block = block_tokens
        self.unit_tokens = block_tokens
        self.watermark_frac = watermark_frac

    def _blocks(self, tokens: int) -> int:
        return -(-tokens // self.block)

    def setup(self, inst: DecodeInstance) -> None:
        inst.kv_blocks_total = inst.kv_capacity_tokens // self.block
        inst.kv_watermark_blocks = int(self.watermark_frac * inst.kv_blocks_total)
        inst.kv_cross = [0] * self.block

    def _set_used(self, inst: DecodeInstance, blocks: int) -> None:
        inst.kv_blocks_used = blocks
        inst.kv_used_tokens = blocks * self.block
        _note_peak(inst)

    def admission_tokens(self, r: int) -> int:
        return self._blocks(self.requests.input_tokens[r]) * self.block

    def admits(self, inst: DecodeInstance, r: int) -> bool:
        used = inst.kv_blocks_used
        if not used:  # the watermark is waived on an empty instance (a long prompt is never starved)
            return True
        return inst.kv_blocks_total - used - self._blocks(self.requests.input_tokens[r]) >= inst.kv_watermark_blocks

    def reserve(self, inst: DecodeInstance, r: int) -> None:
        self._set_used(inst, inst.kv_blocks_used + self._blocks(self.requests.input_tokens[r]))

    def _residue(self, inst: DecodeInstance, r: int, join_iteration: int) -> int:
        rq = self.requests
        return (join_iteration - rq.input_tokens[r] - rq.resumed_tokens[r]) % self.block

    def join(self, inst: DecodeInstance, r: int) -> None:
        inst.kv_cross[self._residue(inst, r, inst.iteration)] += 1

    def grow(self, inst: DecodeInstance) -> bool:
        need = inst.kv_cross[inst.iteration % self.block]
        if need:  # (inlined: this runs before every decode iteration)
            used = inst.kv_blocks_used + need
            if used > inst.kv_blocks_total:
                return False
            inst.kv_blocks_used = used
            tokens = inst.kv_used_tokens = used * self.block
            if tokens > inst.kv_peak_tokens:
                inst.kv_peak_tokens = tokens
        return True

    def release(self, inst: DecodeInstance, finished: list[int]) -> None:
        rq = self.requests
        inp, out, join, resumed = rq.input_tokens, rq.output_tokens, rq.decode_join_iteration, rq.resumed_tokens
        cross = inst.kv_cross
        b = self.block
        freed = 0
        for r in finished:
            freed += -(-(inp[r] + out[r] - 1) // b)  # the last token is never fed back
            cross[(join[r] - inp[r] - resumed[r]) % b] -= 1
        inst.kv_blocks_used -= freed
        inst.kv_used_tokens = inst.kv_blocks_used * b

    def evict(self, inst: DecodeInstance, r: int) -> None:
        rq = self.requests
        k0 = rq.decode_join_iteration[r]
        held = rq.input_tokens[r] + rq.resumed_tokens[r] + inst.iteration - k0
        inst.kv_cross[self._residue(inst, r, k0)] -= 1
        inst.kv_blocks_used -= self._blocks(held)
        inst.kv_used_tokens = inst.kv_blocks_used * self.block

    def _resume_blocks(self, r: int) -> int:
        """Blocks of a preempted request's whole context: its prompt and the ``1 + resumed`` tokens it generated."""
        rq = self.requests
        return self._blocks(rq.input_tokens[r] + 1 + rq.resumed_tokens[r])

    def resume_fits(self, inst: DecodeInstance, r: int, alone: bool) -> bool:
        free = inst.kv_blocks_total - inst.kv_blocks_used - self._resume_blocks(r)
        return free >= (0 if alone else inst.kv_watermark_blocks)

    def reserve_resume(self, inst: DecodeInstance, r: int) -> None:
        self._set_used(inst, inst.kv_blocks_used + self._resume_blocks(r))

    def release_resume(self, inst: DecodeInstance, r: int) -> None:
        inst.kv_blocks_used -= self._resume_blocks(r)
        inst.kv_used_tokens = inst.kv_blocks_used * self.block


class PrefillKv:
    """KV held on prefill instances: reserved when a prompt's first chunk is scheduled, freed when its transfer
    ends (see the module docstring)."""

    def __init__(self, requests: RequestTable) -> None:
        self.requests = requests

    def startable(self, inst: PrefillInstance, queue: Iterable[int]) -> Iterator[int]:
        """Tokens still to prefill of each queued prompt, head first, up to the first prompt that has not started
        and does not fit the instance's free KV (with the prompts before it that start too). Read lazily."""
        inp, done = self.requests.input_tokens, self.requests.prefilled_tokens
        free = inst.kv_capacity_tokens - inst.kv_used_tokens
        for r in queue:
            d = done[r]
            if not d:
                n = inp[r]
                if n > free:
                    return
                free -= n
                yield n
            else:
                yield inp[r] - d

    def reserve(self, inst: PrefillInstance, r: int) -> None:
        """The first chunk of ``r`` is scheduled on ``inst``: its whole prompt's KV is held from now."""
        inst.kv_used_tokens += self.requests.input_tokens[r]
        _note_peak(inst)

    def release(self, inst: PrefillInstance, r: int) -> None:
        """The KV of ``r`` left ``inst`` (transfer ended, one-token answer, or rejection)."""
        inst.kv_used_tokens -= self.requests.input_tokens[r]
