"""A :class:`~biscale.costmodel.CostModel` backed by the learned predictors (what controllers believe).

The simulator can run on this in place of the hardware model (e.g. the planner's capacity search). Everything it
reports comes from the artifact: iteration costs from the predictors, and idle power, KV capacity, KV bytes per
token, supported clocks and the governor from the profile's sidecar facts stored in the artifact at fit time.
The hardware model is never consulted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from biscale.costmodel import DecodeShape, GovernorModel, IterationCost, PrefillShape
from biscale.errors import InputError
from biscale.predict.predictor import Predictor


class PredictorCostModel:
    """Prices iterations with a :class:`Predictor`. ``sm_clock_mhz=None`` (default governor) = the top clock."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
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

    def prefill_cost(self, shape: PrefillShape, tp: int, sm_clock_mhz: int | None) -> IterationCost:
        clk = self._clock(sm_clock_mhz)
        if shape.num_seqs <= 0:
            return IterationCost(0.0, self.idle_power_w(tp, clk), float(clk))
        raw = (float(shape.num_seqs), float(shape.tokens_sum), float(shape.attn_pairs))
        lat, pw = self.predictor.predict_one("prefill", tp, raw, clk)
        return IterationCost(lat, pw, float(clk))

    def decode_cost(self, shape: DecodeShape, tp: int, sm_clock_mhz: int | None) -> IterationCost:
        clk = self._clock(sm_clock_mhz)
        if shape.batch_size <= 0:
            return IterationCost(0.0, self.idle_power_w(tp, clk), float(clk))
        raw = (float(shape.batch_size), float(shape.context_sum))
        lat, pw = self.predictor.predict_one("decode", tp, raw, clk)
        return IterationCost(lat, pw, float(clk))
