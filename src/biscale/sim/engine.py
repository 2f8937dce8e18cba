"""The event-driven, iteration-level simulator of a prefill/decode-disaggregated cluster.

Design (see ``docs/simulator.md``): one heap of timed events with a sequence-number tie-breaker; request
arrivals, timeline samples and planner windows are merged in without entering the heap. Per decode iteration
the work is O(1) plus O(requests that join or leave): batch statistics are kept incrementally, a request stores
the iteration index it joined at, and its energy share comes from a running prefix sum of
``iteration energy / batch size``.

Energy is exact: every instance's power is piecewise constant (iterations, partial iterations around a clock
switch, governor wake-ups, idle gaps at the current clock, the governor's shallow then deep idle), and energy is
committed segment by segment.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from biscale.control.controllers import BaselineClock, ClockController, snap_clock
from biscale.control.placement import InstanceSpec, Placement
from biscale.control.planner import Planner
from biscale.control.state import GOVERNOR_MHZ, ClusterObservation, InstanceState, InstanceSummary
from biscale.costmodel import CostModel, DecodeShape, PrefillShape
from biscale.errors import InputError
from biscale.sim.actuator import SimClockActuator
from biscale.sim.cluster import GpuPool, check_fits
from biscale.sim.config import SimConfig
from biscale.sim.router import DECODE_ROUTERS, PREFILL_ROUTERS
from biscale.workload.trace import Trace

# Request states (codes stored per request).
(
    NOT_ARRIVED,
    WAITING_PREFILL,
    PREFILLING,
    WAITING_DECODE_MEMORY,
    TRANSFERRING,
    WAITING_DECODE,
    DECODING,
    DONE,
    REJECTED,
) = range(9)
STATE_NAMES = (
    "not_arrived",
    "waiting_prefill",
    "prefilling",
    "waiting_decode_memory",
    "transferring",
    "waiting_decode",
    "decoding",
    "done",
    "rejected",
)

# Instance lifecycle.
STARTING, READY, DRAINING, STOPPED = range(4)
STATUS_NAMES = ("starting", "ready", "draining", "stopped")

# Heap event kinds.
_EV_PREFILL_END, _EV_DECODE_END, _EV_KV_DONE, _EV_READY, _EV_KICK = range(5)


class Instance:
    """One serving instance (its TP group of GPUs) and its bookkeeping. Attributes are read by routers."""

    __slots__ = (
        "batch",
        "busy",
        "clock",
        "controller",
        "ctx_sq",
        "ctx_sum",
        "cum",
        "dyn",
        "e_busy",
        "e_idle",
        "fast",
        "finish_at",
        "gpus",
        "id",
        "idle_p",
        "idle_start",
        "incoming",
        "it_e",
        "it_end",
        "it_p",
        "it_segs",
        "it_start",
        "iters",
        "joined",
        "k",
        "kicked",
        "kv_capacity",
        "kv_used",
        "lats",
        "node",
        "pending_clock",
        "pending_t",
        "phase",
        "queue",
        "queued_tokens",
        "ready",
        "recent",
        "running",
        "spec",
        "status",
        "switches",
        "t_acc",
        "t_ready",
        "t_start",
        "t_stop",
        "tokens",
        "tp",
        "weight",
    )

    def __init__(self, iid: int, spec: InstanceSpec, gpus: tuple[int, ...], node: int, t: float) -> None:
        self.id = iid
        self.spec = spec
        self.phase = spec.phase
        self.tp = spec.tp
        self.gpus = gpus
        self.node = node
        self.weight = float(spec.capacity_rps) if spec.capacity_rps else float(spec.tp)
        self.status = STARTING
        self.t_start = t
        self.t_ready = t
        self.t_stop = float("nan")
        self.clock = 0
        self.idle_p = 0.0
        self.pending_clock: int | None = None
        self.pending_t = 0.0
        self.switches = 0
        self.controller: ClockController = BaselineClock()
        self.dyn = False
        self.fast = False
        self.e_busy = 0.0
        self.e_idle = 0.0
        self.t_acc = t
        self.idle_start = t
        self.busy = False
        self.kicked = False
        self.it_start = t
        self.it_end = t
        self.it_p = 0.0
        self.it_e = 0.0
        self.it_segs: list[tuple[float, float, float]] | None = None
        self.iters = 0
        self.tokens = 0
        self.recent: deque[float] = deque(maxlen=16)
        # prefill
        self.queue: deque[int] = deque()
        self.queued_tokens = 0
        self.batch: list[tuple[int, int]] = []
        # decode
        self.kv_capacity = 0
        self.kv_used = 0
        self.ready: deque[int] = deque()
        self.incoming = 0
        self.running: dict[int, None] = {}
        self.joined: list[int] = []
        self.ctx_sum = 0
        self.ctx_sq = 0
        self.k = 0
        self.lats: list[float] = []
        self.cum: list[float] = [0.0]
        self.finish_at: dict[int, list[int]] = {}

    @property
    def batch_size(self) -> int:
        return len(self.running) if self.phase == "decode" else len(self.batch)

    @property
    def queue_len(self) -> int:
        return len(self.queue) if self.phase == "prefill" else len(self.ready)


class Simulator:
    """One run: build with a trace, a placement, a cost model and controllers; call :meth:`run`."""

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
        self.cfg = cfg = config or SimConfig()
        self.cm = cost_model
        self.trace = trace
        self.supported = tuple(int(c) for c in cost_model.supported_clocks_mhz)
        self.gov = cost_model.governor
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
        if cfg.prefill_router not in PREFILL_ROUTERS or cfg.decode_router not in DECODE_ROUTERS:
            raise ValueError(f"unknown router (prefill: {sorted(PREFILL_ROUTERS)}, decode: {sorted(DECODE_ROUTERS)})")
        self.prefill_router = PREFILL_ROUTERS[cfg.prefill_router]()
        self.decode_router = DECODE_ROUTERS[cfg.decode_router]()
        self.pool = GpuPool(cfg.nodes, cfg.gpus_per_node)
        self.actuator = SimClockActuator(self.supported, self._on_actuator_switch, self._on_actuator_query)
        self._by_gpu: dict[int, Instance] = {}
        min_tp = getattr(cost_model, "min_tp", None)
        self.min_tp: int | None = int(min_tp) if isinstance(min_tp, int) else None
        self._check_placement(placement)

        # Requests (struct of lists; converted to arrays at the end).
        arrival = trace.arrival_s
        n = len(trace) if cfg.duration_s is None else int(np.searchsorted(arrival, cfg.duration_s, side="left"))
        self.n = n
        self.arrival: list[float] = arrival[:n].tolist()
        self.inp: list[int] = trace.input_tokens[:n].tolist()
        self.out: list[int] = trace.output_tokens[:n].tolist()
        nan = float("nan")
        self.state = [NOT_ARRIVED] * n
        self.p_inst = [-1] * n
        self.d_inst = [-1] * n
        self.p_start = [nan] * n
        self.p_end = [nan] * n
        self.kv_start = [nan] * n
        self.kv_end = [nan] * n
        self.first_tok = [nan] * n
        self.last_tok = [nan] * n
        self.max_gap = [nan] * n
        self.p_energy = [0.0] * n
        self.d_energy = [0.0] * n
        self.done_tok = [0] * n
        self.join_k = [-1] * n
        self.reject_reason: dict[int, str] = {}

        self.instances: list[Instance] = []
        self.target = placement
        self.pending_specs: list[tuple[InstanceSpec, tuple[int, ...]]] = []
        self.pending_prefill: deque[int] = deque()
        self.pending_decode: deque[int] = deque()
        self.heap: list[tuple[float, int, int, Any]] = []
        self.seq = itertools.count()
        self.now = 0.0
        self.events = 0
        self.end_time = 0.0
        self._ran = False
        self.horizon = float("inf") if cfg.max_time_s is None else float(cfg.max_time_s)
        self.max_prefill_cap = 0
        self.max_decode_cap = 0
        self.segments: list[tuple[int, float, float, float, int]] = []
        self.timeline_rows: list[tuple[Any, ...]] = []
        self._last_sample_t = 0.0
        self._last_sample_e: dict[int, float] = {}
        self.window_arrivals: list[int] = []
        self.window_completed: list[int] = []
        self._track = planner is not None and not planner.is_static
        self.completed = 0
        self._record = self.cfg.record_segments
        self._heappush = heapq.heappush
        self._next_seq = self.seq.__next__
        self._decode_cost = cost_model.decode_cost

    # ------------------------------------------------------------------ placement and instances
    def _check_placement(self, placement: Placement) -> None:
        tps = [s.tp for s in placement.expand()]
        check_fits(tps, self.cfg.nodes, self.cfg.gpus_per_node, self.min_tp)
        for tp in sorted(set(tps)):
            try:
                cap = self.cm.kv_capacity_tokens(tp)
            except ValueError as err:
                raise InputError(f"TP{tp} is not supported by the cost model: {err}", field="placement") from err
            if cap <= 0:
                raise InputError(f"TP{tp} leaves no room for the KV cache", field="placement")

    def _baseline_clock(self, spec: InstanceSpec) -> int:
        setting = spec.clock if spec.clock is not None else self.cfg.initial_clock
        if setting == "max":
            return self.supported[-1]
        if setting == "default":
            return GOVERNOR_MHZ
        if isinstance(setting, str):
            setting = int(setting)
        return snap_clock(int(setting), self.supported)

    def _create_instance(
        self, spec: InstanceSpec, t: float, startup: float, gpus: tuple[int, ...] | None = None
    ) -> Instance | None:
        if gpus is None:
            gpus = self.pool.allocate(spec.tp)
            if gpus is None:
                return None
        else:
            self.pool.take(gpus)
        inst = Instance(len(self.instances), spec, gpus, self.pool.node_of(gpus[0]), t)
        inst.recent = deque(maxlen=self.cfg.recent_latencies)
        inst.kv_capacity = int(self.cm.kv_capacity_tokens(spec.tp))
        for g in gpus:
            self._by_gpu[g] = inst
        self.instances.append(inst)
        self._set_clock_now(inst, self._baseline_clock(spec))
        ctrl = self.controllers[spec.phase]
        inst.controller = ctrl
        inst.dyn = not ctrl.is_static
        inst.fast = bool(inst.clock) and not inst.dyn and not self._record
        if ctrl.is_static:  # asked once; applied at creation so start-up already runs at it
            want = ctrl.decide(self._state(inst, t))
            if want is not None:
                self._set_clock_now(inst, snap_clock(want, self.supported))
        inst.t_ready = t + startup
        if startup > 0:
            self._push(t + startup, _EV_READY, inst)
        else:
            inst.status = READY
        return inst

    def _set_clock_now(self, inst: Instance, clock: int) -> None:
        inst.clock = clock
        inst.fast = bool(clock) and not inst.dyn and not self._record
        inst.idle_p = self.cm.idle_power_w(inst.tp, clock or None) * inst.tp if clock else 0.0

    def _update_caps(self) -> None:
        cm = self.cm
        specs = list(self.target.expand())
        self.max_prefill_cap = max(cm.kv_capacity_tokens(s.tp) for s in specs if s.phase == "prefill")
        self.max_decode_cap = max(cm.kv_capacity_tokens(s.tp) for s in specs if s.phase == "decode")

    def _apply_placement(self, placement: Placement, t: float, startup: float) -> None:
        """Keep matching instances, drain the surplus, create what is missing on GPUs chosen now.

        New instances are packed (largest TP first, best fit) on the GPUs that kept instances leave; each waits for
        its own GPUs to be released by draining instances. If the kept instances make packing impossible, every
        instance is drained and the whole placement is recreated (a full reconfiguration).
        """
        self._check_placement(placement)
        self.target = placement
        self._update_caps()
        want: dict[tuple[str, int, Any, Any], list[InstanceSpec]] = {}
        for s in placement.expand():
            want.setdefault((s.phase, s.tp, s.clock, s.capacity_rps), []).append(s)
        keep: dict[tuple[str, int, Any, Any], list[Instance]] = {}
        for inst in self.instances:
            if inst.status in (STARTING, READY):
                s = inst.spec
                keep.setdefault((s.phase, s.tp, s.clock, s.capacity_rps), []).append(inst)
        kept: list[Instance] = []
        drain: list[Instance] = []
        new_specs: list[InstanceSpec] = []
        for key, have in keep.items():
            n_want = len(want.get(key, []))
            # drain those with the least work first
            have.sort(key=lambda i: (len(i.queue) + len(i.running) + len(i.ready) + i.incoming, -i.id))
            surplus = max(0, len(have) - n_want)
            drain.extend(have[:surplus])
            kept.extend(have[surplus:])
        for key, specs in want.items():
            new_specs.extend(specs[len(keep.get(key, [])) :])
        plan = self._pack(new_specs, kept)
        if plan is None:  # kept instances fragment the cluster: reconfigure everything
            drain.extend(kept)
            plan = self._pack(list(placement.expand()), [])
            assert plan is not None  # _check_placement packed it on an empty cluster
        for inst in sorted(drain, key=lambda i: i.id):
            inst.status = DRAINING
        self.pending_specs = plan
        for inst in sorted(drain, key=lambda i: i.id):
            self._maybe_stop(inst, t)
        self._create_pending(t, startup)
        self._flush_pending(t)

    def _pack(
        self, specs: list[InstanceSpec], kept: list[Instance]
    ) -> list[tuple[InstanceSpec, tuple[int, ...]]] | None:
        """GPUs for ``specs`` given that only ``kept`` instances stay (largest TP first, best fit), or None."""
        pool = GpuPool(self.cfg.nodes, self.cfg.gpus_per_node)
        for inst in kept:
            pool.take(inst.gpus)
        out: list[tuple[InstanceSpec, tuple[int, ...]]] = []
        for spec in sorted(specs, key=lambda s: -s.tp):
            gpus = pool.allocate(spec.tp)
            if gpus is None:
                return None
            out.append((spec, gpus))
        return out

    def _create_pending(self, t: float, startup: float) -> None:
        """Create every planned instance whose GPUs are all free now."""
        still: list[tuple[InstanceSpec, tuple[int, ...]]] = []
        created = False
        for spec, gpus in self.pending_specs:
            if self.pool.all_free(gpus):
                self._create_instance(spec, t, startup, gpus)
                created = True
            else:
                still.append((spec, gpus))
        self.pending_specs = still
        if created and startup <= 0:
            self._flush_pending(t)

    def _maybe_stop(self, inst: Instance, t: float) -> None:
        if inst.status != DRAINING or inst.busy:
            return
        if inst.phase == "prefill":
            if inst.queue:
                return
        elif inst.running or inst.ready or inst.incoming:
            return
        self._account_idle(inst, t)
        inst.status = STOPPED
        inst.t_stop = t
        self.pool.release(inst.gpus)
        for g in inst.gpus:
            self._by_gpu.pop(g, None)
        if self.pending_specs:
            self._create_pending(t, self.cfg.startup_s)

    def _flush_pending(self, t: float) -> None:
        while self.pending_prefill and self._ready_instances("prefill"):
            self._route_prefill(self.pending_prefill.popleft(), t)
        self._place_pending_decode(t)

    def _ready_instances(self, phase: str) -> list[Instance]:
        return [i for i in self.instances if i.status == READY and i.phase == phase]

    # ------------------------------------------------------------------ clocks
    def _on_actuator_switch(self, gpus: tuple[int, ...], clock: int) -> None:
        inst = self._by_gpu[gpus[0]]
        lat = self.cfg.switch_latency_s
        if lat <= 0:
            self._account_idle(inst, self.now)
            if clock != inst.clock:
                self._set_clock_now(inst, clock)
                inst.switches += 1
                if clock == GOVERNOR_MHZ:
                    inst.idle_start = self.now
            inst.pending_clock = None
            return
        inst.pending_clock = clock
        inst.pending_t = self.now + lat

    def _on_actuator_query(self, gpus: tuple[int, ...]) -> int:
        return self._by_gpu[gpus[0]].clock

    def _apply_switch(self, inst: Instance, t: float) -> None:
        clock = inst.pending_clock
        inst.pending_clock = None
        if clock is None or clock == inst.clock:
            return
        self._set_clock_now(inst, clock)
        inst.switches += 1
        if clock == GOVERNOR_MHZ:
            inst.idle_start = t

    def _decide(self, inst: Instance, t: float) -> None:
        want = inst.controller.decide(self._state(inst, t))
        if want is None:
            return
        want = snap_clock(int(want), self.supported)
        target = inst.pending_clock if inst.pending_clock is not None else inst.clock
        if want == target:
            return
        if want == GOVERNOR_MHZ:
            self.actuator.reset(inst.gpus)
        else:
            self.actuator.set_clock(inst.gpus, want)

    # ------------------------------------------------------------------ energy
    def _idle_upto(self, inst: Instance, t: float) -> None:
        t0 = inst.t_acc
        if t <= t0:
            return
        tp = inst.tp
        e = self._gap_energy(inst, inst.clock, inst.idle_p, inst.idle_start, t0, t)
        if inst.clock == GOVERNOR_MHZ:
            g = self.gov
            s = inst.idle_start
            if self.cfg.record_segments:
                knee = s + g.downclock_after_s
                if t0 < knee < t:
                    self.segments.append((inst.id, t0, knee, tp * g.shallow_idle_power_w, 0))
                    self.segments.append((inst.id, knee, t, tp * g.idle_power_w, 0))
                else:
                    p = g.shallow_idle_power_w if t <= knee else g.idle_power_w
                    self.segments.append((inst.id, t0, t, tp * p, 0))
        elif self.cfg.record_segments:
            self.segments.append((inst.id, t0, t, inst.idle_p, 0))
        inst.e_idle += e
        inst.t_acc = t

    def _account_idle(self, inst: Instance, t: float) -> None:
        """Commit idle energy up to ``t``, applying a clock switch that lands in between."""
        if inst.pending_clock is not None and inst.pending_t <= t:
            self._idle_upto(inst, inst.pending_t)
            self._apply_switch(inst, inst.pending_t)
        self._idle_upto(inst, t)

    def _gap_energy(self, inst: Instance, clock: int, idle_p: float, idle_start: float, t0: float, t1: float) -> float:
        """Idle energy of ``inst`` over ``[t0, t1]`` at ``clock`` (0: governor, gap measured from ``idle_start``)."""
        if t1 <= t0:
            return 0.0
        if clock == GOVERNOR_MHZ:
            g = self.gov
            return inst.tp * (g.idle_energy_j(t1 - idle_start) - g.idle_energy_j(t0 - idle_start))
        return idle_p * (t1 - t0)

    def _energy_at(self, inst: Instance, t: float) -> float:
        """Energy drawn by ``inst`` from its start up to ``t`` (for timeline samples), joules; commits nothing."""
        total = inst.e_busy + inst.e_idle
        if t < inst.t_acc:  # inside the committed iteration: take back the part after t
            if inst.it_segs is None:
                return total - inst.it_p * (inst.t_acc - t)
            for t0, t1, p in inst.it_segs:
                if t1 > t:
                    total -= p * (t1 - max(t0, t))
            return total
        if inst.status == STOPPED:
            return total
        t0 = inst.t_acc
        if inst.pending_clock is not None and inst.pending_t <= t:
            te = inst.pending_t
            total += self._gap_energy(inst, inst.clock, inst.idle_p, inst.idle_start, t0, te)
            new = inst.pending_clock
            if new == inst.clock:
                return total + self._gap_energy(inst, inst.clock, inst.idle_p, inst.idle_start, te, t)
            idle_p = self.cm.idle_power_w(inst.tp, new) * inst.tp if new else 0.0
            return total + self._gap_energy(inst, new, idle_p, te, te, t)
        return total + self._gap_energy(inst, inst.clock, inst.idle_p, inst.idle_start, t0, t)

    def _run_iteration(self, inst: Instance, t: float, cost_fn: Callable[..., Any], shape: Any) -> float:
        """Price one iteration starting at ``t``; commit its energy; return its end time."""
        self._account_idle(inst, t)
        if inst.dyn:
            self._decide(inst, t)
        tp = inst.tp
        clock = inst.clock
        start = t
        segs: list[tuple[float, float, float]] | None = None
        if clock == GOVERNOR_MHZ:
            wake = self.gov.wake_penalty_s(t - inst.idle_start)
            if wake > 0:
                segs = [(t, t + wake, tp * self.gov.shallow_idle_power_w)]
                start = t + wake
        c = cost_fn(shape, tp, clock or None)
        lat = c.latency_s
        p = c.power_w * tp
        if inst.pending_clock is not None and inst.pending_t < start + lat:
            te = max(inst.pending_t, start)
            if segs is None:
                segs = []
            if te > start:
                segs.append((start, te, p))
            done = (te - start) / lat if lat > 0 else 1.0
            self._apply_switch(inst, te)
            c2 = cost_fn(shape, tp, inst.clock or None)
            end = te + (1.0 - done) * c2.latency_s
            segs.append((te, end, c2.power_w * tp))
        else:
            end = start + lat
            if segs is not None:
                segs.append((start, end, p))
        if segs is None:
            energy = lat * p
            inst.it_p = p
        else:
            energy = 0.0
            for s0, s1, sp in segs:
                energy += (s1 - s0) * sp
        inst.it_segs = segs
        if self.cfg.record_segments:
            if segs is None:
                self.segments.append((inst.id, t, end, p, 1))
            else:
                for s0, s1, sp in segs:
                    self.segments.append((inst.id, s0, s1, sp, 1))
        inst.e_busy += energy
        inst.it_e = energy
        inst.t_acc = end
        inst.idle_start = end
        inst.it_start = t
        inst.it_end = end
        inst.busy = True
        inst.iters += 1
        inst.recent.append(end - t)
        return end

    # ------------------------------------------------------------------ state snapshots
    def _state(self, inst: Instance, t: float) -> InstanceState:
        arrival = self.arrival
        if inst.phase == "prefill":
            q = list(inst.queue)
            waiting_tok = np.array([self.inp[r] - self.done_tok[r] for r in q], dtype=np.int64)
            waiting_t = np.array([t - arrival[r] for r in q], dtype=np.float64)
            ctx = gen = np.zeros(0, dtype=np.int64)
            kv_used = int(sum(self.done_tok[r] for r in q))
        else:
            q = list(inst.ready)
            waiting_tok = np.array([self.inp[r] for r in q], dtype=np.int64)
            waiting_t = np.array([t - arrival[r] for r in q], dtype=np.float64)
            run = list(inst.running)
            gen = np.array([1 + inst.k - self.join_k[r] for r in run], dtype=np.int64)
            ctx = np.array([self.inp[r] for r in run], dtype=np.int64) + gen
            kv_used = inst.kv_used
        return InstanceState(
            time_s=t,
            instance_id=inst.id,
            phase=inst.phase,
            tp=inst.tp,
            clock_mhz=inst.clock,
            pending_clock_mhz=inst.pending_clock,
            supported_clocks_mhz=self.supported,
            waiting_prompt_tokens=waiting_tok,
            waiting_time_s=waiting_t,
            running_context_tokens=ctx,
            running_generated_tokens=gen,
            kv_used_tokens=kv_used,
            kv_capacity_tokens=inst.kv_capacity,
            recent_latencies_s=tuple(inst.recent),
            slo=self.cfg.slo,
        )

    def _observation(self, t: float) -> ClusterObservation:
        w = self.cfg.window_s
        arrivals = self.window_arrivals
        n = len(arrivals)
        mean_in = float(np.mean([self.inp[r] for r in arrivals])) if n else float("nan")
        done = self.window_completed
        mean_out = float(np.mean([self.out[r] for r in done])) if done else float("nan")
        summaries = tuple(
            InstanceSummary(
                instance_id=i.id,
                phase=i.phase,
                tp=i.tp,
                clock_mhz=i.clock,
                status=STATUS_NAMES[i.status],
                queue_len=i.queue_len,
                batch_size=i.batch_size,
                kv_used_tokens=i.kv_used,
                busy_energy_j=i.e_busy,
                idle_energy_j=i.e_idle,
            )
            for i in self.instances
            if i.status != STOPPED
        )
        return ClusterObservation(
            time_s=t,
            window_s=w,
            arrivals=n,
            arrival_rate_rps=n / w,
            mean_input_tokens=mean_in,
            mean_output_tokens=mean_out,
            completions=len(done),
            placement=self.target,
            instances=summaries,
            total_gpus=self.cfg.total_gpus,
            slo=self.cfg.slo,
        )

    # ------------------------------------------------------------------ events
    def _push(self, t: float, kind: int, obj: Any) -> None:
        heapq.heappush(self.heap, (t, next(self.seq), kind, obj))

    def _arrive(self, r: int, t: float) -> None:
        inp, out = self.inp[r], self.out[r]
        if inp > self.max_prefill_cap:
            self._reject(r, f"prompt of {inp} tokens exceeds every prefill instance's KV capacity")
            return
        if out > 1 and inp + out > self.max_decode_cap:
            self._reject(r, f"{inp + out} KV tokens exceed every decode instance's KV capacity")
            return
        self.state[r] = WAITING_PREFILL
        if self.pending_prefill or not self._route_prefill(r, t):
            self.pending_prefill.append(r)

    def _reject(self, r: int, reason: str) -> None:
        self.state[r] = REJECTED
        self.reject_reason[r] = reason

    def _route_prefill(self, r: int, t: float) -> bool:
        cands = [i for i in self.instances if i.status == READY and i.phase == "prefill"]
        if not cands:
            return False
        inst = self.prefill_router(cands, self.inp[r])
        assert isinstance(inst, Instance)
        inst.queue.append(r)
        inst.queued_tokens += self.inp[r] - self.done_tok[r]
        self.p_inst[r] = inst.id
        if not inst.busy:
            self._kick(inst, t)
        return True

    def _kick(self, inst: Instance, t: float) -> None:
        """Wake an idle instance *after* every other event at time ``t`` (so simultaneous arrivals batch)."""
        if not inst.kicked:
            inst.kicked = True
            self._push(t, _EV_KICK, inst)

    def _on_kick(self, inst: Instance, t: float) -> None:
        inst.kicked = False
        if inst.busy:
            return
        if inst.phase == "prefill":
            self._start_prefill(inst, t)
        else:
            self._start_decode(inst, t)

    def _start_prefill(self, inst: Instance, t: float) -> None:
        if inst.busy or not inst.queue or t > self.horizon or inst.status == STARTING:
            return
        budget = self.cfg.prefill_token_budget
        max_seqs = self.cfg.prefill_max_seqs
        left = budget
        batch: list[tuple[int, int]] = []
        queue = inst.queue
        inp, done_tok = self.inp, self.done_tok
        n_tok = 0
        sq = 0
        pairs = 0.0
        while queue and len(batch) < max_seqs:
            r = queue[0]
            rem = inp[r] - done_tok[r]
            if rem <= left:
                chunk = rem
            elif not batch:
                chunk = left
            else:
                break
            queue.popleft()
            batch.append((r, chunk))
            n_tok += chunk
            sq += chunk * chunk
            pairs += chunk * (done_tok[r] + (chunk + 1) / 2.0)
            left -= chunk
            if self.state[r] == WAITING_PREFILL:
                self.state[r] = PREFILLING
                self.p_start[r] = t
            if left == 0:
                break
        shape = PrefillShape(num_seqs=len(batch), tokens_sum=n_tok, tokens_sq_sum=float(sq), attn_pairs=pairs)
        end = self._run_iteration(inst, t, self.cm.prefill_cost, shape)
        inst.batch = batch
        self._push(end, _EV_PREFILL_END, inst)

    def _end_prefill(self, inst: Instance, t: float) -> None:
        inst.busy = False
        batch = inst.batch
        inst.batch = []
        energy = inst.it_e
        n_tok = 0
        for _, chunk in batch:
            n_tok += chunk
        inst.tokens += n_tok
        inst.queued_tokens -= n_tok
        inp, done_tok, out = self.inp, self.done_tok, self.out
        unfinished: list[int] = []
        for r, chunk in batch:
            self.p_energy[r] += energy * chunk / n_tok
            done_tok[r] += chunk
            if done_tok[r] < inp[r]:
                unfinished.append(r)
                continue
            self.p_end[r] = t
            if out[r] == 1:  # the prefill's token is the whole answer: no KV transfer, no decode
                self.first_tok[r] = self.last_tok[r] = t
                self.max_gap[r] = 0.0
                self.state[r] = DONE
                self.completed += 1
                if self._track:
                    self.window_completed.append(r)
            else:
                self.state[r] = WAITING_DECODE_MEMORY
                if self.pending_decode or not self._place_decode(r, t):
                    self.pending_decode.append(r)
        for r in reversed(unfinished):  # a chunked prompt keeps its place at the head
            inst.queue.appendleft(r)
        if inst.queue:
            self._start_prefill(inst, t)
        else:
            self._maybe_stop(inst, t)

    def _place_decode(self, r: int, t: float) -> bool:
        need = self.inp[r] + self.out[r]
        cands = [i for i in self.instances if i.status == READY and i.phase == "decode"]
        if not cands:
            return False
        inst = self.decode_router(cands, need)
        if inst is None:
            return False
        assert isinstance(inst, Instance)
        inst.kv_used += need
        inst.incoming += 1
        self.d_inst[r] = inst.id
        self.kv_start[r] = t
        self.state[r] = TRANSFERRING
        src = self.instances[self.p_inst[r]]
        net = self.cfg.network
        if src.node == inst.node:
            bw, lat = net.nvlink_bw_bytes_per_s, net.nvlink_latency_s
        else:
            bw, lat = net.internode_bw_bytes_per_s, net.internode_latency_s
        nbytes = self.cm.kv_bytes_per_token * self.inp[r]
        self._push(t + lat + nbytes / (bw * min(src.tp, inst.tp)), _EV_KV_DONE, r)
        return True

    def _place_pending_decode(self, t: float) -> None:
        pend = self.pending_decode
        while pend and self._place_decode(pend[0], t):
            pend.popleft()

    def _kv_done(self, r: int, t: float) -> None:
        inst = self.instances[self.d_inst[r]]
        inst.incoming -= 1
        self.kv_end[r] = t
        self.first_tok[r] = t
        self.state[r] = WAITING_DECODE
        inst.ready.append(r)
        if not inst.busy:
            self._kick(inst, t)

    def _start_decode(self, inst: Instance, t: float) -> None:
        if t > self.horizon:
            return
        ready = inst.ready
        running = inst.running
        if ready:
            max_b = self.cfg.decode_max_batch
            k = inst.k
            inp, out, state, join_k = self.inp, self.out, self.state, self.join_k
            finish_at = inst.finish_at
            joined = inst.joined
            ctx_sum, ctx_sq = inst.ctx_sum, inst.ctx_sq
            while ready and len(running) < max_b:
                r = ready.popleft()
                running[r] = None
                join_k[r] = k
                state[r] = DECODING
                ctx = inp[r] + 1
                ctx_sum += ctx
                ctx_sq += ctx * ctx
                kf = k + out[r] - 2
                lst = finish_at.get(kf)
                if lst is None:
                    finish_at[kf] = [r]
                else:
                    lst.append(r)
                joined.append(r)
            inst.ctx_sum, inst.ctx_sq = ctx_sum, ctx_sq
        b = len(running)
        if b == 0:
            self._maybe_stop(inst, t)
            return
        shape = DecodeShape(b, inst.ctx_sum, float(inst.ctx_sq))
        if not inst.fast or inst.pending_clock is not None:
            end = self._run_iteration(inst, t, self.cm.decode_cost, shape)
        else:  # fast path: static clock, no switch in flight
            t0 = inst.t_acc
            if t > t0:
                inst.e_idle += inst.idle_p * (t - t0)
            end = self._static_decode_iteration(inst, t, shape)
        self._heappush(self.heap, (end, self._next_seq(), _EV_DECODE_END, inst))

    def _static_decode_iteration(self, inst: Instance, t: float, shape: DecodeShape) -> float:
        """Book one decode iteration at the instance's static clock starting at ``t`` (same arithmetic as
        ``_run_iteration`` without switch handling); returns its end time."""
        tp = inst.tp
        c = self._decode_cost(shape, tp, inst.clock)
        lat = c.latency_s
        p = c.power_w * tp
        end = t + lat
        e = lat * p
        inst.e_busy += e
        inst.it_e = e
        inst.it_p = p
        inst.it_segs = None
        inst.t_acc = inst.idle_start = inst.it_end = end
        inst.it_start = t
        inst.busy = True
        inst.iters += 1
        inst.recent.append(lat)
        return end

    def _end_decode(self, inst: Instance, t: float) -> None:
        inst.busy = False
        b = len(inst.running)
        cum = inst.cum
        cum.append(cum[-1] + inst.it_e / b)
        lats = inst.lats
        lats.append(t - inst.it_start)
        inst.tokens += b
        if inst.joined:
            first_tok, max_gap = self.first_tok, self.max_gap
            for r in inst.joined:
                max_gap[r] = t - first_tok[r]
            inst.joined = []
        ctx_sum = inst.ctx_sum
        inst.ctx_sq += 2 * ctx_sum + b
        inst.ctx_sum = ctx_sum + b
        k = inst.k
        inst.k = k + 1
        fin = inst.finish_at.pop(k, None)
        if fin:
            inp, out, join_k, max_gap, last_tok, d_energy, state = (
                self.inp,
                self.out,
                self.join_k,
                self.max_gap,
                self.last_tok,
                self.d_energy,
                self.state,
            )
            running = inst.running
            c_end = cum[k + 1]
            freed = 0
            for r in fin:
                k0 = join_k[r]
                d_energy[r] = c_end - cum[k0]
                last_tok[r] = t
                if k > k0:
                    g = max(lats[k0 + 1 : k + 1])
                    if g > max_gap[r]:
                        max_gap[r] = g
                size = inp[r] + out[r]
                inst.ctx_sum -= size
                inst.ctx_sq -= size * size
                freed += size
                del running[r]
                state[r] = DONE
            inst.kv_used -= freed
            self.completed += len(fin)
            if self._track:
                self.window_completed.extend(fin)
            if self.pending_decode:
                self._place_pending_decode(t)
        running = inst.running
        if inst.ready or not running or not inst.fast or inst.pending_clock is not None or t > self.horizon:
            self._start_decode(inst, t)
            return
        # fast path: the same batch runs on back to back at a static clock (no idle gap, no switch in flight)
        end = self._static_decode_iteration(inst, t, DecodeShape(len(running), inst.ctx_sum, float(inst.ctx_sq)))
        self._heappush(self.heap, (end, self._next_seq(), _EV_DECODE_END, inst))

    def _instance_ready(self, inst: Instance, t: float) -> None:
        if inst.status == STARTING:
            inst.status = READY
            self._flush_pending(t)

    # ------------------------------------------------------------------ timeline
    def _sample(self, t: float) -> None:
        """One timeline row per live instance; ``power_w`` is the exact mean over the last interval."""
        t_prev = self._last_sample_t
        dt = t - t_prev
        for inst in self.instances:
            if inst.t_start > t or (inst.status == STOPPED and inst.t_stop < t_prev):
                continue
            e = self._energy_at(inst, t)
            prev = self._last_sample_e.get(inst.id, 0.0)
            power = (e - prev) / dt if dt > 0 else float("nan")
            self._last_sample_e[inst.id] = e
            self.timeline_rows.append(
                (
                    t,
                    inst.id,
                    inst.phase,
                    inst.tp,
                    STATUS_NAMES[inst.status],
                    inst.clock,
                    power,
                    e,
                    inst.queue_len,
                    inst.batch_size,
                    inst.kv_used if inst.phase == "decode" else 0,
                    inst.kv_capacity,
                )
            )
        self._last_sample_t = t

    # ------------------------------------------------------------------ main loop
    def run(self) -> float:
        """Run to completion (or the horizon); returns the end time of the run, seconds. Call once."""
        if self._ran:
            raise RuntimeError("a Simulator runs once; build a new one")
        self._ran = True
        cfg = self.cfg
        self._update_caps()
        specs = list(self.target.expand())
        gpus: dict[int, tuple[int, ...]] = {}
        for i in sorted(range(len(specs)), key=lambda i: -specs[i].tp):  # big groups first: no fragmentation
            got = self.pool.allocate(specs[i].tp)
            if got is None:  # pragma: no cover - check_fits guarantees room
                raise RuntimeError("placement does not fit")
            gpus[i] = got
        for g in gpus.values():
            self.pool.release(g)
        for i, spec in enumerate(specs):  # ids in placement order, GPUs as packed above
            self._create_instance(spec, 0.0, 0.0, gpus[i])
        heap = self.heap
        pop = heapq.heappop
        arrival = self.arrival
        n = self.n
        ai = 0
        horizon = self.horizon
        next_sample = cfg.sample_interval_s
        sample_dt = cfg.sample_interval_s
        planner = self.planner if (self.planner is not None and not self.planner.is_static) else None
        next_window = cfg.window_s if planner is not None else float("inf")
        progress = self.progress
        events = 0
        t = 0.0
        inf = float("inf")
        if horizon < inf:  # arrivals after the horizon are never submitted
            n = int(np.searchsorted(np.asarray(arrival), horizon, side="right"))
        while True:
            t_arr = arrival[ai] if ai < n else inf
            t_heap = heap[0][0] if heap else inf
            t_next = t_arr if t_arr < t_heap else t_heap
            if t_next == inf:
                break
            while next_sample <= t_next and next_sample <= next_window:
                self.now = next_sample
                self._sample(next_sample)
                next_sample += sample_dt
            if next_window <= t_next and planner is not None:
                t = self.now = next_window
                new = planner.plan(self._observation(t))
                self.window_arrivals = []
                self.window_completed = []
                if new != self.target:
                    self._apply_placement(new, t, cfg.startup_s)
                next_window += cfg.window_s
                continue
            events += 1
            if t_arr <= t_heap:
                t = self.now = t_arr
                if planner is not None:
                    self.window_arrivals.append(ai)
                self._arrive(ai, t)
                ai += 1
            else:
                t, _, kind, obj = pop(heap)
                self.now = t
                if kind == _EV_DECODE_END:
                    self._end_decode(obj, t)
                elif kind == _EV_PREFILL_END:
                    self._end_prefill(obj, t)
                elif kind == _EV_KV_DONE:
                    self._kv_done(obj, t)
                elif kind == _EV_KICK:
                    self._on_kick(obj, t)
                else:
                    self._instance_ready(obj, t)
            if progress is not None and events % 20000 == 0:
                progress(t)
        end = max(t, self._last_sample_t)
        self.now = end
        for inst in self.instances:
            if inst.status != STOPPED:
                self._account_idle(inst, end)
        if end > self._last_sample_t or not self.timeline_rows:
            self._sample(end)
        self.events = events
        self.end_time = end
        return end
