"""Real-GPU profiler: a randomly initialised Llama-architecture model in PyTorch on the local GPU.

Why this shape: users need profiles of *their* GPUs, and a serving engine is not needed to measure iteration
cost. The model is built from a ``transformers`` ``LlamaConfig`` with the target model's layer shape (no weights
downloaded), ``layers`` full-size layers, and random bf16 weights. TP > 1 is profiled as one GPU's shard (heads, KV
heads and MLP width divided by TP); the all-reduces between shards are *not* measured (documented limitation).

Per batch shape and clock:

* warm-up iterations, then repeats until ``min_window_s`` has passed; latency from CUDA events;
* energy from NVML's total-energy counter over the same window (``biscale.gpu.energy.EnergyMeter``);
* the model is run at 1 layer and at ``layers`` layers; per-layer cost = difference / (layers - 1), and the full
  model = fixed part + per-layer part x the model's depth (latency and energy alike).

Prefill batches are packed into one sequence (the GEMMs see the batch's tokens; attention is causal over the
packed sequence, recorded in ``attn_pairs``). Decode batches use equal context lengths (so the padded KV cache
equals the real one). Clocks are left as found unless ``sweep_clocks``, which locks each clock through the NVML
actuator and always resets the clocks afterwards (needs root). Only the CPU-side parts and the no-GPU error path
are tested in CI (no GPU there).
"""

from __future__ import annotations

import datetime as dt
import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from biscale.errors import InputError, NoGpuError
from biscale.predict.profilers import (
    DEFAULT_MAX_DECODE_BATCH,
    DEFAULT_MAX_PREFILL_TOKENS,
    DEFAULT_SHAPES,
    ProfilerBackend,
    ProfileRequest,
)
from biscale.predict.schema import ProfileMeta

#: The layer shape of the models this profiler knows (public model cards).
MODEL_SHAPES: dict[str, dict[str, int]] = {
    "llama-3.3-70b": {
        "num_layers": 80,
        "hidden_size": 8192,
        "num_heads": 64,
        "num_kv_heads": 8,
        "intermediate_size": 28672,
        "vocab_size": 128256,
    },
    "llama-3.1-8b": {
        "num_layers": 32,
        "hidden_size": 4096,
        "num_heads": 32,
        "num_kv_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 128256,
    },
}


@dataclass(frozen=True)
class TorchProfileConfig:
    """What to run on the local GPU."""

    model: str
    tps: tuple[int, ...]
    layers: int = 2
    """Full-size layers instantiated (>= 2); results are scaled to the model's depth."""
    shapes_per_tp: int = DEFAULT_SHAPES
    max_prefill_tokens: int = DEFAULT_MAX_PREFILL_TOKENS
    max_decode_batch: int = DEFAULT_MAX_DECODE_BATCH
    min_window_s: float = 1.0
    """Measurement window per shape, seconds (NVML's energy counter updates only every 10-100 ms)."""
    warmup: int = 3
    device: int = 0
    sweep_clocks: bool = False
    clocks_mhz: tuple[int, ...] = ()
    """Clocks to lock with ``sweep_clocks`` (empty: leave clocks as found)."""
    seed: int = 0


def require_torch() -> tuple[Any, Any]:
    """Import torch and transformers, or raise :class:`NoGpuError` (exit 2) saying what is missing."""
    try:
        torch = importlib.import_module("torch")
        transformers = importlib.import_module("transformers")
    except ImportError as exc:
        raise NoGpuError(
            f"the torch backend needs PyTorch and transformers ({exc.name} is not installed): "
            "pip install 'biscale[torch]', or use --backend sim"
        ) from exc
    if not torch.cuda.is_available():
        raise NoGpuError("the torch backend needs a CUDA GPU and none is visible to PyTorch; use --backend sim")
    return torch, transformers


