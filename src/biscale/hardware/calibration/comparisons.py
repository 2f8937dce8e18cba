"""One comparison per dataset: the model's predictions next to the measurements, point by point.

Each ``compare_*`` function takes constants and the datasets and returns a :class:`Comparison`; the checks
(:mod:`.checks`) and the fit residuals (:mod:`.fitting`) are built from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from biscale.costmodel import DecodeShape, PrefillShape
from biscale.hardware.calibration.datasets import (
    GPU,
    MLENERGY_PROMPT_TOKENS,
    MODEL_8B,
    MODEL_L2,
    MODEL_L3,
    Datasets,
    a100_decode_ms,
    a100_prefill_ms,
    mlenergy_context_tokens,
    splitwise_excluded,
)
from biscale.hardware.calibration.transfer import transfer_constants
from biscale.hardware.constants import FittedConstants
from biscale.hardware.roofline import RooflineHardwareModel
from biscale.hardware.specs import load_gpu, load_model

#: RESERVED FOR VALIDATION, never fitted: ML.ENERGY leaderboard, vLLM (CUDA graphs), H100 SXM, TP4,
#: Llama-3.3-70B, default clocks, LM-Arena chat prompts: median time between tokens (s) by batch size.
MLENERGY_70B_TPOT_S = {8: 0.0169, 64: 0.0223}
MLENERGY_70B_TP = 4
#: The clock the lent H100 ran at (as found, the top clock), MHz.
MEASURED_CLOCK_MHZ = 1980

A100_SWEEP_GPU = "a100-sxm-40gb"
A100_SWEEP_MODEL = "gemma-2-27b"
A100_SWEEP_TP = 2
A100_TOP_MHZ = 1410
#: Decode points of the A100 sweep used to fit the memory-clock slow-down: batch sizes, 512-token contexts.
A100_DECODE_BATCHES = (1, 8, 16, 32, 64)
A100_DECODE_CONTEXT = 512
#: Sweep clocks compared (decode fit, prefill check): 690-1410 MHz, the 50-100 % operating range (lower clocks
#: are far outside any operating point and the sweep's batch-64 decode entry there is erratic).
A100_DECODE_CLOCKS = (690, 930, 1170, 1410)
#: Prompt lengths of the prefill clock-shape check (compute-bound).
CLOCK_SHAPE_TOKENS = (1024, 2048, 3072, 4096)


def build(gpu: str, model: str, consts: FittedConstants) -> RooflineHardwareModel:
    return RooflineHardwareModel(load_gpu(gpu), load_model(model), consts)


def mape_pct(pred: np.ndarray, meas: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred) / np.asarray(meas) - 1.0)) * 100.0)


@dataclass
class Comparison:
    """Model predictions next to the measurements of one dataset (same order), with point labels."""

    predicted: np.ndarray
    measured: np.ndarray
    labels: list[str]


# One function per dataset: the model's predictions for its points under constants ``c`` (for the H100 model
# family; the A100 sweep model gets the constants transferred by :func:`transfer_constants`).
def compare_allreduce(c: FittedConstants, ds: Datasets) -> Comparison:
    a = ds.allreduce
    pred = [
        c.allreduce_latency_s[str(int(tp))] + size / c.allreduce_bandwidth_bytes_per_s[str(int(tp))]
        for tp, size in zip(a["tp"], a["size_bytes"], strict=True)
    ]
    labels = [f"tp{int(tp)} {int(size)}B" for tp, size in zip(a["tp"], a["size_bytes"], strict=True)]
    return Comparison(np.array(pred), a["time_s"].to_numpy(float), labels)


def _vidur_parts(c: FittedConstants, ds: Datasets) -> tuple[np.ndarray, list[str]]:
    """Model of vidur's per-layer (GEMM, element-wise) times at the top clock, one row per point, s."""
    hw = build(GPU, MODEL_L2, c)
    v = ds.vidur
    top = float(hw.max_clock_mhz)
    pred = [hw.layer_nonattention_s(int(n), int(t), top) for n, t in zip(v["num_tokens"], v["tp"], strict=True)]
    labels = [f"tp{t} n{n}" for n, t in zip(v["num_tokens"], v["tp"], strict=True)]
    return np.array(pred), labels


