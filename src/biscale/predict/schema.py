"""The profile format: one row per measured iteration shape, plus a JSON sidecar with per-instance facts.

A profile is what a profiler (simulated or real) measured and what ``biscale fit`` learns from. It is a plain
CSV or Parquet table so users can produce it with their own tools; :func:`read_profile` validates it and turns
every problem into an :class:`~biscale.errors.InputError` that names the column and row (CSV line) at fault.

Length statistics use the population standard deviation (``ddof=0``), so the sum of squared lengths is
``n * (std**2 + mean**2)``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, ValidationError

from biscale.errors import InputError

PHASES = ("prefill", "decode")

#: Columns every row must have.
COMMON_COLUMNS = ("gpu", "model", "phase", "tp", "sm_clock_mhz", "batch_size", "latency_s", "repeats")
#: Length features of prefill rows (prompt tokens of the batch), tokens.
PREFILL_COLUMNS = ("input_len_sum", "input_len_mean", "input_len_std", "input_len_max")
#: Length features of decode rows (context tokens of the running requests), tokens.
DECODE_COLUMNS = ("context_len_sum", "context_len_mean", "context_len_std", "context_len_max")
#: At least one of these: mean power per GPU over the iteration (W), or energy per GPU per iteration (J).
POWER_COLUMNS = ("power_w", "energy_j")

#: All columns in the order profilers write them.
ALL_COLUMNS = (
    "gpu",
    "model",
    "phase",
    "tp",
    "sm_clock_mhz",
    "batch_size",
    *PREFILL_COLUMNS,
    "attn_pairs",
    *DECODE_COLUMNS,
    "latency_s",
    "power_w",
    "energy_j",
    "repeats",
    "source",
    "timestamp",
)

#: Fewest rows per (phase, TP, clock) that ``biscale fit`` accepts (the per-clock regression has 8 terms).
MIN_ROWS_PER_CLOCK = 12


class GovernorMeta(BaseModel):
    """The default clock governor's idle behaviour (mirrors :class:`biscale.costmodel.GovernorModel`)."""

    idle_power_w: float = Field(gt=0)
    downclock_after_s: float = Field(ge=0)
    wake_delay_s: float = Field(ge=0)
    shallow_idle_power_w: float = Field(gt=0)


class ProfileMeta(BaseModel):
    """Facts about the profiled instances that are not per-iteration measurements (the ``.meta.json`` sidecar).

    The CostModel adapter reads these from the fitted artifact, never from the hardware model.
    """

    gpu: str
    model: str
    backend: str = "unknown"
    supported_clocks_mhz: list[int] = Field(default_factory=list)
    """Lockable SM clocks of the GPU, ascending, MHz."""
    kv_bytes_per_token: int | None = None
    """KV-cache bytes per token for the whole model, bytes."""
    kv_capacity_tokens: dict[int, int] = Field(default_factory=dict)
    """KV-cache capacity per TP degree, tokens."""
    idle_power_w: dict[int, dict[int, float]] = Field(default_factory=dict)
    """Measured per-GPU power of a loaded but idle instance: TP -> SM clock (MHz) -> W."""
    governor: GovernorMeta | None = None
    seed: int | None = None
    command: str = ""
    """The command that produced the profile (for reproduction)."""
    notes: str = ""


def meta_path(profile_path: str | Path) -> Path:
    """Sidecar path of a profile: ``run.csv`` -> ``run.meta.json``."""
    p = Path(profile_path)
    return p.with_name(p.stem + ".meta.json")


