"""The real-GPU control plane: clock actuation with fail-safe restore, energy metering, Prometheus export.

Everything takes an ``nvml`` module object (the real ``pynvml`` or :class:`biscale.gpu.fake_nvml.FakeNvml`),
so the code tested in CI on the fake is the code that drives real GPUs. See docs/gpu.md.
The guard process lives in :mod:`biscale.gpu.guard` (not exported here: it runs with ``python -m``).

Names are imported lazily (PEP 562): ``import biscale.gpu`` loads neither ``pynvml`` nor ``prometheus_client``;
each name loads its submodule on first use. The actuator *interface* is :class:`biscale.actuator.ClockActuator`
and the NVML errors are in :mod:`biscale.errors`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from biscale.gpu.energy import EnergyMeasurement, EnergyMeter, PowerTimeline, counter_delta_mj
    from biscale.gpu.exporter import ControlPlaneMetrics
    from biscale.gpu.failsafe import FailSafe, Watchdog
    from biscale.gpu.fake_nvml import FAKE_ENV, FakeNvml
    from biscale.gpu.nvml import ClockReadback, GpuInfo, NvmlActuator, list_gpus, load_nvml, nvml_init, resolve_gpus

#: Exported name -> submodule that defines it.
_WHERE = {
    "EnergyMeasurement": "energy",
    "EnergyMeter": "energy",
    "PowerTimeline": "energy",
    "counter_delta_mj": "energy",
    "ControlPlaneMetrics": "exporter",
    "FailSafe": "failsafe",
    "Watchdog": "failsafe",
    "FAKE_ENV": "fake_nvml",
    "FakeNvml": "fake_nvml",
    "ClockReadback": "nvml",
    "GpuInfo": "nvml",
    "NvmlActuator": "nvml",
    "list_gpus": "nvml",
    "load_nvml": "nvml",
    "nvml_init": "nvml",
    "resolve_gpus": "nvml",
}

__all__ = [
    "FAKE_ENV",
    "ClockReadback",
    "ControlPlaneMetrics",
    "EnergyMeasurement",
    "EnergyMeter",
    "FailSafe",
    "FakeNvml",
    "GpuInfo",
    "NvmlActuator",
    "PowerTimeline",
    "Watchdog",
    "counter_delta_mj",
    "list_gpus",
    "load_nvml",
    "nvml_init",
    "resolve_gpus",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'biscale.gpu' has no attribute '{name}'")
    return getattr(importlib.import_module(f"biscale.gpu.{module}"), name)
