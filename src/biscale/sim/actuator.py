"""The simulator's :class:`~biscale.actuator.ClockActuator`: virtual GPUs whose clock moves after a delay.

Controllers' decisions reach the simulated GPUs through this class, exactly as they reach real GPUs through the
NVML actuator. The engine calls it at decision points (before an iteration, at instance start).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from biscale.actuator import ClockActuator

#: ``(gpus, clock_mhz or 0 for the governor)`` -> None; the engine schedules the switch.
SwitchHook = Callable[[tuple[int, ...], int], None]
#: ``gpus`` -> clock in force (0 = governor).
ClockQuery = Callable[[tuple[int, ...]], int]


class SimClockActuator(ClockActuator):
    """Virtual clocks: ``set_clock`` takes effect after the configured switch latency (the old clock runs until
    then); ``reset`` hands the group back to the default governor after the same latency."""

    def __init__(self, supported: tuple[int, ...], on_switch: SwitchHook, query: ClockQuery) -> None:
        self._supported = tuple(supported)
        self._on_switch = on_switch
        self._query = query

    def supported_clocks_mhz(self, gpus: Sequence[int]) -> tuple[int, ...]:
        return self._supported

    def set_clock(self, gpus: Sequence[int], sm_clock_mhz: int) -> None:
        if sm_clock_mhz not in self._supported:
            raise ValueError(f"{sm_clock_mhz} MHz is not a supported clock")
        self._on_switch(tuple(gpus), int(sm_clock_mhz))

    def current_clock_mhz(self, gpus: Sequence[int]) -> dict[int, int | None]:
        clock = self._query(tuple(gpus))
        return {g: (None if clock == 0 else clock) for g in gpus}

    def reset(self, gpus: Sequence[int]) -> None:
        self._on_switch(tuple(gpus), 0)
