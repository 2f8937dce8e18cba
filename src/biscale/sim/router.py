"""Routers: which prefill instance gets a new request, which decode instance gets a prefilled one.

Routers are registered classes (:data:`PREFILL_ROUTERS`, :data:`DECODE_ROUTERS`; selected by
``SimConfig.prefill_router`` / ``decode_router``); the simulator builds a fresh one per run, so a stateful router
(round robin) starts over. They read only the attributes named in :class:`PrefillRoutable` and
:class:`DecodeRoutable`, which a live engine adapter can provide too.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Protocol, TypeVar

from biscale.registry import Registry


class PrefillRoutable(Protocol):
    """What a prefill router may read about an instance."""

    id: int
    queued_prompt_tokens: int
    """Prompt tokens queued or in flight and not yet prefilled, tokens."""
    weight: float
    """Relative capacity (the placement's ``capacity_rps``, else the TP degree)."""


class DecodeRoutable(Protocol):
    """What a decode router may read about an instance."""

    id: int
    kv_capacity_tokens: int
    """KV-cache capacity, tokens."""
    kv_used_tokens: int
    """KV-cache tokens held or reserved, tokens."""

    @property
    def clock_mhz(self) -> int:
        """SM clock in force, MHz (0: the default governor)."""
        ...

    def work_items(self) -> int:
        """Requests routed here and not finished: running, waiting to join, incoming, preempted."""
        ...


P = TypeVar("P", bound=PrefillRoutable)
D = TypeVar("D", bound=DecodeRoutable)


class PrefillRouter(ABC):
    """Picks the ready prefill instance for a new prompt."""

    name: ClassVar[str] = "prefill-router"

    @abstractmethod
    def choose(self, instances: Sequence[P], prompt_tokens: int) -> P:
        """One of ``instances`` (ready prefill instances, id order; never empty)."""


class DecodeRouter(ABC):
    """Picks the ready decode instance for a prefilled request, or none when none has room now."""

    name: ClassVar[str] = "decode-router"

    @abstractmethod
    def choose(self, instances: Sequence[D], need_tokens: int) -> D | None:
        """One of ``instances`` (ready decode instances, id order) with ``need_tokens`` free KV, or None."""


#: Registries of router classes (each run builds its own instance).
PREFILL_ROUTERS: Registry[type[PrefillRouter]] = Registry("prefill router", field="prefill_router")
DECODE_ROUTERS: Registry[type[DecodeRouter]] = Registry("decode router", field="decode_router")


@PREFILL_ROUTERS.register("least-work", "the instance with the least queued prompt tokens per unit of capacity")
class LeastWork(PrefillRouter):
    """The instance with the least queued prompt tokens per unit of capacity (ties: lowest id)."""

    name = "least-work"

    def choose(self, instances: Sequence[P], prompt_tokens: int) -> P:
        best = instances[0]
        best_load = best.queued_prompt_tokens / best.weight
        for inst in instances[1:]:
            load = inst.queued_prompt_tokens / inst.weight
            if load < best_load:
                best, best_load = inst, load
        return best


@PREFILL_ROUTERS.register("round-robin", "cycle through instances in id order, ignoring load (a baseline)")
class RoundRobin(PrefillRouter):
    """Cycle through instances in id order (ignores load); a baseline."""

    name = "round-robin"

    def __init__(self) -> None:
        self.calls = 0

    def choose(self, instances: Sequence[P], prompt_tokens: int) -> P:
        inst = instances[self.calls % len(instances)]
        self.calls += 1
        return inst


@DECODE_ROUTERS.register("most-free-kv", "the instance with the most free KV-cache tokens, if the request fits")
class MostFreeKv(DecodeRouter):
    """The instance with the most free KV-cache tokens, if the request fits there (ties: lowest id)."""

    name = "most-free-kv"

    def choose(self, instances: Sequence[D], need_tokens: int) -> D | None:
        best: D | None = None
        best_free = -1
        for inst in instances:
            free = inst.kv_capacity_tokens - inst.kv_used_tokens
            if free > best_free:
                best, best_free = inst, free
        if best is None or best_free < need_tokens:
            return None
        return best


STATE_SPACE_TILE = 128
"""Decode batch size at which VoltanaLLM's EcoRoute sees a boundary (``TILE_SIZE=128`` in its
``voltana-llm-scripts/demo/router.sh``; its decode latency tables change segment every 128 requests above 128,
the engine's batch tile), requests."""


@DECODE_ROUTERS.register(
    "state-space", "VoltanaLLM's EcoRoute: keep decode instances off the 128-request batch boundary, if it fits"
)
class StateSpace(DecodeRouter):
    """VoltanaLLM's EcoRoute (``tile_aware`` in ``python/sglang/srt/disaggregation/echo_lb.py``, commit
    274173238ba0; the demo's ``EchoRoute``), among the instances with ``need_tokens`` free KV (None if none):

    * every candidate holds fewer than :data:`STATE_SPACE_TILE` requests: the one at the lowest clock, then the
      fewest requests (an instance under the default governor counts as at the top clock);
    * otherwise the candidates in order of fewest tiles started (``ceil(n / tile)``), then most requests, and the
      first whose next request does not open a new tile (``n`` is 0 or not a multiple of the tile); all at a
      boundary: the first.

    Requests are counted as VoltanaLLM's balancer counts them: routed and not finished (``work_items``). Ties go to
    the lowest id."""

    name = "state-space"

    def choose(self, instances: Sequence[D], need_tokens: int) -> D | None:
        fits = [i for i in instances if i.kv_capacity_tokens - i.kv_used_tokens >= need_tokens]
        if not fits:
            return None
        loads = [i.work_items() for i in fits]
        if max(loads) < STATE_SPACE_TILE:
            k = min(range(len(fits)), key=lambda j: (fits[j].clock_mhz or math.inf, loads[j]))
            return fits[k]
        order = sorted(range(len(fits)), key=lambda j: (-(-loads[j] // STATE_SPACE_TILE), -loads[j]))
        for j in order:
            if loads[j] == 0 or loads[j] % STATE_SPACE_TILE:
                return fits[j]
        return fits[order[0]]
