"""GPU energy meter: NVML's energy counter turned into per-window joules, plus a power-sampling thread.

Why the counter and not integrated power: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver was
loaded, Volta and newer) integrates on the GPU at a high rate, whereas ``nvmlDeviceGetPowerUsage`` is an
average refreshed only every ~10-100 ms. The counter is an unsigned 64-bit integer; it can wrap and it
restarts from zero when the driver reloads. :func:`counter_delta_mj` tells the two apart, and the meter keeps a
running total per GPU so a window spanning a reset loses at most the energy since the previous reading
(run the sampling thread to bound that by one sampling period).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from biscale.errors import NoGpuError
from biscale.gpu.nvml import load_nvml, nvml_init

#: The energy counter is unsigned 64-bit (millijoules).
COUNTER_MODULUS = 1 << 64
#: Upper bound on one GPU's power used to tell a wraparound from a reset, W (H100 peaks near 700 W).
MAX_PLAUSIBLE_POWER_W = 5000.0


def counter_delta_mj(prev_mj: int, cur_mj: int, elapsed_s: float) -> tuple[int, str]:
    """Energy between two counter readings, mJ, and what happened: ``"ok"``, ``"wrap"`` or ``"reset"``.

    A decrease is a wraparound when the modular difference is plausible for the elapsed time (at most
    ``MAX_PLAUSIBLE_POWER_W`` for ``elapsed_s`` plus 10 J of slack); otherwise the counter restarted (driver
    reload) and the energy since the restart, ``cur_mj``, is the best estimate. (A counter that starts at
    zero needs ~400,000 years at 700 W to wrap, so in practice a decrease is a reset.)
    """
    if cur_mj >= prev_mj:
        return cur_mj - prev_mj, "ok"
    wrapped = (cur_mj - prev_mj) % COUNTER_MODULUS
    if wrapped <= MAX_PLAUSIBLE_POWER_W * max(elapsed_s, 0.0) * 1000.0 + 10_000.0:
        return wrapped, "wrap"
    return cur_mj, "reset"


@dataclass(frozen=True)
class EnergyMeasurement:
    """Energy over one measurement window."""

    #: Window length, s.
    duration_s: float
    #: Energy per GPU (NVML index), J.
    energy_j: dict[int, float]
    #: Counter resets (driver reloads) seen during the window, all GPUs together.
    counter_resets: int = 0
    #: Counter wraparounds seen during the window.
    counter_wraps: int = 0

    @property
    def total_energy_j(self) -> float:
        """Energy of all GPUs together, J."""
        return float(sum(self.energy_j.values()))

    @property
    def avg_power_w(self) -> dict[int, float]:
        """Mean power per GPU over the window, W."""
        d = self.duration_s
        return {g: (e / d if d > 0 else 0.0) for g, e in self.energy_j.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (units in the keys)."""
        return {
            "duration_s": self.duration_s,
            "total_energy_j": self.total_energy_j,
            "gpus": [{"gpu": g, "energy_j": e, "avg_power_w": self.avg_power_w[g]} for g, e in self.energy_j.items()],
            "counter_resets": self.counter_resets,
            "counter_wraps": self.counter_wraps,
        }


@dataclass
class EnergyWindow:
    """Handle returned by :meth:`EnergyMeter.window`; ``measurement`` is filled when the window closes."""

    start_s: float
    start_j: dict[int, float]
    start_events: tuple[int, int]
    measurement: EnergyMeasurement | None = None


@dataclass(frozen=True)
class PowerTimeline:
    """Power samples taken by the sampling thread."""

    #: Sample times since sampling started, s.
    t_s: np.ndarray
    #: Power per GPU at each sample, W (NaN where the read failed).
    power_w: dict[int, np.ndarray] = field(default_factory=dict)
    #: Cumulative energy per GPU since the meter opened, J.
    energy_j: dict[int, np.ndarray] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "t_s": self.t_s.tolist(),
            "gpus": [
                {"gpu": g, "power_w": self.power_w[g].tolist(), "energy_j": self.energy_j[g].tolist()}
                for g in self.power_w
            ],
        }


