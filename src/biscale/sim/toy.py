"""A small analytic :class:`~biscale.costmodel.CostModel` for tests, examples and docs.

It is *not* calibrated: it only has the right shapes (prefill latency ~ 1/f, decode latency nearly flat in f,
power rising super-linearly with f) so that simulator logic can be checked by hand without the hardware model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from biscale.costmodel import DecodeShape, GovernorModel, IterationCost, PrefillShape


@dataclass(frozen=True)
class ToyCostModel:
    """Analytic latency/power model; every coefficient is a field so tests can compute expectations."""

    clocks: tuple[int, ...] = tuple(range(990, 1981, 90))
    """Lockable SM clocks, MHz (990..1980 in 90 MHz steps)."""
    prefill_base_s: float = 0.010
    prefill_per_token_s: float = 40e-6
    prefill_per_pair_s: float = 1e-9
    decode_base_s: float = 0.012
    decode_per_seq_s: float = 40e-6
    decode_per_ctx_s: float = 2e-8
    busy_power_max_w: float = 650.0
    idle_power_max_w: float = 110.0
    idle_power_min_w: float = 70.0
    kv_tokens_per_gpu: int = 100_000
    kv_bytes: int = 327_680
    governor_model: GovernorModel = field(
        default_factory=lambda: GovernorModel(
            idle_power_w=65.0, downclock_after_s=0.05, wake_delay_s=0.002, shallow_idle_power_w=120.0
        )
    )
    min_tp: int = 1

    @property
    def supported_clocks_mhz(self) -> tuple[int, ...]:
        return self.clocks

    @property
    def kv_bytes_per_token(self) -> int:
        return self.kv_bytes

    @property
    def governor(self) -> GovernorModel:
        return self.governor_model

    def _f(self, clock: int | None) -> float:
        """Relative clock f / f_max (the governor runs at the top clock while busy)."""
        return 1.0 if clock is None else clock / self.clocks[-1]

    def _busy_power(self, f: float, util: float) -> float:
        lo = self.idle_power_max_w * f
        return lo + (self.busy_power_max_w - lo) * util * f**2.5

    def prefill_cost(self, shape: PrefillShape, tp: int, sm_clock_mhz: int | None) -> IterationCost:
        f = self._f(sm_clock_mhz)
        work = self.prefill_per_token_s * shape.tokens_sum + self.prefill_per_pair_s * shape.attn_pairs
        lat = self.prefill_base_s + work / tp / f
        return IterationCost(lat, self._busy_power(f, 0.9), float(sm_clock_mhz or self.clocks[-1]))

    def decode_cost(self, shape: DecodeShape, tp: int, sm_clock_mhz: int | None) -> IterationCost:
        f = self._f(sm_clock_mhz)
        mem = (
            self.decode_base_s
            + (self.decode_per_seq_s * shape.batch_size + self.decode_per_ctx_s * shape.context_sum) / tp
        )
        lat = mem * (0.8 + 0.2 / f)
        return IterationCost(lat, self._busy_power(f, 0.5), float(sm_clock_mhz or self.clocks[-1]))

    def idle_power_w(self, tp: int, sm_clock_mhz: int | None) -> float:
        if sm_clock_mhz is None:
            return self.governor_model.idle_power_w
        f = self._f(sm_clock_mhz)
        return self.idle_power_min_w + (self.idle_power_max_w - self.idle_power_min_w) * f

    def kv_capacity_tokens(self, tp: int) -> int:
        return self.kv_tokens_per_gpu * tp