def compare_vidur(c: FittedConstants, ds: Datasets) -> Comparison:
    """Per-layer non-attention time (GEMMs + element-wise kernels)."""
    pred, labels = _vidur_parts(c, ds)
    return Comparison(pred.sum(axis=1), ds.vidur["time_s"].to_numpy(float), labels)


def compare_vidur_gemm(c: FittedConstants, ds: Datasets) -> Comparison:
    """The GEMM share alone (a fit residual: separates GEMM from element-wise fixed times)."""
    pred, labels = _vidur_parts(c, ds)
    return Comparison(pred[:, 0], ds.vidur["gemm_s"].to_numpy(float), labels)


def compare_vidur_elementwise(c: FittedConstants, ds: Datasets) -> Comparison:
    """The element-wise share alone (a fit residual)."""
    pred, labels = _vidur_parts(c, ds)
    return Comparison(pred[:, 1], ds.vidur["elementwise_s"].to_numpy(float), labels)


def compare_a100_decode(c: FittedConstants, ds: Datasets) -> Comparison:
    """Decode latency at each sweep clock relative to the top clock (effective clocks, no power cap)."""
    hw = build(A100_SWEEP_GPU, A100_SWEEP_MODEL, transfer_constants(c, A100_SWEEP_GPU))
    pred, meas, labels = [], [], []
    for b in A100_DECODE_BATCHES:
        shape = DecodeShape.from_lengths([A100_DECODE_CONTEXT] * b)
        ref_m = a100_decode_ms(ds.a100_sweep, A100_TOP_MHZ, b, b * A100_DECODE_CONTEXT)
        ref_p = hw.decode_latency_at(shape, A100_SWEEP_TP, float(A100_TOP_MHZ))
        for f in A100_DECODE_CLOCKS:
            if f == A100_TOP_MHZ:
                continue
            pred.append(hw.decode_latency_at(shape, A100_SWEEP_TP, float(f)) / ref_p)
            meas.append(a100_decode_ms(ds.a100_sweep, f, b, b * A100_DECODE_CONTEXT) / ref_m)
            labels.append(f"b{b} {f}MHz")
    return Comparison(np.array(pred), np.array(meas), labels)


def compare_a100_prefill(c: FittedConstants, ds: Datasets) -> Comparison:
    """Prefill latency at each sweep clock relative to the top clock (effective clocks, no power cap)."""
    hw = build(A100_SWEEP_GPU, A100_SWEEP_MODEL, transfer_constants(c, A100_SWEEP_GPU))
    pred, meas, labels = [], [], []
    for n in CLOCK_SHAPE_TOKENS:
        shape = PrefillShape.from_lengths([n])
        ref_m = a100_prefill_ms(ds.a100_sweep, A100_TOP_MHZ, n)
        ref_p = hw.prefill_latency_at(shape, A100_SWEEP_TP, float(A100_TOP_MHZ))
        for f in A100_DECODE_CLOCKS:
            if f == A100_TOP_MHZ:
                continue
            pred.append(hw.prefill_latency_at(shape, A100_SWEEP_TP, float(f)) / ref_p)
            meas.append(a100_prefill_ms(ds.a100_sweep, f, n) / ref_m)
            labels.append(f"n{n} {f}MHz")
    return Comparison(np.array(pred), np.array(meas), labels)


def _prompt_shape(prompts: int) -> PrefillShape:
    n = MLENERGY_PROMPT_TOKENS
    return PrefillShape(prompts, prompts * n, float(prompts * n * n), prompts * n * (n + 1) / 2.0)


def mlenergy_8b_steps(c: FittedConstants, ds: Datasets) -> tuple[np.ndarray, np.ndarray]:
    """Mean step time (s) and mean power (W) of the model for each ML.ENERGY 8B row.

    A colocated engine admits a new prompt whenever a request finishes: ``k = batch / mean output length``
    prompts per step on average, prefilled in the same forward pass as the decode tokens. The mean step mixes
    steps with ``floor(k)`` and ``floor(k) + 1`` prompts so that the mean is ``k``; every step is power-capped.
    """
    hw = build(GPU, MODEL_8B, c)
    steps, powers = [], []
    for r in ds.mlenergy_8b.to_dict("records"):
        batch = float(r["batch"])
        ctx = batch * mlenergy_context_tokens(float(r["output_tokens"]))
        k = batch / float(r["output_tokens"])
        j = math.floor(k)
        w = k - j
        lo = hw.mixed_cost(1, None, batch, ctx, _prompt_shape(j))
        hi = hw.mixed_cost(1, None, batch, ctx, _prompt_shape(j + 1))
        t = (1.0 - w) * lo.latency_s + w * hi.latency_s
        e = (1.0 - w) * lo.energy_per_gpu_j + w * hi.energy_per_gpu_j
        steps.append(t)
        powers.append(e / t)
    return np.array(steps), np.array(powers)