def shard_config(model: str, tp: int, layers: int) -> dict[str, int]:
    """LlamaConfig fields for one GPU's shard of ``model`` at TP degree ``tp`` with ``layers`` layers."""
    shape = MODEL_SHAPES.get(model)
    if shape is None:
        raise InputError(f"torch backend: unknown model {model!r} (known: {', '.join(MODEL_SHAPES)})", field="model")
    if layers < 2:
        raise InputError("--layers must be at least 2 (one is needed to separate per-layer from fixed cost)")
    heads, kv, mlp = shape["num_heads"], shape["num_kv_heads"], shape["intermediate_size"]
    if heads % tp or mlp % tp:
        raise InputError(f"tp={tp} does not divide the model's heads ({heads}) and MLP width ({mlp})", field="tp")
    head_dim = shape["hidden_size"] // heads
    return {
        "hidden_size": shape["hidden_size"],
        "num_attention_heads": heads // tp,
        "num_key_value_heads": max(kv // tp, 1),
        "head_dim": head_dim,
        "intermediate_size": mlp // tp,
        "vocab_size": shape["vocab_size"] // tp,
        "num_hidden_layers": layers,
    }


def scale_to_depth(value_one: float, value_n: float, layers: int, depth: int) -> float:
    """Full-model value from measurements with 1 and ``layers`` layers: fixed + per-layer x depth."""
    per_layer = (value_n - value_one) / (layers - 1)
    fixed = value_one - per_layer
    return fixed + per_layer * depth


def draw_shapes(
    rng: np.random.Generator, inputs: np.ndarray, outputs: np.ndarray, cfg: TorchProfileConfig
) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Prefill prompt-length lists and decode (batch size, context length) pairs drawn from the length mix."""
    pre: list[np.ndarray] = []
    budgets = np.exp(rng.uniform(np.log(16), np.log(cfg.max_prefill_tokens), cfg.shapes_per_tp))
    for b in budgets:
        lens: list[int] = []
        while not lens or sum(lens) < b:
            length = int(min(inputs[rng.integers(0, inputs.size)], cfg.max_prefill_tokens))
            if lens and sum(lens) + length > b:
                break
            lens.append(length)
        pre.append(np.asarray(lens, dtype=np.int64))
    dec: list[tuple[int, int]] = []
    sizes = np.maximum(np.exp(rng.uniform(0, np.log(cfg.max_decode_batch), cfg.shapes_per_tp)).astype(int), 1)
    for b in sizes:
        i = rng.integers(0, inputs.size)
        dec.append((int(b), int(inputs[i] + max(1, int(rng.random() * outputs[i])))))
    return pre, dec


def timed_window(
    torch: Any,
    fn: Callable[[], Any],
    meter: Any,
    device: int,
    min_window_s: float,
    *,
    warmup: int = 3,
    min_calls: int = 3,
    sync_every: int = 8,
) -> tuple[float, float, int]:  # pragma: no cover - needs a GPU
    """(latency s, energy J per call, calls) of ``fn`` called back to back for at least ``min_window_s`` (and
    ``min_calls``) after ``warmup`` calls: CUDA events around the calls, the NVML energy counter of ``meter``
    (an :class:`~biscale.gpu.energy.EnergyMeter`) over the same window; synchronising every ``sync_every`` calls
    keeps the CPU from queueing far ahead of the window's clock."""
    dev = torch.device(f"cuda:{device}")
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize(dev)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    calls = 0
    with meter.window() as w:
        start.record()
        t0 = time.monotonic()
        while calls < min_calls or time.monotonic() - t0 < min_window_s:
            fn()
            calls += 1
            if calls % sync_every == 0:
                torch.cuda.synchronize(dev)
        end.record()
        torch.cuda.synchronize(dev)
    assert w.measurement is not None
    return start.elapsed_time(end) / 1e3 / calls, w.measurement.energy_j[device] / calls, calls


def torch_profile(
    cfg: TorchProfileConfig,
    inputs: np.ndarray,
    outputs: np.ndarray,
    *,
    gpu_name: str,
    progress: Callable[[int], None] | None = None,
) -> tuple[pd.DataFrame, ProfileMeta]:  # pragma: no cover - needs a GPU
    """Profile the local GPU; returns the profile frame and its sidecar facts."""
    torch, transformers = require_torch()
    from biscale.gpu.energy import EnergyMeter
    from biscale.gpu.nvml import NvmlActuator, load_nvml

    nvml = load_nvml()
    meter = EnergyMeter(nvml, gpus=[cfg.device])
    actuator = NvmlActuator(nvml, gpus=[cfg.device]) if cfg.sweep_clocks else None
    dev = torch.device(f"cuda:{cfg.device}")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    depth = MODEL_SHAPES[cfg.model]["num_layers"]
    records: list[dict[str, object]] = []
    idle: dict[int, dict[int, float]] = {}
    handle = nvml.nvmlDeviceGetHandleByIndex(cfg.device)

    def current_clock() -> int:
        return int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM))

    def timed(fn: Callable[[], Any]) -> tuple[float, float, int]:
        return timed_window(torch, fn, meter, cfg.device, cfg.min_window_s, warmup=cfg.warmup)

    try:
        for tp in cfg.tps:
            fields = shard_config(cfg.model, tp, cfg.layers)
            config = transformers.LlamaConfig(**fields, torch_dtype="bfloat16")
            with dev:  # random weights drawn on the GPU (on the CPU they take tens of seconds per model)
                model = transformers.LlamaForCausalLM(config).to(dtype=torch.bfloat16).eval()
            all_layers = model.model.layers
            pre, dec = draw_shapes(rng, inputs, outputs, cfg)
            clocks: Sequence[int | None] = cfg.clocks_mhz if cfg.sweep_clocks else (None,)
            idle[tp] = {}
            for clk in clocks:
                if actuator is not None and clk is not None:
                    actuator.set_clock([cfg.device], int(clk))
                torch.cuda.synchronize(dev)
                with meter.window() as w:
                    time.sleep(cfg.min_window_s)
                assert w.measurement is not None
                clk_now = current_clock() if clk is None else int(clk)
                idle[tp][clk_now] = w.measurement.avg_power_w[cfg.device]
                for phase, shapes in (("prefill", pre), ("decode", dec)):
                    for shape in shapes:
                        res = []
                        for n_layers in (1, cfg.layers):
                            model.model.layers = all_layers[:n_layers]
                            if phase == "prefill":
                                lens = np.asarray(shape)
                                fn = _prefill_fn(torch, model, lens, dev)
                            else:
                                b, c = shape
                                fn = _decode_fn(torch, transformers, model, int(b), int(c), fields, dev)
                            with torch.inference_mode():
                                res.append(timed(fn))
                        model.model.layers = all_layers
                        lat = scale_to_depth(res[0][0], res[1][0], cfg.layers, depth)
                        energy = scale_to_depth(res[0][1], res[1][1], cfg.layers, depth)
                        rec: dict[str, object] = {
                            "gpu": gpu_name,
                            "model": cfg.model,
                            "phase": phase,
                            "tp": tp,
                            "sm_clock_mhz": clk_now,
                            "latency_s": lat,
                            "power_w": energy / lat,
                            "energy_j": energy,
                            "repeats": int(res[1][2]),
                            "source": f"torch:{gpu_name} shard tp={tp} layers={cfg.layers} scaled to {depth}",
                            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                        }
                        if phase == "prefill":
                            lens = np.asarray(shape, dtype=np.float64)
                            t = float(lens.sum())
                            rec.update(
                                batch_size=int(lens.size),
                                input_len_sum=t,
                                input_len_mean=float(lens.mean()),
                                input_len_std=float(lens.std()),
                                input_len_max=float(lens.max()),
                                attn_pairs=t * (t + 1) / 2,  # one packed causal sequence
                            )
                        else:
                            b, c = shape
                            rec.update(
                                batch_size=int(b),
                                context_len_sum=float(b * c),
                                context_len_mean=float(c),
                                context_len_std=0.0,
                                context_len_max=float(c),
                            )
                        records.append(rec)
                        if progress is not None:
                            progress(1)
            del model
            torch.cuda.empty_cache()
    finally:
        if actuator is not None:
            actuator.close("profile finished")  # resets every clock it locked
        meter.close()
    meta = ProfileMeta(
        gpu=gpu_name,
        model=cfg.model,
        backend="torch",
        idle_power_w=idle,
        seed=cfg.seed,
        notes=(
            f"torch backend on cuda:{cfg.device}; {cfg.layers} full-size layers scaled to {depth}; TP shards on one "
            "GPU (no all-reduce); " + ("clocks swept with NVML" if cfg.sweep_clocks else "clocks as found")
        ),
    )
    return pd.DataFrame.from_records(records), meta


