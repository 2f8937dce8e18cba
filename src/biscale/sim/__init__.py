"""Iteration-level simulator of a prefill/decode-disaggregated cluster with per-iteration GPU clocks and exact
energy accounting. Entry points: :func:`simulate` (Python objects) and :class:`SimulateConfig` (a serialisable run).
See docs/simulator.md and docs/architecture.md."""

from biscale.sim.actuator import SimClockActuator
from biscale.sim.config import NetworkConfig, SimConfig
from biscale.sim.engine import Simulator
from biscale.sim.results import SimResult, simulate
from biscale.sim.runconfig import SimulateConfig, load_simulate_config

__all__ = [
    "NetworkConfig",
    "SimClockActuator",
    "SimConfig",
    "SimResult",
    "SimulateConfig",
    "Simulator",
    "load_simulate_config",
    "simulate",
]
