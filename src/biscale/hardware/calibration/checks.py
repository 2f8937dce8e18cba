"""The calibration checks: one record per check (what it compares, its role, tolerance and source), and their run.

A check's role says how the data it compares relate to the fit: ``in-sample`` (a fit target), ``out-of-sample``
(allowed data not used in fitting: a subset held back or a dataset never fitted), ``held-out`` (published results
reserved for validation, never fitted nor used to choose anything).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from biscale.hardware.calibration import comparisons as cmp
from biscale.hardware.calibration.comparisons import A100_SWEEP_GPU, A100_SWEEP_MODEL, Comparison, mape_pct
from biscale.hardware.calibration.datasets import (
    GPU,
    MODEL_8B,
    MODEL_L2,
    MODEL_L3,
    Datasets,
    load_datasets,
)
from biscale.hardware.constants import FittedConstants, constants_path, load_constants

IN_SAMPLE = "in-sample"
OUT_OF_SAMPLE = "out-of-sample"
HELD_OUT = "held-out"

#: Where the lent-H100 measurements are kept in the repository (``data_root/measured`` holds a copy).
_LENT = "data/measured/h100-sxm/2026-11-26/"


@dataclass(frozen=True)
class CheckSpec:
    """One calibration check: the comparison it runs and how its error is judged."""

    name: str
    """Short identifier (also the PNG file name)."""
    dataset: str
    """The data compared with, and which part of them."""
    source: str
    """Where the data come from (a file of the package NOTICE, the lent H100, or a cited publication)."""
    role: str
    """:data:`IN_SAMPLE`, :data:`OUT_OF_SAMPLE` or :data:`HELD_OUT`."""
    tolerance_pct: float
    """Largest mean absolute percentage error that passes, percent."""
    unit: str
    """Unit of the predicted/measured values (for the plot axes)."""
    note: str
    compare: Callable[[FittedConstants, Datasets], Comparison]
    pairs: tuple[tuple[str, str], ...]
    """The (GPU, model) pairs whose own measurements the check uses ("*": any model on that GPU)."""
    metric: str = "MAPE"


_VIDUR = "microsoft/vidur profiling data (NOTICE 3)"
_SPLITWISE = "Mutinifni/splitwise-sim perf model (NOTICE 3)"
_MLENERGY = "ML.ENERGY Leaderboard v3, H100 rows (NOTICE 3)"
_A100 = "Louis-99/DistServe A100-40GB clock profile (NOTICE 3)"
_DISTSERVE = "Louis-99/DistServe power estimator table (NOTICE 3)"
_LENT_H100 = f"lent H100 80GB HBM3, {_LENT} (scripts/measure_gpu.sh, scripts/profile_decode_graphs.py)"
_VIDUR_PAIRS = ((GPU, MODEL_L2), (GPU, MODEL_L3))  # vidur and splitwise measured Llama-2-70B: Llama-3.3-70B's layers

#: Every check, in report order. Tolerances: 10 % for a fit target or a clock shape, 15 % for latency shapes and
#: power never fitted; the lent H100's eager prefill profile has one window per shape, and two near-identical shapes
#: (TP2, 234 and 239 tokens, both host-bound) read 69.3 and 53.8 ms, 29 % apart: 15 % there too.
CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec(
        "allreduce",
        "vidur_h100_dgx_all_reduce.csv",
        _VIDUR,
        IN_SAMPLE,
        10.0,
        "s",
        "NCCL all-reduce time, TP 2/4/8, all sizes (fit target of the all-reduce law)",
        cmp.compare_allreduce,
        ((GPU, "*"),),
    ),
    CheckSpec(
        "vidur_mlp",
        "vidur_h100_llama2_70b_mlp.csv",
        _VIDUR,
        IN_SAMPLE,
        10.0,
        "s",
        "per-layer non-attention time, TP 1/2/4/8, 1..4096 tokens (Llama-2-70B layer = Llama-3.3-70B layer)",
        cmp.compare_vidur,
        _VIDUR_PAIRS,
    ),
    CheckSpec(
        "a100_decode_clock_shape",
        "a100_gemma2_27b_tp2_latency_vs_freq.json (decode)",
        _A100,
        IN_SAMPLE,
        10.0,
        "latency / latency at top clock",
        "decode latency(f)/latency(1410 MHz), batch 1-64, 690-1170 MHz: the only measured clock sweep (A100, "
        "Gemma-2-27B TP2); fit target of the memory-clock law",
        cmp.compare_a100_decode,
        ((A100_SWEEP_GPU, A100_SWEEP_MODEL),),
    ),
    CheckSpec(
        "mlenergy_8b_step_time",
        "mlenergy_h100_llama31_8b_tp1_decode.csv",
        _MLENERGY,
        IN_SAMPLE,
        10.0,
        "s",
        "mean step time of colocated serving, Llama-3.1-8B TP1, batch 8-690, prefills mixed in",
        cmp.compare_mlenergy_8b_time,
        ((GPU, MODEL_8B),),
    ),
    CheckSpec(
        "mlenergy_8b_power",
        "mlenergy_h100_llama31_8b_tp1_decode.csv",
        _MLENERGY,
        IN_SAMPLE,
        10.0,
        "W per GPU",
        "mean power of the same runs (at the power limit from batch ~192)",
        cmp.compare_mlenergy_8b_power,
        ((GPU, MODEL_8B),),
    ),
    CheckSpec(
        "prefill_power",
        "llama3_70b_prefill_power_vs_freq.csv",
        _DISTSERVE,
        IN_SAMPLE,
        10.0,
        "W per GPU",
        "per-GPU busy power, one prompt per iteration, locked clocks",
        cmp.compare_prefill_power,
        ((GPU, MODEL_L3),),
    ),
    CheckSpec(
        "idle_power",
        "llama3_70b_idle_power_vs_freq.csv",
        _DISTSERVE,
        IN_SAMPLE,
        10.0,
        "W per GPU",
        "per-GPU idle power, locked clocks",
        cmp.compare_idle_power,
        ((GPU, MODEL_L3),),
    ),
    CheckSpec(
        "h100_prefill_short_fit",
        "profile.csv: eager prefill < 1,000 tokens, TP 2/8",
        _LENT_H100,
        IN_SAMPLE,
        15.0,
        "s",
        "eager-PyTorch prefill of 70B shards at 1,980 MHz, host-bound: fit target of the launch time per layer",
        cmp.compare_h100_prefill_short_fit,
        ((GPU, MODEL_L3),),
    ),
    CheckSpec(
        "h100_decode_power_fit",
        "decode_graphs.csv: power, batch >= 32, TP 2/8",
        _LENT_H100,
        IN_SAMPLE,
        10.0,
        "W per GPU",
        "decode step power (CUDA graphs) at 1,980 MHz requested, power cap applied; fit target of the power law",
        cmp.compare_h100_decode_power_fit,
        ((GPU, MODEL_L3),),
    ),
    CheckSpec(
        "splitwise_prefill_shape",
        "splitwise_perf_model.csv (prompt time)",
        _SPLITWISE,
        OUT_OF_SAMPLE,
        15.0,
        "ratio to 1024 tokens, batch 1",
        "prompt time / (1024 tokens, batch 1) per TP; TP2 batch 64 excluded",
        cmp.compare_splitwise_prefill,
        _VIDUR_PAIRS,
    ),
    CheckSpec(
        "splitwise_decode_shape",
        "splitwise_perf_model.csv (token time)",
        _SPLITWISE,
        OUT_OF_SAMPLE,
        15.0,
        "ratio to 1024 tokens, batch 1",
        "token time / (1024 tokens, batch 1) per TP; TP2 batch 64 excluded",
        cmp.compare_splitwise_decode,
        _VIDUR_PAIRS,
    ),
    CheckSpec(
        "a100_prefill_clock_shape",
        "a100_gemma2_27b_tp2_latency_vs_freq.json (prefill)",
        _A100,
        OUT_OF_SAMPLE,
        10.0,
        "latency / latency at top clock",
        "prefill latency(f)/latency(1410 MHz), 1024-4096 tokens, 690-1170 MHz, the swept system (A100, "
        "Gemma-2-27B TP2)",
        cmp.compare_a100_prefill,
        ((A100_SWEEP_GPU, A100_SWEEP_MODEL),),
    ),
    CheckSpec(
        "h100_prefill_short_held_out",
        "profile.csv: eager prefill < 1,000 tokens, TP4",
        _LENT_H100,
        OUT_OF_SAMPLE,
        15.0,
        "s",
        "the host-bound eager prefill on the TP4 shard, not fitted",
        cmp.compare_h100_prefill_short_held_out,
        ((GPU, MODEL_L3),),
    ),
    CheckSpec(
        "h100_prefill_long",
        "profile.csv: eager prefill >= 1,000 tokens, TP 2/4/8",
        _LENT_H100,
        OUT_OF_SAMPLE,
        15.0,
        "s",
        "compute-bound eager prefill; the model also prices the TP group's all-reduces, the shard runs none",
        cmp.compare_h100_prefill_long,
        ((GPU, MODEL_L3),),
    ),
    CheckSpec(
        "h100_decode_power_held_out",
        "decode_graphs.csv: power, batch >= 32, TP4",
        _LENT_H100,
        OUT_OF_SAMPLE,
        15.0,
        "W per GPU",
        "decode step power on the TP4 shard, not fitted",
        cmp.compare_h100_decode_power_held_out,
        ((GPU, MODEL_L3),),
    ),
    CheckSpec(
        "h100_decode_power_small",
        "decode_graphs.csv: power, batch 1-8, TP 2/4/8",
        _LENT_H100,
        OUT_OF_SAMPLE,
        15.0,
        "W per GPU",
        "decode step power at small batches (mostly fixed kernel time), not fitted",
        cmp.compare_h100_decode_power_small,
        ((GPU, MODEL_L3),),
    ),
    CheckSpec(
        "mlenergy_70b_decode",
        "ML.ENERGY leaderboard, Llama-3.3-70B TP4, batch 8 / 64",
        "ML.ENERGY leaderboard (published; reserved for validation)",
        HELD_OUT,
        15.0,
        "s",
        "decode step at batch 8 / 64, default governor, vs median time between tokens",
        cmp.compare_mlenergy_70b,
        ((GPU, MODEL_L3),),
    ),
)

#: The checks by name.
CHECK_BY_NAME: dict[str, CheckSpec] = {c.name: c for c in CHECKS}


def calibrated_pairs() -> list[tuple[str, str]]:
    """The (GPU, model) pairs with measurements of their own (``biscale calibrate --gpu/--model`` accepts these)."""
    return sorted({p for c in CHECKS for p in c.pairs if p[1] != "*"})


@dataclass
class Check:
    """The result of one check: model vs measurement on one dataset."""

    name: str
    dataset: str
    source: str
    role: str
    metric: str
    error_pct: float
    """The metric's value (mean absolute percentage error), percent."""
    tolerance_pct: float
    lodo_error_pct: float | None = None
    """In-sample checks: the error of the model fitted without this dataset, percent (None: not computed)."""
    predicted: list[float] = field(default_factory=list)
    measured: list[float] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    note: str = ""
    unit: str = ""

    @property
    def passed(self) -> bool:
        return self.error_pct <= self.tolerance_pct

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dataset": self.dataset,
            "source": self.source,
            "role": self.role,
            "metric": self.metric,
            "error_pct": self.error_pct,
            "lodo_error_pct": self.lodo_error_pct,
            "tolerance_pct": self.tolerance_pct,
            "passed": self.passed,
            "points": len(self.measured),
            "note": self.note,
        }


