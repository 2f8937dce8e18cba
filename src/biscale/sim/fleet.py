"""The cluster's instances and their lifecycle: creation on GPUs, start-up, placement changes, draining, stopping;
and the power of GPUs that belong to no instance.

A placement change (docs/simulator.md, "Placement changes"):

1. **Keep** the live instances that match the new plan exactly (phase, TP, clock, capacity), those with the most
   work first; then **retarget in place** live instances that match a still-unmatched spec by (phase, TP) only:
   they keep serving, their baseline clock moves through the actuator (with the switch latency) and their router
   weight changes.
2. The rest of the live instances are **surplus**, the rest of the specs **new**. New instances are packed on the
   GPUs that are free now if they fit there (**make before break**), else on the GPUs the kept instances leave,
   the soonest-free first (free, then surplus prefill, then surplus decode instances' GPUs; each phase's smallest
   new instance first: :meth:`Fleet._pack`); when the kept instances fragment the nodes so that the new ones
   cannot be packed, every instance is surplus and the whole placement is packed afresh (a full
   reconfiguration). A new instance is created as soon as its GPUs are free.
3. A surplus instance whose GPUs a new instance needs **drains** at once (no new work; it finishes its queue, its
   running batch, its incoming transfers and the transfers of the prompts it prefilled, then stops and frees its
   GPUs; a draining decode instance also takes the KV of draining prefill instances that no ready one can hold,
   and stops only when it no longer has to). One whose GPUs are not needed **retires**: it keeps serving until
   every new instance of its phase is ready, then drains; so when free GPUs allow it, a phase never runs out of
   ready instances during a change. An instance never stops while it is finishing an iteration (it is busy until
   its bookkeeping is done), and instances created by a stop are routed work by a deferred event.

GPUs in no instance (never assigned, or freed and not yet reused) draw ``unassigned_gpu_power_w`` each; their
energy is accounted here exactly (``unassigned_energy_j``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from biscale.control.controllers import check_placement_clocks
from biscale.control.placement import InstanceSpec, Placement
from biscale.costmodel import CostModel
from biscale.errors import InputError
from biscale.sim.clocks import ClockControl
from biscale.sim.cluster import GpuPool, check_fits
from biscale.sim.events import Event, EventQueue
from biscale.sim.instance import DecodeInstance, Instance, InstanceStatus, PrefillInstance
from biscale.sim.kv import KvPolicy
from biscale.sim.ledger import EnergyLedger, Segment

_STARTING, _READY, _DRAINING, _STOPPED = (int(s) for s in InstanceStatus)
_READY_EVENT, _CAPACITY_EVENT = int(Event.READY), int(Event.CAPACITY)
_PHASES = ("prefill", "decode")
#: Segments of unassigned GPUs carry this instance id.
UNASSIGNED_ID = -1


def _exact_key(spec: InstanceSpec) -> tuple[str, int, Any, Any]:
    return (spec.phase, spec.tp, spec.clock, spec.capacity_rps)


def _weight(spec: InstanceSpec) -> float:
    return float(spec.capacity_rps) if spec.capacity_rps else float(spec.tp)


class Fleet:
    """Every instance that ever existed (``instances[id]``), the GPUs they hold and the placement being served."""

    def __init__(
        self,
        placement: Placement,
        cost_model: CostModel,
        decode_kv: KvPolicy,
        nodes: int,
        gpus_per_node: int,
        startup_s: float,
        recent_latencies: int,
        segments: list[Segment] | None,
        clocks: ClockControl,
        events: EventQueue,
        unassigned_gpu_power_w: float,
        isolate_phase: str | None = None,
    ) -> None:
        self.cost_model = cost_model
        self.decode_kv = decode_kv
        self.nodes = nodes
        self.gpus_per_node = gpus_per_node
        self.startup_s = startup_s
        self.recent_latencies = recent_latencies
        self.segments = segments
        self.clocks = clocks
        self.events = events
        self.isolate_phase = isolate_phase
        """Serve only this phase's instances (the other phase's specs are ignored); None: both."""
        min_tp = getattr(cost_model, "min_tp", None)
        self.min_tp: int | None = int(min_tp) if isinstance(min_tp, int) else None
        self.pool = GpuPool(nodes, gpus_per_node)
        self.instances: list[Instance] = []
        """Every instance that ever existed; ``instances[id]``."""
        self.prefill_instances: list[PrefillInstance] = []
        self.decode_instances: list[DecodeInstance] = []
        self.ready_prefill_list: list[PrefillInstance] = []
        """Ready prefill instances, id order (refreshed on every status change)."""
        self.ready_decode_list: list[DecodeInstance] = []
        """Ready decode instances, id order."""
        self.ready_prefill_min_kv_tokens = 0
        """Smallest KV capacity among ready prefill instances (prompts up to it fit any of them), tokens."""
        self.check(placement)
        self.target = placement
        """The placement being served (draining instances excluded)."""
        self.changed_s = 0.0
        """Time of the last placement change, s."""
        self.planned: list[tuple[InstanceSpec, tuple[int, ...]]] = []
        """New instances waiting for their GPUs to be released."""
        self.making: list[Instance] = []
        """Instances created by the last placement change (retiring instances wait for those of their phase)."""
        self.retiring: list[Instance] = []
        """Surplus instances still serving until the new instances of their phase are ready."""
        self.max_prefill_kv_tokens: int | None = 0
        """Largest prefill KV capacity in the target placement (longer prompts are rejected), tokens; None: prefill
        is not simulated (decode isolation)."""
        self.max_decode_kv_tokens: int | None = 0
        """Largest decode KV capacity in the target placement, tokens; None: decode is not simulated."""
        self._update_capacities()
        self.unassigned_gpu_power_w = unassigned_gpu_power_w
        """Power of one GPU in no instance, W."""
        self.unassigned_energy_j = 0.0
        """Energy of GPUs in no instance, committed up to ``_unassigned_since_s``, J."""
        self._unassigned_since_s = 0.0
        self.on_capacity: Callable[[float], None] = lambda t: None
        """Called when instances become ready (the engine routes the global queues then); never from inside a
        stop (see :meth:`_create_planned`)."""
        self.capacity_pending = False
        """A deferred capacity event is scheduled (:attr:`Event.CAPACITY`)."""

    # ------------------------------------------------------------------ queries
    def specs(self, placement: Placement) -> list[InstanceSpec]:
        """One spec per instance the simulator runs for ``placement`` (only the isolated phase's, if any)."""
        iso = self.isolate_phase
        return [s for s in placement.expand() if iso is None or s.phase == iso]

    def check(self, placement: Placement) -> None:
        """Raise :class:`InputError` unless ``placement`` fits the cluster and the cost model supports its TPs."""
        tps = [s.tp for s in self.specs(placement)]
        check_fits(tps, self.nodes, self.gpus_per_node, self.min_tp)
        check_placement_clocks(placement, self.cost_model.supported_clocks_mhz)  # in range they snap, out: error
        for tp in sorted(set(tps)):
            try:
                cap = self.cost_model.kv_capacity_tokens(tp)
            except ValueError as err:
                raise InputError(f"TP{tp} is not supported by the cost model: {err}", field="placement") from err
            if cap <= 0:
                raise InputError(f"TP{tp} leaves no room for the KV cache", field="placement")

    def kv_capacity(self, phase: str, tp: int) -> int:
        """Usable KV capacity of an instance, tokens (decode: in whole KV blocks)."""
        raw = int(self.cost_model.kv_capacity_tokens(tp))
        return self.decode_kv.capacity_tokens(raw) if phase == "decode" else raw

    def _update_capacities(self) -> None:
        specs = self.specs(self.target)
        caps = {ph: [self.kv_capacity(ph, s.tp) for s in specs if s.phase == ph] for ph in ("prefill", "decode")}
        self.max_prefill_kv_tokens = max(caps["prefill"]) if caps["prefill"] else None
        self.max_decode_kv_tokens = max(caps["decode"]) if caps["decode"] else None

    def _suffix(self, late: bool) -> str:
        return f" (placement changed at {self.changed_s:g} s)" if late else ""

    def decode_misfit(self, kv_tokens: int, late: bool = False) -> str | None:
        """Why a request of ``kv_tokens`` (input + output) fits no decode instance of the target, or None."""
        cap = self.max_decode_kv_tokens
        if cap is not None and kv_tokens > cap:
            return f"{kv_tokens} KV tokens exceed every decode instance's KV capacity{self._suffix(late)}"
        return None

    def arrival_misfit(self, input_tokens: int, output_tokens: int, late: bool = False) -> str | None:
        """Why a request can never be served by the target placement, or None."""
        cap = self.max_prefill_kv_tokens
        if cap is not None and input_tokens > cap:
            return f"prompt of {input_tokens} tokens exceeds every prefill instance's KV capacity{self._suffix(late)}"
        if output_tokens > 1:
            return self.decode_misfit(input_tokens + output_tokens, late)
        return None

    def must_make_room(self, inst: Instance) -> bool:
        """``inst`` is draining and a planned instance waits for its GPUs."""
        if inst.status != _DRAINING:
            return False
        mine = set(inst.gpus)
        return any(mine.intersection(gpus) for _, gpus in self.planned)

    def _refresh_ready(self) -> None:
        self.ready_prefill_list = [i for i in self.prefill_instances if i.status == _READY]
        self.ready_decode_list = [i for i in self.decode_instances if i.status == _READY]
        self.ready_prefill_min_kv_tokens = min((i.kv_capacity_tokens for i in self.ready_prefill_list), default=0)

    # ------------------------------------------------------------------ unassigned GPUs
    def account_unassigned(self, t: float) -> None:
        """Commit the energy of the GPUs in no instance up to ``t``."""
        t0 = self._unassigned_since_s
        if t <= t0:
            return
        free = self.pool.free_gpus
        if free:
            p = free * self.unassigned_gpu_power_w
            self.unassigned_energy_j += p * (t - t0)
            if self.segments is not None:
                self.segments.append((UNASSIGNED_ID, t0, t, p, 0))
        self._unassigned_since_s = t

    # ------------------------------------------------------------------ creation
    def start(self) -> None:
        """Create the initial placement at time 0: GPUs packed largest TP first, ids in placement order."""
        specs = self.specs(self.target)
        gpus: dict[int, tuple[int, ...]] = {}
        for i in sorted(range(len(specs)), key=lambda i: -specs[i].tp):  # big groups first: no fragmentation
            got = self.pool.allocate(specs[i].tp)
            if got is None:  # pragma: no cover - check_fits guarantees room
                raise RuntimeError("placement does not fit")
            gpus[i] = got
        for g in gpus.values():
            self.pool.release(g)
        for i, spec in enumerate(specs):
            self.create(spec, 0.0, 0.0, gpus[i])

    def create(self, spec: InstanceSpec, t: float, startup_s: float, gpus: tuple[int, ...]) -> Instance:
        """A new instance of ``spec`` on ``gpus`` (free) at ``t``, serving after ``startup_s``."""
        self.account_unassigned(t)
        self.pool.take(gpus)
        iid = len(self.instances)
        cm = self.cost_model
        ledger = EnergyLedger(iid, spec.tp, t, cm, cm.governor, self.segments, self.recent_latencies)
        args = (iid, spec, gpus, self.pool.node_of(gpus[0]), t, self.kv_capacity(spec.phase, spec.tp), ledger)
        inst: Instance
        if spec.phase == "prefill":
            inst = PrefillInstance(*args)
            self.prefill_instances.append(inst)
        else:
            dec = DecodeInstance(*args)
            self.decode_kv.setup(dec)
            self.decode_instances.append(dec)
            inst = dec
        self.instances.append(inst)
        self.clocks.attach(inst, t)
        inst.ready_s = t + startup_s
        if startup_s > 0:
            self.events.push(t + startup_s, _READY_EVENT, inst)
        else:
            inst.status = _READY
            self._refresh_ready()
        return inst

    def on_ready(self, inst: Instance, t: float) -> None:
        """Start-up finished: the instance serves from now on."""
        if inst.status == _STARTING:
            inst.status = _READY
            self._refresh_ready()
            self._retire_done(t)
            if inst.phase == "decode":
                self._stop_idle_decode(t)
            self.on_capacity(t)
        elif inst.status == _DRAINING and inst.phase == "decode":  # may now take a draining prefill's KV
            self.on_capacity(t)

    # ------------------------------------------------------------------ placement changes
    def apply(self, placement: Placement, t: float) -> None:
        """Serve ``placement`` from ``t`` (see the module docstring)."""
        self.check(placement)
        self.target = placement
        self.changed_s = t
        self._update_capacities()
        live = [i for i in self.instances if i.status in (_STARTING, _READY)]
        live.sort(key=lambda i: (-i.work_items(), i.id))  # the busiest are kept first
        specs = self.specs(placement)
        kept: list[Instance] = []
        taken = [False] * len(specs)
        unmatched: list[Instance] = []
        for inst in live:  # 1. exact matches
            key = _exact_key(inst.spec)
            j = next((j for j, s in enumerate(specs) if not taken[j] and _exact_key(s) == key), None)
            if j is None:
                unmatched.append(inst)
            else:
                taken[j] = True
                kept.append(inst)
        surplus: list[Instance] = []
        for inst in unmatched:  # 2. same phase and TP: change clock / capacity in place
            j = next(
                (j for j, s in enumerate(specs) if not taken[j] and (s.phase, s.tp) == (inst.phase, inst.tp)), None
            )
            if j is None:
                surplus.append(inst)
            else:
                taken[j] = True
                kept.append(inst)
                inst.weight = _weight(specs[j])
                self.clocks.retarget(inst, specs[j], t)
        new_specs = [s for j, s in enumerate(specs) if not taken[j]]
        plan = self._pack(new_specs, kept + surplus, [])  # make before break: on GPUs free now
        if plan is None:
            plan = self._pack(new_specs, kept, surplus)
        if plan is None:  # kept instances fragment the cluster: reconfigure everything
            surplus.extend(kept)
            plan = self._pack(specs, [], surplus)
            assert plan is not None  # check() packed it on an empty cluster
        needed = {g for _, gpus in plan for g in gpus}
        drain = sorted((i for i in surplus if needed.intersection(i.gpus)), key=lambda i: i.id)
        self.retiring = sorted((i for i in surplus if not needed.intersection(i.gpus)), key=lambda i: i.id)
        for inst in drain:
            inst.status = _DRAINING
        self._refresh_ready()
        self.making = []
        self.planned = plan
        self._create_planned(t)
        for inst in drain:
            self.maybe_stop(inst, t)
        self._retire_done(t)
        self.on_capacity(t)

    def _pack(
        self, specs: list[InstanceSpec], held: list[Instance], surplus: list[Instance]
    ) -> list[tuple[InstanceSpec, tuple[int, ...]]] | None:
        """GPUs for ``specs`` given that ``held`` instances keep theirs and ``surplus`` ones give theirs up, or None.

        A new instance waits until every GPU it gets is free, so GPUs are taken cheapest first: free ones, then
        those of surplus prefill instances (they stop once their queue is prefilled and its KV has left), then those
        of surplus decode instances (they stop only when their running requests have finished). The smallest new
        instance of each phase is packed first, so each phase gets a foothold on the soonest-free GPUs (a shrink
        keeps both phases serving instead of one waiting for a whole decode drain); the rest largest first (best
        fit). If that order does not pack, plain largest first."""
        rank = {g: 1 if i.phase == "prefill" else 2 for i in surplus for g in i.gpus}
        by_size = sorted(range(len(specs)), key=lambda j: -specs[j].tp)
        phases = ([j for j in by_size if specs[j].phase == ph] for ph in _PHASES)
        first = sorted((js[-1] for js in phases if js), key=lambda j: specs[j].tp)  # each phase's smallest
        foothold_first = first + [j for j in by_size if j not in first]
        for order in (foothold_first, by_size):
            pool = GpuPool(self.nodes, self.gpus_per_node)
            for inst in held:
                pool.take(inst.gpus)
            got: dict[int, tuple[int, ...]] = {}
            for j in order:
                gpus = pool.allocate(specs[j].tp, rank)
                if gpus is None:
                    break
                got[j] = gpus
            else:
                return [(specs[j], got[j]) for j in by_size]  # created largest first whatever the packing order
        return None

    def _create_planned(self, t: float) -> None:
        """Create every planned instance whose GPUs are all free now."""
        still: list[tuple[InstanceSpec, tuple[int, ...]]] = []
        created = False
        for spec, gpus in self.planned:
            if self.pool.all_free(gpus):
                self.making.append(self.create(spec, t, self.startup_s, gpus))
                created = True
            else:
                still.append((spec, gpus))
        self.planned = still
        if created and self.startup_s <= 0:
            self._retire_done(t)
            self._stop_idle_decode(t)
            if not self.capacity_pending:  # routed after the event being handled (a stop may sit in a queue loop)
                self.capacity_pending = True
                self.events.push(t, _CAPACITY_EVENT, None)

    def _retire_done(self, t: float) -> None:
        """Drain the retiring instances whose phase's new instances are all created and ready."""
        if not self.retiring:
            return
        waiting = {s.phase for s, _ in self.planned} | {i.phase for i in self.making if i.status == _STARTING}
        go = [i for i in self.retiring if i.phase not in waiting]
        if not go:
            return
        self.retiring = [i for i in self.retiring if i.phase in waiting]
        for inst in go:
            inst.status = _DRAINING
        self._refresh_ready()
        for inst in go:
            self.maybe_stop(inst, t)

    def maybe_stop(self, inst: Instance, t: float) -> None:
        """Stop a draining instance that is idle and has nothing left; its GPUs go to planned instances. A
        draining decode instance also waits while it may have to take the KV a draining prefill instance still
        holds (:meth:`backs_draining_prefill`)."""
        if inst.status != _DRAINING or inst.busy or inst.has_work():
            return
        if inst.phase == "decode" and self.backs_draining_prefill(inst):
            return
        inst.ledger.account_idle(t)
        inst.status = _STOPPED
        inst.stop_s = t
        self.account_unassigned(t)
        self.pool.release(inst.gpus)
        self.clocks.detach(inst)
        if self.planned:
            self._create_planned(t)
        if inst.phase == "prefill":
            self._stop_idle_decode(t)

    def backs_draining_prefill(self, inst: Instance) -> bool:
        """Draining decode instance ``inst`` is the fallback for the KV of a draining prefill instance: one is
        draining and no ready decode instance holds as much KV (:mod:`biscale.sim.transfer` sends such KV to
        draining decode instances only when no ready one can hold it)."""
        return any(p.status == _DRAINING for p in self.prefill_instances) and not any(
            d.kv_capacity_tokens >= inst.kv_capacity_tokens for d in self.ready_decode_list
        )

    def _stop_idle_decode(self, t: float) -> None:
        """A prefill instance stopped or a decode instance became ready: stop the draining decode instances that
        no longer back a draining prefill instance."""
        for dec in self.decode_instances:
            if dec.status == _DRAINING:
                self.maybe_stop(dec, t)

    def finish(self, end_s: float) -> None:
        """At the end of a run: commit every live instance's idle energy and the unassigned GPUs' energy."""
        for inst in self.instances:
            if inst.status != _STOPPED:
                inst.ledger.account_idle(end_s)
        self.account_unassigned(end_s)
