"""Simulated profiler: measures the hardware model the way a real profiler measures a GPU.

For every TP degree it draws a set of batch shapes from a length mix, then, for every clock, "runs" each shape:

* iterations repeat back to back until the measurement window holds at least ``MIN_COUNTER_UPDATES`` updates of
  the power counter (NVML's power reading refreshes only every 10-100 ms), after a warm-up window;
* each iteration's latency carries multiplicative jitter (lognormal, ``latency_jitter`` sigma); the row's latency
  is the mean over the repeats (what CUDA-event timing gives);
* the counter reports the mean power over its last update period plus sensor noise; the row's power is the
  mean of the readings that fall inside the window.

Same shapes at every clock (as a real sweep does); everything is seeded. Only this backend reads the hardware
model; predictors never do.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from biscale.costmodel import DecodeShape, PrefillShape
from biscale.errors import InputError
from biscale.hardware.base import HardwareModel
from biscale.predict.profilers import (
    DEFAULT_MAX_DECODE_BATCH,
    DEFAULT_MAX_PREFILL_TOKENS,
    DEFAULT_SHAPES,
    ProfilerBackend,
    ProfileRequest,
)
from biscale.predict.schema import GovernorMeta, ProfileMeta

#: Power-counter readings averaged per row at least.
MIN_COUNTER_UPDATES = 6
#: Repeats per row at least, and at most (a 1 ms iteration with a 100 ms counter would need 600).
MIN_REPEATS = 3
MAX_REPEATS = 5000
#: Profile timestamps count simulated time from this instant (deterministic output).
EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class SimProfileConfig:
    """What to profile and how noisy the simulated instruments are."""

    tps: tuple[int, ...]
    clocks_mhz: tuple[int, ...]
    shapes_per_tp: int = DEFAULT_SHAPES
    """Batch shapes per (phase, TP); each is measured at every clock."""
    max_prefill_tokens: int = DEFAULT_MAX_PREFILL_TOKENS
    """Largest prefill batch, tokens (capped by the KV capacity of the TP degree)."""
    max_decode_batch: int = DEFAULT_MAX_DECODE_BATCH
    """Largest decode batch, requests (capped so the contexts fit in the KV cache)."""
    latency_jitter: float = 0.02
    """Sigma of the lognormal per-iteration latency jitter (0.02 = about 2 %)."""
    power_noise: float = 0.015
    """Relative sigma of each power-counter reading."""
    counter_period_s: tuple[float, float] = (0.010, 0.100)
    """The power counter's update period is drawn once per run from this range, seconds."""
    seed: int = 0


def default_clocks(supported: Sequence[int], count: int = 24, low_fraction: float = 0.0) -> tuple[int, ...]:
    """``count`` clocks evenly spread from ``max(lowest, low_fraction x max)`` to the max clock, snapped to
    supported clocks. The default covers every lockable clock a controller may pick (H100: 345-1980 MHz)."""
    sup = np.asarray(sorted(supported), dtype=np.float64)
    top = sup[-1]
    lo = max(sup[0], low_fraction * top)
    targets = np.linspace(lo, top, count)
    picked = {int(sup[np.argmin(np.abs(sup - t))]) for t in targets}
    return tuple(sorted(picked))


def _prefill_shapes(rng: np.random.Generator, inputs: np.ndarray, n: int, max_tokens: int) -> list[np.ndarray]:
    """Prompt-length batches with a log-uniform token budget (so small and large batches are both covered).

    Half the shapes draw prompts from the length mix; the other half draw prompt lengths log-uniformly up to the
    budget, so few-long-prompt batches (attention-heavy, as in long-context traces) are covered as well.
    """
    shapes: list[np.ndarray] = []
    budgets = np.exp(rng.uniform(np.log(16.0), np.log(max_tokens), size=n))
    for i, budget in enumerate(budgets):
        from_mix = i % 2 == 0
        lens: list[int] = []
        total = 0
        while True:
            if from_mix:
                length = int(min(inputs[rng.integers(0, inputs.size)], max_tokens))
            else:
                length = int(np.exp(rng.uniform(np.log(8.0), np.log(max(budget, 9.0)))))
            if lens and total + length > budget:
                break
            lens.append(length)
            total += length
            if total >= budget:
                break
        shapes.append(np.asarray(lens, dtype=np.int64))
    return shapes


