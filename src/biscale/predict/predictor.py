"""The predictor controllers use: latency and power of K batches at N candidate clocks in one call.

Model form ("clock-grid least squares"): for every phase, TP degree and profiled SM clock there is one linear
model on the basis of :mod:`biscale.predict.features`, fitted on relative error. A query evaluates all grid
clocks with one matrix product, makes the result monotone in clock (latency non-increasing, power
non-decreasing: a running min / max along the clock axis), then interpolates to the requested clocks (latency
linear in 1/f, power linear in f). Queries outside the training ranges are evaluated but flagged in
``Prediction.out_of_range`` and counted in ``Predictor.out_of_range_queries``; clocks beyond the profiled range
are clamped to its ends and flagged.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, cast

import numpy as np

from biscale.errors import InputError
from biscale.predict.features import HINGE_FEATURE, RAW_FEATURES

ARTIFACT_JSON = "predictor.json"
ARTIFACT_NPZ = "coefficients.npz"
FORMAT_NAME = "biscale-predictor"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Prediction:
    """Predictions for K batches x N clocks."""

    latency_s: np.ndarray
    """Iteration latency, seconds, shape (K, N)."""
    power_w: np.ndarray
    """Mean power per GPU over the iteration, watts, shape (K, N)."""
    out_of_range: np.ndarray
    """True where the batch or the clock lies outside the training ranges (extrapolated), shape (K, N)."""

    @property
    def energy_j(self) -> np.ndarray:
        """Energy per GPU per iteration, joules, shape (K, N)."""
        return self.latency_s * self.power_w


@dataclass
class PhaseModel:
    """One phase at one TP degree: roofline-shaped coefficients per profiled clock plus the training ranges."""

    phase: str
    tp: int
    clocks_mhz: np.ndarray
    """Profiled clocks, ascending, MHz (C,)."""
    knots: np.ndarray
    """Roofline bend per clock on the hinge feature (tokens for prefill, requests for decode) (C,)."""
    lat_coef: np.ndarray
    """Latency coefficients (R + 2, C) for ``[1, raw..., hinge]``, seconds per feature unit."""
    energy_coef: np.ndarray
    """Energy-per-iteration coefficients (R + 3, C) for ``[1, raw..., hinge, step]``, joules per GPU."""
    lo: np.ndarray
    """Training minimum of each raw feature (R,)."""
    hi: np.ndarray
    """Training maximum of each raw feature (R,)."""
    power_ceiling_w: float = float("inf")
    """Sustained power ceiling per GPU (the power-limit plateau seen in the profile), W."""
    _interp_cache: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._hinge = HINGE_FEATURE[self.phase]
        c = self.clocks_mhz.size
        self._c = c
        # One matrix product gives latency and energy at every grid clock: [1, raw] @ [lat_lin | e_lin].
        self._w = np.ascontiguousarray(np.concatenate((self.lat_coef[:-1], self.energy_coef[:-2]), axis=1))
        self._lat_h = np.ascontiguousarray(self.lat_coef[-1])
        self._e_h = np.ascontiguousarray(self.energy_coef[-2])
        self._e_s = np.ascontiguousarray(self.energy_coef[-1])
        self._ceiling = float(self.power_ceiling_w)
        self._col = {int(f): j for j, f in enumerate(self.clocks_mhz)}
        self._lo_list = [float(v) for v in self.lo]
        self._hi_list = [float(v) for v in self.hi]

    def _interp(self, clocks: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Matrix (2C, 2N) mapping [latency grid | power grid] onto the requested clocks, and a clock flag (N,).

        Latency is interpolated linearly in 1/f, power linearly in f; clocks beyond the grid are clamped and
        flagged. Cached per clock tuple.
        """
        hit = self._interp_cache.get(clocks)
        if hit is not None:
            return hit
        grid = self.clocks_mhz.astype(np.float64)
        q = np.asarray(clocks, dtype=np.float64)
        oor = (q < grid[0]) | (q > grid[-1])
        qc = np.clip(q, grid[0], grid[-1])
        hi_idx = np.clip(np.searchsorted(grid, qc, side="left"), 1, grid.size - 1)
        lo_idx = hi_idx - 1
        g0, g1 = grid[lo_idx], grid[hi_idx]
        w_pow = (qc - g0) / (g1 - g0)
        w_lat = (1.0 / qc - 1.0 / g0) / (1.0 / g1 - 1.0 / g0)
        c, n = grid.size, q.size
        m = np.zeros((2 * c, 2 * n))
        cols = np.arange(n)
        m[lo_idx, cols] = 1.0 - w_lat
        m[hi_idx, cols] += w_lat
        m[c + lo_idx, n + cols] = 1.0 - w_pow
        m[c + hi_idx, n + cols] += w_pow
        out = (m, oor)
        if len(self._interp_cache) < 256:
            self._interp_cache[clocks] = out
        return out

    def grid(self, raw: np.ndarray) -> np.ndarray:
        """[latency (s) | power (W)] at every profiled clock, (K, 2C), each made monotone in clock."""
        k = raw.shape[0]
        x = np.empty((k, raw.shape[1] + 1))
        x[:, 0] = 1.0
        x[:, 1:] = raw
        out = x @ self._w  # (K, 2C): latency then energy
        c = self._c
        over = raw[:, self._hinge, None] - self.knots
        hinge = np.maximum(over, 0.0)
        lat = out[:, :c]
        energy = out[:, c:]
        lat += hinge * self._lat_h
        np.maximum(lat, 1e-6, out=lat)
        energy += hinge * self._e_h
        energy += (over > 0.0) * self._e_s
        energy /= lat  # now power
        np.minimum(energy, self._ceiling, out=energy)
        np.maximum(energy, 1.0, out=energy)
        # Monotone in clock: latency non-increasing (running min), power non-decreasing (running max).
        np.minimum.accumulate(lat, axis=1, out=lat)
        np.maximum.accumulate(energy, axis=1, out=energy)
        return out

    def evaluate_one(self, raw_row: tuple[float, ...], clock: int) -> tuple[float, float, bool]:
        """One batch at one clock (the simulator's per-iteration call): (latency s, power W, out of range)."""
        g = self.grid(np.array((raw_row,), dtype=np.float64))
        j = self._col.get(clock)
        if j is not None:
            lat, pw, oor = float(g[0, j]), float(g[0, self._c + j]), False
        else:
            m, clock_oor = self._interp((clock,))
            v = g @ m
            lat, pw, oor = float(v[0, 0]), float(v[0, 1]), bool(clock_oor[0])
        for x, lo, hi in zip(raw_row, self._lo_list, self._hi_list, strict=True):
            if x < lo or x > hi:
                oor = True
        return lat, pw, oor

    def evaluate(self, raw: np.ndarray, clocks: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m, clock_oor = self._interp(clocks)
        both = self.grid(raw) @ m
        n = clock_oor.size
        row_oor = ((raw < self.lo) | (raw > self.hi)).any(axis=1)
        oor = np.logical_or(np.reshape(row_oor, (-1, 1)), clock_oor)
        return both[:, :n], both[:, n:], oor


class Predictor:
    """Four fitted predictors (prefill/decode x latency/power) for one (GPU, model), loaded from an artifact."""

    def __init__(self, meta: dict[str, Any], models: dict[tuple[str, int], PhaseModel], path: Path | None = None):
        self.meta = meta
        self.models = models
        self.path = path
        self.gpu: str = str(meta["gpu"])
        self.model: str = str(meta["model"])
        self.out_of_range_queries = 0
        """How many (batch, clock) predictions so far were outside the training ranges."""

    # ----------------------------------------------------------------- info
    def tps(self, phase: str) -> tuple[int, ...]:
        """TP degrees the phase was profiled at."""
        return tuple(sorted(tp for (ph, tp) in self.models if ph == phase))

    def clocks_mhz(self, phase: str, tp: int) -> tuple[int, ...]:
        """Profiled clocks of (phase, TP), MHz."""
        return tuple(int(c) for c in self._model(phase, tp).clocks_mhz)

    @property
    def errors(self) -> dict[str, Any]:
        """Held-out errors recorded at fit time (``*_mape_pct`` keys)."""
        return dict(self.meta.get("errors", {}))

    def _model(self, phase: str, tp: int) -> PhaseModel:
        try:
            return self.models[(phase, int(tp))]
        except KeyError:
            have = ", ".join(str(t) for t in self.tps(phase)) or "none"
            raise InputError(f"predictor has no {phase} model for tp={tp} (profiled TP degrees: {have})") from None

    # ---------------------------------------------------------------- query
    def predict(self, phase: str, tp: int, raw: np.ndarray, clocks_mhz: Sequence[int] | np.ndarray) -> Prediction:
        """Predict for raw features ``(K, R)`` (columns as in ``RAW_FEATURES[phase]``) at N clocks."""
        model = self._model(phase, tp)
        clocks = clocks_mhz if type(clocks_mhz) is tuple else tuple(int(c) for c in np.asarray(clocks_mhz).ravel())
        raw2 = np.asarray(raw, dtype=np.float64)
        if raw2.ndim == 1:
            raw2 = raw2[None, :]
        lat, pw, oor = model.evaluate(raw2, clocks)
        n_oor = int(oor.sum())
        if n_oor:
            self.out_of_range_queries += n_oor
        return Prediction(lat, pw, oor)

    def predict_one(self, phase: str, tp: int, raw_row: tuple[float, ...], clock_mhz: int) -> tuple[float, float]:
        """Latency (s) and power (W per GPU) of one batch at one clock: the scalar fast path of :meth:`predict`
        (same numbers; out-of-range queries are counted)."""
        lat, pw, oor = self._model(phase, tp).evaluate_one(raw_row, clock_mhz)
        if oor:
            self.out_of_range_queries += 1
        return lat, pw

    def predict_prefill(
        self,
        tp: int,
        clocks_mhz: Sequence[int] | np.ndarray,
        *,
        num_seqs: np.ndarray | Sequence[float],
        tokens_sum: np.ndarray | Sequence[float],
        attn_pairs: np.ndarray | Sequence[float],
    ) -> Prediction:
        """K prefill batches (arrays of length K) at N clocks -> (K, N) latency and power."""
        n = np.asarray(num_seqs, np.float64)
        raw = np.empty((n.size, 3))
        raw[:, 0] = n
        raw[:, 1] = tokens_sum
        raw[:, 2] = attn_pairs
        return self.predict("prefill", tp, raw, clocks_mhz)

    def predict_decode(
        self,
        tp: int,
        clocks_mhz: Sequence[int] | np.ndarray,
        *,
        batch_size: np.ndarray | Sequence[float],
        context_sum: np.ndarray | Sequence[float],
    ) -> Prediction:
        """K decode batches (arrays of length K) at N clocks -> (K, N) latency and power."""
        b = np.asarray(batch_size, np.float64)
        raw = np.empty((b.size, 2))
        raw[:, 0] = b
        raw[:, 1] = context_sum
        return self.predict("decode", tp, raw, clocks_mhz)

    def predict_prefill_shapes(self, shapes: Sequence[Any], tp: int, clocks_mhz: Sequence[int]) -> Prediction:
        """Like :meth:`predict_prefill` for a sequence of :class:`~biscale.costmodel.PrefillShape`."""
        raw = np.array([(s.num_seqs, s.tokens_sum, s.attn_pairs) for s in shapes], dtype=np.float64)
        return self.predict("prefill", tp, raw.reshape(-1, 3), clocks_mhz)

    def predict_decode_shapes(self, shapes: Sequence[Any], tp: int, clocks_mhz: Sequence[int]) -> Prediction:
        """Like :meth:`predict_decode` for a sequence of :class:`~biscale.costmodel.DecodeShape`."""
        raw = np.array([(s.batch_size, s.context_sum) for s in shapes], dtype=np.float64)
        return self.predict("decode", tp, raw.reshape(-1, 2), clocks_mhz)

    # ------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``predictor.json`` (metadata) and ``coefficients.npz`` (arrays) into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        phases: dict[str, Any] = {}
        for (phase, tp), m in sorted(self.models.items()):
            key = f"{phase}_tp{tp}"
            arrays[f"{key}_clocks_mhz"] = m.clocks_mhz.astype(np.int64)
            arrays[f"{key}_latency_coef"] = m.lat_coef
            arrays[f"{key}_energy_coef"] = m.energy_coef
            arrays[f"{key}_knots"] = m.knots
            entry = phases.setdefault(phase, {"raw_features": list(RAW_FEATURES[phase]), "tps": {}})
            entry["tps"][str(tp)] = {
                "clocks_mhz": [int(c) for c in m.clocks_mhz],
                "knots": [float(k) for k in m.knots],
                "training_ranges": {
                    name: [float(lo), float(hi)] for name, lo, hi in zip(RAW_FEATURES[phase], m.lo, m.hi, strict=True)
                },
            }
        meta = dict(self.meta)
        meta["format"] = FORMAT_NAME
        meta["format_version"] = FORMAT_VERSION
        meta["phases"] = phases
        (d / ARTIFACT_JSON).write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
        with open(d / ARTIFACT_NPZ, "wb") as fh:
            np.savez(fh, **cast(dict[str, Any], arrays))  # numeric arrays only: loads with allow_pickle=False
        return d


def load_predictor(path: str | Path) -> Predictor:
    """Load an artifact directory written by ``biscale fit`` (JSON + NPZ; never unpickles).

    A damaged artifact (truncated or non-JSON metadata, an NPZ that is not a zip of numeric arrays, a missing
    key or array, arrays of the wrong shape or with non-finite values) is an :class:`InputError` naming the file
    and the key, never a crash at query time.
    """
    d = Path(path)
    jp, npz = d / ARTIFACT_JSON, d / ARTIFACT_NPZ
    if not jp.is_file() or not npz.is_file():
        raise InputError(f"not a predictor artifact (needs {ARTIFACT_JSON} and {ARTIFACT_NPZ})", path=d)
    meta = _read_artifact_meta(jp)
    models: dict[tuple[str, int], PhaseModel] = {}
    try:
        with np.load(npz, allow_pickle=False) as arrays:
            if not hasattr(arrays, "files"):
                raise ValueError("a single array, not an archive")
            for phase, entry in meta["phases"].items():
                for tp_s, info in entry["tps"].items():
                    models[(phase, int(tp_s))] = _phase_model(phase, int(tp_s), info, arrays, meta, npz)
    except InputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # what numpy/zipfile raise
        raise InputError(
            "not a valid NPZ archive of numeric arrays (corrupt, truncated, or holding pickled objects)", path=npz
        ) from exc
    return Predictor(meta, models, path=d)


def _read_artifact_meta(jp: Path) -> dict[str, Any]:
    """``predictor.json``, checked for every key :func:`load_predictor` reads."""
    try:
        meta = json.loads(jp.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read: {exc}", path=jp) from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"bad JSON: {exc.msg}", path=jp, line=exc.lineno) from exc
    if not isinstance(meta, dict):
        raise InputError("predictor metadata must be one JSON object", path=jp)
    if meta.get("format") != FORMAT_NAME or meta.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"unsupported artifact format {meta.get('format')!r} v{meta.get('format_version')} "
            f"(expected {FORMAT_NAME!r} v{FORMAT_VERSION})",
            path=jp,
        )
    for key in ("gpu", "model"):
        if not isinstance(meta.get(key), str):
            raise InputError("missing or not a string", path=jp, field=key)
    ceiling = meta.get("power_ceiling_w", float("inf"))
    if isinstance(ceiling, bool) or not isinstance(ceiling, int | float) or not ceiling > 0:
        raise InputError(f"must be a number > 0 W, got {ceiling!r}", path=jp, field="power_ceiling_w")
    phases = meta.get("phases")
    if not isinstance(phases, dict) or not phases or set(phases) - set(RAW_FEATURES):
        raise InputError(f"must map phases ({', '.join(RAW_FEATURES)}) to their models", path=jp, field="phases")
    for phase, entry in phases.items():
        where = f"phases.{phase}"
        if not isinstance(entry, dict) or entry.get("raw_features") != list(RAW_FEATURES[phase]):
            raise InputError(f"raw_features must be {list(RAW_FEATURES[phase])}", path=jp, field=where)
        tps = entry.get("tps")
        if not isinstance(tps, dict) or not tps:
            raise InputError("must map TP degrees to models", path=jp, field=f"{where}.tps")
        for tp_s, info in tps.items():
            ranges = info.get("training_ranges") if isinstance(info, dict) else None
            if not (str(tp_s).isdigit() and int(tp_s) >= 1) or not isinstance(ranges, dict):
                raise InputError("needs a TP degree >= 1 and training_ranges", path=jp, field=f"{where}.tps.{tp_s}")
            for name in RAW_FEATURES[phase]:
                r = ranges.get(name)
                if not (isinstance(r, list) and len(r) == 2 and all(isinstance(v, int | float) for v in r)):
                    raise InputError("must be [low, high]", path=jp, field=f"{where}.tps.{tp_s}.training_ranges.{name}")
    return meta


def _phase_model(phase: str, tp: int, info: dict[str, Any], arrays: Any, meta: dict[str, Any], npz: Path) -> PhaseModel:
    """One phase/TP model from the archive, with every array's shape checked against the profiled clocks."""
    key = f"{phase}_tp{tp}"
    n_raw = len(RAW_FEATURES[phase])

    def array(suffix: str, dtype: type, shape: tuple[int, ...] | None) -> np.ndarray:
        name = f"{key}_{suffix}"
        if name not in arrays.files:
            raise InputError(f"array {name!r} is missing", path=npz)
        a = np.asarray(arrays[name])
        if a.dtype.kind not in "iuf":
            raise InputError(f"array {name!r} is not numeric ({a.dtype})", path=npz)
        if shape is not None and a.shape != shape:
            raise InputError(f"array {name!r} has shape {a.shape}, expected {shape}", path=npz)
        if not np.all(np.isfinite(a)):
            raise InputError(f"array {name!r} has non-finite values", path=npz)
        return np.asarray(a, dtype=dtype)

    clocks = array("clocks_mhz", np.int64, None)
    if clocks.ndim != 1 or clocks.size < 2 or clocks[0] <= 0 or np.any(np.diff(clocks) <= 0):
        raise InputError(f"array '{key}_clocks_mhz' must list at least 2 ascending clocks > 0 MHz", path=npz)
    c = clocks.size
    ranges = info["training_ranges"]
    return PhaseModel(
        phase=phase,
        tp=tp,
        clocks_mhz=clocks,
        knots=array("knots", np.float64, (c,)),
        lat_coef=array("latency_coef", np.float64, (n_raw + 2, c)),
        energy_coef=array("energy_coef", np.float64, (n_raw + 3, c)),
        lo=np.array([ranges[n][0] for n in RAW_FEATURES[phase]], dtype=np.float64),
        hi=np.array([ranges[n][1] for n in RAW_FEATURES[phase]], dtype=np.float64),
        power_ceiling_w=float(meta.get("power_ceiling_w", float("inf"))),
    )


def bundled_artifact_dir(gpu: str, model: str) -> Path:
    """Directory of the bundled default artifact for (gpu, model) inside the package."""
    return Path(str(resources.files("biscale.predict") / "data" / f"{gpu}__{model}"))


@lru_cache(maxsize=8)
def _default_cached(gpu: str, model: str) -> Predictor:
    d = bundled_artifact_dir(gpu, model)
    if not (d / ARTIFACT_JSON).exists():
        raise InputError(
            f"no bundled predictor for gpu={gpu!r} model={model!r}; profile and fit one (docs/profiling.md)"
        )
    return load_predictor(d)


def default_predictor(gpu: str = "h100-sxm", model: str = "llama-3.3-70b") -> Predictor:
    """The bundled predictor for (gpu, model); a fresh copy so out-of-range counters are per caller."""
    base = _default_cached(gpu, model)
    models = {
        k: PhaseModel(v.phase, v.tp, v.clocks_mhz, v.knots, v.lat_coef, v.energy_coef, v.lo, v.hi, v.power_ceiling_w)
        for k, v in base.models.items()
    }
    return Predictor(base.meta, models, base.path)
