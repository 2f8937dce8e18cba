"""Shape features and the roofline-shaped regression of the clock-grid predictors.

Each phase describes a batch by a few sufficient statistics (the same ones the simulator keeps):

* prefill: ``num_seqs`` (prompts), ``tokens_sum`` (tokens), ``attn_pairs`` (causal query-key pairs);
* decode: ``batch_size`` (requests), ``context_sum`` (tokens of KV cache read).

At one SM clock and TP degree an iteration is a roofline: the weight GEMMs are memory-bound (a floor set by
streaming the weights) until the batch is large enough, then compute-bound (a slope in tokens); attention and KV
reads add linear terms. So latency at a fixed clock is piecewise linear with one bend ("knot") on the batch-size
variable::

    latency = a0 + a . raw + a_h * max(0, raw[h] - knot)

Energy per iteration (power x latency) is a sum of bucket times x bucket powers, so it is piecewise linear with
the same knot, plus a step there (the GEMMs switch from the memory-bound to the compute-bound power draw at the
bend); power is predicted as energy / latency. The knot is fitted per clock by a 1-D search (the bend
moves with the clock: compute gets slower as f falls, streaming does not); the other coefficients by least squares
on relative error.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Raw statistics per phase, in the column order of the raw feature matrix.
RAW_FEATURES: dict[str, tuple[str, ...]] = {
    "prefill": ("num_seqs", "tokens_sum", "attn_pairs"),
    "decode": ("batch_size", "context_sum"),
}
RAW_UNITS: dict[str, str] = {
    "num_seqs": "sequences",
    "tokens_sum": "tokens",
    "attn_pairs": "query-key pairs",
    "batch_size": "requests",
    "context_sum": "tokens",
}
#: Which raw statistic carries the roofline bend (the GEMMs' row count), per phase.
HINGE_FEATURE = {"prefill": 1, "decode": 0}
#: Rows with power above this fraction of the ceiling count as throttled (on the power plateau).
CEILING_BAND = 0.98
#: Knot candidates tried per clock (log-spaced over the hinge feature's training range).
KNOT_CANDIDATES = 48


def raw_from_profile(phase: str, df: pd.DataFrame) -> np.ndarray:
    """Raw feature matrix (K, R) of validated profile rows of one phase."""
    if phase == "prefill":
        cols = [df["batch_size"], df["input_len_sum"], df["attn_pairs"]]
    else:
        cols = [df["batch_size"], df["context_len_sum"]]
    return np.column_stack([c.to_numpy(np.float64) for c in cols])


def design(phase: str, raw: np.ndarray, knot: float, *, step: bool = False) -> np.ndarray:
    """Design matrix ``[1, raw..., max(0, raw[h] - knot)]`` (K, R + 2), plus ``[raw[h] > knot]`` with ``step``."""
    h = raw[:, HINGE_FEATURE[phase]]
    cols = [np.ones(raw.shape[0]), *raw.T, np.maximum(h - knot, 0.0)]
    if step:
        cols.append((h > knot).astype(np.float64))
    return np.column_stack(cols)


def fit_weighted_ls(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Least squares on *relative* error (rows scaled by 1/y), since accuracy is judged by MAPE.

    Columns are normalised before solving (conditioning). Returns (coefficients in original units, sum of
    squared relative residuals).
    """
    a = x / y[:, None]
    scale = np.max(np.abs(a), axis=0)
    scale[scale == 0] = 1.0
    sol, *_ = np.linalg.lstsq(a / scale, np.ones_like(y), rcond=None)
    coef = np.asarray(sol / scale, dtype=np.float64)
    resid = a @ coef - 1.0
    return coef, float(resid @ resid)


def estimate_power_ceiling(power_w: np.ndarray) -> float:
    """The sustained power the GPU's power controller holds under heavy load, W (the profile's power plateau).

    Taken as the 98th percentile of all measured powers: when the profile reaches the power limit many rows sit
    on the plateau; when it does not, this merely trims the top 2 %.
    """
    return float(np.quantile(power_w, 0.98))


def fit_clock(
    phase: str,
    raw: np.ndarray,
    latency_s: np.ndarray,
    energy_j: np.ndarray,
    power_ceiling_w: float | None = None,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Fit one clock: returns (knot, latency coefficients (R + 2,), energy coefficients (R + 3,)).

    With ``power_ceiling_w``, rows on the power plateau are left out of the energy fit (see below).
    The knot minimises the latency fit's relative residual over log-spaced candidates; a knot at the top of the
    range means "no bend seen" (the hinge column is then all zero and its coefficient 0).
    """
    h = raw[:, HINGE_FEATURE[phase]]
    lo, hi = float(h.min()), float(h.max())
    cands = np.unique(np.geomspace(max(lo, 1.0), max(hi, 1.0), KNOT_CANDIDATES))
    best: tuple[float, float, np.ndarray] | None = None
    for k in cands:
        coef, sse = fit_weighted_ls(design(phase, raw, float(k)), latency_s)
        if best is None or sse < best[1] - 1e-15:
            best = (float(k), sse, coef)
    assert best is not None
    knot, _, lat_coef = best
    x_e = design(phase, raw, knot, step=True)
    use = np.ones(raw.shape[0], dtype=bool)
    if power_ceiling_w is not None:
        # Rows on the power plateau are throttled (the clock was lowered to hold the cap): their power is only a
        # lower bound on the unthrottled law, and the prediction is capped at the ceiling. Censored fit: start
        # without them, then add back those the law predicts *below* the plateau (they bind), a few rounds.
        capped = energy_j / latency_s >= CEILING_BAND * power_ceiling_w
        use = ~capped
        if use.sum() < x_e.shape[1] + 4:
            use[:] = True
    e_coef, _ = fit_weighted_ls(x_e[use], energy_j[use])
    if power_ceiling_w is not None and not use.all():
        for _ in range(4):
            below = capped & (x_e @ e_coef < CEILING_BAND * power_ceiling_w * latency_s)
            new_use = ~capped | below
            if np.array_equal(new_use, use):
                break
            use = new_use
            e_coef, _ = fit_weighted_ls(x_e[use], energy_j[use])
    return knot, lat_coef, e_coef