def _decode_shapes(
    rng: np.random.Generator, inputs: np.ndarray, outputs: np.ndarray, n: int, max_batch: int, kv_cap: int
) -> list[np.ndarray]:
    """Running-request context lengths for a log-uniform batch size.

    Half the shapes take prompt + a uniform share of the output from the length mix; the other half long
    contexts (log-uniform, 64 to 16k tokens), so long-context decode is covered too. Contexts are trimmed to fit
    the KV cache, as a real engine would admit them.
    """
    shapes: list[np.ndarray] = []
    sizes = np.exp(rng.uniform(0.0, np.log(max_batch), size=n)).astype(np.int64)
    for i, b in enumerate(np.maximum(sizes, 1)):
        if i % 2 == 0:
            idx = rng.integers(0, inputs.size, size=int(b))
            ctx = inputs[idx] + np.ceil(rng.random(int(b)) * outputs[idx]).astype(np.int64)
        else:
            ctx = np.exp(rng.uniform(np.log(64.0), np.log(16384.0), size=int(b))).astype(np.int64)
        ctx = np.maximum(ctx, 1)
        if ctx.sum() > kv_cap:
            keep = np.cumsum(ctx) <= kv_cap
            ctx = ctx[keep] if keep.any() else np.array([min(int(ctx[0]), kv_cap)], dtype=np.int64)
        shapes.append(ctx)
    return shapes


def _measure(
    rng: np.random.Generator, latency_s: float, power_w: float, period_s: float, cfg: SimProfileConfig
) -> tuple[float, float, int, float]:
    """Simulate one measurement: returns (mean latency s, mean counter power W, repeats, wall time s)."""
    repeats = int(np.clip(np.ceil((MIN_COUNTER_UPDATES + 1) * period_s / latency_s), MIN_REPEATS, MAX_REPEATS))
    lat = latency_s * rng.lognormal(0.0, cfg.latency_jitter, size=repeats)
    pw = power_w * (1.0 + 0.003 * rng.standard_normal(repeats))  # small true variation between iterations
    t = np.concatenate(([0.0], np.cumsum(lat)))
    energy = np.concatenate(([0.0], np.cumsum(lat * pw)))
    total = float(t[-1])
    # Counter updates at phase + k * period; each reports the mean power of the period just ended. Readings
    # whose period lies wholly inside the run are kept (the warm-up before t=0 ran at the same power).
    phase = rng.uniform(0.0, period_s)
    ticks = np.arange(phase + period_s, total + 1e-12, period_s)
    if ticks.size == 0:  # the run was shorter than one period: the profiler reads the counter once more
        ticks = np.array([total])
        starts = np.maximum(ticks - period_s, 0.0)
    else:
        starts = ticks - period_s
    e_end = np.interp(ticks, t, energy)
    e_start = np.interp(starts, t, energy)
    readings = (e_end - e_start) / (ticks - starts)
    readings = readings * (1.0 + cfg.power_noise * rng.standard_normal(readings.size))
    return float(lat.mean()), float(readings.mean()), repeats, total


def _row_stats(lengths: np.ndarray) -> tuple[int, float, float, float, int]:
    x = lengths.astype(np.float64)
    return int(x.size), float(x.sum()), float(x.mean()), float(x.std()), int(x.max())


