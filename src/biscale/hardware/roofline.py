"""The calibrated roofline hardware model: latency and power of one prefill/decode iteration.

Per layer and per GPU of a TP group (see docs/hardware.md for the equations):

* GEMMs (QKV, O, up/gate, down): a smooth roofline ``(t_c^q + t_m^q)^(1/q)`` of compute time
  ``FLOPs / (eta_c F_peak f/fmax)`` and memory time ``bytes / (eta_m B)`` (times the memory-clock factor);
* element-wise kernels (2 norms, rope, activation, 2 residual adds) and the KV write: ``bytes / (eta_m B)``;
* attention: prefill ``4 d H/t * pairs / (eta_a F_peak f/fmax)``, decode ``KV bytes / (eta_m B)``;
* fixed kernel time (launch, prologue, tail) per kernel, scaled down under CUDA graphs (decode);
* two all-reduces (TP > 1): ``a_t + bytes / bw_t`` fitted to the DGX all-reduce measurements;

plus the LM head once per iteration and the engine's per-request time. Power per GPU is the energy of each
time bucket divided by the latency. The power limit acts on the iteration's *mean* power: the effective clock
is where the mean power meets the cap, reached by dithering between the two supported clocks around it
(docs/hardware.md proves that this keeps latency monotone in clock, batch and context).

The ``*_cost`` methods are the simulator's hot path: plain float math on per-TP constants, no numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from biscale.costmodel import DecodeShape, GovernorModel, IterationCost, PrefillShape
from biscale.hardware.base import HardwareModel
from biscale.hardware.constants import FittedConstants
from biscale.hardware.specs import GpuSpec, ModelSpec

#: Fraction of each GPU's memory the serving engine may use (vLLM's default ``gpu_memory_utilization``).
GPU_MEMORY_UTILIZATION = 0.90
#: Per-GPU memory kept for activations, CUDA graphs and the CUDA context inside that budget, bytes.
ACTIVATION_RESERVE_BYTES = 4 * 1024**3
#: Prefill cost cache size before it is cleared (bounded memory in long simulations).
_CACHE_LIMIT = 500_000

#: Beyond any context sum (tokens): the "no bound" of the decode fast path's integer context interval.
_BIG = 1 << 62
#: Builds a named tuple (an :class:`IterationCost`, a ``_Parts``) from a tuple without its Python-level ``__new__``
#: (2x faster; the decode fast path builds one per simulated iteration).
_tuple_new = tuple.__new__


@dataclass(frozen=True, slots=True)
class _TpConsts:
    """Per-TP precomputed coefficients (times in seconds at the top clock, per GPU)."""

    layers: float
    lin_compute_per_tok: float  # one layer's GEMM compute per token
    lin_mem_fixed: float  # one layer's GEMM weight streaming
    lin_mem_per_tok: float  # one layer's GEMM activation I/O per token
    elem_per_tok: float  # one layer's element-wise kernels per token
    kv_write_per_tok: float  # one layer's KV-cache write per token
    attn_compute_per_pair: float  # one layer's prefill attention per causal pair
    kv_read_per_ctx: float  # decode KV read per context token, all layers
    fixed: float  # fixed kernel time of one iteration without CUDA graphs (all layers + LM head)
    ar_fixed: float  # all-reduce latency of one iteration (2 per layer; 0 for TP1), NCCL (prefill)
    ar_graph_fixed: float  # the same for the engine's small-message all-reduce in CUDA graphs (decode)
    ar_per_tok: float  # all-reduce transfer time per token, all layers
    head_compute_per_row: float
    head_mem_fixed: float
    head_mem_per_row: float


class _Parts(NamedTuple):
    """One iteration at one clock: time and energy without the decode KV reads, and per KV context token (a named
    tuple: one is built per prefill batch priced)."""

    time_s: float
    energy_j: float
    kv_time_s: float
    kv_energy_j: float


class RooflineHardwareModel(HardwareModel):
    """Roofline latency + bucketed power model for one (GPU, LLM) pair; constants from JSON."""

    def __init__(
        self, gpu: GpuSpec, model: ModelSpec, consts: FittedConstants, *, idle_top_w: float | None = None
    ) -> None:
        self.gpu = gpu
        self.model = model
        self.consts = consts
        self.gpu_name = gpu.name
        self.model_name = model.name
        self._clocks = gpu.supported_clocks_mhz
        self._fclocks = tuple(float(f) for f in self._clocks)
        self._clock_set = frozenset(self._clocks)
        self._clock_index = {f: i for i, f in enumerate(self._clocks)}
        self._fmax = float(gpu.max_sm_clock_mhz)
        self._cap_w = gpu.power_limit_w * consts.power_cap_fraction
        self._q = consts.roofline_sharpness
        self._inv_q = 1.0 / consts.roofline_sharpness
        # Per-layer constants for every TP degree (calibration compares single layers even where the whole model
        # does not fit); the public API only accepts the degrees whose weights fit.
        self._all_tp = {tp: self._tp_consts(tp) for tp in gpu.tp_degrees}
        self._tp: dict[int, _TpConsts] = {tp: k for tp, k in self._all_tp.items() if self._fits(tp)}
        if not self._tp:
            from biscale.errors import InputError

            raise InputError(f"model '{model.name}' does not fit on {max(gpu.tp_degrees)} x {gpu.name}")
        self._min_tp = min(self._tp)
        # Clock factors by clock (float keys: the hot path looks them up with float clocks).
        self._g: dict[float, float] = {f: self.clock_factor(f) for f in self._fclocks}
        self._mu: dict[float, float] = {f: self.memory_clock_factor(f) for f in self._fclocks}
        self.idle_top_w = idle_top_w
        self._idle_static_w, self._idle_dynamic_w = self._idle_law(idle_top_w)
        self._idle = {int(f): self._idle_static_w + self._idle_dynamic_w * g for f, g in self._g.items()}
        self._governor = GovernorModel(
            idle_power_w=gpu.unlocked_idle_power_w,
            downclock_after_s=consts.governor_downclock_after_s,
            wake_delay_s=consts.governor_wake_delay_s,
            shallow_idle_power_w=self._idle[self._clocks[-1]],
        )
        # Decode: per (tp, requested clock, batch) the parts at the requested clock and the context interval in
        # which they are within the cap; per (tp, batch) the parts at every clock (filled on demand).
        self._decode_cache: dict[tuple[int, int | None, int], tuple[float, ...]] = {}
        self._decode_by_clock: dict[tuple[int, int], list[_Parts | None]] = {}
        self._decode_bracket: dict[tuple[int, int | None, int], int] = {}
        self._prefill_cache: dict[tuple[int, int | None, int, int, float], IterationCost] = {}

    # ------------------------------------------------------------------ set-up
    def _usable_bytes(self, tp: int) -> float:
        return tp * (self.gpu.memory_bytes * GPU_MEMORY_UTILIZATION - ACTIVATION_RESERVE_BYTES)

    def _fits(self, tp: int) -> bool:
        # At least 1024 tokens of KV cache beside the weights.
        return self._usable_bytes(tp) - self.model.weight_bytes >= 1024 * self.model.kv_bytes_per_token

    def _tp_consts(self, tp: int) -> _TpConsts:
        m, g, c = self.model, self.gpu, self.consts
        s = float(m.dtype_bytes)
        flops = c.gemm_efficiency * g.peak_bf16_flops
        bw = c.hbm_efficiency * g.hbm_bandwidth_bytes_per_s
        h, d = m.hidden_size, m.head_dim
        heads = m.num_heads / tp
        kv_heads = max(m.num_kv_heads / tp, 1.0)  # KV heads are replicated when TP > num_kv_heads
        mlp = m.intermediate_size / tp
        up_mult = 2 if m.gated_mlp else 1
        w_layer = m.layer_linear_params / tp
        # Activation elements read + written per token by the four GEMMs on one GPU.
        act = (h + (heads + 2 * kv_heads) * d) + (heads * d + h) + (h + up_mult * mlp) + (mlp + h)
        # Element-wise bytes per token: 2 RMSNorms (r+w h), rope (r+w q,k), act (r 2*mlp, w mlp), 2 adds (r 2h, w h).
        elem = s * (4 * h + 2 * (heads + kv_heads) * d + (up_mult + 1) * mlp + 6 * h)
        kv_token = 2.0 * kv_heads * d * s  # K and V of one token in one layer on one GPU
        layers = float(m.num_layers)
        if tp > 1:
            key = str(tp)
            ar_fixed = layers * 2 * c.allreduce_latency_s[key]
            ar_graph_fixed = layers * 2 * c.allreduce_graph_latency_s[key]
            ar_per_tok = layers * 2 * h * s / c.allreduce_bandwidth_bytes_per_s[key]
        else:
            ar_fixed = ar_graph_fixed = ar_per_tok = 0.0
        vocab = m.vocab_size / tp
        fixed = layers * (4 * c.gemm_fixed_s + 6 * c.elementwise_fixed_s + c.attention_fixed_s) + c.gemm_fixed_s
        return _TpConsts(
            layers=layers,
            lin_compute_per_tok=2.0 * w_layer / flops,
            lin_mem_fixed=s * w_layer / bw,
            lin_mem_per_tok=s * act / bw,
            elem_per_tok=elem / (c.elementwise_efficiency * g.hbm_bandwidth_bytes_per_s),
            kv_write_per_tok=kv_token / bw,
            attn_compute_per_pair=4.0 * d * heads / (c.attention_efficiency * g.peak_bf16_flops),
            kv_read_per_ctx=layers * kv_token / bw,
            fixed=fixed,
            ar_fixed=ar_fixed,
            ar_graph_fixed=ar_graph_fixed,
            ar_per_tok=ar_per_tok,
            head_compute_per_row=2.0 * h * vocab / flops,
            head_mem_fixed=s * h * vocab / bw,
            head_mem_per_row=s * (h + vocab) / bw,
        )

    def _idle_law(self, idle_top_w: float | None) -> tuple[float, float]:
        """``(P_s, P_i)`` of the idle law ``P_s + P_i g(f)`` (a GPU locked at ``f`` that runs no kernel).

        ``idle_top_w`` None: the fitted constants. Otherwise the law is moved so that ``P_idle(top) = idle_top_w``
        while ``P_idle(lowest clock)`` stays: the disputed part is the clock-dependent one (the engine idle table's
        181 W against a bare CUDA context's measured 125 W at the top clock, docs/hardware.md), the lowest clock is
        pinned by the same table and the measured deep idle. Only idle seconds use it (between iterations, the
        engine's per-step CPU time, idle instances, the governor's shallow idle); kernel time keeps the calibrated
        active-SM power, which busy measurements fix, not the idle table."""
        c = self.consts
        if idle_top_w is None:
            return c.static_power_w, c.idle_dynamic_power_w
        g_lo = self.clock_factor(self._fclocks[0])
        p_lo = c.static_power_w + c.idle_dynamic_power_w * g_lo
        if not (math.isfinite(idle_top_w) and p_lo < idle_top_w <= self._cap_w):
            from biscale.errors import InputError

            raise InputError(
                f"idle power at the top clock must be above the idle power at the lowest clock ({p_lo:.1f} W) and "
                f"at most the power cap ({self._cap_w:.0f} W) on {self.gpu.name}, got {idle_top_w:g} W",
                field="idle_top_w",
            )
        dynamic = (idle_top_w - p_lo) / (1.0 - g_lo)
        return p_lo - dynamic * g_lo, dynamic

    def clock_factor(self, f_mhz: float) -> float:
        """Dynamic-power clock factor ``(f/fmax) * (V(f)/V(fmax))^2``: 1 at the top clock, dimensionless."""
        c = self.consts
        knee = c.voltage_knee_frac * self._fmax
        rise = c.voltage_rise * max(0.0, f_mhz - knee) / (self._fmax - knee)
        v_ratio = (1.0 + rise) / (1.0 + c.voltage_rise)
        return (f_mhz / self._fmax) * v_ratio * v_ratio

    def memory_clock_factor(self, f_mhz: float) -> float:
        """Slow-down of memory-bound kernels at SM clock ``f`` relative to the top clock (>= 1, dimensionless).

        ``(1 + (x0/x)^p)^(1/p) / (1 + x0^p)^(1/p)`` with ``x = f/fmax``: streaming needs enough SM issue rate,
        so bandwidth falls at low clocks (the A100 decode sweep), and is flat near the top. ``x * factor`` rises
        with ``x``, which keeps the energy of memory-bound work non-decreasing in the clock.
        """
        c = self.consts
        p = c.memory_clock_exponent
        x = f_mhz / self._fmax
        return ((1.0 + (c.memory_clock_knee_frac / x) ** p) / (1.0 + c.memory_clock_knee_frac**p)) ** (1.0 / p)

    # ------------------------------------------------------------- properties
    @property
    def supported_clocks_mhz(self) -> tuple[int, ...]:
        return self._clocks

    @property
    def min_tp(self) -> int:
        return self._min_tp

    @property
    def tp_degrees(self) -> tuple[int, ...]:
        """TP degrees whose weights fit, ascending."""
        return tuple(sorted(self._tp))

    @property
    def kv_bytes_per_token(self) -> int:
        return self.model.kv_bytes_per_token

    @property
    def governor(self) -> GovernorModel:
        return self._governor

    @property
    def power_cap_w(self) -> float:
        """Mean per-GPU power the power controller holds under sustained load, W."""
        return self._cap_w

    @property
    def experimental_reason(self) -> str | None:
        """Why this GPU's constants are not calibrated on its own measurements, or None if they are."""
        return self.gpu.experimental_reason if self.gpu.experimental else None

    def kv_capacity_tokens(self, tp: int) -> int:
        self._consts_for(tp)
        return int((self._usable_bytes(tp) - self.model.weight_bytes) // self.model.kv_bytes_per_token)

    def idle_power_w(self, tp: int, sm_clock_mhz: int | None) -> float:
        self._consts_for(tp)
        if sm_clock_mhz is None:
            return self._governor.idle_power_w
        self._check_clock(sm_clock_mhz)
        return self._idle[sm_clock_mhz]

    # ------------------------------------------------------------ validation
    def _consts_for(self, tp: int) -> _TpConsts:
        k = self._tp.get(tp)
        if k is None:
            raise ValueError(
                f"tp={tp} not available for {self.model_name} on {self.gpu_name} (valid: {sorted(self._tp)})"
            )
        return k

    def _check_clock(self, f: int) -> None:
        if f not in self._clock_set:
            raise ValueError(
                f"sm_clock_mhz={f} is not a supported clock of {self.gpu_name} "
                f"({self._clocks[0]}..{self._clocks[-1]} MHz in steps of {self.gpu.clock_step_mhz})"
            )

    def _clock_idx(self, sm_clock_mhz: int | None) -> int:
        if sm_clock_mhz is None:
            return len(self._clocks) - 1
        i = self._clock_index.get(sm_clock_mhz)
        if i is None:
            self._check_clock(sm_clock_mhz)
            raise AssertionError  # unreachable: _check_clock raised
        return i

    # ------------------------------------------------------------ evaluation
    def _parts(self, k: _TpConsts, f: float, n: float, rows: float, pairs: float, seqs: float, graphs: bool) -> _Parts:
        """Time and energy of one iteration at clock ``f`` MHz (any value), before the power cap.

        ``n`` new tokens through the GEMMs, ``rows`` through the LM head, ``pairs`` causal attention pairs
        (prefill), ``seqs`` requests the engine handles; ``graphs``: decode under CUDA graphs (the engine's
        small-message all-reduce instead of NCCL's). The decode KV read comes back per context token. Power
        (docs/hardware.md): GPU work (kernels, their fixed times, all-reduces, per-request work) draws the
        active-SM power ``P_s + (P_i + P_b) g``; tensor-core busy time adds ``P_c g``; HBM traffic adds ``P_m``
        per second of traffic at the achieved bandwidth (the per-request work streams memory); the engine's
        per-step CPU time is idle time at the clock, ``P_s + P_i g``.
        """
        c = self.consts
        g = self._g.get(f)
        if g is None:
            g = self.clock_factor(f)
        mu = self._mu.get(f)
        if mu is None:
            mu = self.memory_clock_factor(f)
        inv = self._fmax / f
        q, iq = self._q, self._inv_q
        layers = k.layers
        lin_c = n * k.lin_compute_per_tok * inv
        lin_m = k.lin_mem_fixed + n * k.lin_mem_per_tok
        lin = ((lin_c**q) + (lin_m * mu) ** q) ** iq
        head_c = rows * k.head_compute_per_row * inv
        head_m = k.head_mem_fixed + rows * k.head_mem_per_row
        head = ((head_c**q) + (head_m * mu) ** q) ** iq
        attn = pairs * k.attn_compute_per_pair * inv
        elem = n * (k.elem_per_tok + k.kv_write_per_tok)
        per_seq = seqs * c.engine_per_seq_s
        busy = (
            layers * (lin + attn + elem * mu)
            + head
            + k.fixed
            + (k.ar_graph_fixed if graphs else k.ar_fixed)
            + n * k.ar_per_tok
            + per_seq
        )
        comp = layers * (lin_c + attn) + head_c
        mem = layers * (lin_m + elem) + head_m + per_seq
        p_idle = self._idle_static_w + self._idle_dynamic_w * g
        p_act = c.static_power_w + (c.idle_dynamic_power_w + c.busy_power_w) * g
        t = busy + c.engine_step_s
        e = p_act * busy + p_idle * c.engine_step_s + c.compute_power_w * g * comp + c.memory_power_w * mem
        kv = k.kv_read_per_ctx
        return _tuple_new(_Parts, (t, e, kv * mu, p_act * kv * mu + c.memory_power_w * kv))

    def _capped(self, at: Callable[[int], tuple[float, float]], top: int) -> tuple[float, float, float, int]:
        """(latency_s, power_w, effective_clock_mhz, i) under the power cap, given ``at(i)`` = (latency, energy) of
        the iteration at supported clock ``i`` and the requested clock index ``top``.

        The power controller holds the *mean* power at the cap: it runs the highest supported clock ``i`` whose
        mean power is within the cap and the next one up for the fraction of the work that brings the mean power to
        the cap (dithering); ``i`` is returned (``top`` when not throttled, -1 when over the cap at the lowest
        clock). The headroom ``cap * latency - energy`` falls with the clock (latency falls, dynamic energy does
        not), so the bracket is unique and found by bisection.
        """
        cap = self._cap_w
        lat, e = at(top)
        if e <= cap * lat:
            return lat, e / lat, self._fclocks[top], top
        lat_lo, e_lo = at(0)
        if e_lo > cap * lat_lo:  # over the cap even at the lowest clock: run there
            return lat_lo, e_lo / lat_lo, self._fclocks[0], -1
        lo, hi, lat_hi, e_hi = 0, top, lat, e
        while hi - lo > 1:
            mid = (lo + hi) >> 1
            lm, em = at(mid)
            if em <= cap * lm:
                lo, lat_lo, e_lo = mid, lm, em
            else:
                hi, lat_hi, e_hi = mid, lm, em
        return (*self._dither(lo, lat_lo, e_lo, lat_hi, e_hi), lo)

    def _dither(self, lo: int, lat_lo: float, e_lo: float, lat_hi: float, e_hi: float) -> tuple[float, float, float]:
        """Mix clock ``lo`` (within the cap) and ``lo + 1`` (above it) so that the mean power is the cap."""
        cap = self._cap_w
        h_lo = cap * lat_lo - e_lo  # >= 0
        h_hi = e_hi - cap * lat_hi  # > 0
        theta = h_lo / (h_lo + h_hi)  # fraction of the work run at the higher clock
        t_lo, t_hi = (1.0 - theta) * lat_lo, theta * lat_hi
        lat = t_lo + t_hi
        clock = (t_lo * self._fclocks[lo] + t_hi * self._fclocks[lo + 1]) / lat
        return lat, cap, clock

    def prefill_cost(self, shape: PrefillShape, tp: int, sm_clock_mhz: int | None) -> IterationCost:
        key = (tp, sm_clock_mhz, shape.tokens_sum, shape.num_seqs, shape.attn_pairs)
        cost = self._prefill_cache.get(key)
        if cost is not None:
            return cost
        k = self._tp.get(tp)
        if k is None:
            k = self._consts_for(tp)
        top = self._clock_idx(sm_clock_mhz)
        if shape.num_seqs <= 0:
            f = self._fclocks[top]
            return IterationCost(0.0, self._idle[int(f)], f)
        n, seqs, pairs = float(shape.tokens_sum), float(shape.num_seqs), shape.attn_pairs
        fclocks = self._fclocks

        def at(i: int) -> tuple[float, float]:
            p = self._parts(k, fclocks[i], n, seqs, pairs, seqs, False)
            return p.time_s, p.energy_j

        cost = IterationCost(*self._capped(at, top)[:3])
        if len(self._prefill_cache) > _CACHE_LIMIT:
            self._prefill_cache.clear()
        self._prefill_cache[key] = cost
        return cost

    def decode_cost(self, shape: DecodeShape, tp: int, sm_clock_mhz: int | None) -> IterationCost:
        key = (tp, sm_clock_mhz, shape.batch_size)
        entry = self._decode_cache.get(key)
        if entry is None:
            entry = self._decode_entry(tp, sm_clock_mhz, shape.batch_size)
        f, t, e, kv_t, kv_e, ctx_lo, ctx_hi = entry
        ctx = shape.context_sum
        if ctx_lo <= ctx <= ctx_hi:
            lat = t + ctx * kv_t
            return _tuple_new(IterationCost, (lat, (e + ctx * kv_e) / lat, f))
        return self._decode_capped(tp, sm_clock_mhz, shape.batch_size, ctx)

    def _decode_parts_at(self, tp: int, batch: int, i: int) -> _Parts:
        """Decode parts of ``batch`` requests at supported clock index ``i`` (cached per TP and batch)."""
        row = self._decode_by_clock.get((tp, batch))
        if row is None:
            if len(self._decode_by_clock) > _CACHE_LIMIT // len(self._clocks):
                self._decode_by_clock.clear()
            row = self._decode_by_clock[(tp, batch)] = [None] * len(self._clocks)
        p = row[i]
        if p is None:
            b = float(batch)
            p = row[i] = self._parts(self._tp[tp], self._fclocks[i], b, b, 0.0, b, True)
        return p

    def _decode_entry(self, tp: int, sm_clock_mhz: int | None, batch: int) -> tuple[float, ...]:
        """Context-independent parts of a decode iteration at the requested clock, and the interval of context
        sums in which they are within the cap (the hot path's one comparison; outside it :meth:`_decode_capped`).

        The headroom ``cap * latency - energy`` is linear in the context sum, so "within the cap" is one
        threshold on the context: a lower bound where the KV reads draw less than the cap (they dilute a
        compute-heavy batch), an upper bound where they draw more.
        """
        self._consts_for(tp)
        top = self._clock_idx(sm_clock_mhz)
        f = self._fclocks[top]
        if batch <= 0:
            entry: tuple[float, ...] = (f, 0.0, 0.0, 0.0, 0.0, -_BIG, _BIG)
        else:
            p = self._decode_parts_at(tp, batch, top)
            slack = self._cap_w * p.time_s - p.energy_j
            per_ctx = self._cap_w * p.kv_time_s - p.kv_energy_j
            # Integer bounds (context sums are integers; int comparisons keep the hot path fast).
            lo, hi = -_BIG, _BIG
            if per_ctx > 0.0:
                lo = max(-_BIG, min(_BIG, math.ceil(-slack / per_ctx)))
            elif per_ctx < 0.0:
                hi = max(-_BIG, min(_BIG, math.floor(slack / -per_ctx)))
            elif slack < 0.0:
                lo = _BIG
            entry = (f, p.time_s, p.energy_j, p.kv_time_s, p.kv_energy_j, lo, hi)
        if len(self._decode_cache) > _CACHE_LIMIT:
            self._decode_cache.clear()
        self._decode_cache[(tp, sm_clock_mhz, batch)] = entry
        return entry

    def _decode_capped(self, tp: int, sm_clock_mhz: int | None, batch: int, ctx: int) -> IterationCost:
        """A decode iteration over the cap at the requested clock. Successive iterations of one batch size have
        similar contexts, so the clock bracket of the last one is tried first (O(1) instead of a bisection)."""
        key = (tp, sm_clock_mhz, batch)
        top = self._clock_idx(sm_clock_mhz)
        guess = self._decode_bracket.get(key, -1)
        if 0 <= guess < top:
            lo, hi = self._decode_parts_at(tp, batch, guess), self._decode_parts_at(tp, batch, guess + 1)
            lat_lo, lat_hi = lo.time_s + ctx * lo.kv_time_s, hi.time_s + ctx * hi.kv_time_s
            e_lo, e_hi = lo.energy_j + ctx * lo.kv_energy_j, hi.energy_j + ctx * hi.kv_energy_j
            cap = self._cap_w
            if e_lo <= cap * lat_lo and e_hi > cap * lat_hi:
                return IterationCost(*self._dither(guess, lat_lo, e_lo, lat_hi, e_hi))

        def at(i: int) -> tuple[float, float]:
            p = self._decode_parts_at(tp, batch, i)
            return p.time_s + ctx * p.kv_time_s, p.energy_j + ctx * p.kv_energy_j

        lat, power, clock, bracket = self._capped(at, top)
        if len(self._decode_bracket) > _CACHE_LIMIT:
            self._decode_bracket.clear()
        self._decode_bracket[key] = bracket
        return IterationCost(lat, power, clock)

    # -------------------------------------------------------- calibration API
    def layer_nonattention_s(self, n: int, tp: int, f: float) -> tuple[float, float]:
        """One layer's four GEMMs and six element-wise kernels for ``n`` tokens at clock ``f`` MHz, s each.

        Fixed kernel times included (vidur's per-operator medians include them); no KV write (vidur's operators
        do not write the cache), no attention, no communication.
        """
        k, c = self._all_tp[tp], self.consts
        mu = self.memory_clock_factor(f)
        lin_c = n * k.lin_compute_per_tok * self._fmax / f
        lin_m = (k.lin_mem_fixed + n * k.lin_mem_per_tok) * mu
        gemm = (lin_c**self._q + lin_m**self._q) ** self._inv_q + 4 * c.gemm_fixed_s
        return gemm, n * k.elem_per_tok * mu + 6 * c.elementwise_fixed_s

    def prefill_latency_at(self, shape: PrefillShape, tp: int, f: float) -> float:
        """Prefill latency at the *effective* clock ``f`` MHz (any value, no power cap), s."""
        k = self._consts_for(tp)
        s = float(shape.num_seqs)
        return self._parts(k, f, float(shape.tokens_sum), s, shape.attn_pairs, s, False).time_s

    def eager_prefill_latency(self, shape: PrefillShape, tp: int, sm_clock_mhz: int | None) -> float:
        """The same prefill run by eager PyTorch (one kernel launch per operator, no CUDA graphs), s.

        The host launches each layer's kernels in ``eager_host_layer_s``; when the GPU's kernels are shorter, the
        GPU waits for it, so the pass takes the smooth maximum of the GPU time (:meth:`prefill_cost`, power cap
        included) and ``layers x eager_host_layer_s``. Short prompts are host-bound in eager PyTorch (the lent-H100
        profile: no 80-layer pass under ~40 ms). The serving engine the simulator prices removes the launches (CUDA
        graphs, compiled kernels), so the simulator never calls this; calibration compares it with that profile.
        """
        c = self.consts
        gpu = self.prefill_cost(shape, tp, sm_clock_mhz).latency_s
        host = self.model.num_layers * c.eager_host_layer_s
        q = c.eager_host_sharpness
        return float((gpu**q + host**q) ** (1.0 / q))

    def decode_latency_at(self, shape: DecodeShape, tp: int, f: float) -> float:
        """Decode latency at the *effective* clock ``f`` MHz (any value, no power cap), s."""
        k = self._consts_for(tp)
        b = float(shape.batch_size)
        p = self._parts(k, f, b, b, 0.0, b, True)
        return p.time_s + shape.context_sum * p.kv_time_s

    def mixed_cost(
        self, tp: int, sm_clock_mhz: int | None, batch: float, context_sum: float, prompt: PrefillShape
    ) -> IterationCost:
        """One step of a colocated engine: ``batch`` decode requests (a mean over steps may be fractional) with
        ``context_sum`` KV tokens plus the prompt chunks of ``prompt`` in the same forward pass (CUDA graphs,
        power cap applied). Used to compare with measurements of colocated engines (ML.ENERGY), not by the
        simulator."""
        k = self._consts_for(tp)
        n = float(batch + prompt.tokens_sum)
        rows = seqs = float(batch + prompt.num_seqs)

        def at(i: int) -> tuple[float, float]:
            p = self._parts(k, self._fclocks[i], n, rows, prompt.attn_pairs, seqs, True)
            return p.time_s + context_sum * p.kv_time_s, p.energy_j + context_sum * p.kv_energy_j

        return IterationCost(*self._capped(at, self._clock_idx(sm_clock_mhz))[:3])

    def describe(self) -> dict[str, float | int | str | bool]:
        """Key facts (for ``biscale hardware list/show``)."""
        reason = self.experimental_reason
        return {
            "gpu": self.gpu_name,
            "model": self.model_name,
            "max_clock_mhz": self.max_clock_mhz,
            "min_clock_mhz": self._clocks[0],
            "clock_step_mhz": self.gpu.clock_step_mhz,
            "min_tp": self.min_tp,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_capacity_tokens_min_tp": self.kv_capacity_tokens(self.min_tp),
            "power_limit_w": self.gpu.power_limit_w,
            "power_cap_w": self._cap_w,
            "unlocked_idle_power_w": self._governor.idle_power_w,
            "experimental": reason is not None,
            "experimental_reason": reason or "",
        }
