"""Calibration of the roofline hardware model against the reference measurements.

Two jobs, shared by the tests and ``biscale calibrate``:

* :func:`fit_constants` derives every fitted constant of ``data/fitted/h100-sxm.json`` from the data
  (scipy least squares), stage by stage, recording which dataset each came from;
* :func:`run_checks` computes the error of the model against each dataset (the issue's tolerances).

All datasets are read from the copy bundled in ``biscale/hardware/data/calibration`` unless ``data_root`` is
given. Dataset provenance: ``../shared/data/SOURCES.md`` (copied into the package NOTICE).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from biscale.costmodel import DecodeShape, PrefillShape
from biscale.hardware.constants import FittedConstants, constants_path, constants_to_json, load_constants
from biscale.hardware.roofline import RooflineHardwareModel
from biscale.hardware.specs import data_dir, load_gpu, load_model

GPU = "h100-sxm"
#: Llama-2-70B: the model the vidur and splitwise measurements were taken on (same layer shape as Llama-3.3-70B).
MODEL_L2 = "llama-2-70b"
#: Llama-3(.3)-70B: the model of the ML.ENERGY and DistServe power measurements.
MODEL_L3 = "llama-3.3-70b"

#: ML.ENERGY leaderboard: vLLM (CUDA graphs), H100 SXM, TP4, Llama-3.3-70B, default clocks, chat prompts:
#: median time between tokens (s) by batch size.
MLENERGY_TPOT_S = {8: 0.0169, 64: 0.0223}
#: Assumed context per running request for those points, tokens: ShareGPT-like chat prompt plus the tokens
#: generated so far (prompt ~ 500-700, output so far ~ 100-400; we take 800).
MLENERGY_CONTEXT_TOKENS = 800
MLENERGY_TP = 4

#: Operators of one layer in vidur's mlp.csv that are not attention (the residual add runs twice per layer).
VIDUR_OPS: dict[str, int] = {
    "input_layernorm": 1,
    "attn_pre_proj": 1,
    "attn_rope": 1,
    "attn_post_proj": 1,
    "post_attention_layernorm": 1,
    "mlp_up_proj": 1,
    "mlp_act": 1,
    "mlp_down_proj": 1,
    "add": 2,
}

TOLERANCE_PCT = {
    "vidur_mlp": 10.0,
    "mlenergy_decode": 15.0,
    "splitwise_prefill_shape": 15.0,
    "splitwise_decode_shape": 15.0,
    "prefill_power": 10.0,
    "idle_power": 10.0,
    "prefill_clock_shape": 10.0,
    "decode_clock_slowdown": 15.0,
}


def calibration_dir(data_root: Path | None = None) -> Path:
    """The calibration data directory: ``data_root/calibration`` if given, else the bundled copy."""
    return (data_root / "calibration") if data_root is not None else data_dir() / "calibration"


# ------------------------------------------------------------------------------------------------ datasets
@dataclass(frozen=True)
class Datasets:
    """The reference measurements, reduced to what the model is compared with."""

    vidur: pd.DataFrame
    """tp, num_tokens, time_s: per-layer non-attention time (sum of the medians of :data:`VIDUR_OPS`)."""
    allreduce: pd.DataFrame
    """tp, size_bytes, time_s: median NCCL all-reduce time."""
    splitwise: pd.DataFrame
    """tp, prompt, batch, tokens, prompt_s, token_s: H100 Llama2-70B medians (not the pcap rows)."""
    prefill_power: pd.DataFrame
    """tp, input_tokens, sm_clock_mhz, power_w: per-GPU busy power."""
    idle_power: pd.DataFrame
    """tp, sm_clock_mhz, power_w: per-GPU idle power."""
    a100_sweep: dict[str, Any]
    """The A100 Gemma-2-27B TP2 latency-vs-clock coefficients (JSON as published)."""


def load_datasets(data_root: Path | None = None) -> Datasets:
    d = calibration_dir(data_root)
    mlp = pd.read_csv(d / "vidur_h100_llama2_70b_mlp.csv")
    t = sum(mlp[f"time_stats.{op}.median"] * k for op, k in VIDUR_OPS.items())
    vidur = pd.DataFrame(
        {"tp": mlp["num_tensor_parallel_workers"], "num_tokens": mlp["num_tokens"], "time_s": t * 1e-3}
    )
    ar_raw = pd.read_csv(d / "vidur_h100_dgx_all_reduce.csv")
    ar = ar_raw.groupby(["num_workers", "size"])["time_stats.all_reduce.median"].median().reset_index()
    allreduce = pd.DataFrame(
        {"tp": ar["num_workers"], "size_bytes": ar["size"], "time_s": ar["time_stats.all_reduce.median"] * 1e-3}
    )
    sw = pd.read_csv(d / "splitwise_perf_model.csv")
    sw = sw[(sw["model"] == "llama2-70b") & (sw["hardware"] == "h100-80gb")]
    sw = sw.groupby(["tensor_parallel", "prompt_size", "batch_size", "token_size"], as_index=False)[
        ["prompt_time", "token_time"]
    ].median()
    splitwise = pd.DataFrame(
        {
            "tp": sw["tensor_parallel"],
            "prompt": sw["prompt_size"],
            "batch": sw["batch_size"],
            "tokens": sw["token_size"],
            "prompt_s": sw["prompt_time"] * 1e-3,
            "token_s": sw["token_time"] * 1e-3,
        }
    )
    pp = pd.read_csv(d / "llama3_70b_prefill_power_vs_freq.csv")
    prefill_power = pd.DataFrame(
        {
            "tp": pp["tp"],
            "input_tokens": pp["input_tokens"],
            "sm_clock_mhz": pp["sm_clock_mhz"],
            "power_w": pp["busy_power_w_per_gpu"],
        }
    )
    ip = pd.read_csv(d / "llama3_70b_idle_power_vs_freq.csv")
    idle_power = pd.DataFrame(
        {"tp": ip["tp"], "sm_clock_mhz": ip["sm_clock_mhz"], "power_w": ip["idle_power_w_per_gpu"]}
    )
    sweep = json.loads((d / "a100_gemma2_27b_tp2_latency_vs_freq.json").read_text())
    return Datasets(vidur, allreduce, splitwise.reset_index(drop=True), prefill_power, idle_power, sweep)


def splitwise_excluded(row: dict[Any, Any]) -> bool:
    """TP2 at batch 64 is inconsistent (prompt time 6.6x *below* batch 32, token time below batch 32): excluded."""
    return bool(row["tp"] == 2 and row["batch"] == 64)


def a100_prefill_ms(sweep: dict[str, Any], clock_mhz: int, tokens: int) -> float:
    """The published A100 prefill latency formula at ``clock_mhz`` for one batch of ``tokens`` tokens, ms."""
    entry = sweep["by_sm_clock_mhz"][str(clock_mhz)]["prefill"]
    idx = next((i for i, th in enumerate(entry["thres"]) if th >= tokens), len(entry["thres"]))
    a, b, c = entry["coefs"][idx]
    return float(a + b * tokens + c * tokens * tokens)


def a100_decode_ms(sweep: dict[str, Any], clock_mhz: int, batch: int, context_sum: int) -> float:
    """The published A100 decode latency formula at ``clock_mhz``, ms."""
    entry = sweep["by_sm_clock_mhz"][str(clock_mhz)]["decode"]
    idx = next((i for i, th in enumerate(entry["thres"]) if th >= batch), len(entry["thres"]))
    a, b, c = entry["coefs"][idx]
    return float(a + b * context_sum + c * batch)


A100_SWEEP_GPU = "a100-sxm-40gb"
A100_SWEEP_MODEL = "gemma-2-27b"
A100_SWEEP_TP = 2
#: Decode points of the A100 sweep used to fit the memory-clock slow-down: batch sizes, 512-token contexts.
A100_DECODE_BATCHES = (1, 8, 16, 32, 64)
A100_DECODE_CONTEXT = 512
#: Sweep clocks used for that fit: 690-1410 MHz (the 50-100 % operating range; lower clocks are far outside any
#: operating point and its batch-64 entry is erratic).
A100_DECODE_CLOCKS = (690, 930, 1170, 1410)


# ------------------------------------------------------------------------------------------------ model access
def build(gpu: str, model: str, consts: FittedConstants) -> RooflineHardwareModel:
    return RooflineHardwareModel(load_gpu(gpu), load_model(model), consts)


def layer_nonattention_s(hw: RooflineHardwareModel, n: int, tp: int) -> float:
    """Model of vidur's per-layer non-attention time (GEMMs + element-wise kernels) at the top clock, s."""
    return hw.layer_nonattention_s(n, tp, float(hw.max_clock_mhz))


