"""KV transfers from prefill to decode instances, and the global queue of prefilled requests waiting for decode
memory.

When a prompt finishes prefill, the decode router picks a ready decode instance with room; the KV policy reserves
memory there and the transfer starts at once. It takes ``latency + bytes / (min(tp_prefill, tp_decode) *
bandwidth)`` (each GPU ships its own shard) over NVLink inside a node or the NIC across nodes. Transfers do not
compete for links. A request no decode instance can take now waits in a strict FIFO and is placed as soon as
memory frees (never dropped).
"""

from __future__ import annotations

from collections import deque
from typing import cast

from biscale.sim.config import NetworkConfig
from biscale.sim.events import Event, EventQueue
from biscale.sim.fleet import Fleet
from biscale.sim.instance import DecodeInstance, Instance
from biscale.sim.kv import KvPolicy
from biscale.sim.requests import RequestState, RequestTable
from biscale.sim.router import DecodeRouter

_WAITING_DECODE_MEMORY = int(RequestState.WAITING_DECODE_MEMORY)
_TRANSFERRING = int(RequestState.TRANSFERRING)
_WAITING_DECODE = int(RequestState.WAITING_DECODE)
_KV_DONE = int(Event.KV_DONE)


def transfer_end_s(network: NetworkConfig, start_s: float, kv_bytes: float, src: Instance, dst: Instance) -> float:
    """When a transfer of ``kv_bytes`` of KV cache from ``src`` to ``dst`` that starts at ``start_s`` ends, s."""
    if src.node == dst.node:
        bw, lat = network.nvlink_bw_bytes_per_s, network.nvlink_latency_s
    else:
        bw, lat = network.internode_bw_bytes_per_s, network.internode_latency_s
    return start_s + lat + kv_bytes / (bw * min(src.tp, dst.tp))


class KvTransfers:
    """Places prefilled requests on decode instances and moves their KV."""

    def __init__(
        self,
        requests: RequestTable,
        fleet: Fleet,
        router: DecodeRouter,
        kv: KvPolicy,
        network: NetworkConfig,
        kv_bytes_per_token: int,
        events: EventQueue,
    ) -> None:
        self.requests = requests
        self.fleet = fleet
        self.router = router
        self.kv = kv
        self.network = network
        self.kv_bytes_per_token = kv_bytes_per_token
        self.events = events
        self.waiting: deque[int] = deque()
        """Prefilled requests no decode instance could take yet, FCFS (strict head-of-line order)."""

    def submit(self, r: int, t: float) -> None:
        """Request ``r`` finished prefill at ``t``: transfer it now, or queue it behind earlier ones."""
        self.requests.state[r] = _WAITING_DECODE_MEMORY
        if self.waiting or not self._place(r, t):
            self.waiting.append(r)

    def place_waiting(self, t: float) -> None:
        """Transfer queued requests, head first, while decode instances have room."""
        waiting = self.waiting
        while waiting and self._place(waiting[0], t):
            waiting.popleft()

    def _place(self, r: int, t: float) -> bool:
        candidates = self.fleet.ready_decode()
        if not candidates:
            return False
        rq = self.requests
        inst = self.router.choose(candidates, self.kv.admission_tokens(r))
        if inst is None:
            return False
        self.kv.reserve(inst, r)
        inst.incoming += 1
        rq.decode_instance[r] = inst.id
        rq.kv_transfer_start_s[r] = t
        rq.state[r] = _TRANSFERRING
        src = self.fleet.instances[rq.prefill_instance[r]]
        end = transfer_end_s(self.network, t, self.kv_bytes_per_token * rq.input_tokens[r], src, inst)
        self.events.push(end, _KV_DONE, r)
        return True

    def arrive(self, r: int, t: float) -> None:
        """The KV of ``r`` arrived: its first token is delivered and it waits to join the decode batch."""
        rq = self.requests
        inst = cast(DecodeInstance, self.fleet.instances[rq.decode_instance[r]])
        inst.incoming -= 1
        rq.kv_transfer_end_s[r] = t
        rq.first_token_s[r] = t
        rq.state[r] = _WAITING_DECODE
        inst.ready.append(r)
        if not inst.busy:
            self.events.kick(inst, t)
