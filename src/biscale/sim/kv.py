"""KV-cache memory accounting on decode instances, behind a small policy interface.

A policy answers three questions: how many KV tokens must a decode instance have free to admit a request (the
decode router checks it against ``kv_capacity_tokens - kv_used_tokens``), what admitting reserves, and what a
finished request frees. Today's only policy is :class:`FullReservation`; a paged (block) allocator with
preemption implements the same interface plus per-iteration growth.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from biscale.sim.instance import DecodeInstance
from biscale.sim.requests import RequestTable


class KvPolicy(ABC):
    """How a decode instance's KV memory is reserved and freed."""

    def __init__(self, requests: RequestTable) -> None:
        self.requests = requests

    @abstractmethod
    def admission_tokens(self, r: int) -> int:
        """KV tokens that must be free on a decode instance to admit request ``r`` (its transfer starts then)."""

    @abstractmethod
    def reserve(self, inst: DecodeInstance, r: int) -> None:
        """Admit ``r`` on ``inst``: reserve its memory (the router checked it fits)."""

    @abstractmethod
    def release(self, inst: DecodeInstance, finished: list[int]) -> None:
        """Free the memory of requests that just finished on ``inst``."""


class FullReservation(KvPolicy):
    """Reserve the request's final KV footprint (``input + output`` tokens) from the start of its transfer, so a
    running request never runs out of memory (no preemption). Batches may be smaller than a paged engine's."""

    def admission_tokens(self, r: int) -> int:
        return self.requests.input_tokens[r] + self.requests.output_tokens[r]

    def reserve(self, inst: DecodeInstance, r: int) -> None:
        inst.kv_used_tokens += self.requests.input_tokens[r] + self.requests.output_tokens[r]

    def release(self, inst: DecodeInstance, finished: list[int]) -> None:
        inp, out = self.requests.input_tokens, self.requests.output_tokens
        freed = 0
        for r in finished:
            freed += inp[r] + out[r]
        inst.kv_used_tokens -= freed
