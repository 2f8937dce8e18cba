"""KV transfers from prefill to decode instances, the links they share, and the global queue of prefilled requests
waiting for decode memory.

**Placement.** When a prompt finishes prefill, the decode router picks a ready decode instance that could hold the
request (its KV capacity covers ``input + output`` tokens), has the KV policy's admission room and has no preempted
requests waiting to be recomputed; the policy reserves memory there and the transfer starts. A request no instance
can take now waits in the global queue, FCFS: the head blocks the requests behind it only when some ready decode
instance could admit it once memory frees; a head that fits no *ready* instance (only one still starting) is
skipped, so it never stalls the others. A request that fits no decode instance of the placement at all (after a
placement change shrank decode) is rejected with the reason recorded. The KV of a *draining* prefill instance goes
to a draining decode instance when no ready one can hold it: the new decode instance may be waiting for that
prefill instance's GPUs, which it frees only once the KV has left (:meth:`Fleet.backs_draining_prefill` keeps such
a decode instance alive); only a request that no live decode instance can hold is then rejected. The prompt's KV
stays on its prefill instance until the transfer has ended (:class:`~biscale.sim.kv.PrefillKv`).

**Links** (``SimConfig.kv_link_sharing``). A transfer moves ``bytes = kv_bytes_per_token x prompt tokens`` over
``k = min(tp_prefill, tp_decode)`` GPU pairs (each GPU ships its own KV shard) and takes ``latency + bytes / (k x
bandwidth)``: NVLink inside a node, each GPU's NIC across nodes. With ``"fifo"`` (the default) every GPU of an
instance has one lane per link kind (NVLink, NIC) per direction (prefill: out, decode: in); a transfer occupies the
``k`` earliest-free lanes on each side for its whole duration and starts when they are all free, in the order
transfers are admitted (FCFS, non-preemptive). Transfers that share a source or destination GPU's link therefore
queue behind each other, those on other GPUs run in parallel. ``"off"``: every transfer runs at full speed at once
(no contention). ``kv_link_wait_s`` records each transfer's wait for its lanes.

**Phase isolation** (``SimConfig.isolate_phase``). ``"prefill"``: no decode instance; a prefilled request's KV is
sent to a notional decode instance on another node with free links (the prefill side's NIC lanes are still
shared), and the request completes when the transfer ends (its first and last token). ``"decode"``: requests
arrive with their KV; admission to a decode instance is their first token.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import cast

from biscale.sim.config import NetworkConfig
from biscale.sim.events import Event, EventQueue
from biscale.sim.fleet import Fleet
from biscale.sim.instance import DecodeInstance, Instance, InstanceStatus, PrefillInstance
from biscale.sim.kv import KvPolicy, PrefillKv
from biscale.sim.requests import STATE_LABELS, RequestState, RequestTable
from biscale.sim.router import DecodeRouter

_WAITING_DECODE_MEMORY = int(RequestState.WAITING_DECODE_MEMORY)
_TRANSFERRING = int(RequestState.TRANSFERRING)
_WAITING_DECODE = int(RequestState.WAITING_DECODE)
_DONE = int(RequestState.DONE)
_KV_DONE = int(Event.KV_DONE)
_DRAINING, _STOPPED = int(InstanceStatus.DRAINING), int(InstanceStatus.STOPPED)
_NVLINK, _NIC = 0, 1


class KvTransfers:
    """Places prefilled requests on decode instances and moves their KV."""

    def __init__(
        self,
        requests: RequestTable,
        fleet: Fleet,
        router: DecodeRouter,
        kv: KvPolicy,
        prefill_kv: PrefillKv,
        network: NetworkConfig,
        kv_bytes_per_token: int,
        events: EventQueue,
        link_sharing: bool,
        isolate_phase: str | None,
        completions: list[int] | None,
    ) -> None:
        self.requests = requests
        self.fleet = fleet
        self.router = router
        self.kv = kv
        self.prefill_kv = prefill_kv
        self.network = network
        self.kv_bytes_per_token = kv_bytes_per_token
        self.events = events
        self.link_sharing = link_sharing
        self.isolate_phase = isolate_phase
        self.completions = completions
        """Requests completed at transfer end (prefill isolation), for the planner's window counters."""
        self.waiting: deque[int] = deque()
        """Prefilled requests no decode instance could take yet, FCFS (see the module docstring)."""
        self.blocked = False
        """The queue holds a request that a ready decode instance could admit once memory frees (it blocks the
        requests behind it)."""
        self.on_prefill_freed: Callable[[PrefillInstance, float], None] = lambda inst, t: None
        """Called when KV left a prefill instance (the prefill stage lifts backpressure, a drained instance
        stops)."""

    # ------------------------------------------------------------------ admission
    def submit(self, r: int, t: float) -> None:
        """Request ``r`` finished prefill at ``t``: transfer it now, or queue it."""
        rq = self.requests
        rq.state[r] = _WAITING_DECODE_MEMORY
        src_id = rq.prefill_instance[r]
        if src_id >= 0:
            cast(PrefillInstance, self.fleet.instances[src_id]).outgoing += 1
        if self.isolate_phase == "prefill":
            self._start(r, t, None)
            return
        fleet = self.fleet
        cap = fleet.max_decode_kv_tokens
        if cap is not None and rq.input_tokens[r] + rq.output_tokens[r] > cap:
            late = fleet.changed_s > rq.arrival_s[r]
            self._reject(r, t, str(fleet.decode_misfit(rq.input_tokens[r] + rq.output_tokens[r], late=late)))
            return
        if self.waiting and self.blocked:
            self.waiting.append(r)
            return
        if self._place(r, t):
            return
        if self._admissible_later(r):
            self.blocked = True
        elif self._stranded(r, t):
            return
        self.waiting.append(r)

    def place_waiting(self, t: float) -> None:
        """Transfer queued requests, head first, while decode instances have room (skipping heads no ready
        instance could ever hold)."""
        waiting = self.waiting
        skipped: list[int] = []
        blocked = False
        while waiting:
            r = waiting[0]
            if self._place(r, t):
                waiting.popleft()
            elif self._admissible_later(r):
                blocked = True
                break
            elif self._stranded(r, t):
                waiting.popleft()
            else:
                skipped.append(waiting.popleft())
        if skipped:
            waiting.extendleft(reversed(skipped))
        self.blocked = blocked

    def recheck(self, t: float) -> None:
        """After a placement change: reject queued requests that no decode instance of the new placement can hold,
        then place what can go."""
        keep: deque[int] = deque()
        misfits: list[tuple[int, str]] = []
        rq = self.requests
        for r in self.waiting:
            reason = self.fleet.decode_misfit(rq.input_tokens[r] + rq.output_tokens[r], late=True)
            if reason is None:
                keep.append(r)
            else:
                misfits.append((r, reason))
        self.waiting = keep
        for r, reason in misfits:  # (a rejection may stop a drained instance and start a new one)
            self._reject(r, t, reason)
        self.place_waiting(t)

    def _targets(self, r: int, t: float | None = None) -> list[DecodeInstance]:
        """Decode instances whose KV capacity holds ``r``: the ready ones; if there is none and ``r``'s prefill
        instance is draining, the draining ones (a new decode instance may be waiting for that prefill instance's
        GPUs, which it frees only once this KV has left: the old decode instances take it, and stop only after
        every draining prefill instance has; :meth:`Fleet.maybe_stop`), those whose start-up has ended by ``t``
        (None: any, for the question whether one can take it later)."""
        rq = self.requests
        fleet = self.fleet
        total = rq.input_tokens[r] + rq.output_tokens[r]
        ready = [i for i in fleet.ready_decode_list if i.kv_capacity_tokens >= total]
        src_id = rq.prefill_instance[r]
        if ready or src_id < 0 or fleet.instances[src_id].status != _DRAINING:
            return ready
        return [
            i
            for i in fleet.decode_instances
            if i.status == _DRAINING and i.kv_capacity_tokens >= total and (t is None or i.ready_s <= t)
        ]

    def _admissible_later(self, r: int) -> bool:
        return bool(self._targets(r))

    def _stranded(self, r: int, t: float) -> bool:
        """Reject ``r`` if no live decode instance can hold it while the instance that would (not created yet)
        waits for the GPUs of ``r``'s draining prefill instance, which cannot stop while it holds ``r``'s KV (only
        after placement changes in quick succession: a request always fits a decode instance of the placement it
        was admitted to, and those drain only after the draining prefill instances)."""
        rq = self.requests
        src_id = rq.prefill_instance[r]
        if src_id < 0 or not self.fleet.must_make_room(self.fleet.instances[src_id]):
            return False
        total = rq.input_tokens[r] + rq.output_tokens[r]
        if any(i.status != _STOPPED and i.kv_capacity_tokens >= total for i in self.fleet.decode_instances):
            return False  # a live one can take it once it is ready (a starting one) or has room
        self._reject(
            r,
            t,
            f"{total} KV tokens fit no live decode instance and its draining prefill instance must stop to make "
            f"room for the new placement (placement changed at {self.fleet.changed_s:g} s)",
        )
        return True

    def _reject(self, r: int, t: float, reason: str) -> None:
        """Refuse prefilled ``r``: its KV leaves its prefill instance."""
        self.requests.reject(r, reason)
        self._leave_prefill(r, t)

    def _leave_prefill(self, r: int, t: float) -> None:
        src_id = self.requests.prefill_instance[r]
        if src_id >= 0:
            src = cast(PrefillInstance, self.fleet.instances[src_id])
            self.prefill_kv.release(src, r)
            src.outgoing -= 1
            if src.blocked_since_s is not None or src.status == _DRAINING:
                self.on_prefill_freed(src, t)

    def _place(self, r: int, t: float) -> bool:
        rq = self.requests
        candidates = [i for i in self._targets(r, t) if not i.preempted and not i.resuming]
        if not candidates:
            return False
        kv = self.kv
        inst = self.router.choose(candidates, kv.admission_tokens(r))
        if inst is None or not kv.admits(inst, r):
            return False
        kv.reserve(inst, r)
        inst.incoming += 1
        rq.decode_instance[r] = inst.id
        self._start(r, t, inst)
        return True

    # ------------------------------------------------------------------ transfers
    def _start(self, r: int, t: float, dst: DecodeInstance | None) -> None:
        """Start moving the KV of ``r`` to ``dst`` (None: prefill isolation's notional decode instance)."""
        rq = self.requests
        rq.kv_transfer_start_s[r] = t
        rq.state[r] = _TRANSFERRING
        src_id = rq.prefill_instance[r]
        if src_id < 0:  # decode isolation: the KV came with the request
            start = end = t
        else:
            src = self.fleet.instances[src_id]
            start, end = self._book(src, dst, t, self.kv_bytes_per_token * rq.input_tokens[r])
        rq.kv_link_wait_s[r] = start - t
        self.events.push(end, _KV_DONE, r)

    def _book(self, src: Instance, dst: Instance | None, t: float, kv_bytes: float) -> tuple[float, float]:
        """Lanes for a transfer admitted at ``t``: when its data starts moving and when it ends, s."""
        net = self.network
        if dst is not None and src.node == dst.node:
            kind, bw, lat = _NVLINK, net.nvlink_bw_bytes_per_s, net.nvlink_latency_s
        else:
            kind, bw, lat = _NIC, net.internode_bw_bytes_per_s, net.internode_latency_s
        k = src.tp if dst is None else min(src.tp, dst.tp)
        if not self.link_sharing:
            return t, t + lat + kv_bytes / (bw * k)
        out = src.lanes[kind]
        out.sort()
        start = out[k - 1]
        lanes_in = None
        if dst is not None:
            lanes_in = dst.lanes[kind]
            lanes_in.sort()
            if lanes_in[k - 1] > start:
                start = lanes_in[k - 1]
        if t > start:
            start = t
        end = start + lat + kv_bytes / (bw * k)
        out[:k] = [end] * k
        if lanes_in is not None:
            lanes_in[:k] = [end] * k
        return start, end

    def arrive(self, r: int, t: float) -> None:
        """The KV of ``r`` arrived: its first token is delivered and it waits to join the decode batch."""
        rq = self.requests
        if rq.state[r] != _TRANSFERRING:
            raise RuntimeError(f"KV of request {r} arrived while it was {STATE_LABELS[rq.state[r]]}")
        self._leave_prefill(r, t)
        rq.kv_transfer_end_s[r] = t
        rq.first_token_s[r] = t
        if self.isolate_phase == "prefill":
            rq.last_token_s[r] = t
            rq.max_tbt_s[r] = 0.0
            rq.state[r] = _DONE
            if self.completions is not None:
                self.completions.append(r)
            return
        inst = cast(DecodeInstance, self.fleet.instances[rq.decode_instance[r]])
        inst.incoming -= 1
        rq.state[r] = _WAITING_DECODE
        inst.ready.append(r)
        if not inst.busy:
            self.events.kick(inst, t)