class EnergyMeter:
    """Per-GPU energy from NVML's counter: running totals, measurement windows, and power timelines.

    Read-only: needs no privileges and never changes GPU state.
    """

    def __init__(self, nvml: Any | None = None, gpus: Sequence[int] | None = None) -> None:
        self.nvml = load_nvml() if nvml is None else nvml
        nvml_init(self.nvml)
        try:
            n = int(self.nvml.nvmlDeviceGetCount())
            self.gpus: tuple[int, ...] = tuple(range(n)) if gpus is None else tuple(int(g) for g in gpus)
            self._handles = {g: self.nvml.nvmlDeviceGetHandleByIndex(g) for g in self.gpus}
        except self.nvml.NVMLError as err:
            self.nvml.nvmlShutdown()
            raise NoGpuError(f"NVML could not open the GPUs: {err}") from err
        self._lock = threading.Lock()
        self._total_mj: dict[int, int] = dict.fromkeys(self.gpus, 0)
        self._last: dict[int, tuple[int, float]] = {}
        self.resets = 0
        self.wraps = 0
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._samples: list[tuple[float, dict[int, float], dict[int, float]]] = []
        self._t0 = 0.0
        self.poll()

    def read_counter_mj(self, gpu: int) -> int:
        """Raw counter of one GPU, mJ since the driver loaded."""
        return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self._handles[gpu]))

    def poll(self) -> dict[int, float]:
        """Read every counter, fold the change into the running totals; returns the totals, J."""
        with self._lock:
            for g in self.gpus:
                cur = self.read_counter_mj(g)
                now = time.monotonic()
                if g in self._last:
                    prev, t_prev = self._last[g]
                    delta, kind = counter_delta_mj(prev, cur, now - t_prev)
                    self._total_mj[g] += delta
                    self.resets += kind == "reset"
                    self.wraps += kind == "wrap"
                self._last[g] = (cur, now)
            return {g: mj / 1000.0 for g, mj in self._total_mj.items()}

    def begin(self) -> EnergyWindow:
        """Open a measurement window now."""
        totals = self.poll()
        return EnergyWindow(time.monotonic(), totals, (self.resets, self.wraps))

    def end(self, window: EnergyWindow) -> EnergyMeasurement:
        """Close ``window``: its duration and energy per GPU."""
        totals = self.poll()
        m = EnergyMeasurement(
            duration_s=time.monotonic() - window.start_s,
            energy_j={g: totals[g] - window.start_j[g] for g in self.gpus},
            counter_resets=self.resets - window.start_events[0],
            counter_wraps=self.wraps - window.start_events[1],
        )
        window.measurement = m
        return m

    @contextmanager
    def window(self) -> Iterator[EnergyWindow]:
        """``with meter.window() as w: ...`` then ``w.measurement`` holds the :class:`EnergyMeasurement`."""
        w = self.begin()
        try:
            yield w
        finally:
            self.end(w)

    # ------------------------------------------------------------------------------------------ sampling
    def start_sampling(self, period_s: float = 0.1) -> None:
        """Sample power and energy every ``period_s`` seconds in a background thread."""
        if period_s <= 0:
            raise ValueError(f"sampling period must be > 0 s, got {period_s}")
        if self._sampler is not None:
            raise RuntimeError("sampling already running")
        self._stop.clear()
        self._samples = []
        self._t0 = time.monotonic()
        self._sampler = threading.Thread(target=self._sample_loop, args=(period_s,), name="biscale-power", daemon=True)
        self._sampler.start()

    def _sample_once(self) -> None:
        power: dict[int, float] = {}
        for g in self.gpus:
            try:
                power[g] = self.nvml.nvmlDeviceGetPowerUsage(self._handles[g]) / 1000.0
            except self.nvml.NVMLError:
                power[g] = float("nan")
        try:
            energy = self.poll()
        except self.nvml.NVMLError:
            energy = dict.fromkeys(self.gpus, float("nan"))
        self._samples.append((time.monotonic() - self._t0, power, energy))

    def _sample_loop(self, period_s: float) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            self._sample_once()
            next_t += period_s
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def stop_sampling(self) -> PowerTimeline:
        """Stop the thread; returns every sample taken."""
        if self._sampler is None:
            raise RuntimeError("sampling is not running")
        self._stop.set()
        self._sampler.join(timeout=10)
        self._sampler = None
        samples = self._samples
        return PowerTimeline(
            t_s=np.array([s[0] for s in samples], dtype=float),
            power_w={g: np.array([s[1][g] for s in samples], dtype=float) for g in self.gpus},
            energy_j={g: np.array([s[2][g] for s in samples], dtype=float) for g in self.gpus},
        )

    def close(self) -> None:
        """Stop sampling (if running) and shut NVML down."""
        if self._sampler is not None:
            self.stop_sampling()
        self.nvml.nvmlShutdown()

    def __enter__(self) -> EnergyMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
