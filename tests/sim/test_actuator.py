"""The simulator's clock actuator follows the ClockActuator contract with a switch delay."""

from __future__ import annotations

import numpy as np
import pytest

from biscale.actuator import ClockActuator
from biscale.control import GOVERNOR_MHZ, ClockController, InstanceState, parse_placement
from biscale.sim import SimClockActuator, SimConfig, Simulator
from biscale.sim.toy import ToyCostModel
from biscale.workload import Trace

TOY = ToyCostModel()


def test_actuator_contract_and_delay() -> None:
    tr = Trace(np.array([0.0]), np.array([100]), np.array([3]))
    sim = Simulator(
        tr,
        parse_placement("prefill:TP1,decode:TP1"),
        TOY,
        config=SimConfig(nodes=1, gpus_per_node=2, switch_latency_s=0.01),
    )
    sim.run()
    act = sim.actuator
    assert isinstance(act, SimClockActuator) and isinstance(act, ClockActuator)
    gpus = sim.instances[1].gpus
    assert act.supported_clocks_mhz(gpus) == TOY.clocks
    top = TOY.clocks[-1]
    assert act.current_clock_mhz(gpus) == {g: top for g in gpus}
    with pytest.raises(ValueError, match="not a supported clock"):
        act.set_clock(gpus, 1234)
    ledger = sim.instances[1].ledger
    sim.clocks.now_s = 100.0
    act.set_clock(gpus, TOY.clocks[0])
    assert ledger.pending_clock_mhz == TOY.clocks[0] and ledger.pending_at_s == pytest.approx(100.01)
    assert act.current_clock_mhz(gpus) == {g: top for g in gpus}  # not yet in force
    ledger.account_idle(100.02)
    assert act.current_clock_mhz(gpus) == {g: TOY.clocks[0] for g in gpus}
    act.reset(gpus)
    ledger.account_idle(100.05)
    assert act.current_clock_mhz(gpus) == {g: None for g in gpus}
    assert ledger.clock_switches == 2


class Flip(ClockController):
    """Alternates between unlocked and the lowest clock: each request lands after the switch latency."""

    def __init__(self) -> None:
        self.calls = 0

    def decide(self, state: InstanceState) -> int | None:
        self.calls += 1
        return GOVERNOR_MHZ if self.calls % 2 else state.supported_clocks_mhz[0]


def test_superseded_switch_only_counts_when_it_lands() -> None:
    # switch latency far longer than an iteration: every new request supersedes the one in flight
    tr = Trace(np.array([0.0]), np.array([100]), np.array([40]))
    cfg = SimConfig(nodes=1, gpus_per_node=2, switch_latency_s=5.0)
    sim = Simulator(
        tr, parse_placement("prefill:TP1,decode:TP1"), TOY, {"prefill": Flip(), "decode": Flip()}, config=cfg
    )
    sim.run()
    assert sum(i.ledger.clock_switches for i in sim.instances) == 0
