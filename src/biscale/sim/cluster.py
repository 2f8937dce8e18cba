"""GPU inventory: nodes x GPUs, TP groups allocated first-fit inside one node."""

from __future__ import annotations

from collections.abc import Mapping

from biscale.errors import InputError


class GpuPool:
    """Which GPUs are free. GPU ids are global: ``node * gpus_per_node + local``."""

    def __init__(self, nodes: int, gpus_per_node: int) -> None:
        self.nodes = nodes
        self.gpus_per_node = gpus_per_node
        self._free: list[list[int]] = [list(range(n * gpus_per_node, (n + 1) * gpus_per_node)) for n in range(nodes)]

    def node_of(self, gpu: int) -> int:
        return gpu // self.gpus_per_node

    @property
    def free_gpus(self) -> int:
        return sum(len(f) for f in self._free)

    def allocate(self, tp: int, rank: Mapping[int, int] | None = None) -> tuple[int, ...] | None:
        """``tp`` GPUs on one node, or ``None``. Without ``rank``: best fit (the node with the fewest free GPUs that
        still fits; its lowest ids). With ``rank`` (GPU -> cost of taking it, 0 where absent): the node whose
        ``tp`` cheapest GPUs have the lowest worst cost, then best fit; inside it the cheapest GPUs."""
        best: int | None = None
        best_key: tuple[int, int] = (0, 0)
        for n, free in enumerate(self._free):
            if len(free) < tp:
                continue
            if rank:
                free.sort(key=lambda g: rank.get(g, 0))  # stable: ascending ids within a cost
                key = (rank.get(free[tp - 1], 0), len(free))
            else:
                key = (0, len(free))
            if best is None or key < best_key:
                best, best_key = n, key
        if best is None:
            return None
        free = self._free[best]
        taken, rest = free[:tp], free[tp:]
        self._free[best] = sorted(rest)
        return tuple(sorted(taken))

    def all_free(self, gpus: tuple[int, ...]) -> bool:
        return all(g in self._free[self.node_of(g)] for g in gpus)

    def take(self, gpus: tuple[int, ...]) -> None:
        """Mark these (free) GPUs as used."""
        for g in gpus:
            self._free[self.node_of(g)].remove(g)

    def release(self, gpus: tuple[int, ...]) -> None:
        for g in gpus:
            self._free[self.node_of(g)].append(g)
        for f in self._free:
            f.sort()


def check_fits(tps: list[int], nodes: int, gpus_per_node: int, min_tp: int | None = None) -> None:
    """Raise :class:`InputError` unless instances of these TP degrees fit the cluster (largest first)."""
    for tp in tps:
        if tp > gpus_per_node:
            raise InputError(
                f"TP{tp} does not fit a node of {gpus_per_node} GPUs (a TP group never spans nodes)",
                field="placement",
            )
        if min_tp is not None and tp < min_tp:
            raise InputError(
                f"TP{tp} is below the model's minimum TP degree {min_tp} (weights do not fit)", field="placement"
            )
    need = sum(tps)
    if need > nodes * gpus_per_node:
        raise InputError(
            f"placement needs {need} GPUs but the cluster has {nodes * gpus_per_node} ({nodes} x {gpus_per_node})",
            field="placement",
        )
    pool = GpuPool(nodes, gpus_per_node)
    for tp in sorted(tps, reverse=True):
        if pool.allocate(tp) is None:
            raise InputError(
                f"placement's TP groups do not pack into {nodes} nodes of {gpus_per_node} GPUs", field="placement"
            )