def mape_pct(pred: np.ndarray, meas: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred) / np.asarray(meas) - 1.0)) * 100.0)


# ------------------------------------------------------------------------------------------------ fitting
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


def fit_layer(ds: Datasets, base: FittedConstants) -> FittedConstants:
    """GEMM/HBM efficiencies and fixed kernel times from vidur's per-layer non-attention times (log residuals)."""
    names = ["gemm_efficiency", "hbm_efficiency", "gemm_fixed_s", "elementwise_fixed_s"]
    rows = ds.vidur
    n = rows["num_tokens"].to_numpy(int)
    tp = rows["tp"].to_numpy(int)
    y = rows["time_s"].to_numpy(float)

    def resid(p: np.ndarray) -> np.ndarray:
        c = dataclasses.replace(
            base, gemm_efficiency=p[0], hbm_efficiency=p[1], gemm_fixed_s=p[2] * 1e-6, elementwise_fixed_s=p[3] * 1e-6
        )
        hw = build(GPU, MODEL_L2, c)
        pred = np.array([layer_nonattention_s(hw, int(a), int(b)) for a, b in zip(n, tp, strict=True)])
        return np.log(pred / y)

    r = least_squares(resid, x0=[0.7, 0.8, 5.0, 3.0], bounds=([0.1, 0.1, 0.0, 0.0], [1.0, 1.0, 100.0, 100.0]))
    out = dict(zip(names, r.x, strict=True))
    return dataclasses.replace(
        base,
        gemm_efficiency=float(out["gemm_efficiency"]),
        hbm_efficiency=float(out["hbm_efficiency"]),
        gemm_fixed_s=float(out["gemm_fixed_s"] * 1e-6),
        elementwise_fixed_s=float(out["elementwise_fixed_s"] * 1e-6),
    )


