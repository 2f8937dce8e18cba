"""From a controller's decision to a virtual GPU's clock: baseline clocks, static answers, per-iteration decisions.

A dynamic controller is asked before every iteration of its instance, after the batch is formed and before it is
priced (:meth:`ClockControl.before_iteration`); its answer goes through the :class:`SimClockActuator` exactly as a
real controller's goes through the NVML actuator, and lands in the instance's ledger after the switch latency.
"""

from __future__ import annotations

from collections.abc import Mapping

from biscale.control.controllers import ClockController, snap_clock
from biscale.control.placement import InstanceSpec
from biscale.control.state import GOVERNOR_MHZ
from biscale.sim.actuator import SimClockActuator
from biscale.sim.instance import Instance, InstanceStatus
from biscale.sim.snapshot import SnapshotBuilder

_STOPPED = int(InstanceStatus.STOPPED)


class ClockControl:
    """Applies controllers to instances and owns the simulator's actuator."""

    def __init__(
        self,
        controllers: Mapping[str, ClockController],
        supported_clocks_mhz: tuple[int, ...],
        initial_clock: int | str,
        switch_latency_s: float,
        snapshots: SnapshotBuilder,
    ) -> None:
        self.controllers = dict(controllers)
        self.supported = supported_clocks_mhz
        self.initial_clock = initial_clock
        self.switch_latency_s = switch_latency_s
        self.snapshots = snapshots
        self.now_s = 0.0
        """Time of the decision being applied (the actuator API carries no time, as a real one does not)."""
        self._by_gpu: dict[int, Instance] = {}
        self._parked: dict[int, int] = {}
        """Instance id -> the clock to restore before its next batch, for instances a static controller with
        ``idle_lowest`` parked at the lowest clock while they have no work."""
        self.actuator = SimClockActuator(supported_clocks_mhz, self._on_switch, self._on_query)

    def resolve(self, setting: int | str) -> int:
        """A clock setting (MHz, ``"max"``, ``"default"``) as a supported clock or ``GOVERNOR_MHZ``."""
        if setting == "max":
            return self.supported[-1]
        if setting == "default":
            return GOVERNOR_MHZ
        return snap_clock(int(setting), self.supported)

    def attach(self, inst: Instance, t: float) -> None:
        """A new instance: its GPUs, its baseline clock, its phase's controller (a static one answers now, so
        start-up already runs at its clock)."""
        for g in inst.gpus:
            if g in self._by_gpu:
                raise RuntimeError(f"GPU {g} given to instance {inst.id} while instance {self._by_gpu[g].id} owns it")
            self._by_gpu[g] = inst
        spec: InstanceSpec = inst.spec
        inst.baseline_clock_mhz = None if spec.clock is None else self.resolve(spec.clock)
        inst.ledger.set_clock_now(self.resolve(spec.clock if spec.clock is not None else self.initial_clock))
        ctrl = self.controllers[spec.phase]
        inst.controller = ctrl
        inst.dynamic = not ctrl.is_static
        if ctrl.is_static:
            want = ctrl.decide(self.snapshots.state(inst, t))
            if want is not None:
                inst.ledger.set_clock_now(snap_clock(want, self.supported))

    def retarget(self, inst: Instance, spec: InstanceSpec, t: float) -> None:
        """A placement change kept ``inst`` but gave it ``spec`` (another baseline clock or capacity): the new
        baseline (or a static controller's answer to it) goes through the actuator and lands after the switch
        latency, as a controller's decision does; the instance keeps serving meanwhile."""
        inst.spec = spec
        inst.baseline_clock_mhz = None if spec.clock is None else self.resolve(spec.clock)
        want = self.resolve(spec.clock if spec.clock is not None else self.initial_clock)
        ctrl = inst.controller
        if ctrl.is_static:
            answer = ctrl.decide(self.snapshots.state(inst, t))
            if answer is not None:
                want = snap_clock(answer, self.supported)
        if inst.id in self._parked:  # idle at the lowest clock: the new clock applies from its next batch
            self._parked[inst.id] = want
            return
        self._request(inst, want, t)

    def detach(self, inst: Instance) -> None:
        """A stopped instance gives its GPUs back."""
        self._parked.pop(inst.id, None)
        for g in inst.gpus:
            if self._by_gpu.pop(g, None) is not inst:
                raise RuntimeError(f"instance {inst.id} gave back GPU {g}, which it did not own")

    def prepare(self, inst: Instance, t: float) -> None:
        """Before pricing the batch just formed on ``inst`` at ``t``: commit idle energy up to ``t`` (landing a
        switch that arrived meanwhile), then let a dynamic controller decide the clock for this batch."""
        if inst.status == _STOPPED:
            raise RuntimeError(f"instance {inst.id} formed a batch at {t:g} s after it stopped at {inst.stop_s:g} s")
        led = inst.ledger
        if t > led.accounted_until_s or led.pending_clock_mhz is not None:
            led.account_idle(t)
        if inst.dynamic:
            self.decide(inst, t)
        elif self._parked:
            back = self._parked.pop(inst.id, None)
            if back is not None:
                self._request(inst, back, t)

    def idle(self, inst: Instance, t: float) -> None:
        """``inst`` ran out of work at ``t``: a dynamic controller may choose the clock it waits at (an idle GPU's
        power depends on its locked clock); the switch starts now, so the next batch may pay its remainder."""
        if inst.dynamic:
            self.prepare(inst, t)
        else:
            self.park(inst, t)

    def park(self, inst: Instance, t: float) -> None:
        """``inst`` has no work at ``t``: under a static controller with ``idle_lowest`` it waits at the lowest
        clock (an idle GPU's power grows with its locked clock) and gets its clock back before its next batch
        (which pays the rest of the switch, as a dynamic controller's idle clock does)."""
        if inst.dynamic or not inst.controller.idle_lowest or inst.status == InstanceStatus.STOPPED:
            return
        led = inst.ledger
        target = led.pending_clock_mhz if led.pending_clock_mhz is not None else led.clock_mhz
        low = self.supported[0]
        if inst.id in self._parked or target in (low, GOVERNOR_MHZ):
            return
        self._parked[inst.id] = target
        self._request(inst, low, t)

    def decide(self, inst: Instance, t: float) -> None:
        """Ask a dynamic controller about the batch about to run; send a changed clock to the actuator."""
        want = inst.controller.decide(self.snapshots.state(inst, t))
        if want is None:
            return
        self._request(inst, snap_clock(int(want), self.supported), t)

    def _request(self, inst: Instance, want: int, t: float) -> None:
        """Send ``want`` to the actuator unless it is the clock already in force or on its way."""
        if inst.status == _STOPPED:
            raise RuntimeError(f"instance {inst.id} asked for a clock at {t:g} s after it stopped at {inst.stop_s:g} s")
        self.now_s = t
        led = inst.ledger
        target = led.pending_clock_mhz if led.pending_clock_mhz is not None else led.clock_mhz
        if want == target:
            return
        if want == GOVERNOR_MHZ:
            self.actuator.reset(inst.gpus)
        else:
            self.actuator.set_clock(inst.gpus, want)

    def _owner(self, gpus: tuple[int, ...]) -> Instance:
        """The one live instance that owns every GPU of ``gpus`` (an actuation never reaches GPUs its instance does
        not own: anything else is a simulator bug)."""
        owners = {id(self._by_gpu.get(g)): self._by_gpu.get(g) for g in gpus}
        inst = next(iter(owners.values()))
        if len(owners) != 1 or inst is None or inst.gpus != tuple(gpus):
            raise RuntimeError(f"clock actuation on GPUs {list(gpus)} that no single live instance owns")
        return inst

    def _on_switch(self, gpus: tuple[int, ...], clock_mhz: int) -> None:
        self._owner(gpus).ledger.request_clock(clock_mhz, self.now_s, self.switch_latency_s)

    def _on_query(self, gpus: tuple[int, ...]) -> int:
        return self._owner(gpus).ledger.clock_mhz
