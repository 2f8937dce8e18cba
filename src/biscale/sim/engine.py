"""The event loop of the iteration-level simulator of a prefill/decode-disaggregated cluster.

:class:`Simulator` wires the parts together and runs one heap of timed events (:mod:`biscale.sim.events`) with
request arrivals, timeline samples and planner windows merged in from outside the heap. At equal times: timeline
sample, then planner window, then arrival, then heap events in scheduling order. Everything else lives in the
module that names it:

========================  =====================================================================================
:mod:`~.requests`          per-request state and the request table
:mod:`~.instance`          prefill / decode instances and their lifecycle states
:mod:`~.ledger`            clock and energy account of an instance; the one iteration-pricing path
:mod:`~.prefill`           routing prompts, forming chunked batches, finishing prompts
:mod:`~.decode`            continuous batching
:mod:`~.kv`                KV memory: decode policies (paged, full), prefill holdings
:mod:`~.transfer`          KV transfers, shared links, the queue of requests waiting for decode memory
:mod:`~.fleet`             creating, draining and stopping instances; placement changes; unassigned GPUs
:mod:`~.clocks`            controllers, actuator, baseline clocks
:mod:`~.snapshot`          what controllers and planners see
:mod:`~.timeline`          per-instance samples
========================  =====================================================================================
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping

import numpy as np

from biscale.control.controllers import BaselineClock, ClockController
from biscale.control.placement import Placement
from biscale.control.planner import Planner
from biscale.costmodel import CostModel
from biscale.sim.actuator import SimClockActuator
from biscale.sim.clocks import ClockControl
from biscale.sim.config import SimConfig
from biscale.sim.decode import DecodeStage
from biscale.sim.events import Event, EventQueue
from biscale.sim.fleet import Fleet
from biscale.sim.instance import Instance
from biscale.sim.kv import FullReservation, KvPolicy, PagedKv, PrefillKv
from biscale.sim.ledger import Segment
from biscale.sim.prefill import PrefillStage
from biscale.sim.requests import RequestState, RequestTable
from biscale.sim.router import DECODE_ROUTERS, PREFILL_ROUTERS
from biscale.sim.snapshot import SnapshotBuilder, WindowCounters, cluster_observation
from biscale.sim.timeline import Timeline
from biscale.sim.transfer import KvTransfers
from biscale.workload.trace import Trace

# Plain ints: comparisons between IntEnum members miss CPython's fast path for exact ints.
_PREFILL_END, _DECODE_END, _KV_DONE = int(Event.PREFILL_END), int(Event.DECODE_END), int(Event.KV_DONE)
_KICK_PREFILL, _KICK_DECODE = int(Event.KICK_PREFILL), int(Event.KICK_DECODE)
_CAPACITY = int(Event.CAPACITY)


class Simulator:
    """One run: build with a trace, a placement, a cost model and controllers; call :meth:`run` once."""

    def __init__(
        self,
        trace: Trace,
        placement: Placement,
        cost_model: CostModel,
        controllers: ClockController | Mapping[str, ClockController] | None = None,
        planner: Planner | None = None,
        config: SimConfig | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        self.config = cfg = config or SimConfig()
        self.cost_model = cost_model
        self.trace = trace
        if controllers is None:
            controllers = BaselineClock()
        if isinstance(controllers, ClockController):
            controllers = {"prefill": controllers, "decode": controllers}
        for phase in ("prefill", "decode"):
            if phase not in controllers:
                raise ValueError(f"controllers must cover phase '{phase}'")
        self.controllers = dict(controllers)
        self.planner = planner
        self.progress = progress
        prefill_router = PREFILL_ROUTERS.get(cfg.prefill_router)()
        decode_router = DECODE_ROUTERS.get(cfg.decode_router)()

        arrival = trace.arrival_s
        n = len(trace) if cfg.duration_s is None else int(np.searchsorted(arrival, cfg.duration_s, side="left"))
        self.requests = RequestTable(
            arrival[:n].tolist(),
            trace.input_tokens[:n].tolist(),
            trace.output_tokens[:n].tolist(),
            cfg.frontend_overhead_s,
            first_token_only=cfg.isolate_phase == "prefill",
        )
        self.horizon_s = float("inf") if cfg.max_time_s is None else float(cfg.max_time_s)
        self.events = EventQueue()
        self.segments: list[Segment] | None = [] if cfg.record_segments else None
        """Every constant-power segment, when ``record_segments`` is set."""
        self.window = WindowCounters()
        self._dynamic_planner = planner is not None and not planner.is_static
        completions = self.window.completions if self._dynamic_planner else None
        supported = tuple(int(c) for c in cost_model.supported_clocks_mhz)
        self.snapshots = SnapshotBuilder(
            self.requests,
            supported,
            cfg.slo,
            cfg.prefill_token_budget,
            cfg.prefill_max_seqs,
            cfg.decode_max_batch,
            cfg.frontend_overhead_s,
        )
        self.clocks = ClockControl(self.controllers, supported, cfg.initial_clock, cfg.switch_latency_s, self.snapshots)
        self.kv: KvPolicy = (
            PagedKv(self.requests, cfg.kv_block_tokens, cfg.kv_watermark_frac)
            if cfg.decode_kv_policy == "paged"
            else FullReservation(self.requests)
        )
        self.isolate_phase = cfg.isolate_phase
        self.fleet = Fleet(
            placement,
            cost_model,
            self.kv,
            cfg.nodes,
            cfg.gpus_per_node,
            cfg.startup_s,
            cfg.recent_latencies,
            self.segments,
            self.clocks,
            self.events,
            unassigned_gpu_power(cfg.unassigned_gpu_power_w, cost_model),
            cfg.isolate_phase,
        )
        self.transfers = KvTransfers(
            self.requests,
            self.fleet,
            decode_router,
            self.kv,
            PrefillKv(self.requests),
            cfg.network,
            cost_model.kv_bytes_per_token,
            self.events,
            cfg.kv_link_sharing == "fifo",
            cfg.isolate_phase,
            completions,
        )
        self.prefill = PrefillStage(
            self.requests,
            self.fleet,
            self.transfers,
            self.transfers.prefill_kv,
            self.clocks,
            self.events,
            cost_model,
            prefill_router,
            cfg.prefill_token_budget,
            cfg.prefill_max_seqs,
            self.horizon_s,
            completions,
        )
        self.decode = DecodeStage(
            self.requests,
            self.fleet,
            self.transfers,
            self.kv,
            self.clocks,
            self.events,
            cost_model,
            cfg.decode_max_batch,
            cfg.prefill_token_budget,
            self.horizon_s,
            completions,
        )
        self.fleet.on_capacity = self._on_capacity
        self.timeline = Timeline()
        self.events_processed = 0
        self.end_time_s = 0.0
        self._ran = False

    @property
    def actuator(self) -> SimClockActuator:
        """The simulator's :class:`~biscale.actuator.ClockActuator`."""
        return self.clocks.actuator

    @property
    def instances(self) -> list[Instance]:
        """Every instance that ever existed, by id."""
        return self.fleet.instances

    # ------------------------------------------------------------------ events
    def _on_capacity(self, t: float) -> None:
        """Instances became ready: route what waits in the global queues."""
        self.prefill.flush(t)
        self.transfers.place_waiting(t)

    def _apply_placement(self, placement: Placement, t: float) -> None:
        """A planner changed the placement: apply it, then re-check what waits against it."""
        self.fleet.apply(placement, t)
        self.prefill.recheck(t)
        self.transfers.recheck(t)

    def _arrive(self, r: int, t: float) -> None:
        """Admit request ``r`` (or reject it if it can never fit the placement) and route it."""
        rq = self.requests
        reason = self.fleet.arrival_misfit(rq.input_tokens[r], rq.output_tokens[r])
        if reason is not None:
            rq.reject(r, reason)
            return
        if self.isolate_phase == "decode":  # the request arrives with its KV: straight to decode admission
            rq.prefill_start_s[r] = rq.prefill_end_s[r] = t
            rq.prefilled_tokens[r] = rq.input_tokens[r]
            if rq.output_tokens[r] == 1:
                rq.first_token_s[r] = rq.last_token_s[r] = t
                rq.max_tbt_s[r] = 0.0
                rq.state[r] = int(RequestState.DONE)
                if self._dynamic_planner:
                    self.window.completions.append(r)
                return
            self.transfers.submit(r, t)
            return
        self.prefill.submit(r, t)

    # ------------------------------------------------------------------ main loop
    def run(self) -> float:
        """Run to completion (or the horizon); returns the end time of the run, seconds. Call once."""
        if self._ran:
            raise RuntimeError("a Simulator runs once; build a new one")
        self._ran = True
        cfg = self.config
        fleet = self.fleet
        fleet.start()
        heap = self.events.heap
        pop = heapq.heappop
        arrival = self.requests.arrival_s
        n = len(arrival)
        ai = 0
        horizon = self.horizon_s
        timeline = self.timeline
        instances = fleet.instances
        next_sample = cfg.sample_interval_s
        sample_dt = cfg.sample_interval_s
        planner = self.planner if self._dynamic_planner else None
        next_window = cfg.window_s if planner is not None else float("inf")
        window = self.window
        progress = self.progress
        end_prefill = self.prefill.end_batch
        end_decode = self.decode.end_iteration
        kv_done = self.transfers.arrive
        kick_prefill = self.prefill.on_kick
        kick_decode = self.decode.on_kick
        arrive = self._arrive
        events = 0
        t = 0.0
        inf = float("inf")
        if horizon < inf:  # arrivals after the horizon are never submitted
            n = int(np.searchsorted(np.asarray(arrival), horizon, side="right"))
        t_arr = arrival[0] if n else inf
        next_due = min(next_sample, next_window)  # the next sample or window: one comparison per event until then
        while True:
            t_heap = heap[0][0] if heap else inf
            t_next = t_arr if t_arr < t_heap else t_heap
            if t_next >= next_due:
                if t_next == inf:
                    break
                while next_sample <= t_next and next_sample <= next_window:
                    timeline.sample(next_sample, instances)
                    next_sample += sample_dt
                if next_window <= t_next and planner is not None:
                    t = next_window
                    observation = cluster_observation(
                        t, cfg.window_s, window, self.requests, fleet.target, instances, cfg.total_gpus, cfg.slo
                    )
                    new = planner.plan(observation)
                    window.clear()
                    if new != fleet.target:
                        self._apply_placement(new, t)
                    next_window += cfg.window_s
                    next_due = min(next_sample, next_window)
                    continue
                next_due = min(next_sample, next_window)
            events += 1
            if t_arr <= t_heap:
                t = t_arr
                if planner is not None:
                    window.arrivals.append(ai)
                arrive(ai, t)
                ai += 1
                t_arr = arrival[ai] if ai < n else inf
            else:
                t, _, kind, obj = pop(heap)
                if kind == _DECODE_END:
                    end_decode(obj, t)
                elif kind == _PREFILL_END:
                    end_prefill(obj, t)
                elif kind == _KV_DONE:
                    kv_done(obj, t)
                elif kind == _KICK_DECODE:
                    kick_decode(obj, t)
                elif kind == _KICK_PREFILL:
                    kick_prefill(obj, t)
                elif kind == _CAPACITY:
                    fleet.capacity_pending = False
                    self._on_capacity(t)
                else:
                    fleet.on_ready(obj, t)
            if progress is not None and events % 20000 == 0:
                progress(t)
        end = max(t, timeline.last_sample_s)
        fleet.finish(end)
        if end > timeline.last_sample_s or not timeline.rows:
            timeline.sample(end, instances)
        self.decode.settle()
        self.prefill.settle(end)
        self.events_processed = events
        self.end_time_s = end
        return end


def unassigned_gpu_power(setting: float | str, cost_model: CostModel) -> float:
    """Power of one GPU in no instance for ``SimConfig.unassigned_gpu_power_w``, W (``idle``: the governor's deep
    idle power from the cost model; ``off``: 0)."""
    if setting == "idle":
        return float(cost_model.governor.idle_power_w)
    if setting == "off":
        return 0.0
    return float(setting)
