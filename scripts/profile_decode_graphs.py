"""Decode steps of a Llama-shaped TP shard replayed from CUDA graphs on the local GPU, at the clocks as found.

Why: eager PyTorch pays ~0.6 ms of kernel launches per layer, which hides the memory-bound decode step that a
serving engine runs from CUDA graphs (docs/hardware.md, "Measured on a real H100"). This script builds the step
itself in plain PyTorch (no weights downloaded, random bf16 tensors), captures it in a CUDA graph per shape and
times the replays, so decode latency and energy become comparable with the hardware model.

One step of one layer on one GPU of a TP group (shard sizes = the model's / TP): RMSNorm, the fused QKV GEMM,
attention of the new token over ``context`` cached tokens (grouped-query: each KV head's query group attends as one
short query block through ``scaled_dot_product_attention``), the output GEMM, a residual add, RMSNorm, the gated
MLP (one GEMM for gate and up, SiLU times up, the down GEMM) and a residual add. After the layers: a final RMSNorm
and the LM head GEMM for every sequence. Not included: rotary embeddings, the KV write of the new token, sampling,
the all-reduces between shards and the engine's CPU work. Each shape runs with ``--layers-lo`` and ``--layers-hi``
layers; per-layer cost = difference / (hi - lo); the step of the whole model = the ``lo`` run + per-layer cost x
(depth - lo); latency and energy alike. Latency: CUDA events around the replays; energy: NVML's total-energy
counter over the same window (``biscale.gpu.energy.EnergyMeter``). Never changes clocks or power settings.

Usage: ``python scripts/profile_decode_graphs.py --out DIR [--tp 2,4,8] [--batches 1,8,32,128,256]
[--contexts 256,1024,4096] [--min-window-s 0.5]``; writes ``DIR/decode_graphs.csv`` (one row per shape; columns
in the docstring of :func:`main`) and prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

#: Llama-3.3-70B layer shape (the hardware model's data/models/llama-3.3-70b.json).
MODEL = {"hidden": 8192, "heads": 64, "kv_heads": 8, "head_dim": 128, "mlp": 28672, "vocab": 128256, "depth": 80}


def build_step(torch: Any, tp: int, layers: int, batch: int, context: int, dev: Any) -> Any:
    """A function running one decode step of ``layers`` layers of a TP shard on static tensors."""
    m = MODEL
    h, d = m["hidden"], m["head_dim"]
    heads, kv, mlp, vocab = m["heads"] // tp, max(m["kv_heads"] // tp, 1), m["mlp"] // tp, m["vocab"] // tp
    group = heads // kv
    bf = torch.bfloat16

    def w(*shape: int) -> Any:
        return torch.randn(*shape, device=dev, dtype=bf) * 0.02

    params = [
        (w(h, (heads + 2 * kv) * d), w(heads * d, h), w(h, 2 * mlp), w(mlp, h), torch.ones(h, device=dev, dtype=bf))
        for _ in range(layers)
    ]
    caches = [(w(batch, kv, context, d), w(batch, kv, context, d)) for _ in range(layers)]  # K, V of the cached tokens
    head = w(h, vocab)
    x0 = w(batch, h)

    def norm(x: Any, g: Any) -> Any:
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5).to(bf) * g

    def step() -> Any:
        x = x0
        for (wqkv, wo, w13, w2, g), (kc, vc) in zip(params, caches, strict=True):
            qkv = norm(x, g) @ wqkv
            q = qkv[:, : heads * d].view(batch, kv, group, d)
            a = torch.nn.functional.scaled_dot_product_attention(q, kc, vc)
            x = x + a.reshape(batch, heads * d) @ wo
            gate, up = (norm(x, g) @ w13).chunk(2, dim=-1)
            x = x + (torch.nn.functional.silu(gate) * up) @ w2
        return norm(x, params[0][4]) @ head

    return step


def main() -> int:
    """Rows: ``tp, batch_size, context_len, context_len_sum, sm_clock_mhz`` (NVML after the shape), ``latency_s``
    and ``energy_j`` of the whole model's step (scaled to the depth), ``power_w`` = energy / latency, ``repeats``
    (replays of the ``hi`` graph), ``latency_lo_s`` / ``latency_hi_s`` (the two measured graphs)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tp", default="2,4,8")
    ap.add_argument("--batches", default="1,8,32,128,256")
    ap.add_argument("--contexts", default="256,1024,4096")
    ap.add_argument("--max-kv-tokens", type=int, default=512 * 1024, help="skip shapes with batch x context above")
    ap.add_argument("--layers-lo", type=int, default=2)
    ap.add_argument("--layers-hi", type=int, default=10)
    ap.add_argument("--min-window-s", type=float, default=0.5)
    ap.add_argument("--device", type=int, default=0)
    args = ap.parse_args()

    import pandas as pd
    import torch

    from biscale.gpu.energy import EnergyMeter
    from biscale.gpu.nvml import load_nvml
    from biscale.predict.profilers.torch_gpu import timed_window

    nvml = load_nvml()
    meter = EnergyMeter(nvml, gpus=[args.device])
    handle = nvml.nvmlDeviceGetHandleByIndex(args.device)
    dev = torch.device(f"cuda:{args.device}")
    torch.manual_seed(0)
    lo, hi, depth = args.layers_lo, args.layers_hi, MODEL["depth"]

    def measure(tp: int, layers: int, b: int, c: int) -> tuple[float, float, int]:
        step = build_step(torch, tp, layers, b, c, dev)
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                step()
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode():
            step()
        result = timed_window(torch, graph.replay, meter, args.device, args.min_window_s, warmup=5, min_calls=10,
                              sync_every=10)  # fmt: skip
        del graph, step
        torch.cuda.empty_cache()
        return result

    rows: list[dict[str, Any]] = []
    t_start = time.monotonic()
    try:
        for tp in (int(x) for x in args.tp.split(",")):
            for b in (int(x) for x in args.batches.split(",")):
                for c in (int(x) for x in args.contexts.split(",")):
                    if b * c > args.max_kv_tokens:
                        continue
                    lat_lo, e_lo, _ = measure(tp, lo, b, c)
                    lat_hi, e_hi, reps = measure(tp, hi, b, c)
                    per_lat, per_e = (lat_hi - lat_lo) / (hi - lo), (e_hi - e_lo) / (hi - lo)
                    lat, energy = lat_lo + per_lat * (depth - lo), e_lo + per_e * (depth - lo)
                    clock = int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM))
                    rows.append(
                        {
                            "tp": tp,
                            "batch_size": b,
                            "context_len": c,
                            "context_len_sum": b * c,
                            "sm_clock_mhz": clock,
                            "latency_s": lat,
                            "energy_j": energy,
                            "power_w": energy / lat,
                            "repeats": reps,
                            "latency_lo_s": lat_lo,
                            "latency_hi_s": lat_hi,
                        }
                    )
                    print(f"tp={tp} b={b} ctx={c}: {lat * 1e3:.2f} ms, {energy / lat:.0f} W at {clock} MHz", flush=True)
    finally:
        meter.close()
    args.out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out / "decode_graphs.csv", index=False)
    print(json.dumps({"rows": len(rows), "wall_time_s": time.monotonic() - t_start, "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
