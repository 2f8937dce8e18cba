"""A :class:`~biscale.costmodel.CostModel` backed by the learned predictors (what controllers believe).

The simulator can run on this in place of the hardware model (e.g. the planner's capacity search). Everything it
reports comes from the artifact: iteration costs from the predictors, and idle power, KV capacity, KV bytes per
token, supported clocks and the governor from the profile's sidecar facts stored in the artifact at fit time.
The hardware model is never consulted.

Per-shape cache (why: a predictor query costs ~15 us, the hardware model ~2 us, and the planner's capacity search
runs hundreds of simulations on beliefs). Prefill shapes repeat exactly (same prompt mixes at every probed rate), so
they are cached on their exact key ``(tp, clock, num_seqs, tokens_sum, attn_pairs)``: identical numbers. Decode
shapes rarely repeat exactly (the context sum grows by the batch size every iteration); with
``decode_context_step_tokens = s > 0`` a decode query is answered by linear interpolation in ``context_sum``
between the cached exact predictions at the two neighbouring multiples of ``s`` (same ``tp``, clock and batch
size). The predictor is linear in ``context_sum`` at each profiled clock, so the only error comes from the
clock-monotonicity envelope and the power ratio: measured against exact queries on 20,000 random shapes, at most
1e-4 relative for ``s = 1024`` and 2e-4 for ``s = 2048`` (``tests/predict/test_costmodel_cache.py``). ``s = 0``
(the default) evaluates every decode query exactly. Out-of-range queries are still counted once per call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from biscale.costmodel import DecodeShape, GovernorModel, IterationCost, PrefillShape
from biscale.errors import InputError
from biscale.predict.predictor import Predictor


class PredictorCostModel:
    """Prices iterations with a :class:`Predictor`. ``sm_clock_mhz=None`` (default governor) = the top clock."""

    #: Most cached shapes kept (the cache is cleared when it grows past this; bounds memory on long runs).
    CACHE_LIMIT = 500_000

    def __init__(self, predictor: Predictor, *, decode_context_step_tokens: int = 0) -> None:
        if decode_context_step_tokens < 0:
            raise InputError(
                f"decode context step must be >= 0 tokens (got {decode_context_step_tokens})",
                field="decode_context_step_tokens",
            )
        self.predictor = predictor
        self.decode_context_step_tokens = int(decode_context_step_tokens)
        self._cache: dict[tuple[object, ...], tuple[float, float, bool]] = {}
        self.cache_hits = 0
        """Iteration costs answered without evaluating the predictor."""
        self.cache_misses = 0
        """Predictor evaluations made (an interpolated decode query may need two)."""
        meta: dict[str, Any] = predictor.meta.get("profile_meta") or {}
        self._meta = meta
        profiled = sorted({c for (ph, tp) in predictor.models for c in predictor.clocks_mhz(ph, tp)})
        supported = [int(c) for c in meta.get("supported_clocks_mhz") or []]
        self._clocks = tuple(supported or profiled)
        self._top = max(profiled)
        self._idle: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for tp_s, table in (meta.get("idle_power_w") or {}).items():
            pairs = sorted((int(c), float(w)) for c, w in table.items())
            self._idle[int(tp_s)] = (
                np.array([c for c, _ in pairs], dtype=np.float64),
                np.array([w for _, w in pairs], dtype=np.float64),
            )
        gov = meta.get("governor")
        self._governor = GovernorModel(**gov) if gov else None
        self.gpu_name = predictor.gpu
        self.model_name = predictor.model

    def _missing(self, what: str) -> InputError:
        return InputError(
            f"predictor artifact has no {what}: fit it from a profile with a .meta.json sidecar "
            "(biscale profile writes one; see docs/profiling.md)"
        )

    @property
    def supported_clocks_mhz(self) -> tuple[int, ...]:
        return self._clocks

    @property
    def max_clock_mhz(self) -> int:
        return self._clocks[-1]

    @property
    def kv_bytes_per_token(self) -> int:
        v = self._meta.get("kv_bytes_per_token")
        if v is None:
            raise self._missing("kv_bytes_per_token")
        return int(v)

    @property
    def governor(self) -> GovernorModel:
        if self._governor is None:
            raise self._missing("governor facts")
        return self._governor

    def kv_capacity_tokens(self, tp: int) -> int:
        caps = {int(k): int(v) for k, v in (self._meta.get("kv_capacity_tokens") or {}).items()}
        v = caps.get(int(tp))
        if v is None:
            raise self._missing(f"KV capacity for tp={tp}")
        return int(v)

    def idle_power_w(self, tp: int, sm_clock_mhz: int | None) -> float:
        if sm_clock_mhz is None:
            return self.governor.idle_power_w
        table = self._idle.get(int(tp))
        if table is None:
            raise self._missing(f"idle power for tp={tp}")
        clocks, watts = table
        return float(np.interp(float(sm_clock_mhz), clocks, watts))

    def _clock(self, sm_clock_mhz: int | None) -> int:
        return self._top if sm_clock_mhz is None else int(sm_clock_mhz)

    def _eval(self, phase: str, tp: int, raw: tuple[float, ...], clk: int) -> tuple[float, float, bool]:
        """Cached exact prediction: (latency s, power W per GPU, out of range); counts nothing."""
        key = (phase, tp, clk, raw)
        hit = self._cache.get(key)
        if hit is None:
            self.cache_misses += 1
            pred = self.predictor
            before = pred.out_of_range_queries
            lat, pw = pred.predict_one(phase, tp, raw, clk)
            oor = pred.out_of_range_queries > before
            pred.out_of_range_queries = before
            hit = (lat, pw, oor)
            if len(self._cache) >= self.CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def prefill_cost(self, shape: PrefillShape, tp: int, sm_clock_mhz: int | None) -> IterationCost:
        clk = self._clock(sm_clock_mhz)
        if shape.num_seqs <= 0:
            return IterationCost(0.0, self.idle_power_w(tp, clk), float(clk))
        raw = (float(shape.num_seqs), float(shape.tokens_sum), float(shape.attn_pairs))
        misses = self.cache_misses
        lat, pw, oor = self._eval("prefill", tp, raw, clk)
        self._count(misses, oor)
        return IterationCost(lat, pw, float(clk))

    def decode_cost(self, shape: DecodeShape, tp: int, sm_clock_mhz: int | None) -> IterationCost:
        clk = self._clock(sm_clock_mhz)
        b = shape.batch_size
        if b <= 0:
            return IterationCost(0.0, self.idle_power_w(tp, clk), float(clk))
        step = self.decode_context_step_tokens
        ctx = shape.context_sum
        misses = self.cache_misses
        if step <= 0 or ctx < step:
            lat, pw, oor = self._eval("decode", tp, (float(b), float(ctx)), clk)
        else:
            m, rem = divmod(ctx, step)
            lat, pw, oor = self._eval("decode", tp, (float(b), float(m * step)), clk)
            if rem:
                lat1, pw1, oor1 = self._eval("decode", tp, (float(b), float((m + 1) * step)), clk)
                w = rem / step
                lat += (lat1 - lat) * w
                pw += (pw1 - pw) * w
                oor = oor or oor1
        self._count(misses, oor)
        return IterationCost(lat, pw, float(clk))

    def _count(self, misses_before: int, oor: bool) -> None:
        """One query answered: a hit if it needed no new evaluation; out-of-range counted once per query."""
        if self.cache_misses == misses_before:
            self.cache_hits += 1
        if oor:
            self.predictor.out_of_range_queries += 1
