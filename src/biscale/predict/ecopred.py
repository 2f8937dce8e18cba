"""EcoPred: VoltanaLLM's latency predictor, refitted in its own form on the profile biscale's predictors come from.

VoltanaLLM (Yu, Taneja, Lin, Zhang; arXiv 2509.04827) predicts one iteration's latency with per-clock linear
regressions fitted on a profile (facts from its source, Supercomputing-System-AI-Lab/VoltanaLLM at commit
274173238ba0: ``python/sglang/srt/managers/lookup_table.py`` and the fitting notebooks
``voltana-llm-scripts/predictions/{prefill,decode}/draw.ipynb``):

* prefill, per profiled clock: ``latency = a * tokens + c``, tokens = the batch's new tokens;
* decode, per profiled clock and batch-size segment: ``latency = a * batch + b * tokens + c`` with ``a, b >= 0``,
  tokens = the batch's context sum; the segments end at 4, 8, 16, 24, ..., 128 (every 8) and then every 128 up to
  2,048 (the decode engine's batch tiles);
* a clock between two profiled clocks is interpolated linearly between them (beyond the ends, from the nearest
  two); a batch size in no segment has no prediction (EcoFreq then skips that clock); a prediction <= 0 reads as
  20 ms.

Fitted here on the simulated profile the bundled predictor is fitted on (``biscale profile --backend sim``, seed 0:
src/biscale/predict/data/README.md), so VoltanaLLM and BiScale believe the same measurements, each in its own form.
Two departures, both forced by that profile: least squares with non-negative slopes (the intercept free, as
scikit-learn's ``LinearRegression(positive=True)`` the notebooks use) without RANSAC, because the simulated profile's
only noise is a 2 % latency jitter, nothing to reject; and a segment holding fewer than :data:`MIN_SEGMENT_SHAPES`
profiled shapes is merged with the next one (VoltanaLLM profiles every batch size; this profile has 64 decode shapes
per TP spread log-uniformly over 1-512 requests, so most 8-wide segments hold none or one).

The low end of VoltanaLLM's clock list is the energy "sweet spot" (its launch scripts: 1,005 and 1,410 MHz on the
A100, the bottom of the U-shaped energy-frequency curve of the paper's Fig. 1): :meth:`EcoPred.sweet_spot_mhz` is
that clock on this profile, the median over the profiled shapes of one phase and TP of each shape's clock of least
energy per iteration.
"""

from __future__ import annotations

import bisect
import statistics
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from biscale.errors import InputError

#: Upper ends of VoltanaLLM's decode batch-size segments (``draw.ipynb``'s ``steps_end``), requests.
DECODE_SEGMENT_ENDS: tuple[int, ...] = (4, *range(8, 129, 8), *range(256, 2049, 128))
#: Fewest profiled shapes a decode segment is fitted on (twice its three coefficients); smaller ones merge upward.
MIN_SEGMENT_SHAPES = 6
#: What a non-positive prediction reads as, seconds (VoltanaLLM's lookup table: 20 ms).
NONPOSITIVE_LATENCY_S = 0.020


