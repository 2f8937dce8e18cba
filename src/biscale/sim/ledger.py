"""The energy-and-clock ledger of one instance: which clock is in force, which switch is in flight, and every joule
its GPUs drew.

An instance's power is piecewise constant: iterations (the cost model's power times TP), partial iterations around
a clock switch that lands mid-iteration, governor wake-ups, idle gaps at the current clock's idle power, and under
the default governor a shallow then a deep idle. The ledger commits energy segment by segment up to
``accounted_until_s``, so the total is exact, and it prices every iteration through **one** method,
:meth:`EnergyLedger.price_iteration`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from biscale.control.state import GOVERNOR_MHZ
from biscale.costmodel import CostModel, GovernorModel, IterationCost

#: ``(instance_id, start_s, end_s, power_w, busy)`` rows, kept only with ``SimConfig.record_segments``.
Segment = tuple[int, float, float, float, int]
#: ``(start_s, end_s, power_w)`` pieces of an iteration that is not one constant-power block.
Piece = tuple[float, float, float]


class EnergyLedger:
    """Clock state and energy account of one instance (all its GPUs; powers are per instance, i.e. x TP)."""

    __slots__ = (
        "_cost_model",
        "_governor",
        "_segments",
        "accounted_until_s",
        "busy_energy_j",
        "clock_mhz",
        "clock_switches",
        "idle_energy_j",
        "idle_power_w",
        "idle_since_s",
        "instance_id",
        "iteration_end_s",
        "iteration_energy_j",
        "iteration_pieces",
        "iteration_power_w",
        "iteration_start_s",
        "iterations",
        "pending_at_s",
        "pending_clock_mhz",
        "recent_latencies_s",
        "tp",
    )

    def __init__(
        self,
        instance_id: int,
        tp: int,
        start_s: float,
        cost_model: CostModel,
        governor: GovernorModel,
        segments: list[Segment] | None,
        recent_latencies: int,
    ) -> None:
        self.instance_id = instance_id
        self.tp = tp
        self._cost_model = cost_model
        self._governor = governor
        self._segments = segments
        self.clock_mhz = GOVERNOR_MHZ
        """Clock in force, MHz (``GOVERNOR_MHZ`` = 0: the default governor)."""
        self.idle_power_w = 0.0
        """Idle power of the whole instance at the locked clock, W (unused under the governor)."""
        self.pending_clock_mhz: int | None = None
        """Clock requested through the actuator and not yet in force."""
        self.pending_at_s = 0.0
        """When the pending clock takes effect, s."""
        self.clock_switches = 0
        self.busy_energy_j = 0.0
        self.idle_energy_j = 0.0
        self.accounted_until_s = start_s
        """Energy is committed up to here (the end of the last iteration, or a later idle instant), s."""
        self.idle_since_s = start_s
        """Start of the current idle gap (governor idle states are measured from it), s."""
        self.iteration_start_s = start_s
        self.iteration_end_s = start_s
        self.iteration_power_w = 0.0
        """Power of the last iteration when it was one constant-power block, W."""
        self.iteration_energy_j = 0.0
        self.iteration_pieces: list[Piece] | None = None
        """The last iteration's constant-power pieces when it was not one block (wake-up, switch), else None."""
        self.iterations = 0
        self.recent_latencies_s: deque[float] = deque(maxlen=recent_latencies)

    # ------------------------------------------------------------------ clocks
    def set_clock_now(self, clock_mhz: int) -> None:
        """Put ``clock_mhz`` in force at once, without counting a switch (baseline and static clocks)."""
        self.clock_mhz = clock_mhz
        self.idle_power_w = self._cost_model.idle_power_w(self.tp, clock_mhz) * self.tp if clock_mhz else 0.0

    def request_clock(self, clock_mhz: int, now_s: float, latency_s: float) -> None:
        """A clock change asked through the actuator: in force after ``latency_s`` (at once if 0); a request while
        another is in flight replaces it (its timer restarts)."""
        if latency_s > 0:
            self.pending_clock_mhz = clock_mhz
            self.pending_at_s = now_s + latency_s
            return
        self.account_idle(now_s)
        if clock_mhz != self.clock_mhz:
            self._switch(clock_mhz, now_s)
        self.pending_clock_mhz = None

    def _switch(self, clock_mhz: int, t: float) -> None:
        self.set_clock_now(clock_mhz)
        self.clock_switches += 1
        if clock_mhz == GOVERNOR_MHZ:
            self.idle_since_s = t  # the governor's idle states count from the hand-over

    def _land_pending(self, t: float) -> None:
        """The pending switch takes effect at ``t`` (a no-op switch to the clock already in force is not counted)."""
        clock = self.pending_clock_mhz
        self.pending_clock_mhz = None
        if clock is None or clock == self.clock_mhz:
            return
        self._switch(clock, t)

    # ------------------------------------------------------------------ idle energy
    def account_idle(self, t: float) -> None:
        """Commit idle energy up to ``t``, applying a pending switch that lands in between."""
        if self.pending_clock_mhz is not None and self.pending_at_s <= t:
            self._idle_until(self.pending_at_s)
            self._land_pending(self.pending_at_s)
        self._idle_until(t)

    def _idle_until(self, t: float) -> None:
        t0 = self.accounted_until_s
        if t <= t0:
            return
        clock = self.clock_mhz
        self.idle_energy_j += self._gap_energy(clock, self.idle_power_w, self.idle_since_s, t0, t)
        segments = self._segments
        if segments is not None:
            iid = self.instance_id
            if clock == GOVERNOR_MHZ:
                g = self._governor
                tp = self.tp
                knee = self.idle_since_s + g.downclock_after_s
                if t0 < knee < t:
                    segments.append((iid, t0, knee, tp * g.shallow_idle_power_w, 0))
                    segments.append((iid, knee, t, tp * g.idle_power_w, 0))
                else:
                    p = g.shallow_idle_power_w if t <= knee else g.idle_power_w
                    segments.append((iid, t0, t, tp * p, 0))
            else:
                segments.append((iid, t0, t, self.idle_power_w, 0))
        self.accounted_until_s = t

    def _gap_energy(self, clock: int, idle_power_w: float, idle_since_s: float, t0: float, t1: float) -> float:
        """Idle energy over ``[t0, t1]`` at ``clock`` (under the governor, idle time counts from ``idle_since_s``)."""
        if t1 <= t0:
            return 0.0
        if clock == GOVERNOR_MHZ:
            g = self._governor
            return self.tp * (g.idle_energy_j(t1 - idle_since_s) - g.idle_energy_j(t0 - idle_since_s))
        return idle_power_w * (t1 - t0)

    # ------------------------------------------------------------------ iterations
    def price_iteration(self, t: float, cost_fn: Callable[[Any, int, int | None], IterationCost], shape: Any) -> float:
        """Price one iteration of ``shape`` starting at ``t`` (idle energy must be committed up to ``t``); commit
        its energy; return its end time.

        Under the governor an iteration after a long idle gap first pays the wake-up delay at shallow idle power. A
        pending switch that lands inside the iteration splits it: with a fraction ``f`` of the work done at the old
        clock, the rest takes ``(1 - f)`` of the new clock's latency.
        """
        tp = self.tp
        clock = self.clock_mhz
        start = t
        pieces: list[Piece] | None = None
        if not clock:  # the default governor
            g = self._governor
            wake = g.wake_penalty_s(t - self.idle_since_s)
            if wake > 0:
                pieces = [(t, t + wake, tp * g.shallow_idle_power_w)]
                start = t + wake
        c = cost_fn(shape, tp, clock or None)
        lat = c.latency_s
        p = c.power_w * tp
        if self.pending_clock_mhz is None or self.pending_at_s >= start + lat:
            end = start + lat
            if pieces is None:  # one constant-power block (the common case)
                energy = lat * p
                self.iteration_power_w = p
            else:
                pieces.append((start, end, p))
                energy = _pieces_energy(pieces)
        else:  # the pending switch lands inside this iteration
            te = max(self.pending_at_s, start)
            if pieces is None:
                pieces = []
            if te > start:
                pieces.append((start, te, p))
            done = (te - start) / lat if lat > 0 else 1.0
            self._land_pending(te)
            c2 = cost_fn(shape, tp, self.clock_mhz or None)
            end = te + (1.0 - done) * c2.latency_s
            pieces.append((te, end, c2.power_w * tp))
            energy = _pieces_energy(pieces)
        self.iteration_pieces = pieces
        segments = self._segments
        if segments is not None:
            iid = self.instance_id
            if pieces is None:
                segments.append((iid, t, end, p, 1))
            else:
                for s0, s1, sp in pieces:
                    segments.append((iid, s0, s1, sp, 1))
        self.busy_energy_j += energy
        self.iteration_energy_j = energy
        self.accounted_until_s = self.idle_since_s = self.iteration_end_s = end
        self.iteration_start_s = t
        self.iterations += 1
        self.recent_latencies_s.append(end - t)
        return end

    # ------------------------------------------------------------------ reading
    def energy_at(self, t: float, stopped: bool) -> float:
        """Energy drawn from the instance's start up to ``t``, joules; commits nothing (timeline samples)."""
        total = self.busy_energy_j + self.idle_energy_j
        if t < self.accounted_until_s:  # inside the committed iteration: take back the part after t
            pieces = self.iteration_pieces
            if pieces is None:
                return total - self.iteration_power_w * (self.accounted_until_s - t)
            for t0, t1, p in pieces:
                if t1 > t:
                    total -= p * (t1 - max(t0, t))
            return total
        if stopped:
            return total
        t0 = self.accounted_until_s
        clock = self.clock_mhz
        if self.pending_clock_mhz is not None and self.pending_at_s <= t:
            te = self.pending_at_s
            total += self._gap_energy(clock, self.idle_power_w, self.idle_since_s, t0, te)
            new = self.pending_clock_mhz
            if new == clock:
                return total + self._gap_energy(clock, self.idle_power_w, self.idle_since_s, te, t)
            idle_p = self._cost_model.idle_power_w(self.tp, new) * self.tp if new else 0.0
            return total + self._gap_energy(new, idle_p, te, te, t)
        return total + self._gap_energy(clock, self.idle_power_w, self.idle_since_s, t0, t)


def _pieces_energy(pieces: list[Piece]) -> float:
    energy = 0.0
    for s0, s1, p in pieces:
        energy += (s1 - s0) * p
    return energy
