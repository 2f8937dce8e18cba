"""Forecasters on known series, window rates, scores and the registry."""

from __future__ import annotations

import numpy as np
import pytest

from biscale.errors import InputError
from biscale.plan.forecast import (
    FORECASTERS,
    Ewma,
    PreviousWindow,
    RecentPeak,
    RecentQuantile,
    make_forecaster,
    score_forecaster,
    score_forecasters,
    window_rates,
)
from biscale.workload import Trace


def _feed(f, series):  # type: ignore[no-untyped-def]
    out = []
    for x in series:
        f.observe(x)
        out.append(f.forecast())
    return out


def test_known_series() -> None:
    s = [10.0, 20.0, 30.0, 10.0]
    assert _feed(PreviousWindow(), s) == s
    assert _feed(Ewma(0.5), s) == [10.0, 15.0, 22.5, 16.25]
    assert _feed(RecentPeak(windows=2), s) == [10.0, 20.0, 30.0, 30.0]
    assert _feed(RecentQuantile(quantile=0.5, windows=3), s) == [10.0, 15.0, 20.0, 20.0]
    assert PreviousWindow().forecast(7.0) == 7.0 and PreviousWindow().forecast() is None


def test_scores_by_hand() -> None:
    rising = [10.0, 12.0, 15.0, 20.0]
    s = score_forecaster(PreviousWindow(), rising)
    errs = [2 / 12, 3 / 15, 5 / 20]
    assert s.windows == 3 and s.mape_pct == pytest.approx(100 * np.mean(errs))
    assert s.under_forecast_pct == 100.0 and s.mean_under_pct == pytest.approx(s.mape_pct)
    assert s.bias_pct == pytest.approx(-s.mape_pct)
    flat = score_forecaster(RecentPeak(), [5.0] * 6)
    assert flat.mape_pct == 0 and flat.under_forecast_pct == 0 and flat.mean_under_pct == 0


def test_window_rates_drop_the_partial_tail() -> None:
    arrivals = np.concatenate([np.linspace(0, 9.9, 50), np.linspace(10, 19.9, 100), [20.5]])
    tr = Trace(arrivals, np.ones(arrivals.size), np.ones(arrivals.size))
    assert window_rates(tr, 10.0).tolist() == [5.0, 10.0]
    with pytest.raises(InputError, match="fewer than 2 full windows"):
        window_rates(tr, 15.0)
    with pytest.raises(InputError, match="window must be > 0"):
        window_rates(tr, 0.0)


def test_registry_and_bundled_trace_scores() -> None:
    assert set(FORECASTERS) == {"previous", "ewma", "peak", "quantile"}
    assert make_forecaster("ewma").name == "ewma"
    with pytest.raises(InputError, match="unknown forecaster 'oracle'"):
        make_forecaster("oracle")
    from biscale.workload import load_trace

    scores = {s.name: s for s in score_forecasters(load_trace("azure-conv"), 300.0)}
    assert all(s.windows == 10 for s in scores.values())
    # the peak forecaster trades accuracy for fewer or equal under-forecasts and a positive bias
    assert scores["peak"].under_forecast_pct <= scores["previous"].under_forecast_pct
    assert scores["peak"].bias_pct > scores["previous"].bias_pct
    with pytest.raises(InputError):
        PreviousWindow().observe(-1.0)
    with pytest.raises(InputError):
        Ewma(0.0)
