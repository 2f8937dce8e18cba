"""Fitted constants of the roofline/power model, one JSON file per GPU (``data/fitted/<gpu>.json``).

Each constant is stored as ``{"value": ..., "unit": ..., "source": ...}`` so the file documents where every
number came from; :func:`biscale.hardware.calibration.fit_constants` regenerates the fitted ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from biscale.errors import InputError
from biscale.hardware.specs import data_dir


@dataclass(frozen=True)
class FittedConstants:
    """Efficiencies, overheads and power coefficients of one GPU (with the serving engine on it)."""

    # --- latency ---
    gemm_efficiency: float
    """Fraction of the clock-scaled peak FLOP/s that large GEMMs reach (dimensionless)."""
    hbm_efficiency: float
    """Fraction of peak HBM bandwidth that GEMM weight streaming and KV-cache reads/writes reach (dimensionless)."""
    elementwise_efficiency: float
    """Fraction of peak HBM bandwidth that the element-wise kernels (norms, rope, activation, adds) reach."""
    roofline_sharpness: float
    """Exponent q of the smooth roofline ``(t_compute^q + t_memory^q)^(1/q)`` of a GEMM (dimensionless; large q
    is the sharp ``max``)."""
    gemm_fixed_s: float
    """Fixed time per GEMM kernel (launch + tail), s."""
    elementwise_fixed_s: float
    """Fixed time per element-wise kernel (norms, rope, activation, residual add), s."""
    memory_clock_knee_frac: float
    """Clock fraction x0 below which memory-bound kernels slow down (dimensionless)."""
    memory_clock_exponent: float
    """Sharpness p of that slow-down (dimensionless)."""
    attention_efficiency: float
    """Fraction of the clock-scaled peak FLOP/s reached by prefill attention (dimensionless)."""
    attention_fixed_s: float
    """Fixed time per attention kernel (one per layer), s."""
    allreduce_latency_s: dict[str, float]
    """All-reduce fixed latency by TP degree (keys "2", "4", "8"), s."""
    allreduce_bandwidth_bytes_per_s: dict[str, float]
    """All-reduce algorithmic bandwidth by TP degree, bytes/s."""
    allreduce_graph_latency_s: dict[str, float]
    """Fixed latency of the engine's small-message all-reduce inside CUDA graphs (decode), by TP degree, s."""
    engine_step_s: float
    """Per-iteration time in which the GPU waits for the serving engine's CPU (scheduling, input preparation), s."""
    engine_per_seq_s: float
    """Per-request GPU work of an iteration outside the layers (sampling over the vocabulary, bookkeeping), s."""
    # --- power (per GPU) ---
    static_power_w: float
    """Power of a loaded GPU at zero clock, W (leakage, HBM refresh, board)."""
    idle_dynamic_power_w: float
    """Clock-tree power of an idle GPU locked at the top clock, W (scales with f V(f)^2)."""
    voltage_knee_frac: float
    """Clock, as a fraction of the top clock, above which the voltage rises (dimensionless)."""
    voltage_rise: float
    """Relative voltage rise from the knee to the top clock (V(fmax)/V(knee) - 1, dimensionless)."""
    compute_power_w: float
    """Extra power while the tensor cores are busy, at the top clock, W (scales with f V(f)^2)."""
    memory_power_w: float
    """Clock-independent power while any kernel runs (HBM and memory system active), W."""
    busy_power_w: float
    """Power of active SMs (schedulers, load/store) while any kernel runs, at the top clock, W (~ f V(f)^2)."""
    power_cap_fraction: float
    """Average power the power controller holds, as a fraction of the power limit (dimensionless)."""
    governor_downclock_after_s: float
    """Default governor: idle time before the clock drops to the idle state, s."""
    governor_wake_delay_s: float
    """Default governor: extra latency when work arrives after the clock dropped, s."""
    eager_host_layer_s: float
    """Host (CPU) time to dispatch one layer's kernels in eager PyTorch, s: an eager forward pass takes at least
    ``layers x`` this (the lent-H100 profile). The serving engine priced by the simulator captures or compiles its
    forward pass, so only :meth:`RooflineHardwareModel.eager_prefill_latency` uses it."""
    eager_host_sharpness: float
    """Exponent of the smooth maximum of GPU time and host dispatch time in eager PyTorch (dimensionless)."""

    sources: dict[str, str]
    """Where each constant came from (dataset of SOURCES.md, fit function, or cited fact)."""


def constants_path(gpu: str) -> Path:
    return data_dir() / "fitted" / f"{gpu}.json"


def constants_to_json(c: FittedConstants) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(c):
        if f.name == "sources":
            continue
        out[f.name] = getattr(c, f.name)
    return {"constants": out, "sources": c.sources}


@cache
def load_constants(gpu: str) -> FittedConstants:
    """Fitted constants of ``gpu``; InputError if the file is missing."""
    path = constants_path(gpu)
    if not path.is_file():
        raise InputError(f"no fitted constants for GPU '{gpu}'", path=path)
    raw = json.loads(path.read_text())
    vals = dict(raw["constants"])
    names = {f.name for f in fields(FittedConstants)} - {"sources"}
    missing = names - vals.keys()
    if missing:
        raise InputError(f"missing constants {sorted(missing)}", path=path)
    return FittedConstants(**{k: vals[k] for k in names}, sources=dict(raw.get("sources", {})))