def _prefill_fn(torch: Any, model: Any, lens: np.ndarray, dev: Any) -> Callable[[], Any]:  # pragma: no cover
    total = int(lens.sum())
    ids = torch.randint(0, model.config.vocab_size, (1, total), device=dev)
    last = torch.as_tensor(np.cumsum(lens) - 1, device=dev)

    def run() -> Any:
        hidden = model.model(input_ids=ids, use_cache=False).last_hidden_state
        return model.lm_head(hidden[0, last])  # logits only for each prompt's last token, as engines do

    return run


def _decode_fn(
    torch: Any, transformers: Any, model: Any, b: int, ctx: int, fields: dict[str, int], dev: Any
) -> Callable[[], Any]:  # pragma: no cover
    kv, hd = fields["num_key_value_heads"], fields["head_dim"]
    n_layers = len(model.model.layers)
    past = tuple(
        (
            torch.randn(b, kv, ctx, hd, device=dev, dtype=torch.bfloat16),
            torch.randn(b, kv, ctx, hd, device=dev, dtype=torch.bfloat16),
        )
        for _ in range(n_layers)
    )
    ids = torch.randint(0, model.config.vocab_size, (b, 1), device=dev)
    pos = torch.full((b, 1), ctx, device=dev, dtype=torch.long)

    def run() -> Any:
        cache = transformers.DynamicCache()
        for layer, (k, v) in enumerate(past):
            cache.update(k, v, layer)  # a fresh cache per call: every iteration reads the same ctx tokens
        return model(input_ids=ids, past_key_values=cache, position_ids=pos, use_cache=True).logits

    return run


class TorchProfiler(ProfilerBackend):
    """The ``torch`` backend: :func:`torch_profile` on the local GPU (TP degrees default to 1)."""

    def prepare(self, request: ProfileRequest) -> ProfileRequest:
        require_torch()  # exits 2 with a clear message without torch or without a GPU
        if request.sweep_clocks and not request.clocks_mhz:
            raise InputError("--sweep-clocks needs --clocks (the clocks to lock)")
        return request

    def run(
        self, request: ProfileRequest, progress: Callable[[int], None]
    ) -> tuple[pd.DataFrame, ProfileMeta]:  # pragma: no cover - needs a GPU
        cfg = TorchProfileConfig(
            model=request.model,
            tps=request.tps or (1,),
            layers=request.layers,
            shapes_per_tp=request.shapes,
            max_prefill_tokens=request.max_prefill_tokens,
            max_decode_batch=request.max_decode_batch,
            min_window_s=request.min_window_s,
            device=request.device,
            sweep_clocks=request.sweep_clocks,
            clocks_mhz=request.clocks_mhz or (),
            seed=request.seed,
        )
        return torch_profile(
            cfg, request.input_lengths, request.output_lengths, gpu_name=request.gpu, progress=progress
        )
