"""The clock-actuator interface shared by the simulator and real GPUs.

A controller's decision (an SM clock per instance) reaches hardware only through a :class:`ClockActuator`.
The simulator implements it on virtual GPUs with a switch delay (:class:`biscale.sim.actuator.SimClockActuator`);
:class:`biscale.gpu.nvml.NvmlActuator` implements it on NVML. It is a top-level seam (like
:mod:`biscale.costmodel`) so that both worlds depend on it, not on each other, and no subpackage cycle forms
(controllers use the predictors, whose GPU profiler uses the control plane): importing it loads neither NVML nor
Prometheus.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence


class ClockActuator(ABC):
    """Sets the SM clock of a group of GPUs (one instance's TP group); all GPUs of a group move together."""

    @abstractmethod
    def supported_clocks_mhz(self, gpus: Sequence[int]) -> tuple[int, ...]:
        """Clocks every GPU of the group can lock to, ascending, MHz."""

    @abstractmethod
    def set_clock(self, gpus: Sequence[int], sm_clock_mhz: int) -> None:
        """Lock the SM clock of ``gpus`` to ``sm_clock_mhz`` (must be a supported clock)."""

    @abstractmethod
    def current_clock_mhz(self, gpus: Sequence[int]) -> dict[int, int | None]:
        """The clock each GPU is locked to (``None`` when it runs under the default governor)."""

    @abstractmethod
    def reset(self, gpus: Sequence[int]) -> None:
        """Return ``gpus`` to the default governor (unlock their clocks)."""
