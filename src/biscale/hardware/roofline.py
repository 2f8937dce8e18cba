"""The calibrated roofline hardware model: latency and power of one prefill/decode iteration.

Per layer and per GPU of a TP group (see docs/hardware.md for the equations):

* GEMMs (QKV, O, up/gate, down): ``max(FLOPs / (eta_c * F_peak * f/fmax), bytes / (eta_m * B)) + 4 tau_g``;
* element-wise kernels (2 norms, rope, activation, 2 residual adds): ``bytes / (eta_m * B) + 6 tau_e``;
* attention: prefill ``4 d H/t * pairs / (eta_a * F_peak * f/fmax)``, decode ``KV bytes / (eta_m * B)``, ``+ tau_a``;
* two all-reduces (TP > 1): ``a_t + bytes / bw_t`` fitted to the DGX all-reduce measurements;

plus the LM head once per iteration and a fixed engine overhead. Power per GPU is idle power at the clock plus
dynamic energy of each time bucket divided by the latency; above the power cap the effective clock is lowered
until the power equals the cap, as the GPU's power controller does.

The ``*_cost`` methods are the simulator's hot path: plain float math on per-TP constants, no numpy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from biscale.costmodel import DecodeShape, GovernorModel, IterationCost, PrefillShape
from biscale.hardware.base import HardwareModel
from biscale.hardware.constants import FittedConstants
from biscale.hardware.specs import GpuSpec, ModelSpec

#: Fraction of each GPU's memory the serving engine may use (vLLM's default ``gpu_memory_utilization``).
GPU_MEMORY_UTILIZATION = 0.90
#: Per-GPU memory kept for activations, CUDA graphs and the CUDA context inside that budget, bytes.
ACTIVATION_RESERVE_BYTES = 4 * 1024**3


@dataclass(frozen=True, slots=True)
class _TpConsts:
    """Per-TP precomputed coefficients (all times in seconds at the top clock)."""

    layers: float
    lin_compute_per_tok: float  # compute time of one layer's GEMMs per token at fmax
    lin_mem_fixed: float  # weight streaming time of one layer's GEMMs
    lin_mem_per_tok: float  # activation I/O time of one layer's GEMMs per token
    lin_fixed: float  # 4 * tau_g
    elem_per_tok: float
    elem_fixed: float  # 6 * tau_e
    attn_compute_per_pair: float  # prefill attention compute per causal pair at fmax
    attn_kv_per_ctx: float  # decode KV read time per context token per layer
    kv_write_per_tok: float  # KV write time per new token per layer
    attn_fixed: float
    ar_fixed: float  # 2 all-reduces per layer: fixed part (0 for TP1)
    layer_fixed: float  # all fixed kernel/collective time of one layer (prefill, no CUDA graphs)
    dec_layer_fixed: float  # the same under CUDA graphs (decode)
    ar_per_tok: float  # 2 all-reduces per layer: per token
    head_compute_per_seq: float  # LM head compute per output row at fmax
    head_mem_fixed: float
    head_mem_per_seq: float
    head_fixed: float


class RooflineHardwareModel(HardwareModel):
    """Roofline latency + bucketed power model for one (GPU, LLM) pair; constants from JSON."""

    def __init__(self, gpu: GpuSpec, model: ModelSpec, consts: FittedConstants) -> None:
        self.gpu = gpu
        self.model = model
        self.consts = consts
        self.gpu_name = gpu.name
        self.model_name = model.name
        self._clocks = gpu.supported_clocks_mhz
        self._clock_set = frozenset(self._clocks)
        self._clock_index = {f: i for i, f in enumerate(self._clocks)}
        self._decode_cache: dict[tuple[int, int | None, int], tuple[float, ...]] = {}
        self._decode_clocks: dict[tuple[int, int | None], list[float]] = {}
        self._prefill_clock: dict[tuple[int, int | None, int, int, float], float] = {}
        self._fmax = float(gpu.max_sm_clock_mhz)
        self._fmin = float(gpu.min_sm_clock_mhz)
        self._cap_w = gpu.power_limit_w * consts.power_cap_fraction
        # Per-layer constants for every TP degree (calibration compares single layers even where the whole model
        # does not fit); the public API only accepts the degrees whose weights fit.
        self._all_tp = {tp: self._tp_consts(tp) for tp in gpu.tp_degrees}
        self._tp: dict[int, _TpConsts] = {tp: k for tp, k in self._all_tp.items() if self._fits(tp)}
        if not self._tp:
            from biscale.errors import InputError

            raise InputError(f"model '{model.name}' does not fit on {max(gpu.tp_degrees)} x {gpu.name}")
        self._min_tp = min(self._tp)
        # Clock factors by clock (float keys: the hot path looks them up with float clocks).
        self._g: dict[float, float] = {float(f): self.clock_factor(float(f)) for f in self._clocks}
        self._h: dict[float, float] = {float(f): self.memory_clock_factor(float(f)) for f in self._clocks}
        # "Other" (communication, engine) power may not exceed the kernel base power (keeps power <= cap).
        self._other_w = min(consts.other_power_w, consts.memory_power_w)
        # Highest clock at which a purely memory-bound kernel stays within the cap.
        p_mem = [
            consts.static_power_w
            + (consts.idle_dynamic_power_w + consts.busy_power_w) * self._g[f]
            + consts.memory_power_w
            for f in self._clocks
        ]
        ok = [i for i, p in enumerate(p_mem) if p <= self._cap_w]
        self._mem_ok_idx = ok[-1] if ok else 0
        self._mem_ok_mhz = float(self._clocks[self._mem_ok_idx])
        self._idle = {int(f): consts.static_power_w + consts.idle_dynamic_power_w * g for f, g in self._g.items()}
        self._governor = GovernorModel(
            idle_power_w=gpu.unlocked_idle_power_w,
            downclock_after_s=consts.governor_downclock_after_s,
            wake_delay_s=consts.governor_wake_delay_s,
            shallow_idle_power_w=self._idle[self._clocks[-1]],
        )

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
        if tp > 1:
            key = str(tp)
            ar_fixed = 2 * c.allreduce_latency_s[key]
            ar_per_tok = 2 * h * s / c.allreduce_bandwidth_bytes_per_s[key]
        else:
            ar_fixed = ar_per_tok = 0.0
        vocab = m.vocab_size / tp
        layer_fixed = 4 * c.gemm_fixed_s + 6 * c.elementwise_fixed_s + c.attention_fixed_s + ar_fixed
        return _TpConsts(
            layers=float(m.num_layers),
            lin_compute_per_tok=2.0 * w_layer / flops,
            lin_mem_fixed=s * w_layer / bw,
            lin_mem_per_tok=s * act / bw,
            lin_fixed=4 * c.gemm_fixed_s,
            elem_per_tok=elem / bw,
            elem_fixed=6 * c.elementwise_fixed_s,
            attn_compute_per_pair=4.0 * d * heads / (c.attention_efficiency * g.peak_bf16_flops),
            attn_kv_per_ctx=2.0 * kv_heads * d * s / bw,
            kv_write_per_tok=2.0 * kv_heads * d * s / bw,
            attn_fixed=c.attention_fixed_s,
            ar_fixed=ar_fixed,
            layer_fixed=layer_fixed,
            dec_layer_fixed=c.decode_fixed_scale * layer_fixed,
            ar_per_tok=ar_per_tok,
            head_compute_per_seq=2.0 * h * vocab / flops,
            head_mem_fixed=s * h * vocab / bw,
            head_mem_per_seq=s * (h + vocab) / bw,
            head_fixed=c.gemm_fixed_s,
        )

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
        so bandwidth falls at low clocks (the A100 decode sweep), and is flat near the top.
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
        """Average per-GPU power the power controller holds under sustained load, W."""
        return self._cap_w

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

    # ------------------------------------------------------------ evaluation
    def _gemm_parts(
        self, k: _TpConsts, n: float, seqs: float, f: float
    ) -> tuple[float, float, float, float, float, float, float, float, float]:
        """Roofline of the per-layer linear layers (``n`` tokens) and the LM head (``seqs`` rows) at clock ``f``.

        Returns (clock factor g, memory-clock factor hm, fmax/f, linear time, linear compute time, linear memory
        time, head time, head compute time, head memory time); times in seconds, memory times before ``hm``.
        """
        inv = self._fmax / f
        g = self._g.get(f)
        if g is None:
            g = self.clock_factor(f)
        hm = self._h.get(f)
        if hm is None:
            hm = self.memory_clock_factor(f)
        lin_c = n * k.lin_compute_per_tok * inv
        lin_m = k.lin_mem_fixed + n * k.lin_mem_per_tok
        lin = lin_m * hm
        if lin_c > lin:
            lin = lin_c
        head_c = seqs * k.head_compute_per_seq * inv
        head_m = k.head_mem_fixed + seqs * k.head_mem_per_seq
        head = head_m * hm
        if head_c > head:
            head = head_c
        return g, hm, inv, lin, lin_c, lin_m, head, head_c, head_m

    def _prefill_eval(self, k: _TpConsts, n: float, seqs: float, pairs: float, f: float) -> tuple[float, float, float]:
        """(latency_s, power_w, throttle_power_w) of a prefill at clock ``f`` MHz, before the power cap."""
        c = self.consts
        g, hm, inv, lin, lin_c, lin_m, head, head_c, head_m = self._gemm_parts(k, n, seqs, f)
        layers = k.layers
        attn = pairs * k.attn_compute_per_pair * inv
        elem_m = n * (k.elem_per_tok + k.kv_write_per_tok)
        kern = layers * (lin + attn + elem_m * hm) + head
        comp = layers * (lin_c + attn) + head_c  # tensor-core busy time
        mem = layers * (lin_m + elem_m) + head_m  # HBM traffic, as seconds at the achieved bandwidth
        comm = layers * (k.layer_fixed + n * k.ar_per_tok) + k.head_fixed
        eng = c.prefill_overhead_s + seqs * c.prefill_per_seq_s
        return self._power(g, kern, comp, mem, comm, eng)

    def _decode_clock(self, k: _TpConsts, tp: int, sm_clock_mhz: int | None, f: float, batch: int) -> float:
        """Throttled decode clock for ``batch`` requests: the running minimum over batch sizes 1..batch of the
        highest clock whose throttle power is within the cap (so it never rises when the batch grows)."""
        table = self._decode_clocks.setdefault((tp, sm_clock_mhz), [f])
        while len(table) <= batch:
            b = float(len(table))
            first = self._decode_eval(k, b, 0.0, f)
            if first[2] <= self._cap_w and f <= self._mem_ok_mhz:
                x = f
            else:
                x = self._throttle(functools.partial(self._decode_eval, k, b, 0.0), int(f), first)
            table.append(min(x, table[-1]))
        return table[batch]

    def _decode_parts(self, k: _TpConsts, b: float, f: float) -> tuple[float, float, float, float]:
        """(time s, energy J) without the KV reads, and (time s, energy J) of the KV read per context token."""
        c = self.consts
        g, hm, _, lin, lin_c, lin_m, head, head_c, head_m = self._gemm_parts(k, b, b, f)
        layers = k.layers
        elem_m = b * (k.elem_per_tok + k.kv_write_per_tok)
        kern = layers * (lin + elem_m * hm) + head
        comp = layers * lin_c + head_c
        mem = layers * (lin_m + elem_m) + head_m
        comm = layers * (k.dec_layer_fixed + b * k.ar_per_tok) + c.decode_fixed_scale * k.head_fixed
        eng = c.decode_overhead_s + b * c.decode_per_seq_s
        p_act = c.static_power_w + (c.idle_dynamic_power_w + c.busy_power_w) * g
        p_other = c.static_power_w + c.idle_dynamic_power_w * g + self._other_w
        e = p_act * kern + c.compute_power_w * g * comp + c.memory_power_w * mem + p_other * (comm + eng)
        kv_m = layers * k.attn_kv_per_ctx
        return kern + comm + eng, e, kv_m * hm, p_act * kv_m * hm + c.memory_power_w * kv_m

    def _decode_eval(self, k: _TpConsts, b: float, ctx: float, f: float) -> tuple[float, float, float]:
        """(latency_s, power_w, throttle_power_w) of a decode iteration at clock ``f`` MHz, before the cap.

        The throttle power leaves out the KV reads and the engine time (see :meth:`_power`).
        """
        t_fix, e_fix, kv_t, kv_e = self._decode_parts(k, b, f)
        eng = self.consts.decode_overhead_s + b * self.consts.decode_per_seq_s
        p_other = self.consts.static_power_w + self.consts.idle_dynamic_power_w * self._gf(f) + self._other_w
        lat = t_fix + ctx * kv_t
        return lat, (e_fix + ctx * kv_e) / lat, (e_fix - p_other * eng) / (t_fix - eng)

    def _gf(self, f: float) -> float:
        g = self._g.get(f)
        return self.clock_factor(f) if g is None else g

    def _power(
        self, g: float, kern: float, comp: float, mem: float, comm: float, eng: float
    ) -> tuple[float, float, float]:
        """Latency, mean power and throttle power of a prefill from its time buckets (docs/hardware.md).

        Kernel time ``kern`` draws the active-SM power; tensor-core busy time ``comp`` adds the compute power;
        HBM traffic ``mem`` (seconds at the achieved bandwidth) adds the memory power per byte; communication /
        fixed time ``comm`` and engine time ``eng`` draw the low "other" power. The throttle power leaves out the
        engine time, so it never falls when a batch grows.
        """
        c = self.consts
        p_other = c.static_power_w + c.idle_dynamic_power_w * g + self._other_w
        e_core = (
            (c.static_power_w + (c.idle_dynamic_power_w + c.busy_power_w) * g) * kern
            + c.compute_power_w * g * comp
            + c.memory_power_w * mem
            + p_other * comm
        )
        t_core = kern + comm
        lat = t_core + eng
        return lat, (e_core + p_other * eng) / lat, e_core / t_core

    def _throttle(
        self, fn: Callable[[float], tuple[float, float, float]], f_req: int, first: tuple[float, float, float]
    ) -> float:
        """The highest supported clock <= ``f_req`` whose throttle power is within the cap.

        Interpolation search on the clock table (the throttle power rises with the clock and never falls with
        the batch, so the chosen clock, and hence latency, is monotone in both).
        """
        cap = self._cap_w
        clocks = self._clocks
        hi_i = self._clock_index[f_req]
        top = self._mem_ok_idx
        if hi_i > top:  # memory-bound kernels alone would exceed the cap above this clock
            hi_i = top
            first = fn(float(clocks[hi_i]))
            if first[2] <= cap:
                return float(clocks[hi_i])
        lo_i = 0
        b_lo, b_hi = fn(float(clocks[0]))[2], first[2]
        if b_lo > cap:
            return float(clocks[0])
        prev_side = 0
        bisect = False
        while hi_i - lo_i > 1:
            if bisect:  # two moves on the same side in a row: bisect to guarantee progress
                m = (lo_i + hi_i) // 2
            else:
                m = lo_i + round((cap - b_lo) / (b_hi - b_lo) * (hi_i - lo_i))
                m = min(max(m, lo_i + 1), hi_i - 1)
            mid = fn(float(clocks[m]))
            if mid[2] > cap:
                hi_i, b_hi, side = m, mid[2], 1
            else:
                lo_i, b_lo, side = m, mid[2], -1
            bisect = side == prev_side
            prev_side = side
        return float(clocks[lo_i])

    def prefill_cost(self, shape: PrefillShape, tp: int, sm_clock_mhz: int | None) -> IterationCost:
        k = self._tp.get(tp)
        if k is None:
            k = self._consts_for(tp)
        if sm_clock_mhz is None:
            f = self._fmax
        elif sm_clock_mhz in self._clock_set:
            f = float(sm_clock_mhz)
        else:
            self._check_clock(sm_clock_mhz)
            raise AssertionError  # unreachable
        if shape.num_seqs <= 0:
            return IterationCost(0.0, self._idle[int(f)], f)
        n = float(shape.tokens_sum)
        seqs = float(shape.num_seqs)
        pairs = shape.attn_pairs
        # The throttle decision treats the batch as one prompt of all its tokens (at least as many causal pairs
        # as the real batch): its throttle power is monotone in every batch statistic, so the throttled clock
        # never rises, and latency never falls, when the batch grows.
        one_prompt = 0.5 * n * (n + 1.0)
        key = (tp, sm_clock_mhz, shape.tokens_sum, shape.num_seqs, -1.0 if pairs <= one_prompt else pairs)
        x = self._prefill_clock.get(key)
        if x is None:
            ref_pairs = one_prompt if pairs <= one_prompt else pairs
            first = self._prefill_eval(k, n, seqs, ref_pairs, f)
            if first[2] <= self._cap_w and f <= self._mem_ok_mhz:
                x = f
            else:
                x = self._throttle(functools.partial(self._prefill_eval, k, n, seqs, ref_pairs), int(f), first)
            if len(self._prefill_clock) > 500_000:
                self._prefill_clock.clear()
            self._prefill_clock[key] = x
        lat, power, _ = self._prefill_eval(k, n, seqs, pairs, x)
        return IterationCost(lat, power, x)

    def decode_cost(self, shape: DecodeShape, tp: int, sm_clock_mhz: int | None) -> IterationCost:
        key = (tp, sm_clock_mhz, shape.batch_size)
        parts = self._decode_cache.get(key)
        if parts is None:
            parts = self._decode_parts_cached(*key)
        f, t_fix, e_fix, kv_t, kv_e = parts
        ctx = shape.context_sum
        lat = t_fix + ctx * kv_t
        return IterationCost(lat, (e_fix + ctx * kv_e) / lat, f)

    def _decode_parts_cached(self, tp: int, sm_clock_mhz: int | None, batch: int) -> tuple[float, ...]:
        """Context-independent parts of a decode iteration at the throttled clock (cached per TP/clock/batch).

        The throttle power of decode does not depend on the context, so the clock and everything but the KV
        read time is a function of (tp, clock, batch) only.
        """
        k = self._consts_for(tp)
        if sm_clock_mhz is None:
            f = self._fmax
        else:
            self._check_clock(sm_clock_mhz)
            f = float(sm_clock_mhz)
        if batch <= 0:
            parts: tuple[float, ...] = (f, 0.0, 0.0, 0.0, 0.0)
        else:
            x = self._decode_clock(k, tp, sm_clock_mhz, f, batch)
            parts = (x, *self._decode_parts(k, float(batch), x))
        if len(self._decode_cache) > 500_000:
            self._decode_cache.clear()
        self._decode_cache[(tp, sm_clock_mhz, batch)] = parts
        return parts

    # -------------------------------------------------------- calibration API
    def layer_nonattention_s(self, n: int, tp: int, f: float) -> float:
        """One layer's GEMMs + element-wise kernels for ``n`` tokens at clock ``f`` MHz (no attention/comm), s."""
        k = self._all_tp[tp]
        hm = self.memory_clock_factor(f)
        lin = max(n * k.lin_compute_per_tok * self._fmax / f, (k.lin_mem_fixed + n * k.lin_mem_per_tok) * hm)
        return lin + k.lin_fixed + n * k.elem_per_tok * hm + k.elem_fixed

    def prefill_latency_at(self, shape: PrefillShape, tp: int, f: float) -> float:
        """Prefill latency at the *effective* clock ``f`` MHz (any value, no power cap), s."""
        k = self._consts_for(tp)
        return self._prefill_eval(k, float(shape.tokens_sum), float(shape.num_seqs), shape.attn_pairs, f)[0]

    def decode_latency_at(self, shape: DecodeShape, tp: int, f: float) -> float:
        """Decode latency at the *effective* clock ``f`` MHz (any value, no power cap), s."""
        k = self._consts_for(tp)
        return self._decode_eval(k, float(shape.batch_size), float(shape.context_sum), f)[0]

    def describe(self) -> dict[str, float | int | str]:
        """Key facts (for ``biscale hardware list/show``)."""
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
        }