def _mlenergy_labels(ds: Datasets) -> list[str]:
    return [f"batch {b:.0f}" for b in ds.mlenergy_8b["batch"]]


def compare_mlenergy_8b_time(c: FittedConstants, ds: Datasets) -> Comparison:
    return Comparison(mlenergy_8b_steps(c, ds)[0], ds.mlenergy_8b["step_s"].to_numpy(float), _mlenergy_labels(ds))


def compare_mlenergy_8b_power(c: FittedConstants, ds: Datasets) -> Comparison:
    return Comparison(mlenergy_8b_steps(c, ds)[1], ds.mlenergy_8b["power_w"].to_numpy(float), _mlenergy_labels(ds))


def compare_prefill_power(c: FittedConstants, ds: Datasets) -> Comparison:
    hw = build(GPU, MODEL_L3, c)
    pp = ds.prefill_power
    pred = [
        hw.prefill([int(n)], int(tp), int(f)).power_w
        for tp, n, f in zip(pp["tp"], pp["input_tokens"], pp["sm_clock_mhz"], strict=True)
    ]
    labels = [f"tp{a} n{b} {f}MHz" for a, b, f in zip(pp["tp"], pp["input_tokens"], pp["sm_clock_mhz"], strict=True)]
    return Comparison(np.array(pred), pp["power_w"].to_numpy(float), labels)


def compare_idle_power(c: FittedConstants, ds: Datasets) -> Comparison:
    hw = build(GPU, MODEL_L3, c)
    ip = ds.idle_power
    pred = [hw.idle_power_w(int(tp), int(f)) for tp, f in zip(ip["tp"], ip["sm_clock_mhz"], strict=True)]
    labels = [f"tp{a} {f}MHz" for a, f in zip(ip["tp"], ip["sm_clock_mhz"], strict=True)]
    return Comparison(np.array(pred), ip["power_w"].to_numpy(float), labels)


def compare_splitwise_prefill(c: FittedConstants, ds: Datasets) -> Comparison:
    """Prompt time normalised to each TP's (1024 tokens, batch 1) point; TP2 batch 64 excluded."""
    hw = build(GPU, MODEL_L2, c)
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
    return Comparison(np.array(pred), np.array(meas), labels)


def compare_splitwise_decode(c: FittedConstants, ds: Datasets) -> Comparison:
    """Token time normalised to each TP's (1024 tokens, batch 1, 128 outputs) point; TP2 batch 64 excluded."""
    hw = build(GPU, MODEL_L2, c)
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
    return Comparison(np.array(pred), np.array(meas), labels)


def mlenergy_70b_context_tokens(ds: Datasets) -> float:
    """Assumed context of the reserved 70B points: the same prompts, the 8B runs' mean output length."""
    return mlenergy_context_tokens(float(ds.mlenergy_8b["output_tokens"].mean()))


def compare_mlenergy_70b(c: FittedConstants, ds: Datasets) -> Comparison:
    """Reserved validation: decode step of Llama-3.3-70B, TP4, default governor, vs the median time between
    tokens (at batch <= 64 fewer than one step in six carries a prompt, so the median step is a decode step)."""
    hw = build(GPU, MODEL_L3, c)
    ctx = round(mlenergy_70b_context_tokens(ds))
    pred = [hw.decode([ctx] * b, MLENERGY_70B_TP, None).latency_s for b in MLENERGY_70B_TPOT_S]
    return Comparison(
        np.array(pred), np.array(list(MLENERGY_70B_TPOT_S.values())), [f"batch {b}" for b in MLENERGY_70B_TPOT_S]
    )


#: New tokens below which an eager prefill on an H100 shard is host-bound (kernel launches), above which its GEMMs
#: dominate.
SHORT_PROMPT_TOKENS = 1000
#: TP shards of the lent-H100 measurements that are fit targets; the others are held out (out-of-sample).
MEASURED_FIT_TP = (2, 8)
#: Decode batches from which the lent-H100 decode power is compared (below, a step is mostly fixed kernel time and
#: its power is reported, not fitted).
MEASURED_DECODE_MIN_BATCH = 32


