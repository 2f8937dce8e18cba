"""Load forecasters: the next window's request rate from the rates of past windows.

The paper uses the previous window's rate, which lags every rise by one window (under-forecasts on the way up:
the headroom alpha has to absorb it). EWMA smooths noise but lags more; the peak and quantile forecasters trade
energy for fewer under-forecasts. ``biscale forecast --trace T`` scores them on a trace's windows.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from biscale.errors import InputError
from biscale.limits import MAX_WINDOWS
from biscale.registry import Registry
from biscale.workload.trace import Trace


class Forecaster(ABC):
    """Stateful: ``observe`` each finished window's rate, then ``forecast`` the next one."""

    name: ClassVar[str] = "forecaster"

    def __init__(self) -> None:
        self.history: list[float] = []
        """Observed window rates, oldest first, req/s."""

    def observe(self, rate_rps: float) -> None:
        if not (math.isfinite(rate_rps) and rate_rps >= 0):
            raise InputError(f"observed rate must be a number >= 0 req/s, got {rate_rps}", field="rate")
        self.history.append(float(rate_rps))

    def forecast(self, default_rps: float | None = None) -> float | None:
        """The next window's rate, req/s; ``default_rps`` (may be ``None``) before any observation."""
        return self._forecast() if self.history else default_rps

    @abstractmethod
    def _forecast(self) -> float:
        """Forecast from a non-empty history."""


class PreviousWindow(Forecaster):
    """The last window's rate (the paper's forecaster)."""

    name = "previous"

    def _forecast(self) -> float:
        return self.history[-1]


class Ewma(Forecaster):
    """Exponentially weighted moving average: ``s = weight * x + (1 - weight) * s`` (first value: ``x``)."""

    name = "ewma"

    def __init__(self, weight: float = 0.5) -> None:
        super().__init__()
        if not (0 < weight <= 1):
            raise InputError(f"EWMA weight must be in (0, 1], got {weight}", field="weight")
        self.weight = weight

    def _forecast(self) -> float:
        s = self.history[0]
        for x in self.history[1:]:
            s = self.weight * x + (1.0 - self.weight) * s
        return s


class RecentQuantile(Forecaster):
    """The ``quantile`` of the last ``windows`` rates (linear interpolation); quantile 1 = the recent peak."""

    name = "quantile"

    def __init__(self, quantile: float = 0.9, windows: int = 12) -> None:
        super().__init__()
        if not (0 <= quantile <= 1) or windows < 1:
            raise InputError("quantile must be in [0, 1] and windows >= 1", field="quantile")
        self.quantile = quantile
        self.windows = windows

    def _forecast(self) -> float:
        return float(np.quantile(self.history[-self.windows :], self.quantile))


class RecentPeak(RecentQuantile):
    """The highest rate of the last ``windows`` windows (default 3: 15 minutes of 5-minute windows)."""

    name = "peak"

    def __init__(self, windows: int = 3) -> None:
        super().__init__(quantile=1.0, windows=windows)


#: Registry: name -> forecaster factory (keyword settings as in each class).
FORECASTERS: Registry[Callable[..., Forecaster]] = Registry("forecaster", field="forecaster")
FORECASTERS.register("previous", "the previous window's rate (the paper's forecast)")(PreviousWindow)
FORECASTERS.register("ewma", "exponentially weighted moving average of the window rates")(Ewma)
FORECASTERS.register("peak", "the highest rate of the last few windows")(RecentPeak)
FORECASTERS.register("quantile", "a quantile of the last few windows' rates")(RecentQuantile)


def make_forecaster(spec: str | Forecaster) -> Forecaster:
    """A forecaster by registry name (a fresh one), or the given instance."""
    if isinstance(spec, Forecaster):
        return spec
    return FORECASTERS.get(spec)()


def window_rates(trace: Trace, window_s: float) -> np.ndarray:
    """Arrival rate of each full window ``[k w, (k + 1) w)`` of the trace, req/s (a trailing partial window is
    dropped: its rate would be biased low)."""
    if not (math.isfinite(window_s) and window_s > 0):
        raise InputError(f"window must be > 0 s, got {window_s}", field="window-s")
    n_float = trace.duration_s / window_s
    if n_float > MAX_WINDOWS:
        raise InputError(
            f"windows of {window_s:g} s cut trace {trace.name!r} ({trace.duration_s:,.0f} s) into {n_float:.3g} "
            f"windows, more than the limit of {MAX_WINDOWS:,}; use a longer window",
            field="window-s",
        )
    n = math.floor(n_float + 1e-9)
    if n < 2:
        raise InputError(
            f"trace {trace.name!r} spans {trace.duration_s:.0f} s: fewer than 2 full windows of {window_s:g} s",
            field="window-s",
        )
    counts = np.histogram(trace.arrival_s, bins=np.arange(n + 1) * window_s)[0]
    return counts / window_s


@dataclass(frozen=True)
class ForecastScore:
    """A forecaster's error over a series of windows (every window after the first)."""

    name: str
    windows: int
    mape_pct: float
    """Mean absolute percentage error over windows with a non-zero rate, %."""
    under_forecast_pct: float
    """Share of windows whose forecast was below the actual rate, %."""
    mean_under_pct: float
    """Mean shortfall of the under-forecast windows, % of the actual rate (0 if none)."""
    bias_pct: float
    """Mean (forecast - actual) / actual, % (negative: forecasts low on average)."""


def score_forecaster(forecaster: Forecaster, rates: Sequence[float]) -> ForecastScore:
    """Replay ``rates`` through ``forecaster`` (observe, then forecast the next) and score its forecasts."""
    fc, act = [], []
    for k, r in enumerate(rates):
        if k > 0:
            f = forecaster.forecast()
            assert f is not None
            fc.append(f)
            act.append(r)
        forecaster.observe(float(r))
    f_arr, a_arr = np.asarray(fc), np.asarray(act)
    nz = a_arr > 0
    rel = (f_arr[nz] - a_arr[nz]) / a_arr[nz]
    under = f_arr < a_arr
    under_rel = rel[rel < 0]
    return ForecastScore(
        name=forecaster.name,
        windows=int(a_arr.size),
        mape_pct=100.0 * float(np.abs(rel).mean()) if rel.size else float("nan"),
        under_forecast_pct=100.0 * float(under.mean()) if under.size else float("nan"),
        mean_under_pct=-100.0 * float(under_rel.mean()) if under_rel.size else 0.0,
        bias_pct=100.0 * float(rel.mean()) if rel.size else float("nan"),
    )


def score_forecasters(trace: Trace, window_s: float, names: Sequence[str] | None = None) -> list[ForecastScore]:
    """Score each registered forecaster (or ``names``) on the trace's full windows."""
    rates = window_rates(trace, window_s)
    return [score_forecaster(make_forecaster(n), rates.tolist()) for n in (names or list(FORECASTERS.names()))]
