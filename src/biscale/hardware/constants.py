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
    """Fraction of peak HBM bandwidth that streaming kernels reach (dimensionless)."""
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
    prefill_overhead_s: float
    """Fixed per-iteration engine time of a prefill iteration (scheduling, sampling, launch), s."""
    prefill_per_seq_s: float
    """Extra engine time per sequence of a prefill batch, s."""
    decode_fixed_scale: float
    """Fraction of the per-kernel fixed times that remains in decode, which runs as CUDA graphs (dimensionless)."""
    decode_overhead_s: float
    """Fixed per-iteration engine time of a decode iteration (CUDA graphs), s."""
    decode_per_seq_s: float
    """Extra engine time per request of a decode batch (sampling, bookkeeping), s."""
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
    other_power_w: float
    """Power above idle during communication, fixed kernel time and engine overheads, W (<= memory_power_w)."""
    power_cap_fraction: float
    """Average power the power controller holds, as a fraction of the power limit (dimensionless)."""
    governor_downclock_after_s: float
    """Default governor: idle time before the clock drops to the idle state, s."""
    governor_wake_delay_s: float
    """Default governor: extra latency when work arrives after the clock dropped, s."""

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