def simulate_profile(
    hw: HardwareModel,
    cfg: SimProfileConfig,
    inputs: np.ndarray,
    outputs: np.ndarray,
    *,
    lengths_name: str = "lengths",
    progress: Callable[[int], None] | None = None,
) -> tuple[pd.DataFrame, ProfileMeta]:
    """Profile ``hw`` at ``cfg.tps`` x ``cfg.clocks_mhz`` over shapes drawn from the length mix; seeded."""
    rng = np.random.default_rng(cfg.seed)
    lo_p, hi_p = cfg.counter_period_s
    period = float(rng.uniform(lo_p, hi_p))
    source = f"sim:{hw.gpu_name}/{hw.model_name} lengths={lengths_name} seed={cfg.seed}"
    records: list[dict[str, object]] = []
    clock_now = 0.0
    idle: dict[int, dict[int, float]] = {}
    kv_cap: dict[int, int] = {}
    for tp in cfg.tps:
        cap = int(hw.kv_capacity_tokens(tp))
        kv_cap[tp] = cap
        shape_rng = np.random.default_rng([cfg.seed, tp])
        pre = _prefill_shapes(shape_rng, inputs, cfg.shapes_per_tp, min(cfg.max_prefill_tokens, cap))
        dec = _decode_shapes(shape_rng, inputs, outputs, cfg.shapes_per_tp, cfg.max_decode_batch, cap)
        pre_shapes = [PrefillShape.from_lengths(x) for x in pre]
        dec_shapes = [DecodeShape.from_lengths(x) for x in dec]
        pre_stats = [_row_stats(x) for x in pre]
        dec_stats = [_row_stats(x) for x in dec]
        idle[tp] = {}
        for clk in cfg.clocks_mhz:
            # Idle power: read the counter for a few periods with the model loaded and no work.
            p_idle = hw.idle_power_w(tp, clk)
            idle[tp][int(clk)] = float(p_idle * (1.0 + cfg.power_noise / np.sqrt(8) * rng.standard_normal()))
            for phase, shapes, stats in (("prefill", pre_shapes, pre_stats), ("decode", dec_shapes, dec_stats)):
                for shape, (n, s, mean, std, mx) in zip(shapes, stats, strict=True):
                    if phase == "prefill":
                        assert isinstance(shape, PrefillShape)
                        cost = hw.prefill_cost(shape, tp, clk)
                    else:
                        assert isinstance(shape, DecodeShape)
                        cost = hw.decode_cost(shape, tp, clk)
                    lat, pw, reps, wall = _measure(rng, cost.latency_s, cost.power_w, period, cfg)
                    clock_now += wall + period  # warm-up window before each measurement
                    rec: dict[str, object] = {
                        "gpu": hw.gpu_name,
                        "model": hw.model_name,
                        "phase": phase,
                        "tp": tp,
                        "sm_clock_mhz": int(clk),
                        "batch_size": n,
                        "latency_s": lat,
                        "power_w": pw,
                        "energy_j": lat * pw,
                        "repeats": reps,
                        "source": source,
                        "timestamp": (EPOCH + dt.timedelta(seconds=clock_now)).isoformat(timespec="milliseconds"),
                    }
                    if phase == "prefill":
                        assert isinstance(shape, PrefillShape)
                        rec.update(input_len_sum=s, input_len_mean=mean, input_len_std=std, input_len_max=mx)
                        rec["attn_pairs"] = shape.attn_pairs
                    else:
                        rec.update(context_len_sum=s, context_len_mean=mean, context_len_std=std, context_len_max=mx)
                    records.append(rec)
            if progress is not None:
                progress(1)
    df = pd.DataFrame.from_records(records)
    gov = hw.governor
    meta = ProfileMeta(
        gpu=hw.gpu_name,
        model=hw.model_name,
        backend="sim",
        supported_clocks_mhz=[int(c) for c in hw.supported_clocks_mhz],
        kv_bytes_per_token=int(hw.kv_bytes_per_token),
        kv_capacity_tokens=kv_cap,
        idle_power_w=idle,
        governor=GovernorMeta(
            idle_power_w=gov.idle_power_w,
            downclock_after_s=gov.downclock_after_s,
            wake_delay_s=gov.wake_delay_s,
            shallow_idle_power_w=gov.shallow_idle_power_w,
        ),
        seed=cfg.seed,
        notes=(
            f"simulated profile; power counter period {period * 1e3:.1f} ms, latency jitter sigma "
            f"{cfg.latency_jitter:g}, counter noise sigma {cfg.power_noise:g}; "
            f"{cfg.shapes_per_tp} shapes per phase and TP"
        ),
    )
    return df, meta


def _tp_ok(hw: HardwareModel, tp: int) -> bool:
    try:
        hw.kv_capacity_tokens(tp)
    except (ValueError, KeyError):
        return False
    return True


class SimProfiler(ProfilerBackend):
    """The ``sim`` backend: :func:`simulate_profile` on the hardware model of the request's GPU and model."""

    def _hardware(self, request: ProfileRequest) -> HardwareModel:
        from biscale.hardware import get_hardware

        return get_hardware(request.gpu, request.model)

    def prepare(self, request: ProfileRequest) -> ProfileRequest:
        hw = self._hardware(request)
        valid_tps = tuple(t for t in (1, 2, 4, 8) if t >= hw.min_tp and _tp_ok(hw, t))
        tps = request.tps or valid_tps
        bad = [t for t in tps if t not in valid_tps]
        if bad:
            raise InputError(
                f"--tp {bad[0]} is not available for {request.model} on {request.gpu} (valid: {list(valid_tps)})"
            )
        supported = hw.supported_clocks_mhz
        clocks = request.clocks_mhz if request.clocks_mhz is not None else default_clocks(supported)
        bad = [c for c in clocks if c not in supported]
        if bad:
            raise InputError(
                f"--clocks {bad[0]} MHz is not a supported clock of {request.gpu} "
                f"({supported[0]}..{supported[-1]} MHz, step {supported[1] - supported[0]})"
            )
        if len(set(clocks)) < 2:
            raise InputError("--clocks needs at least 2 distinct clocks to learn the clock dependence")
        return dataclasses.replace(request, tps=tuple(tps), clocks_mhz=tuple(clocks))

    def total_steps(self, request: ProfileRequest) -> int | None:
        return len(request.tps or ()) * len(set(request.clocks_mhz or ()))

    def run(self, request: ProfileRequest, progress: Callable[[int], None]) -> tuple[pd.DataFrame, ProfileMeta]:
        cfg = SimProfileConfig(
            tps=tuple(request.tps or ()),
            clocks_mhz=tuple(sorted(set(request.clocks_mhz or ()))),
            shapes_per_tp=request.shapes,
            max_prefill_tokens=request.max_prefill_tokens,
            max_decode_batch=request.max_decode_batch,
            seed=request.seed,
        )
        return simulate_profile(
            self._hardware(request),
            cfg,
            request.input_lengths,
            request.output_lengths,
            lengths_name=request.lengths_label,
            progress=progress,
        )
