"""The cluster's instances and their lifecycle: creation on GPUs, start-up, placement changes, draining, stopping.

A placement change keeps the instances that match the new plan (same phase, TP, clock and capacity), drains the
surplus (least work first), and packs the missing ones (largest TP first, best fit) on the GPUs the kept
instances leave; each new instance is created as soon as its GPUs are free (perhaps when a draining instance
stops). When the kept instances fragment the nodes so that the new ones cannot be packed, everything drains and
the whole placement is recreated (a full reconfiguration).
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
from biscale.sim.ledger import EnergyLedger, Segment

_STARTING, _READY, _DRAINING, _STOPPED = (int(s) for s in InstanceStatus)
_READY_EVENT = int(Event.READY)

#: Instances that match one another across placements.
_MatchKey = tuple[str, int, Any, Any]


def _match_key(spec: InstanceSpec) -> _MatchKey:
    return (spec.phase, spec.tp, spec.clock, spec.capacity_rps)


class Fleet:
    """Every instance that ever existed (``instances[id]``), the GPUs they hold and the placement being served."""

    def __init__(
        self,
        placement: Placement,
        cost_model: CostModel,
        nodes: int,
        gpus_per_node: int,
        startup_s: float,
        recent_latencies: int,
        segments: list[Segment] | None,
        clocks: ClockControl,
        events: EventQueue,
    ) -> None:
        self.cost_model = cost_model
        self.nodes = nodes
        self.gpus_per_node = gpus_per_node
        self.startup_s = startup_s
        self.recent_latencies = recent_latencies
        self.segments = segments
        self.clocks = clocks
        self.events = events
        min_tp = getattr(cost_model, "min_tp", None)
        self.min_tp: int | None = int(min_tp) if isinstance(min_tp, int) else None
        self.pool = GpuPool(nodes, gpus_per_node)
        self.instances: list[Instance] = []
        """Every instance that ever existed; ``instances[id]``."""
        self.prefill_instances: list[PrefillInstance] = []
        self.decode_instances: list[DecodeInstance] = []
        self.check(placement)
        self.target = placement
        """The placement being served (draining instances excluded)."""
        self.planned: list[tuple[InstanceSpec, tuple[int, ...]]] = []
        """New instances waiting for their GPUs to be released."""
        self.max_prefill_kv_tokens = 0
        """Largest prefill KV capacity in the target placement (longer prompts are rejected), tokens."""
        self.max_decode_kv_tokens = 0
        """Largest decode KV capacity in the target placement, tokens."""
        self._update_capacities()
        self.on_capacity: Callable[[float], None] = lambda t: None
        """Called when instances become ready (the engine routes the global queues then)."""

    # ------------------------------------------------------------------ queries
    def ready_prefill(self) -> list[PrefillInstance]:
        """Ready prefill instances, id order."""
        return [i for i in self.prefill_instances if i.status == _READY]

    def ready_decode(self) -> list[DecodeInstance]:
        """Ready decode instances, id order."""
        return [i for i in self.decode_instances if i.status == _READY]

    def check(self, placement: Placement) -> None:
        """Raise :class:`InputError` unless ``placement`` fits the cluster and the cost model supports its TPs."""
        tps = [s.tp for s in placement.expand()]
        check_fits(tps, self.nodes, self.gpus_per_node, self.min_tp)
        check_placement_clocks(placement, self.cost_model.supported_clocks_mhz)  # in range they snap, out: error
        for tp in sorted(set(tps)):
            try:
                cap = self.cost_model.kv_capacity_tokens(tp)
            except ValueError as err:
                raise InputError(f"TP{tp} is not supported by the cost model: {err}", field="placement") from err
            if cap <= 0:
                raise InputError(f"TP{tp} leaves no room for the KV cache", field="placement")

    def _update_capacities(self) -> None:
        cm = self.cost_model
        specs = list(self.target.expand())
        self.max_prefill_kv_tokens = max(cm.kv_capacity_tokens(s.tp) for s in specs if s.phase == "prefill")
        self.max_decode_kv_tokens = max(cm.kv_capacity_tokens(s.tp) for s in specs if s.phase == "decode")

    # ------------------------------------------------------------------ creation
    def start(self) -> None:
        """Create the initial placement at time 0: GPUs packed largest TP first, ids in placement order."""
        specs = list(self.target.expand())
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
        self.pool.take(gpus)
        iid = len(self.instances)
        cm = self.cost_model
        ledger = EnergyLedger(iid, spec.tp, t, cm, cm.governor, self.segments, self.recent_latencies)
        args = (iid, spec, gpus, self.pool.node_of(gpus[0]), t, int(cm.kv_capacity_tokens(spec.tp)), ledger)
        inst: Instance
        if spec.phase == "prefill":
            inst = PrefillInstance(*args)
            self.prefill_instances.append(inst)
        else:
            inst = DecodeInstance(*args)
            self.decode_instances.append(inst)
        self.instances.append(inst)
        self.clocks.attach(inst, t)
        inst.ready_s = t + startup_s
        if startup_s > 0:
            self.events.push(t + startup_s, _READY_EVENT, inst)
        else:
            inst.status = _READY
        return inst

    def on_ready(self, inst: Instance, t: float) -> None:
        """Start-up finished: the instance serves from now on."""
        if inst.status == _STARTING:
            inst.status = _READY
            self.on_capacity(t)

    # ------------------------------------------------------------------ placement changes
    def apply(self, placement: Placement, t: float) -> None:
        """Serve ``placement`` from ``t``: keep matching instances, drain the surplus, plan what is missing."""
        self.check(placement)
        self.target = placement
        self._update_capacities()
        want: dict[_MatchKey, list[InstanceSpec]] = {}
        for s in placement.expand():
            want.setdefault(_match_key(s), []).append(s)
        have: dict[_MatchKey, list[Instance]] = {}
        for inst in self.instances:
            if inst.status in (_STARTING, _READY):
                have.setdefault(_match_key(inst.spec), []).append(inst)
        kept: list[Instance] = []
        drain: list[Instance] = []
        new_specs: list[InstanceSpec] = []
        for key, group in have.items():
            group.sort(key=lambda i: (i.work_items(), -i.id))  # drain those with the least work first
            surplus = max(0, len(group) - len(want.get(key, [])))
            drain.extend(group[:surplus])
            kept.extend(group[surplus:])
        for key, specs in want.items():
            new_specs.extend(specs[len(have.get(key, [])) :])
        plan = self._pack(new_specs, kept)
        if plan is None:  # kept instances fragment the cluster: reconfigure everything
            drain.extend(kept)
            plan = self._pack(list(placement.expand()), [])
            assert plan is not None  # check() packed it on an empty cluster
        drain.sort(key=lambda i: i.id)
        for inst in drain:
            inst.status = _DRAINING
        self.planned = plan
        for inst in drain:
            self.maybe_stop(inst, t)
        self._create_planned(t)
        self.on_capacity(t)

    def _pack(
        self, specs: list[InstanceSpec], kept: list[Instance]
    ) -> list[tuple[InstanceSpec, tuple[int, ...]]] | None:
        """GPUs for ``specs`` given that only ``kept`` instances stay (largest TP first, best fit), or None."""
        pool = GpuPool(self.nodes, self.gpus_per_node)
        for inst in kept:
            pool.take(inst.gpus)
        out: list[tuple[InstanceSpec, tuple[int, ...]]] = []
        for spec in sorted(specs, key=lambda s: -s.tp):
            gpus = pool.allocate(spec.tp)
            if gpus is None:
                return None
            out.append((spec, gpus))
        return out

    def _create_planned(self, t: float) -> None:
        """Create every planned instance whose GPUs are all free now."""
        still: list[tuple[InstanceSpec, tuple[int, ...]]] = []
        created = False
        for spec, gpus in self.planned:
            if self.pool.all_free(gpus):
                self.create(spec, t, self.startup_s, gpus)
                created = True
            else:
                still.append((spec, gpus))
        self.planned = still
        if created and self.startup_s <= 0:
            self.on_capacity(t)

    def maybe_stop(self, inst: Instance, t: float) -> None:
        """Stop a draining instance that is idle and has nothing left; its GPUs go to planned instances."""
        if inst.status != _DRAINING or inst.busy or inst.has_work():
            return
        inst.ledger.account_idle(t)
        inst.status = _STOPPED
        inst.stop_s = t
        self.pool.release(inst.gpus)
        self.clocks.detach(inst)
        if self.planned:
            self._create_planned(t)