def _splitwise_prefill_ratios(hw: RooflineHardwareModel, ds: Datasets) -> tuple[np.ndarray, np.ndarray, list[str]]:
    sw = ds.splitwise[ds.splitwise["tokens"] == 128]
    pred, meas, labels = [], [], []
    for tp in sorted(set(sw["tp"].tolist())):
        grp = sw[sw["tp"] == tp]
        ref = float(grp[(grp["prompt"] == 1024) & (grp["batch"] == 1)]["prompt_s"].iloc[0])
        ref_pred = hw.prefill([1024], int(tp), None).latency_s
        for row in grp.to_dict("records"):
            if splitwise_excluded(row):
                continue
            p = hw.prefill([int(row["prompt"])] * int(row["batch"]), int(tp), None).latency_s
            pred.append(p / ref_pred)
            meas.append(row["prompt_s"] / ref)
            labels.append(f"tp{int(tp)} p{int(row['prompt'])} b{int(row['batch'])}")
    return np.array(pred), np.array(meas), labels


def _splitwise_decode_ratios(hw: RooflineHardwareModel, ds: Datasets) -> tuple[np.ndarray, np.ndarray, list[str]]:
    pred, meas, labels = [], [], []
    for tp in sorted(set(ds.splitwise["tp"].tolist())):
        grp = ds.splitwise[ds.splitwise["tp"] == tp]
        refrow = grp[(grp["prompt"] == 1024) & (grp["batch"] == 1) & (grp["tokens"] == 128)]
        ref = float(refrow["token_s"].iloc[0])
        ref_pred = hw.decode([1024 + 64], int(tp), None).latency_s
        for row in grp.to_dict("records"):
            if splitwise_excluded(row):
                continue
            ctx = int(row["prompt"] + row["tokens"] // 2)  # mean context over the generated tokens
            p = hw.decode([ctx] * int(row["batch"]), int(tp), None).latency_s
            pred.append(p / ref_pred)
            meas.append(row["token_s"] / ref)
            labels.append(f"tp{int(tp)} p{int(row['prompt'])} b{int(row['batch'])} o{int(row['tokens'])}")
    return np.array(pred), np.array(meas), labels


def fit_decode_overheads(base: FittedConstants) -> FittedConstants:
    """CUDA-graph fixed-time fraction and per-request engine time from the two ML.ENERGY points.

    Two points, two unknowns: the fixed per-iteration time is the per-kernel fixed times (vidur) scaled by
    ``decode_fixed_scale``; the engine's CPU work (scheduling, sampling) grows per request. Prefill reuses the
    per-request time; both per-iteration engine overheads are 0 (absorbed by the kernel fixed times).
    """

    def with_params(p: np.ndarray) -> FittedConstants:
        return dataclasses.replace(
            base,
            decode_fixed_scale=float(p[0]),
            decode_per_seq_s=float(p[1] * 1e-6),
            prefill_per_seq_s=float(p[1] * 1e-6),
            decode_overhead_s=0.0,
            prefill_overhead_s=0.0,
        )

    def resid(p: np.ndarray) -> np.ndarray:
        c = with_params(p)
        hw = build(GPU, MODEL_L3, c)
        return np.array(
            [
                hw.decode([MLENERGY_CONTEXT_TOKENS] * b, MLENERGY_TP, None).latency_s / t - 1.0
                for b, t in MLENERGY_TPOT_S.items()
            ]
        )

    r = least_squares(resid, x0=[0.5, 50.0], bounds=([0.0, 0.0], [1.0, 2000.0]))
    return with_params(r.x)


def _a100_decode_ratios(c: FittedConstants, ds: Datasets) -> tuple[np.ndarray, np.ndarray, list[str]]:
    hw = build(A100_SWEEP_GPU, A100_SWEEP_MODEL, transfer_constants(c, A100_SWEEP_GPU))
    top = hw.max_clock_mhz
    pred, meas, labels = [], [], []
    for b in A100_DECODE_BATCHES:
        shape = DecodeShape.from_lengths([A100_DECODE_CONTEXT] * b)
        ref_m = a100_decode_ms(ds.a100_sweep, top, b, b * A100_DECODE_CONTEXT)
        ref_p = hw.decode_latency_at(shape, A100_SWEEP_TP, float(top))
        for f in A100_DECODE_CLOCKS:
            pred.append(hw.decode_latency_at(shape, A100_SWEEP_TP, float(f)) / ref_p)
            meas.append(a100_decode_ms(ds.a100_sweep, f, b, b * A100_DECODE_CONTEXT) / ref_m)
            labels.append(f"b{b} {f}MHz")
    return np.array(pred), np.array(meas), labels


def fit_memory_clock(ds: Datasets, base: FittedConstants) -> FittedConstants:
    """Memory-bound slow-down at low SM clocks from the A100 decode sweep (decode latency ratio to the top clock).

    The model of the swept system (A100-40GB, Gemma-2-27B, TP2, constants transferred from the H100) is compared
    at the sweep's clocks, effective-clock latency (no power cap), log residuals.
    """

    def with_params(p: np.ndarray) -> FittedConstants:
        return dataclasses.replace(base, memory_clock_knee_frac=float(p[0]), memory_clock_exponent=float(p[1]))

    def resid(p: np.ndarray) -> np.ndarray:
        pred, meas, _ = _a100_decode_ratios(with_params(p), ds)
        return np.log(pred / meas)

    r = least_squares(resid, x0=[0.45, 3.0], bounds=([0.05, 1.0], [0.95, 10.0]))
    return with_params(r.x)


POWER_NAMES = [
    "static_power_w",
    "idle_dynamic_power_w",
    "voltage_knee_frac",
    "voltage_rise",
    "compute_power_w",
    "memory_power_w",
    "busy_power_w",
    "other_power_w",
]


#: Starting point of the power fit (same order as :data:`POWER_NAMES`).
POWER_X0 = [60.0, 110.0, 0.6, 0.3, 700.0, 100.0, 300.0, 30.0]


def power_cap_fraction(ds: Datasets, limit_w: float) -> float:
    """Mean plateau power / limit: the points within 2 % of the limit are the throttled ones."""
    p = ds.prefill_power["power_w"].to_numpy(float)
    plateau = p[p >= 0.98 * limit_w]
    return float(plateau.mean() / limit_w)


def _power_predictions(hw: RooflineHardwareModel, ds: Datasets) -> tuple[np.ndarray, np.ndarray]:
    busy = np.array(
        [
            hw.prefill([int(r["input_tokens"])], int(r["tp"]), int(r["sm_clock_mhz"])).power_w
            for r in ds.prefill_power.to_dict("records")
        ]
    )
    idle = np.array([hw.idle_power_w(int(r["tp"]), int(r["sm_clock_mhz"])) for r in ds.idle_power.to_dict("records")])
    return busy, idle


def fit_power(ds: Datasets, base: FittedConstants) -> FittedConstants:
    """Idle and busy power coefficients jointly from the DistServe prefill and idle power tables (relative)."""
    limit = load_gpu(GPU).power_limit_w
    base = dataclasses.replace(base, power_cap_fraction=power_cap_fraction(ds, limit))
    yb = ds.prefill_power["power_w"].to_numpy(float)
    yi = ds.idle_power["power_w"].to_numpy(float)

    def consts(p: np.ndarray) -> FittedConstants:
        values: dict[str, Any] = {k: float(v) for k, v in zip(POWER_NAMES, p, strict=True)}
        return dataclasses.replace(base, **values)

    def resid(p: np.ndarray) -> np.ndarray:
        busy, idle = _power_predictions(build(GPU, MODEL_L3, consts(p)), ds)
        return np.concatenate([busy / yb - 1.0, idle / yi - 1.0])

    x0 = POWER_X0  # fixed start: the fit is reproducible whatever constants it starts from
    lo = [0.0, 0.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0]
    hi = [300.0, 400.0, 0.95, 1.0, 2000.0, 1000.0, 1000.0, 1000.0]
    r = least_squares(resid, x0=x0, bounds=(lo, hi))
    return consts(r.x)


def fit_constants(data_root: Path | None = None, base: FittedConstants | None = None) -> FittedConstants:
    """Fit every data-derived constant of the H100 SXM model, in dependency order, and record the sources."""
    ds = load_datasets(data_root)
    c = base if base is not None else load_constants(GPU)
    lat, bw = fit_allreduce(ds)
    c = dataclasses.replace(c, allreduce_latency_s=lat, allreduce_bandwidth_bytes_per_s=bw)
    c = fit_layer(ds, c)
    c = fit_decode_overheads(c)
    c = fit_memory_clock(ds, c)
    c = fit_power(ds, c)
    sources = dict(
        {
            "allreduce_latency_s, allreduce_bandwidth_bytes_per_s": "fit_allreduce: vidur_h100_dgx_all_reduce.csv",
            "gemm_efficiency, hbm_efficiency, gemm_fixed_s, elementwise_fixed_s": (
                "fit_layer: vidur_h100_llama2_70b_mlp.csv"
            ),
            "decode_fixed_scale, decode_per_seq_s, prefill_per_seq_s, decode_overhead_s, prefill_overhead_s": (
                f"fit_decode_overheads: ML.ENERGY leaderboard TPOT (16.9 ms @ batch 8, 22.3 ms @ batch 64, TP4), "
                f"assumed context {MLENERGY_CONTEXT_TOKENS} tokens"
            ),
            "memory_clock_knee_frac, memory_clock_exponent": (
                "fit_memory_clock: a100_gemma2_27b_tp2_latency_vs_freq.json (decode, batch 1-64, 512-token contexts)"
            ),
            "attention_efficiency": (
                "cited: FlashAttention-2 forward reaches ~35 % of H100 dense BF16 peak (Shah et al., FlashAttention-3, "
                "arXiv 2407.08608, fig. 'attention forward speed')"
            ),
            "attention_fixed_s": (
                "assumed: one ~10 us attention kernel per layer (same order as the fitted GEMM fixed time)"
            ),
            "governor_downclock_after_s, governor_wake_delay_s": (
                "assumed engineering values (no public H100 measurement): clock drops after 0.5 s idle, 5 ms ramp-up"
            ),
            "power_cap_fraction": "power_cap_fraction: plateau of llama3_70b_prefill_power_vs_freq.csv",
            ", ".join(
                POWER_NAMES
            ): "fit_power: llama3_70b_prefill_power_vs_freq.csv + llama3_70b_idle_power_vs_freq.csv",
        }
    )
    return dataclasses.replace(c, sources=sources)


def write_constants(c: FittedConstants, path: Path | None = None) -> Path:
    path = path if path is not None else constants_path(GPU)
    path.write_text(json.dumps(constants_to_json(c), indent=2) + "\n")
    from biscale.hardware.registry import clear_caches

    clear_caches()
    return path


# ------------------------------------------------------------------------------------------------ checks
@dataclass
class Check:
    """One calibration check: model vs measurement on one dataset."""

    name: str
    """Short identifier (also the PNG file name)."""
    dataset: str
    """The reference data compared with (a file of SOURCES.md or a cited measurement)."""
    metric: str
    """"MAPE" (mean absolute percentage error) or "max slowdown"."""
    error_pct: float
    """The error, percent."""
    tolerance_pct: float
    """The issue's tolerance, percent."""
    predicted: list[float] = field(default_factory=list)
    measured: list[float] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    note: str = ""
    unit: str = ""
    """Unit of the predicted/measured values (for the plot axes)."""

    @property
    def passed(self) -> bool:
        return self.error_pct <= self.tolerance_pct

    def to_json(self) -> dict[str, Any]:
        key = "mape_pct" if self.metric == "MAPE" else "max_slowdown_pct"
        return {
            "name": self.name,
            "dataset": self.dataset,
            "metric": self.metric,
            key: self.error_pct,
            "error_pct": self.error_pct,
            "tolerance_pct": self.tolerance_pct,
            "passed": self.passed,
            "points": len(self.measured),
            "note": self.note,
        }


_UNITS = {
    "vidur_mlp": "s",
    "mlenergy_decode": "s",
    "splitwise_prefill_shape": "ratio to 1024 tokens, batch 1",
    "splitwise_decode_shape": "ratio to 1024 tokens, batch 1",
    "prefill_power": "W per GPU",
    "idle_power": "W per GPU",
    "prefill_clock_shape": "latency / latency at top clock",
    "decode_clock_slowdown": "latency / latency at top clock",
}


def _check(name: str, dataset: str, pred: np.ndarray, meas: np.ndarray, labels: list[str], note: str) -> Check:
    return Check(
        name=name,
        dataset=dataset,
        metric="MAPE",
        error_pct=mape_pct(pred, meas),
        tolerance_pct=TOLERANCE_PCT[name],
        predicted=[float(v) for v in pred],
        measured=[float(v) for v in meas],
        labels=labels,
        note=note,
        unit=_UNITS[name],
    )


def run_checks(
    gpu: str = GPU, model: str = MODEL_L3, data_root: Path | None = None, consts: FittedConstants | None = None
) -> list[Check]:
    """Every calibration check of the issue, computed on the (gpu, model) model family's constants.

    The vidur and splitwise comparisons use the Llama-2-70B spec on the same GPU constants (the model those
    measurements were taken on); the others use ``model``.
    """
    ds = load_datasets(data_root)
    c = consts if consts is not None else load_constants(gpu)
    hw = build(gpu, model, c)
    hw2 = build(gpu, MODEL_L2, c)
    checks: list[Check] = []

    v = ds.vidur
    pred = np.array([layer_nonattention_s(hw2, int(n), int(t)) for n, t in zip(v["num_tokens"], v["tp"], strict=True)])
    labels = [f"tp{t} n{n}" for n, t in zip(v["num_tokens"], v["tp"], strict=True)]
    checks.append(
        _check(
            "vidur_mlp",
            "vidur_h100_llama2_70b_mlp.csv",
            pred,
            v["time_s"].to_numpy(),
            labels,
            "per-layer non-attention time, TP 1/2/4/8, 1..4096 tokens",
        )
    )

    pred_l, meas_l, labels = [], [], []
    for b, t in MLENERGY_TPOT_S.items():
        pred_l.append(hw.decode([MLENERGY_CONTEXT_TOKENS] * b, MLENERGY_TP, None).latency_s)
        meas_l.append(t)
        labels.append(f"batch {b}")
    checks.append(
        _check(
            "mlenergy_decode",
            "ML.ENERGY leaderboard (vLLM, TP4)",
            np.array(pred_l),
            np.array(meas_l),
            labels,
            f"decode iteration, default governor, {MLENERGY_CONTEXT_TOKENS}-token contexts",
        )
    )

    p, m, labels = _splitwise_prefill_ratios(hw2, ds)
    checks.append(
        _check(
            "splitwise_prefill_shape",
            "splitwise_perf_model.csv",
            p,
            m,
            labels,
            "prompt time / (1024 tokens, batch 1) per TP; TP2 batch 64 excluded",
        )
    )
    p, m, labels = _splitwise_decode_ratios(hw2, ds)
    checks.append(
        _check(
            "splitwise_decode_shape",
            "splitwise_perf_model.csv",
            p,
            m,
            labels,
            "token time / (1024 tokens, batch 1) per TP; TP2 batch 64 excluded",
        )
    )

    busy, idle = _power_predictions(hw, ds)
    pp = ds.prefill_power
    checks.append(
        _check(
            "prefill_power",
            "llama3_70b_prefill_power_vs_freq.csv",
            busy,
            pp["power_w"].to_numpy(),
            [f"tp{a} n{b} {c}MHz" for a, b, c in zip(pp["tp"], pp["input_tokens"], pp["sm_clock_mhz"], strict=True)],
            "per-GPU busy power, one prompt per iteration, locked clocks",
        )
    )
    ip = ds.idle_power
    checks.append(
        _check(
            "idle_power",
            "llama3_70b_idle_power_vs_freq.csv",
            idle,
            ip["power_w"].to_numpy(),
            [f"tp{a} {c}MHz" for a, c in zip(ip["tp"], ip["sm_clock_mhz"], strict=True)],
            "per-GPU idle power, locked clocks",
        )
    )

    checks.append(prefill_clock_shape_check(hw, ds))
    checks.append(decode_clock_slowdown_check(hw))
    return checks


A100_CLOCKS = (210, 450, 690, 930, 1170, 1410)
CLOCK_SHAPE_TOKENS = (1024, 2048, 3072, 4096)
CLOCK_SHAPE_TP = (2, 4)


def prefill_clock_shape_check(hw: RooflineHardwareModel, ds: Datasets) -> Check:
    """latency(f)/latency(fmax) of compute-bound prefill vs the A100 sweep at the same fraction of the top clock.

    Uses the sweep clocks within 50-100 % of the A100's top clock; the model is read at the same fraction of its
    own top clock (linear interpolation between supported clocks), as the clock-scaling law at the *effective*
    clock (power throttling excluded: it depends on the GPU's power limit, not on the latency law).
    """
    a_top = 1410
    pred, meas, labels = [], [], []
    for f in A100_CLOCKS:
        frac = f / a_top
        if frac < 0.5 or f == a_top:
            continue
        for n in CLOCK_SHAPE_TOKENS:
            m = a100_prefill_ms(ds.a100_sweep, f, n) / a100_prefill_ms(ds.a100_sweep, a_top, n)
            for tp in CLOCK_SHAPE_TP:
                if tp not in hw.tp_degrees:
                    continue
                top = hw.prefill_latency_at(PrefillShape.from_lengths([n]), tp, float(hw.max_clock_mhz))
                lat = hw.prefill_latency_at(PrefillShape.from_lengths([n]), tp, frac * hw.max_clock_mhz)
                pred.append(lat / top)
                meas.append(m)
                labels.append(f"tp{tp} n{n} {frac:.0%}")
    return _check(
        "prefill_clock_shape",
        "a100_gemma2_27b_tp2_latency_vs_freq.json",
        np.array(pred),
        np.array(meas),
        labels,
        "latency(f)/latency(fmax), 1024-4096 tokens, 50-100 % of top clock",
    )


def decode_clock_slowdown_check(hw: RooflineHardwareModel) -> Check:
    """Worst decode slowdown at 60 % of the top clock (nearest supported clock), batch <= 64, 800-token contexts."""
    f60 = min(hw.supported_clocks_mhz, key=lambda f: abs(f - 0.6 * hw.max_clock_mhz))
    slow, labels = [], []
    for tp in hw.tp_degrees:
        for b in (1, 8, 16, 32, 64):
            shape = DecodeShape.from_lengths([MLENERGY_CONTEXT_TOKENS] * b)
            slow.append(hw.decode_cost(shape, tp, f60).latency_s / hw.decode_cost(shape, tp, None).latency_s)
            labels.append(f"tp{tp} b{b}")
    worst = (max(slow) - 1.0) * 100.0
    return Check(
        name="decode_clock_slowdown",
        dataset="model (memory-bound decode)",
        metric="max slowdown",
        error_pct=worst,
        tolerance_pct=TOLERANCE_PCT["decode_clock_slowdown"],
        predicted=slow,
        measured=[1.0] * len(slow),
        labels=labels,
        note=f"latency({f60} MHz)/latency(top), batch 1-64, {MLENERGY_CONTEXT_TOKENS}-token contexts",
        unit=_UNITS["decode_clock_slowdown"],
    )


def plot_checks(checks: list[Check], out_dir: Path) -> list[Path]:
    """One predicted-vs-measured PNG per check (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for chk in checks:
        fig, ax = plt.subplots(figsize=(5, 5))
        x = np.array(chk.measured)
        y = np.array(chk.predicted)
        ax.scatter(x, y, s=10)
        lo = float(min(x.min(), y.min()))
        hi = float(max(x.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"measured ({chk.unit})" if chk.unit else "measured")
        ax.set_ylabel(f"predicted ({chk.unit})" if chk.unit else "predicted")
        ax.set_title(f"{chk.name}: {chk.metric} {chk.error_pct:.1f}% (tol {chk.tolerance_pct:.0f}%)", fontsize=9)
        if hi / max(lo, 1e-12) > 20:
            ax.set_xscale("log")
            ax.set_yscale("log")
        fig.tight_layout()
        path = out_dir / f"{chk.name}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths


#: NVLink bandwidth per GPU relative to H100 SXM (NVLink 4, 900 GB/s): A100 SXM has NVLink 3, 600 GB/s
#: (NVIDIA A100 and H100 datasheets).
NVLINK_RATIO = {"a100-sxm-80gb": 600.0 / 900.0, "a100-sxm-40gb": 600.0 / 900.0}


def transfer_constants(h100: FittedConstants, gpu: str) -> FittedConstants:
    """Constants for a GPU without its own measurements, transferred from the H100 fit.

    Efficiencies (fractions of the GPU's own peaks), fixed times, engine overheads, voltage-curve shape and
    cap fraction carry over unchanged; power coefficients scale with the power-limit ratio; all-reduce
    bandwidth with the NVLink bandwidth ratio. This is an assumption, stated in docs/hardware.md.
    """
    spec, ref = load_gpu(gpu), load_gpu(GPU)
    pr = spec.power_limit_w / ref.power_limit_w
    bw = NVLINK_RATIO.get(gpu, 1.0)
    scaled = {k: getattr(h100, k) * pr for k in POWER_NAMES if k.endswith("_w")}
    note = f"transferred from {GPU} by transfer_constants (power x{pr:.3f}, all-reduce bandwidth x{bw:.3f})"
    return dataclasses.replace(
        h100,
        **scaled,
        allreduce_bandwidth_bytes_per_s={k: v * bw for k, v in h100.allreduce_bandwidth_bytes_per_s.items()},
        sources={"all": note},
    )


def refit_all(data_root: Path | None = None, write: bool = False) -> dict[str, FittedConstants]:
    """Fit the H100 constants and transfer them to the other GPUs; optionally write the JSON files."""
    h100 = fit_constants(data_root)
    out = {GPU: h100}
    for gpu in NVLINK_RATIO:
        out[gpu] = transfer_constants(h100, gpu)
    if write:
        for gpu, c in out.items():
            write_constants(c, constants_path(gpu))
    return out
