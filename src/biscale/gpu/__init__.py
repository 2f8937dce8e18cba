"""The real-GPU control plane: clock actuation with fail-safe restore, energy metering, Prometheus export.

Everything takes an ``nvml`` module object (the real ``pynvml`` or :class:`biscale.gpu.fake_nvml.FakeNvml`),
so the code tested in CI on the fake is the code that drives real GPUs. See docs/gpu.md.
The guard process lives in :mod:`biscale.gpu.guard` (not imported here: it runs with ``python -m``).
"""

from biscale.gpu.actuator import ClockActuator
from biscale.gpu.energy import EnergyMeasurement, EnergyMeter, PowerTimeline, counter_delta_mj
from biscale.gpu.exporter import ControlPlaneMetrics
from biscale.gpu.failsafe import FailSafe, Watchdog
from biscale.gpu.fake_nvml import FAKE_ENV, FakeNvml
from biscale.gpu.nvml import (
    ClockReadback,
    ControlSuspendedError,
    GpuInfo,
    NvmlActuator,
    NvmlCallError,
    list_gpus,
    load_nvml,
    nvml_init,
    resolve_gpus,
)

__all__ = [
    "FAKE_ENV",
    "ClockActuator",
    "ClockReadback",
    "ControlPlaneMetrics",
    "ControlSuspendedError",
    "EnergyMeasurement",
    "EnergyMeter",
    "FailSafe",
    "FakeNvml",
    "GpuInfo",
    "NvmlActuator",
    "NvmlCallError",
    "PowerTimeline",
    "Watchdog",
    "counter_delta_mj",
    "list_gpus",
    "load_nvml",
    "nvml_init",
    "resolve_gpus",
]