def write_profile(df: pd.DataFrame, path: str | Path, meta: ProfileMeta | None = None) -> Path:
    """Write a profile as CSV or Parquet (by suffix) and its sidecar; returns the profile path."""
    p = Path(path)
    cols = [c for c in ALL_COLUMNS if c in df.columns]
    out = df[cols]
    p.parent.mkdir(parents=True, exist_ok=True)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        out.to_csv(p, index=False, float_format="%.9g")
    elif suffix in (".parquet", ".pq"):
        out.to_parquet(p, index=False)
    else:
        raise InputError("profile must end in .csv or .parquet", path=p)
    if meta is not None:
        meta_path(p).write_text(meta.model_dump_json(indent=2) + "\n")
    return p


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex); identifies the profile an artifact came from."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_meta(profile_path: str | Path) -> ProfileMeta | None:
    """The profile's sidecar, or ``None`` when there is none."""
    mp = meta_path(profile_path)
    if not mp.exists():
        return None
    try:
        return ProfileMeta.model_validate(json.loads(mp.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()
        raise InputError(f"bad profile sidecar: {first[0] if first else exc}", path=mp) from exc


def read_profile(path: str | Path, *, for_fit: bool = True) -> pd.DataFrame:
    """Read and validate a profile; returns a clean frame (``power_w`` and ``attn_pairs`` always filled).
    ``for_fit=False`` (scoring a fitted predictor) drops the coverage a fit needs (two clocks per phase and TP)."""
    p = Path(path)
    if not p.exists():
        raise InputError("profile not found", path=p)
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            df = pd.read_csv(p)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        else:
            raise InputError("profile must end in .csv or .parquet", path=p)
    except InputError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise InputError(f"cannot read profile: {' '.join(str(exc).split())}", path=p) from exc
    return validate_profile(df, path=p, csv=suffix == ".csv", for_fit=for_fit)


def _row_ref(path: Path | None, idx: int, csv: bool) -> dict[str, Any]:
    # CSV: header is line 1, so data row idx (0-based) is on line idx + 2. Parquet: 1-based row number.
    if csv:
        return {"path": path, "line": idx + 2}
    return {"path": path, "line": idx + 1} if path is None else {"path": f"{path} row {idx + 1}"}


def validate_profile(
    df: pd.DataFrame, *, path: Path | None = None, csv: bool = True, for_fit: bool = True
) -> pd.DataFrame:
    """Check columns, types and values; raise :class:`InputError` naming the first problem found."""
    if len(df) == 0:
        raise InputError("profile has no rows", path=path)
    missing = [c for c in COMMON_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"missing column(s): {', '.join(missing)}", path=path, field=missing[0])
    if not any(c in df.columns for c in POWER_COLUMNS):
        raise InputError("missing column: need power_w or energy_j", path=path, field="power_w")
    df = df.reset_index(drop=True).copy()
    df["phase"] = df["phase"].astype(str).str.strip().str.lower()
    bad_phase = ~df["phase"].isin(PHASES)
    if bad_phase.any():
        i = int(np.flatnonzero(bad_phase.to_numpy())[0])
        raise InputError(
            f"phase must be 'prefill' or 'decode', got {df['phase'].iloc[i]!r}", field="phase", **_row_ref(path, i, csv)
        )
    for phase, cols in (("prefill", PREFILL_COLUMNS), ("decode", DECODE_COLUMNS)):
        if (df["phase"] == phase).any():
            absent = [c for c in cols if c not in df.columns]
            if absent:
                raise InputError(f"missing column(s) for {phase} rows: {', '.join(absent)}", path=path, field=absent[0])
    for phase in PHASES:
        if not (df["phase"] == phase).any():
            raise InputError(f"no {phase} rows: the profile needs both phases", path=path, field="phase")
    for col in ("gpu", "model"):
        values = df[col].astype(str).unique()
        if len(values) != 1:
            raise InputError(f"one profile must cover one {col}; found {sorted(values)}", path=path, field=col)

    is_pre = (df["phase"] == "prefill").to_numpy()

    def check(col: str, mask: np.ndarray, *, allow_zero: bool = False, integer: bool = False) -> None:
        vals = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
        bad_nan = mask & ~np.isfinite(vals)
        if bad_nan.any():
            i = int(np.flatnonzero(bad_nan)[0])
            raise InputError(
                f"value is missing, NaN or not a number ({df[col].iloc[i]!r})", field=col, **_row_ref(path, i, csv)
            )
        bad = mask & ((vals < 0) if allow_zero else (vals <= 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            need = "non-negative" if allow_zero else "positive"
            raise InputError(f"value must be {need}, got {vals[i]:g}", field=col, **_row_ref(path, i, csv))
        if integer:
            frac = mask & (np.abs(vals - np.round(np.where(np.isfinite(vals), vals, 0))) > 1e-9)
            if frac.any():
                i = int(np.flatnonzero(frac)[0])
                raise InputError(f"value must be a whole number, got {vals[i]:g}", field=col, **_row_ref(path, i, csv))

    every = np.ones(len(df), dtype=bool)
    for col in ("tp", "sm_clock_mhz", "batch_size", "repeats"):
        check(col, every, integer=True)
    check("latency_s", every)
    for col in PREFILL_COLUMNS:
        check(col, is_pre, allow_zero=col.endswith("_std"))
    for col in DECODE_COLUMNS:
        check(col, ~is_pre, allow_zero=col.endswith("_std"))
    if "power_w" in df.columns:
        check("power_w", every)
    else:
        check("energy_j", every)
        df["power_w"] = pd.to_numeric(df["energy_j"]) / pd.to_numeric(df["latency_s"])
    # Energy per GPU per iteration is what the fit uses; derive it from the validated power column.
    df["energy_j"] = pd.to_numeric(df["power_w"]) * pd.to_numeric(df["latency_s"])
    if "attn_pairs" in df.columns and pd.to_numeric(df["attn_pairs"], errors="coerce")[is_pre].notna().all():
        check("attn_pairs", is_pre)
    else:
        df["attn_pairs"] = np.nan
    for col in ("tp", "sm_clock_mhz", "batch_size", "repeats"):
        df[col] = pd.to_numeric(df[col]).astype(np.int64)
    for col in ("latency_s", "power_w", "energy_j", "attn_pairs", *PREFILL_COLUMNS, *DECODE_COLUMNS):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(np.float64)
    # Derived sufficient statistics (what the simulator's shapes carry).
    n = df["batch_size"].to_numpy(np.float64)
    if is_pre.any():
        mean = df["input_len_mean"].to_numpy(np.float64)
        std = df["input_len_std"].to_numpy(np.float64)
        sq = n * (std**2 + mean**2)
        pairs_default = 0.5 * (sq + df["input_len_sum"].to_numpy(np.float64))
        pairs = df["attn_pairs"].to_numpy(np.float64)
        df["attn_pairs"] = np.where(is_pre, np.where(np.isfinite(pairs), pairs, pairs_default), np.nan)
    for col in ("source", "timestamp"):
        if col not in df.columns:
            df[col] = ""

    # Enough coverage to fit clock dependence per phase and TP.
    for key, grp in df.groupby(["phase", "tp"], sort=True) if for_fit else ():
        ph, tp = (str(v) for v in cast(tuple, key))
        clocks = np.unique(grp["sm_clock_mhz"].to_numpy())
        if clocks.size < 2:
            raise InputError(
                f"{ph} rows at tp={tp} cover a single SM clock ({int(clocks[0])} MHz); "
                "need at least 2 clocks to learn the clock dependence",
                path=path,
                field="sm_clock_mhz",
            )
        counts = grp.groupby("sm_clock_mhz").size()
        if counts.min() < MIN_ROWS_PER_CLOCK:
            clk = int(cast(int, counts.idxmin()))
            raise InputError(
                f"too few rows: {int(counts.min())} {ph} rows at tp={tp}, {clk} MHz "
                f"(need >= {MIN_ROWS_PER_CLOCK} per phase, TP and clock)",
                path=path,
            )
    return df