def _fit_positive(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Least squares with slopes >= 0 and a free intercept (centred, as scikit-learn's ``positive=True``)."""
    xm, ym = x.mean(axis=0), float(y.mean())
    coef, _ = nnls(x - xm, y - ym)
    return coef, ym - float(coef @ xm)


def merge_segments(batch_sizes: np.ndarray, ends: tuple[int, ...] = DECODE_SEGMENT_ENDS) -> list[tuple[int, int]]:
    """The decode segments ``(first, last)`` batch size actually fitted: the published ones, each merged with the
    next until it holds at least :data:`MIN_SEGMENT_SHAPES` of ``batch_sizes`` (a short remainder joins the last);
    segments above the largest profiled batch are dropped (no prediction there, as in VoltanaLLM)."""
    top = int(batch_sizes.max())
    out: list[tuple[int, int]] = []
    lo = 1
    for end in ends:
        count = int(np.count_nonzero((batch_sizes >= lo) & (batch_sizes <= end)))
        if count >= MIN_SEGMENT_SHAPES or end >= top:
            if count < MIN_SEGMENT_SHAPES and out:
                out[-1] = (out[-1][0], end)
            else:
                out.append((lo, end))
            lo = end + 1
            if end >= top:
                break
    return out


@dataclass(frozen=True)
class _PhaseTable:
    """One phase and TP: profiled clocks, decode segments (prefill: one), coefficients per clock and segment."""

    clocks: tuple[int, ...]
    seg_last: tuple[int, ...]
    """Last batch size of each segment, ascending."""
    seg_first: int
    """First batch size of the first segment."""
    coef: tuple[tuple[tuple[float, float, float], ...], ...]
    """``coef[clock][segment]`` = (per request, per token, intercept) in seconds."""


class EcoPred:
    """VoltanaLLM's per-clock linear latency tables, by (phase, TP); see the module docstring."""

    def __init__(self, tables: dict[tuple[str, int], _PhaseTable], sweet_spots: dict[tuple[str, int], int]) -> None:
        self.tables = tables
        self._sweet = sweet_spots
        self._interp: dict[tuple[str, int, int], tuple[int, int, float]] = {}

    def tps(self, phase: str) -> tuple[int, ...]:
        """TP degrees with a table for ``phase``."""
        return tuple(sorted(tp for p, tp in self.tables if p == phase))

    def _table(self, phase: str, tp: int) -> _PhaseTable:
        try:
            return self.tables[(phase, tp)]
        except KeyError:
            raise InputError(f"EcoPred has no {phase} table for TP{tp} (profiled: {list(self.tps(phase))})") from None

    def sweet_spot_mhz(self, phase: str, tp: int) -> int:
        """The profiled clock of least energy per iteration, median over the profile's shapes of (phase, TP), MHz."""
        self._table(phase, tp)
        return self._sweet[(phase, tp)]

    def _weights(self, phase: str, tp: int, clock: int) -> tuple[int, int, float]:
        """(lower table index, upper table index, weight of the upper) for ``clock``: exact, between two profiled
        clocks, or extrapolated from the nearest two."""
        key = (phase, tp, clock)
        hit = self._interp.get(key)
        if hit is None:
            clocks = self._table(phase, tp).clocks
            if clock in clocks:
                i = clocks.index(clock)
                hit = (i, i, 0.0)
            else:
                j = min(max(bisect.bisect_left(clocks, clock), 1), len(clocks) - 1)
                hit = (j - 1, j, (clock - clocks[j - 1]) / (clocks[j] - clocks[j - 1]))
            self._interp[key] = hit
        return hit

    def latency_s(self, phase: str, tp: int, clock_mhz: int, batch_size: float, tokens: float) -> float | None:
        """Predicted latency of one iteration, seconds; None for a decode batch in no segment (prefill ignores
        ``batch_size``: its table has one segment)."""
        tab = self._table(phase, tp)
        if phase == "prefill":
            s = 0
        else:
            if batch_size < tab.seg_first:
                return None
            s = bisect.bisect_left(tab.seg_last, batch_size)
            if s == len(tab.seg_last):
                return None
        lo, hi, w = self._weights(phase, tp, clock_mhz)
        a0, b0, c0 = tab.coef[lo][s]
        lat = a0 * batch_size + b0 * tokens + c0
        if w:
            a1, b1, c1 = tab.coef[hi][s]
            lat += w * (a1 * batch_size + b1 * tokens + c1 - lat)
        return lat if lat > 0 else NONPOSITIVE_LATENCY_S


def _sweet_spot(rows: pd.DataFrame, shape_cols: list[str]) -> int:
    """The lower median (a profiled clock) of each shape's clock of least energy per iteration, MHz."""
    best = rows.loc[rows.groupby(shape_cols)["energy_j"].idxmin(), "sm_clock_mhz"]
    return int(statistics.median_low(best.tolist()))


def fit_ecopred(profile: pd.DataFrame) -> EcoPred:
    """EcoPred's tables fitted on a profile (the :mod:`biscale.predict.schema` columns), every (phase, TP) in it."""
    tables: dict[tuple[str, int], _PhaseTable] = {}
    sweet: dict[tuple[str, int], int] = {}
    for key, rows in profile.groupby(["phase", "tp"], sort=True):
        phase, tp = str(key[0]), int(key[1])  # type: ignore[call-overload]
        clocks = tuple(int(c) for c in sorted(rows["sm_clock_mhz"].unique()))
        tok_col = "input_len_sum" if phase == "prefill" else "context_len_sum"
        if phase == "prefill":
            segments = [(1, int(rows["batch_size"].max()))]
        else:
            first = rows[rows["sm_clock_mhz"] == clocks[0]]
            segments = merge_segments(first["batch_size"].to_numpy(np.int64))
        coef: list[tuple[tuple[float, float, float], ...]] = []
        for clk in clocks:
            at = rows[rows["sm_clock_mhz"] == clk]
            bs = at["batch_size"].to_numpy(np.float64)
            tok = at[tok_col].to_numpy(np.float64)
            lat = at["latency_s"].to_numpy(np.float64)
            per_seg: list[tuple[float, float, float]] = []
            for lo, hi in segments:
                sel = (bs >= lo) & (bs <= hi)
                if phase == "prefill":
                    (b,), c = _fit_positive(tok[sel, None], lat[sel])
                    per_seg.append((0.0, float(b), c))
                else:
                    (a, b), c = _fit_positive(np.column_stack([bs[sel], tok[sel]]), lat[sel])
                    per_seg.append((float(a), float(b), c))
            coef.append(tuple(per_seg))
        tables[(phase, tp)] = _PhaseTable(clocks, tuple(hi for _, hi in segments), segments[0][0], tuple(coef))
        sweet[(phase, tp)] = _sweet_spot(rows, ["batch_size", tok_col])
    if not tables:
        raise InputError("EcoPred: the profile has no rows")
    return EcoPred(tables, sweet)


@lru_cache(maxsize=4)
def default_ecopred(gpu: str = "h100-sxm", model: str = "llama-3.3-70b") -> EcoPred:
    """EcoPred fitted on the default simulated profile of (gpu, model), the profile the bundled predictor is fitted
    on (same backend, length mix, shapes, clocks and seed); built once per process (~1 s)."""
    from biscale.predict.profilers import PROFILERS, ProfileRequest, load_length_mix

    profiler = PROFILERS.get("sim")()
    inputs, outputs, label = load_length_mix("sharegpt-v3")
    request = profiler.prepare(
        ProfileRequest(gpu=gpu, model=model, input_lengths=inputs, output_lengths=outputs, lengths_label=label)
    )
    profile, _ = profiler.run(request, lambda k: None)
    return fit_ecopred(profile)