def select_checks(checks: list[Check], gpu: str | None, model: str | None) -> list[Check]:
    """The checks that use measurements of ``gpu`` (and ``model``; None: any). Empty if there are none, or if
    only GPU-wide checks (all-reduce) match a model: no model is checked against another model's data."""

    def pairs(c: Check) -> tuple[tuple[str, str], ...]:
        return CHECK_BY_NAME[c.name].pairs

    def match(c: Check) -> bool:
        return any((gpu is None or g == gpu) and (model is None or m in (model, "*")) for g, m in pairs(c))

    chosen = [c for c in checks if match(c)]
    if model is not None and all(("*" in {m for _, m in pairs(c)}) for c in chosen):
        return []
    return chosen


def stored_lodo_errors(gpu: str = GPU) -> dict[str, float]:
    """The leave-one-dataset-out errors stored beside the fitted constants by ``refit_all``."""
    raw = json.loads(constants_path(gpu).read_text())
    return {str(k): float(v) for k, v in raw.get("lodo_error_pct", {}).items()}


def run_checks(
    data_root: Path | None = None, consts: FittedConstants | None = None, lodo: dict[str, float] | None = None
) -> list[Check]:
    """Every calibration check of the H100 constants (the only GPU with its own fit), in :data:`CHECKS` order.

    Each comparison uses the model its data were measured on (Llama-2-70B for vidur and splitwise,
    Llama-3.1-8B for the ML.ENERGY decode data, Gemma-2-27B on A100 for the sweep, Llama-3.3-70B otherwise).
    ``lodo`` (leave-one-dataset-out errors of the in-sample checks) defaults to the values stored with the
    constants when ``consts`` is not given, and to none otherwise.
    """
    ds = load_datasets(data_root)
    c = consts if consts is not None else load_constants(GPU)
    if lodo is None:
        lodo = stored_lodo_errors(GPU) if consts is None else {}
    checks = []
    for spec in CHECKS:
        res = spec.compare(c, ds)
        checks.append(
            Check(
                name=spec.name,
                dataset=spec.dataset,
                source=spec.source,
                role=spec.role,
                metric=spec.metric,
                error_pct=mape_pct(res.predicted, res.measured),
                tolerance_pct=spec.tolerance_pct,
                lodo_error_pct=lodo.get(spec.name) if spec.role == IN_SAMPLE else None,
                predicted=[float(v) for v in res.predicted],
                measured=[float(v) for v in res.measured],
                labels=res.labels,
                note=spec.note,
                unit=spec.unit,
            )
        )
    return checks


def checks_table(checks: list[Check]) -> pd.DataFrame:
    """The report as a table (one row per check), as written to ``calibration.csv``."""
    return pd.DataFrame([c.to_json() for c in checks])
