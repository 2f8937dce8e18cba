"""Clock controllers: ``decide(state) -> clock`` before every iteration of an instance.

Return values of :meth:`ClockController.decide`:

* an ``int`` > 0: lock the instance's GPUs to that SM clock, MHz (snapped to the nearest supported clock);
* :data:`~biscale.control.state.GOVERNOR_MHZ` (0): unlock, i.e. hand the clock to the GPU's default governor;
* ``None``: leave the clock as it is (or as already requested).

A controller whose answer never depends on the state sets ``is_static = True``; the simulator then asks it only
once, when an instance starts, and skips building per-iteration snapshots (they are the expensive part).

Controllers are registered by name in :data:`CONTROLLERS` (the CLI's ``--clock`` and configuration files select
them through it); a new one registers where it is defined with ``@CONTROLLERS.register("name", "help line")``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

from biscale.control.state import GOVERNOR_MHZ, InstanceState
from biscale.errors import InputError
from biscale.registry import Registry

#: Registry: name -> factory. ``fixed`` takes the clock in MHz; every other built-in takes no argument.
CONTROLLERS: Registry[Callable[..., ClockController]] = Registry("controller", field="controller")


class ClockController(ABC):
    """One controller serves every instance of a phase; per-instance memory is keyed by ``state.instance_id``."""

    is_static: ClassVar[bool] = False
    """True when ``decide`` ignores the state (asked once per instance start)."""
    name: ClassVar[str] = "controller"

    @abstractmethod
    def decide(self, state: InstanceState) -> int | None:
        """The clock to run the next iteration at (MHz), ``GOVERNOR_MHZ`` or ``None`` (no change)."""


@CONTROLLERS.register("fixed", "lock every instance to one clock, MHz")
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


@CONTROLLERS.register("max", "lock to the top supported clock (DistServe's setting)")
class MaxClock(ClockController):
    """Lock to the top supported clock (DistServe's setting)."""

    is_static = True
    name = "max"

    def decide(self, state: InstanceState) -> int | None:
        return state.supported_clocks_mhz[-1]


@CONTROLLERS.register("default", "leave clocks unlocked: the GPU's default governor")
class DefaultGovernor(ClockController):
    """Leave clocks unlocked: the GPU's default governor (what most real clusters run)."""

    is_static = True
    name = "default"

    def decide(self, state: InstanceState) -> int | None:
        return GOVERNOR_MHZ


@CONTROLLERS.register("baseline", "keep each instance at its placement's baseline clock")
class BaselineClock(ClockController):
    """Keep each instance at the baseline clock its placement gave it (never switches)."""

    is_static = True
    name = "baseline"

    def decide(self, state: InstanceState) -> int | None:
        return None


def controller_from_clock(clock: str | int | None, field: str = "clock") -> ClockController:
    """Parse ``--clock MHZ|max|default|NAME``: a number -> :class:`FixedClock`; a name -> that entry of
    :data:`CONTROLLERS` (``governor`` is an alias of ``default``); ``None`` -> :class:`BaselineClock`."""
    if clock is None:
        return BaselineClock()
    if isinstance(clock, int):
        return CONTROLLERS.get("fixed")(clock)
    text = clock.strip().lower()
    if text.isdigit():
        return CONTROLLERS.get("fixed")(int(text))
    if text == "governor":
        text = "default"
    if text == "fixed":
        raise InputError("the fixed controller needs a clock: give it in MHz (e.g. 1410)", field=field)
    if text not in CONTROLLERS:
        raise InputError(f"bad clock '{clock}': not MHz and {CONTROLLERS.unknown_reason(text)}", field=field)
    return CONTROLLERS.get(text)()


def snap_clock(clock_mhz: int, supported: tuple[int, ...]) -> int:
    """The supported clock nearest to ``clock_mhz`` (ties go to the higher clock), MHz."""
    if clock_mhz == GOVERNOR_MHZ:
        return GOVERNOR_MHZ
    best = supported[0]
    for c in supported:
        if abs(c - clock_mhz) <= abs(best - clock_mhz):
            best = c
    return best
