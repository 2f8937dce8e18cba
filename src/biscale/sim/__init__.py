"""Iteration-level simulator of a prefill/decode-disaggregated cluster with per-iteration GPU clocks and exact
energy accounting. Entry point: :func:`simulate`."""

from biscale.sim.actuator import SimClockActuator
from biscale.sim.config import NetworkConfig, SimConfig
from biscale.sim.engine import Simulator
from biscale.sim.results import SimResult, simulate

__all__ = ["NetworkConfig", "SimClockActuator", "SimConfig", "SimResult", "Simulator", "simulate"]
