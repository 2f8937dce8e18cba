"""The clock-actuator interface shared by the simulator and real GPUs.

A controller's decision (an SM clock per instance) reaches hardware only through a :class:`ClockActuator` (blocking:
the simulator and the command line) or, inside a serving loop, through a :class:`LiveClockActuator` (non-blocking:
the loop never waits on a switch).
The simulator implements it on virtual GPUs with a switch delay (:class:`biscale.sim.actuator.SimClockActuator`);
:class:`biscale.gpu.nvml.NvmlActuator` implements it on NVML. It is a top-level seam (like
:mod:`biscale.costmodel`) so that both worlds depend on it, not on each other, and no subpackage cycle forms
(controllers use the predictors, whose GPU profiler uses the control plane): importing it loads neither NVML nor
Prometheus.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

#: A clock request (and a controller's answer) meaning "back to the GPU's default governor" (clocks unlocked); the
#: one copy of the constant (``biscale.control.state`` re-exports it, the NVML actuator reads it from here).
GOVERNOR_MHZ = 0


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


class LiveClockActuator(ABC):
    """The non-blocking contract a live serving loop (:class:`biscale.integrations.hook.ClockHook`) clocks through.

    Nothing here waits on a clock switch or raises for hardware trouble: a request is queued and applied in the
    background; a failure restores the default clocks and *suspends* control (``suspended_reason`` set,
    ``suspensions`` counted) until :meth:`rearm` finds its cause cleared. Implemented on NVML
    (:class:`biscale.gpu.nvml.NvmlActuator`) and on virtual GPUs (:class:`biscale.live.simactuator.SimLiveActuator`).
    """

    suspended_reason: str | None
    """Why control is suspended (``None``: it is not); the GPUs run at default clocks meanwhile."""
    suspensions: int
    """Suspensions since start, of any cause (a watchdog park included)."""

    @property
    def suspended(self) -> bool:
        """True while control is suspended (requests are dropped, the GPUs run at default clocks)."""
        return self.suspended_reason is not None

    @abstractmethod
    def supported_clocks_mhz(self, gpus: Sequence[int]) -> tuple[int, ...]:
        """Clocks every GPU of the group can lock to, ascending, MHz (asked once, at start-up)."""

    @abstractmethod
    def request_clock(self, gpus: Sequence[int], sm_clock_mhz: int) -> None:
        """Queue ``sm_clock_mhz`` (or :data:`GOVERNOR_MHZ`) for the group and return at once; a newer request
        replaces a queued one. Dropped while suspended."""

    @abstractmethod
    def heartbeat(self) -> None:
        """The loop is alive (a watchdog parks the GPUs at default clocks when heartbeats stop)."""

    @abstractmethod
    def locked_clock_nowait(self, gpu: int) -> int | None:
        """The clock ``gpu`` is locked to now (``None``: default governor), without waiting for a switch."""

    @abstractmethod
    def rearm(self) -> bool:
        """End a suspension whose cause has cleared (a watchdog park: heartbeats are back; an NVML error: after a
        back-off); True when control is live again. Never raises."""

    @abstractmethod
    def close(self, reason: str = "close") -> None:
        """Stop, restore default clocks, release the GPUs (idempotent, never raises for hardware trouble)."""
