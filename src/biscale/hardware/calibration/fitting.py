"""Fitting the H100 constants to the allowed data, and the leave-one-dataset-out errors stored beside them.

:func:`fit_constants` derives every fitted constant of ``data/fitted/h100-sxm.json``: the all-reduce law from the
DGX all-reduce table, then everything else in a joint least-squares fit to the datasets of :data:`FIT_DATASETS`,
in two stages: stage 1 fits the clock-dependence constants (:data:`CLOCK_PARAMS`) on the datasets that vary the
clock and those fitted with them before the top-clock-only lent-H100 decode power joined; stage 2 fits the rest to
all of them, the lent-H100 decode power included, with stage 1's clock-dependence constants fixed. The
eager-PyTorch launch time is fitted after it, alone. :func:`lodo_errors` refits once per
dataset with that dataset left out. The ML.ENERGY Llama-3.3-70B points are reserved for validation: no residual
reads them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from biscale.hardware.calibration import comparisons as cmp
from biscale.hardware.calibration.checks import CHECK_BY_NAME
from biscale.hardware.calibration.comparisons import Comparison, mape_pct
from biscale.hardware.calibration.datasets import (
    GPU,
    MLENERGY_PROMPT_TOKENS,
    MODEL_L2,
    RUNNING_OUTPUT_FACTOR,
    Datasets,
    load_datasets,
)
from biscale.hardware.calibration.transfer import NVLINK_RATIO, POWER_NAMES, transfer_constants
from biscale.hardware.constants import FittedConstants, constants_path, constants_to_json, load_constants
from biscale.hardware.specs import load_gpu, load_model

#: Cited: latency of vLLM's custom all-reduce (the one its CUDA-graphed decode uses for small messages) on H100,
#: 32 KB message, TP 2/4/8: 8.7 / 9.2 / 11.8 us (sgl-project/sglang PR #2904, "vllm" table, measured without
#: CUDA graphs, so an upper bound). Consistent with vllm-project/vllm PR #24532 (H100 TP4, hidden 8192: best
#: 10 us at 0.5 MB, 28 us at 4 MB, vs 9.2 us + bytes / the NCCL bandwidth fitted here: 11 / 26 us).
ALLREDUCE_GRAPH_LATENCY_S = {"2": 8.7e-6, "4": 9.2e-6, "8": 11.8e-6}
#: Measured on a real H100 80GB HBM3 (data/measured/h100-sxm/2026-11-26/governor.json, scripts/measure_governor.py):
#: under the default governor a GPU whose process holds a CUDA context (as a serving engine always does) stayed at
#: 1,980 MHz for all 25 s of idleness in 3 of 3 runs, so the drop to the deep idle clock comes no sooner (a lower
#: bound; the deep idle of 345 MHz / ~74 W was seen only with no process on the GPU), s.
GOVERNOR_DOWNCLOCK_AFTER_S = 25.0
#: The same runs: a 4096^3 bf16 product right after the idle took 0.118 ms (median of 3) longer than on a warm GPU, s.
GOVERNOR_WAKE_DELAY_S = 0.000118


@dataclass(frozen=True)
class Param:
    """One fitted constant of the joint fit: starting point, bounds, scale, and its value when no fitted dataset
    constrains it (leave-one-dataset-out fits pin it there)."""

    name: str
    x0: float
    lo: float
    hi: float
    neutral: float
    scale: float = 1.0


#: The joint fit's parameters (fixed starting points: a refit reproduces the stored file).
PARAMS: tuple[Param, ...] = (
    Param("gemm_efficiency", 0.7, 0.3, 1.0, 0.7),
    Param("hbm_efficiency", 0.9, 0.5, 1.0, 0.9),
    Param("elementwise_efficiency", 0.6, 0.2, 1.0, 0.6),
    Param("roofline_sharpness", 3.0, 1.0, 30.0, 30.0),
    Param("gemm_fixed_s", 5.0, 0.0, 50.0, 5.0, 1e-6),
    Param("elementwise_fixed_s", 3.0, 0.0, 50.0, 3.0, 1e-6),
    Param("memory_clock_knee_frac", 0.45, 0.05, 0.95, 0.05),
    Param("memory_clock_exponent", 3.0, 1.0, 10.0, 3.0),
    Param("engine_step_s", 500.0, 0.0, 20000.0, 0.0, 1e-6),
    Param("engine_per_seq_s", 30.0, 0.0, 500.0, 0.0, 1e-6),
    Param("static_power_w", 60.0, 0.0, 300.0, 60.0),
    Param("idle_dynamic_power_w", 110.0, 0.0, 400.0, 110.0),
    Param("voltage_knee_frac", 0.6, 0.3, 0.95, 0.6),
    Param("voltage_rise", 0.3, 0.0, 1.0, 0.3),
    Param("compute_power_w", 700.0, 0.0, 2000.0, 700.0),
    Param("memory_power_w", 100.0, 0.0, 1000.0, 100.0),
    Param("busy_power_w", 300.0, 0.0, 1000.0, 300.0),
    Param("eager_host_layer_s", 500.0, 10.0, 5000.0, 500.0, 1e-6),
    Param("eager_host_sharpness", 4.0, 1.0, 30.0, 4.0),
)

#: The constants only clock-varying data can pin (the idle and prefill power-vs-clock tables, the A100 decode clock
#: sweep): the idle power's static/clock-scaled split, the voltage curve, the clock-scaled active power ``P_b`` and the
#: memory-bound slow-down at low clocks. Top-clock power cannot tell ``P_b`` (scales with the clock) from
#: ``memory_power_w`` (does not): in a memory-bound decode step active-SM time and HBM time are nearly the same.
#: Fitted in stage 1 only, held in stage 2.
CLOCK_PARAMS = (
    "static_power_w",
    "idle_dynamic_power_w",
    "voltage_knee_frac",
    "voltage_rise",
    "busy_power_w",
    "memory_clock_knee_frac",
    "memory_clock_exponent",
)

_LATENCY = (
    "gemm_efficiency",
    "hbm_efficiency",
    "elementwise_efficiency",
    "roofline_sharpness",
    "gemm_fixed_s",
    "elementwise_fixed_s",
)

#: vidur GEMM points in the weight-streaming regime (memory-bound: tokens <= this), used by :func:`fit_streaming`.
STREAMING_MAX_TOKENS = 64


def fit_streaming(ds: Datasets) -> dict[str, float]:
    """HBM efficiency and fixed time per GEMM from vidur's four GEMMs at <= 64 tokens, where they stream their
    weights: ``time = 4 tau_g + weight bytes / (eta_m B)`` across TP 1/2/4/8 (least squares on relative error).

    Done apart from the joint fit because the compute-bound points (tile and wave quantisation, +-20 %
    around any smooth law) would otherwise trade the fixed time against the bandwidth.
    """
    m, g = load_model(MODEL_L2), load_gpu(GPU)
    v = ds.vidur[ds.vidur["num_tokens"] <= STREAMING_MAX_TOKENS]
    tp = v["tp"].to_numpy(float)
    n = v["num_tokens"].to_numpy(float)
    h, d = m.hidden_size, m.head_dim
    heads, kv_heads, mlp = m.num_heads / tp, np.maximum(m.num_kv_heads / tp, 1.0), m.intermediate_size / tp
    act = (h + (heads + 2 * kv_heads) * d) + (heads * d + h) + (h + 2 * mlp) + (mlp + h)
    nbytes = m.dtype_bytes * (m.layer_linear_params / tp + n * act)
    y = v["gemm_s"].to_numpy(float)
    design = np.column_stack([4.0 * np.ones_like(nbytes), nbytes / g.hbm_bandwidth_bytes_per_s]) / y[:, None]
    (tau, inv_eta), *_ = np.linalg.lstsq(design, np.ones_like(y), rcond=None)
    return {"gemm_fixed_s": float(tau), "hbm_efficiency": float(1.0 / inv_eta)}


@dataclass(frozen=True)
class FitDataset:
    """A dataset the joint fit uses: the comparisons that are its fit residuals, the checks that report it, the
    parameters it informs, and those it determines on its own before the joint fit (``prefit``)."""

    name: str
    file: str
    residuals: tuple[Callable[[FittedConstants, Datasets], Comparison], ...]
    checks: tuple[str, ...]
    """Names of the checks (:data:`~biscale.hardware.calibration.checks.CHECKS`) that report it."""
    params: tuple[str, ...]
    prefit: Callable[[Datasets], dict[str, float]] | None = None
    after_joint: bool = False
    """Fitted after the joint fit, its parameters alone (they describe a measurement stack, not the GPU: its
    residuals must not pull the GPU's constants)."""
    clock_stage: bool = True
    """Used in stage 1, which fits :data:`CLOCK_PARAMS`; False for top-clock-only data that joins in stage 2 (it
    cannot separate clock-scaled from clock-independent power, so it must not move the clock-dependence)."""


FIT_DATASETS: tuple[FitDataset, ...] = (
    FitDataset(
        "vidur_mlp",
        "vidur_h100_llama2_70b_mlp.csv",
        (cmp.compare_vidur_gemm, cmp.compare_vidur_elementwise),
        ("vidur_mlp",),
        _LATENCY,
        fit_streaming,
    ),
    FitDataset(
        "a100_decode_sweep",
        "a100_gemma2_27b_tp2_latency_vs_freq.json",
        (cmp.compare_a100_decode,),
        ("a100_decode_clock_shape",),
        ("memory_clock_knee_frac", "memory_clock_exponent"),
    ),
    FitDataset(
        "mlenergy_8b",
        "mlenergy_h100_llama31_8b_tp1_decode.csv",
        (cmp.compare_mlenergy_8b_time, cmp.compare_mlenergy_8b_power),
        ("mlenergy_8b_step_time", "mlenergy_8b_power"),
        (*_LATENCY, "engine_step_s", "engine_per_seq_s", *POWER_NAMES),
    ),
    FitDataset(
        "prefill_power",
        "llama3_70b_prefill_power_vs_freq.csv",
        (cmp.compare_prefill_power,),
        ("prefill_power",),
        POWER_NAMES,
    ),
    FitDataset(
        "idle_power",
        "llama3_70b_idle_power_vs_freq.csv",
        (cmp.compare_idle_power,),
        ("idle_power",),
        ("static_power_w", "idle_dynamic_power_w", "voltage_knee_frac", "voltage_rise"),
    ),
    FitDataset(
        "h100_eager_prefill",
        "data/measured/h100-sxm/2026-11-26/profile.csv (prefill < 1,000 tokens, TP 2/8)",
        (cmp.compare_h100_prefill_short_fit,),
        ("h100_prefill_short_fit",),
        ("eager_host_layer_s", "eager_host_sharpness"),
        after_joint=True,
    ),
    FitDataset(
        "h100_decode_power",
        "data/measured/h100-sxm/2026-11-26/decode_graphs.csv (power, batch >= 32, TP 2/8)",
        (cmp.compare_h100_decode_power_fit,),
        ("h100_decode_power_fit",),
        POWER_NAMES,
        clock_stage=False,
    ),
)


def fit_allreduce(ds: Datasets) -> tuple[dict[str, float], dict[str, float]]:
    """All-reduce ``time = a_t + bytes / bw_t`` per TP, least squares on relative error over all sizes."""
    lat: dict[str, float] = {}
    bw: dict[str, float] = {}
    for tp in sorted(set(ds.allreduce["tp"].tolist())):
        grp = ds.allreduce[ds.allreduce["tp"] == tp]
        x = grp["size_bytes"].to_numpy(float)
        y = grp["time_s"].to_numpy(float)

        def resid(p: np.ndarray, x: np.ndarray = x, y: np.ndarray = y) -> np.ndarray:
            return (p[0] * 1e-6 + x / (p[1] * 1e9)) / y - 1.0

        r = least_squares(resid, x0=[30.0, 200.0], bounds=([0.0, 1.0], [1e3, 1e4]))
        lat[str(int(tp))] = float(r.x[0] * 1e-6)
        bw[str(int(tp))] = float(r.x[1] * 1e9)
    return lat, bw


def power_cap_fraction(ds: Datasets, limit_w: float) -> float:
    """Mean plateau power / limit: the prefill-power points within 2 % of the limit are the throttled ones."""
    p = ds.prefill_power["power_w"].to_numpy(float)
    plateau = p[p >= 0.98 * limit_w]
    return float(plateau.mean() / limit_w)


def _with(base: FittedConstants, values: dict[str, float]) -> FittedConstants:
    return dataclasses.replace(base, **values)  # type: ignore[arg-type]


def _residuals(c: FittedConstants, ds: Datasets, datasets: tuple[FitDataset, ...]) -> np.ndarray:
    """Relative errors of every point of ``datasets``, each dataset's vector scaled by 1/sqrt(points) so that
    every dataset (not every point) weighs the same in the fit."""
    parts = []
    for d in datasets:
        for compare in d.residuals:
            res = compare(c, ds)
            r = res.predicted / res.measured - 1.0
            parts.append(r / math.sqrt(len(r)))
    return np.concatenate(parts)


def fit_joint(ds: Datasets, base: FittedConstants, datasets: tuple[FitDataset, ...] = FIT_DATASETS) -> FittedConstants:
    """Least-squares fit of :data:`PARAMS` to ``datasets`` after their ``prefit`` stages, in two stages, then of the
    ``after_joint`` datasets' own parameters.

    Stage 1 fits every parameter to the ``clock_stage`` datasets; stage 2 (only if some dataset is not
    ``clock_stage``) refits all but :data:`CLOCK_PARAMS` to all joint datasets, those held at stage 1's values.
    Parameters no dataset of a stage informs are pinned at their neutral value (that is how a leave-one-dataset-out
    fit treats what only the left-out dataset determines).
    """
    joint = tuple(d for d in datasets if not d.after_joint)
    prefitted: dict[str, float] = {}
    for d in joint:
        if d.prefit is not None:
            prefitted.update(d.prefit(ds))
    later = {p for d in datasets if d.after_joint for p in d.params}
    stage1 = tuple(d for d in joint if d.clock_stage)
    c = _fit_stage(ds, base, stage1, later, prefitted, held={})
    if len(stage1) < len(joint):
        held = {p: float(getattr(c, p)) for p in CLOCK_PARAMS}
        c = _fit_stage(ds, c, joint, later, prefitted, held=held)
    for d in datasets:
        if d.after_joint:
            c = _least_squares(ds, c, (d,), [p for p in PARAMS if p.name in d.params], {})
    return c


def _fit_stage(
    ds: Datasets,
    base: FittedConstants,
    datasets: tuple[FitDataset, ...],
    later: set[str],
    prefitted: dict[str, float],
    held: dict[str, float],
) -> FittedConstants:
    """One stage of the joint fit: the parameters ``datasets`` inform, less ``later``, ``prefitted`` and ``held``,
    fitted to them; the uninformed pinned neutral. A stage after the first starts from ``base``'s values."""
    informed = {p for d in datasets for p in d.params}
    pinned = {p.name: p.neutral * p.scale for p in PARAMS if p.name not in informed or p.name in later}
    pinned.update(prefitted)
    pinned.update(held)
    free = [p for p in PARAMS if p.name not in pinned]
    return _least_squares(ds, base, datasets, free, pinned, start=base if held else None)


def _least_squares(
    ds: Datasets,
    base: FittedConstants,
    datasets: tuple[FitDataset, ...],
    free: list[Param],
    pinned: dict[str, float],
    start: FittedConstants | None = None,
) -> FittedConstants:
    """``base`` with ``free`` fitted to the residuals of ``datasets`` and ``pinned`` set, starting from ``start``'s
    values (else the parameters' fixed starting points)."""

    def consts(x: np.ndarray) -> FittedConstants:
        values = {p.name: float(v) * p.scale for p, v in zip(free, x, strict=True)}
        values.update(pinned)
        return _with(base, values)

    if not free:
        return consts(np.zeros(0))
    x0 = [p.x0 if start is None else min(max(getattr(start, p.name) / p.scale, p.lo), p.hi) for p in free]
    r = least_squares(
        lambda x: _residuals(consts(x), ds, datasets),
        x0=x0,
        bounds=([p.lo for p in free], [p.hi for p in free]),
        x_scale="jac",
    )
    return consts(r.x)


def fit_constants(data_root: Path | None = None, base: FittedConstants | None = None) -> FittedConstants:
    """Fit every data-derived constant of the H100 SXM model and record the sources."""
    ds = load_datasets(data_root)
    c = base if base is not None else load_constants(GPU)
    lat, bw = fit_allreduce(ds)
    c = dataclasses.replace(
        c,
        allreduce_latency_s=lat,
        allreduce_bandwidth_bytes_per_s=bw,
        allreduce_graph_latency_s=dict(ALLREDUCE_GRAPH_LATENCY_S),
        power_cap_fraction=power_cap_fraction(ds, load_gpu(GPU).power_limit_w),
        governor_downclock_after_s=GOVERNOR_DOWNCLOCK_AFTER_S,
        governor_wake_delay_s=GOVERNOR_WAKE_DELAY_S,
    )
    c = fit_joint(ds, c)
    stage1 = " + ".join(d.file for d in FIT_DATASETS if not d.after_joint and d.clock_stage)
    added = " + ".join(d.file for d in FIT_DATASETS if not d.after_joint and not d.clock_stage)
    streaming = sorted(fit_streaming(ds))
    later = {p: d.file for d in FIT_DATASETS if d.after_joint for p in d.params}
    rest = [p.name for p in PARAMS if p.name not in streaming and p.name not in later and p.name not in CLOCK_PARAMS]
    sources = {
        ", ".join(
            streaming
        ): f"fit_streaming: vidur_h100_llama2_70b_mlp.csv, GEMMs at <= {STREAMING_MAX_TOKENS} tokens",
        "allreduce_latency_s, allreduce_bandwidth_bytes_per_s": "fit_allreduce: vidur_h100_dgx_all_reduce.csv",
        "allreduce_graph_latency_s": (
            "cited: vLLM custom all-reduce on H100, 32 KB, TP 2/4/8 (sgl-project/sglang PR #2904); consistent with "
            "vllm-project/vllm PR #24532 (H100 TP4, 0.5-4 MB)"
        ),
        ", ".join(CLOCK_PARAMS): (
            f"fit_joint stage 1 (clock dependence, only clock-varying data pins it): {stage1}; held in stage 2"
        ),
        ", ".join(rest): (f"fit_joint stage 2 (stage 1's clock-dependence constants held): {stage1} + {added}"),
        ", ".join(later): "fit_joint, after the joint fit (the other constants fixed): "
        + ", ".join(sorted(set(later.values()))),
        "attention_efficiency": (
            "cited: FlashAttention-2 forward reaches ~35 % of H100 dense BF16 peak (Shah et al., FlashAttention-3, "
            "arXiv 2407.08608, fig. 'attention forward speed')"
        ),
        "attention_fixed_s": (
            "assumed: one ~10 us attention kernel per layer (same order as the fitted GEMM fixed time)"
        ),
        "governor_downclock_after_s, governor_wake_delay_s": (
            "measured on a real H100 80GB HBM3 with a CUDA context held (data/measured/h100-sxm/2026-11-26/"
            "governor.json): no drop from 1,980 MHz in 25 s of idleness (a lower bound), 0.118 ms added to the "
            "first kernel after it"
        ),
        "power_cap_fraction": "power_cap_fraction: plateau of llama3_70b_prefill_power_vs_freq.csv",
        "ML.ENERGY request lengths": (
            f"assumed prompt {MLENERGY_PROMPT_TOKENS} tokens (LMSYS-Chat-1M, arXiv 2309.11998), running output "
            f"{RUNNING_OUTPUT_FACTOR:.3f} x the measured mean output (ShareGPT v3 output-length CV 1.05)"
        ),
    }
    return dataclasses.replace(c, sources=sources)


def lodo_errors(data_root: Path | None = None, consts: FittedConstants | None = None) -> dict[str, float]:
    """Leave-one-dataset-out error (MAPE, %) of every check of every fitted dataset: the error on that dataset of
    the model fitted to the others (parameters only it informs pinned at their neutral values)."""
    ds = load_datasets(data_root)
    c = consts if consts is not None else load_constants(GPU)
    out: dict[str, float] = {}
    for left in FIT_DATASETS:
        others = tuple(d for d in FIT_DATASETS if d is not left)
        refit = fit_joint(ds, c, others)
        for name in left.checks:
            res = CHECK_BY_NAME[name].compare(refit, ds)
            out[name] = mape_pct(res.predicted, res.measured)
    return out


def write_constants(c: FittedConstants, path: Path | None = None, lodo: dict[str, float] | None = None) -> Path:
    path = path if path is not None else constants_path(GPU)
    obj = constants_to_json(c)
    if lodo is not None:
        obj["lodo_error_pct"] = lodo
    path.write_text(json.dumps(obj, indent=2) + "\n")
    from biscale.hardware.registry import clear_caches

    clear_caches()
    return path


def refit_all(data_root: Path | None = None, write: bool = False) -> dict[str, FittedConstants]:
    """Fit the H100 constants (and their LODO errors) and transfer them to the other GPUs; optionally write."""
    h100 = fit_constants(data_root)
    out = {GPU: h100}
    for gpu in NVLINK_RATIO:
        out[gpu] = transfer_constants(h100, gpu)
    if write:
        write_constants(h100, constants_path(GPU), lodo=lodo_errors(data_root, h100))
        for gpu in NVLINK_RATIO:
            write_constants(out[gpu], constants_path(gpu))
    return out
