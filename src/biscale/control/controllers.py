"""Clock controllers: ``decide(state) -> clock`` before every iteration of an instance.

Return values of :meth:`ClockController.decide`:

* an ``int`` > 0: lock the instance's GPUs to that SM clock, MHz (snapped to the nearest supported clock);
* :data:`~biscale.control.state.GOVERNOR_MHZ` (0): unlock, i.e. hand the clock to the GPU's default governor;
* ``None``: leave the clock as it is (or as already requested).

A controller whose answer never depends on the state sets ``is_static = True``; the simulator then asks it only
once, when an instance starts, and skips building per-iteration snapshots (they are the expensive part).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

from biscale.control.state import GOVERNOR_MHZ, InstanceState
from biscale.errors import InputError


class ClockController(ABC):
    """One controller serves every instance of a phase; per-instance memory is keyed by ``state.instance_id``."""

    is_static: ClassVar[bool] = False
    """True when ``decide`` ignores the state (asked once per instance start)."""
    name: ClassVar[str] = "controller"

    @abstractmethod
    def decide(self, state: InstanceState) -> int | None:
        """The clock to run the next iteration at (MHz), ``GOVERNOR_MHZ`` or ``None`` (no change)."""


class FixedClock(ClockController):
    """Always the same locked clock."""

    is_static = True
    name = "fixed"

    def __init__(self, clock_mhz: int) -> None:
        if clock_mhz <= 0:
            raise InputError(f"fixed clock must be > 0 MHz, got {clock_mhz}", field="clock")
        self.clock_mhz = int(clock_mhz)

    def decide(self, state: InstanceState) -> int | None:
        return self.clock_mhz


class MaxClock(ClockController):
    """Lock to the top supported clock (DistServe's setting)."""

    is_static = True
    name = "max"

    def decide(self, state: InstanceState) -> int | None:
        return state.supported_clocks_mhz[-1]


class DefaultGovernor(ClockController):
    """Leave clocks unlocked: the GPU's default governor (what most real clusters run)."""

    is_static = True
    name = "default"

    def decide(self, state: InstanceState) -> int | None:
        return GOVERNOR_MHZ


class BaselineClock(ClockController):
    """Keep each instance at the baseline clock its placement gave it (never switches)."""

    is_static = True
    name = "baseline"

    def decide(self, state: InstanceState) -> int | None:
        return None


#: Registry: name -> factory taking the CLI/config argument (a clock in MHz where relevant).
CONTROLLERS: dict[str, Callable[..., ClockController]] = {
    "fixed": FixedClock,
    "max": MaxClock,
    "default": DefaultGovernor,
    "baseline": BaselineClock,
}


def controller_from_clock(clock: str | int | None) -> ClockController:
    """``--clock`` value to a controller: ``MHZ`` -> FixedClock, ``max``, ``default``, ``None`` -> BaselineClock."""
    if clock is None:
        return BaselineClock()
    if isinstance(clock, int):
        return FixedClock(clock)
    text = clock.strip().lower()
    if text == "max":
        return MaxClock()
    if text in ("default", "governor"):
        return DefaultGovernor()
    if text == "baseline":
        return BaselineClock()
    try:
        return FixedClock(int(text))
    except ValueError:
        raise InputError(f"bad clock '{clock}' (expected MHz, 'max', 'default' or 'baseline')", field="clock") from None


def snap_clock(clock_mhz: int, supported: tuple[int, ...]) -> int:
    """The supported clock nearest to ``clock_mhz`` (ties go to the higher clock), MHz."""
    if clock_mhz == GOVERNOR_MHZ:
        return GOVERNOR_MHZ
    best = supported[0]
    for c in supported:
        if abs(c - clock_mhz) <= abs(best - clock_mhz):
            best = c
    return best