def _h100_prefill_rows(ds: Datasets, short: bool, tps: tuple[int, ...]) -> pd.DataFrame:
    p = ds.h100_prefill
    sel = (p["input_len_sum"] < SHORT_PROMPT_TOKENS) if short else (p["input_len_sum"] >= SHORT_PROMPT_TOKENS)
    return p[sel & p["tp"].isin(tps)]


def _compare_h100_prefill(c: FittedConstants, rows: pd.DataFrame) -> Comparison:
    """The model's eager-PyTorch prefill at 1,980 MHz (power cap applied) vs the lent H100's, one packed causal
    sequence per batch (the profiler's attention pairs; the sequence count prices the engine's per-request work)."""
    hw = build(GPU, MODEL_L3, c)
    pred, labels = [], []
    for r in rows.to_dict("records"):
        n = int(r["input_len_sum"])
        shape = PrefillShape(int(r["batch_size"]), n, float(n) ** 2, float(r["attn_pairs"]))
        pred.append(hw.eager_prefill_latency(shape, int(r["tp"]), MEASURED_CLOCK_MHZ))
        labels.append(f"tp{int(r['tp'])} n{n} b{int(r['batch_size'])}")
    return Comparison(np.array(pred), rows["latency_s"].to_numpy(float), labels)


def compare_h100_prefill_short_fit(c: FittedConstants, ds: Datasets) -> Comparison:
    """Prompts under 1,000 tokens on the TP 2 and 8 shards (host-bound: the fit target of the launch time)."""
    return _compare_h100_prefill(c, _h100_prefill_rows(ds, True, MEASURED_FIT_TP))


def compare_h100_prefill_short_held_out(c: FittedConstants, ds: Datasets) -> Comparison:
    """Prompts under 1,000 tokens on the TP4 shard (not fitted)."""
    return _compare_h100_prefill(c, _h100_prefill_rows(ds, True, (4,)))


def compare_h100_prefill_long(c: FittedConstants, ds: Datasets) -> Comparison:
    """Prompts of 1,000 tokens or more, TP 2/4/8 (compute-bound; not fitted)."""
    return _compare_h100_prefill(c, _h100_prefill_rows(ds, False, (2, 4, 8)))


def _compare_h100_decode_power(c: FittedConstants, rows: pd.DataFrame) -> Comparison:
    """The model's decode step power at 1,980 MHz requested (power cap applied) vs the lent H100's CUDA-graph
    replay of a TP shard's step (both the mean power per GPU over the step)."""
    hw = build(GPU, MODEL_L3, c)
    recs = rows.to_dict("records")
    pred = [
        hw.decode_cost(
            DecodeShape(int(r["batch_size"]), int(r["context_len_sum"]), 0.0), int(r["tp"]), MEASURED_CLOCK_MHZ
        )[1]
        for r in recs
    ]
    labels = [f"tp{int(r['tp'])} b{int(r['batch_size'])} ctx{int(r['context_len'])}" for r in recs]
    return Comparison(np.array(pred), rows["power_w"].to_numpy(float), labels)


def _h100_decode_rows(ds: Datasets, tps: tuple[int, ...], large: bool = True) -> pd.DataFrame:
    d = ds.h100_decode
    big = d["batch_size"] >= MEASURED_DECODE_MIN_BATCH
    return d[(big if large else ~big) & d["tp"].isin(tps)]


def compare_h100_decode_power_fit(c: FittedConstants, ds: Datasets) -> Comparison:
    """Decode power, batches 32-256, TP 2 and 8 shards (fit target of the power constants with the others)."""
    return _compare_h100_decode_power(c, _h100_decode_rows(ds, MEASURED_FIT_TP))


def compare_h100_decode_power_held_out(c: FittedConstants, ds: Datasets) -> Comparison:
    """Decode power, batches 32-256, TP4 shard (not fitted)."""
    return _compare_h100_decode_power(c, _h100_decode_rows(ds, (4,)))


def compare_h100_decode_power_small(c: FittedConstants, ds: Datasets) -> Comparison:
    """Decode power, batches 1-8, TP 2/4/8 (not fitted)."""
    return _compare_h100_decode_power(c, _h100_decode_rows(ds, (2, 4, 8), large=False))
