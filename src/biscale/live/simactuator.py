"""The live actuation contract on virtual GPUs and a virtual clock.

Why: the clock hook's behaviour over time (a switch that lands later, a watchdog that parks an idle engine's GPUs, a
re-arm at the next step) must be checkable without threads or sleeping; this implements
:class:`~biscale.actuator.LiveClockActuator` with every time read from ``clock`` (a test advances it), next to the
NVML implementation (:class:`biscale.gpu.nvml.NvmlActuator`), whose watchdog and switches run on threads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from biscale.actuator import GOVERNOR_MHZ, LiveClockActuator


class SimLiveActuator(LiveClockActuator):
    """Virtual GPUs: a request lands ``switch_delay_s`` after it was made; with ``watchdog_s``, no heartbeat for
    longer than that parks the GPUs at default clocks and suspends control until :meth:`rearm`. Time is only read
    from ``clock``, so everything happens when the actuator is next used (as if its threads had run meanwhile)."""

    def __init__(
        self,
        gpus: Sequence[int],
        supported_clocks_mhz: Sequence[int],
        *,
        clock: Callable[[], float],
        switch_delay_s: float = 0.0,
        watchdog_s: float | None = None,
    ) -> None:
        self.gpus = tuple(int(g) for g in gpus)
        self.supported = tuple(sorted(int(c) for c in supported_clocks_mhz))
        self.clock = clock
        self.switch_delay_s = float(switch_delay_s)
        self.watchdog_s = watchdog_s
        self.locked: dict[int, int | None] = dict.fromkeys(self.gpus)
        self.applied: list[tuple[float, int]] = []
        """(time, clock) of every request that landed (``GOVERNOR_MHZ``: back to the default governor)."""
        self.suspended_reason: str | None = None
        self.suspensions = 0
        self.closed = False
        self._pending: tuple[tuple[int, ...], int, float] | None = None
        self._last_beat = clock()

    def _advance(self) -> None:
        now = self.clock()
        if self._pending is not None and now >= self._pending[2]:
            group, mhz, due = self._pending
            self._pending = None
            self._land(group, mhz, due)
        wd = self.watchdog_s
        late = wd is not None and self.suspended_reason is None and now - self._last_beat > wd
        if late and any(c is not None for c in self.locked.values()):
            self.suspended_reason = f"watchdog: no heartbeat within {wd} s"
            self.suspensions += 1
            self._land(self.gpus, GOVERNOR_MHZ, self._last_beat + (wd or 0.0))

    def _land(self, group: Sequence[int], mhz: int, at: float) -> None:
        for g in group:
            self.locked[g] = None if mhz == GOVERNOR_MHZ else mhz
        self.applied.append((at, mhz))

    def supported_clocks_mhz(self, gpus: Sequence[int]) -> tuple[int, ...]:
        return self.supported

    def request_clock(self, gpus: Sequence[int], sm_clock_mhz: int) -> None:
        self._advance()
        mhz = int(sm_clock_mhz)
        if mhz != GOVERNOR_MHZ and mhz not in self.supported:
            raise ValueError(f"SM clock {mhz} MHz is not supported")
        if self.closed or self.suspended_reason is not None:
            return
        self._pending = (tuple(int(g) for g in gpus), mhz, self.clock() + self.switch_delay_s)
        self._advance()

    def heartbeat(self) -> None:
        self._advance()  # a deadline that passed during the silence fires first, as the watchdog thread would have
        self._last_beat = self.clock()

    def locked_clock_nowait(self, gpu: int) -> int | None:
        self._advance()
        return self.locked[int(gpu)]

    def rearm(self) -> bool:
        reason = self.suspended_reason
        if reason is None:
            return True
        if self.closed or not reason.startswith("watchdog"):
            return False
        self.suspended_reason = None
        return True

    def close(self, reason: str = "close") -> None:
        if not self.closed:
            self._pending = None
            self._land(self.gpus, GOVERNOR_MHZ, self.clock())
            self.closed = True
