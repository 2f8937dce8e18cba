"""Routers: which prefill instance gets a new request, which decode instance gets a prefilled one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol


class RoutableInstance(Protocol):
    """What a router may read about an instance."""

    id: int
    queued_tokens: int
    """Prefill: prompt tokens queued or in flight, tokens."""
    weight: float
    """Relative capacity (the placement's ``capacity_rps``, else the TP degree)."""
    kv_capacity: int
    """KV-cache capacity, tokens."""
    kv_used: int
    """KV-cache tokens held or reserved, tokens."""


PrefillRouter = Callable[[Sequence[RoutableInstance], int], RoutableInstance]
"""``(ready prefill instances, prompt tokens) -> instance``."""
DecodeRouter = Callable[[Sequence[RoutableInstance], int], RoutableInstance | None]
"""``(ready decode instances, KV tokens needed) -> instance`` or ``None`` when none has room now."""


def least_work(instances: Sequence[RoutableInstance], prompt_tokens: int) -> RoutableInstance:
    """The instance with the least queued prompt tokens per unit of capacity (ties: lowest id)."""
    best = instances[0]
    best_load = best.queued_tokens / best.weight
    for inst in instances[1:]:
        load = inst.queued_tokens / inst.weight
        if load < best_load:
            best, best_load = inst, load
    return best


def round_robin() -> PrefillRouter:
    """Cycle through instances in id order (ignores load); a baseline."""
    counter = [0]

    def route(instances: Sequence[RoutableInstance], prompt_tokens: int) -> RoutableInstance:
        inst = instances[counter[0] % len(instances)]
        counter[0] += 1
        return inst

    return route


def most_free_kv(instances: Sequence[RoutableInstance], need_tokens: int) -> RoutableInstance | None:
    """The instance with the most free KV-cache tokens, if the request fits there (ties: lowest id)."""
    best: RoutableInstance | None = None
    best_free = -1
    for inst in instances:
        free = inst.kv_capacity - inst.kv_used
        if free > best_free:
            best, best_free = inst, free
    if best is None or best_free < need_tokens:
        return None
    return best


#: Registries: name -> factory returning a router (factories so that stateful routers start fresh per run).
PREFILL_ROUTERS: dict[str, Callable[[], PrefillRouter]] = {
    "least-work": lambda: least_work,
    "round-robin": round_robin,
}
DECODE_ROUTERS: dict[str, Callable[[], DecodeRouter]] = {"most-free-kv": lambda: most_free_kv}
