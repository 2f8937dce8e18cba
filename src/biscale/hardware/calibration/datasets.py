"""The reference measurements the H100 model is calibrated and checked against, read into tables.

All files come from the bundled copies in ``biscale/hardware/data/calibration`` (published data, provenance in
the package NOTICE) and ``biscale/hardware/data/measured`` (the lent H100) unless ``data_root`` is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from biscale.hardware.specs import data_dir

GPU = "h100-sxm"
#: Llama-2-70B: the model the vidur and splitwise measurements were taken on (same layer shape as Llama-3.3-70B).
MODEL_L2 = "llama-2-70b"
#: Llama-3(.3)-70B: the model of the DistServe power measurements and of the reserved ML.ENERGY points.
MODEL_L3 = "llama-3.3-70b"
#: Llama-3.1-8B: the model of the ML.ENERGY decode measurements that calibrate decode latency and power.
MODEL_8B = "llama-3.1-8b"


#: LM-Arena chat request lengths (ML.ENERGY does not publish them). LMSYS-Chat-1M (Zheng et al., ICLR 2024,
#: arXiv 2309.11998, table 1): 2.0 turns per conversation, 69.5 tokens per user prompt, 214.5 per response
#: (Llama-2 tokenizer). The benchmark sends every turn with its history, so with geometric turn counts of mean 2
#: a request carries 2 x 69.5 + 214.5 = 353 history tokens on average; about 300 with Llama-3's larger
#: vocabulary, plus ~40 chat-template tokens (system header, 5 per message): we take 350.
MLENERGY_PROMPT_TOKENS = 350
#: Mean generated-so-far length of a *running* request relative to the mean output length: E[O^2] / (2 E[O]) =
#: (1 + CV^2) / 2 with the output-length CV of chat traffic, 1.05 in the bundled ShareGPT v3 lengths.
RUNNING_OUTPUT_FACTOR = (1.0 + 1.05**2) / 2.0


def mlenergy_context_tokens(avg_output_tokens: float) -> float:
    """Assumed mean KV context of a running request in the ML.ENERGY chat runs, tokens."""
    return MLENERGY_PROMPT_TOKENS + RUNNING_OUTPUT_FACTOR * avg_output_tokens


#: The GEMM operators of one layer in vidur's mlp.csv.
VIDUR_GEMM_OPS: dict[str, int] = {"attn_pre_proj": 1, "attn_post_proj": 1, "mlp_up_proj": 1, "mlp_down_proj": 1}
#: Its element-wise operators (the residual add runs twice per layer).
VIDUR_ELEMENTWISE_OPS: dict[str, int] = {
    "input_layernorm": 1,
    "attn_rope": 1,
    "post_attention_layernorm": 1,
    "mlp_act": 1,
    "add": 2,
}


def calibration_dir(data_root: Path | None = None) -> Path:
    """The calibration data directory: ``data_root/calibration`` if given, else the bundled copy."""
    return (data_root / "calibration") if data_root is not None else data_dir() / "calibration"


def measured_dir(data_root: Path | None = None) -> Path:
    """The lent-H100 measurements (copies of ``data/measured/h100-sxm/2026-11-26``): ``data_root/measured/...`` if
    given, else the bundled copy."""
    return (data_root if data_root is not None else data_dir()) / "measured" / "h100-sxm-2026-11-26"


# ------------------------------------------------------------------------------------------------ datasets
@dataclass(frozen=True)
class Datasets:
    """The reference measurements, reduced to what the model is compared with."""

    vidur: pd.DataFrame
    """tp, num_tokens, gemm_s, elementwise_s, time_s: per-layer time of the GEMMs, of the element-wise kernels
    (sums of the medians of :data:`VIDUR_GEMM_OPS`, :data:`VIDUR_ELEMENTWISE_OPS`) and of both."""
    allreduce: pd.DataFrame
    """tp, size_bytes, time_s: median NCCL all-reduce time."""
    splitwise: pd.DataFrame
    """tp, prompt, batch, tokens, prompt_s, token_s: H100 Llama2-70B medians (not the pcap rows)."""
    prefill_power: pd.DataFrame
    """tp, input_tokens, sm_clock_mhz, power_w: per-GPU busy power."""
    idle_power: pd.DataFrame
    """tp, sm_clock_mhz, power_w: per-GPU idle power."""
    a100_sweep: dict[str, Any]
    """The A100 Gemma-2-27B TP2 latency-vs-clock coefficients (JSON as published)."""
    mlenergy_8b: pd.DataFrame
    """batch, step_s, power_w, output_tokens: H100 Llama-3.1-8B TP1 steady-state serving, per concurrency."""
    h100_prefill: pd.DataFrame
    """tp, batch_size, input_len_sum, attn_pairs, latency_s: the lent H100's eager-PyTorch prefill profile
    (Llama-3.3-70B shards, TP 2/4/8, 1,980 MHz; TP1 left out: the 70B weights need two GPUs)."""
    h100_decode: pd.DataFrame
    """tp, batch_size, context_len, context_len_sum, latency_s, power_w: the lent H100's decode steps replayed from
    CUDA graphs (Llama-3.3-70B shards, TP 2/4/8)."""


def load_datasets(data_root: Path | None = None) -> Datasets:
    d = calibration_dir(data_root)
    mlp = pd.read_csv(d / "vidur_h100_llama2_70b_mlp.csv")
    gemm = sum(mlp[f"time_stats.{op}.median"] * k for op, k in VIDUR_GEMM_OPS.items()) * 1e-3
    elem = sum(mlp[f"time_stats.{op}.median"] * k for op, k in VIDUR_ELEMENTWISE_OPS.items()) * 1e-3
    vidur = pd.DataFrame(
        {
            "tp": mlp["num_tensor_parallel_workers"],
            "num_tokens": mlp["num_tokens"],
            "gemm_s": gemm,
            "elementwise_s": elem,
            "time_s": gemm + elem,
        }
    )
    ar_raw = pd.read_csv(d / "vidur_h100_dgx_all_reduce.csv")
    ar = ar_raw.groupby(["num_workers", "size"])["time_stats.all_reduce.median"].median().reset_index()
    allreduce = pd.DataFrame(
        {"tp": ar["num_workers"], "size_bytes": ar["size"], "time_s": ar["time_stats.all_reduce.median"] * 1e-3}
    )
    sw = pd.read_csv(d / "splitwise_perf_model.csv")
    sw = sw[(sw["model"] == "llama2-70b") & (sw["hardware"] == "h100-80gb")]
    sw = sw.groupby(["tensor_parallel", "prompt_size", "batch_size", "token_size"], as_index=False)[
        ["prompt_time", "token_time"]
    ].median()
    splitwise = pd.DataFrame(
        {
            "tp": sw["tensor_parallel"],
            "prompt": sw["prompt_size"],
            "batch": sw["batch_size"],
            "tokens": sw["token_size"],
            "prompt_s": sw["prompt_time"] * 1e-3,
            "token_s": sw["token_time"] * 1e-3,
        }
    )
    pp = pd.read_csv(d / "llama3_70b_prefill_power_vs_freq.csv")
    prefill_power = pd.DataFrame(
        {
            "tp": pp["tp"],
            "input_tokens": pp["input_tokens"],
            "sm_clock_mhz": pp["sm_clock_mhz"],
            "power_w": pp["busy_power_w_per_gpu"],
        }
    )
    ip = pd.read_csv(d / "llama3_70b_idle_power_vs_freq.csv")
    idle_power = pd.DataFrame(
        {"tp": ip["tp"], "sm_clock_mhz": ip["sm_clock_mhz"], "power_w": ip["idle_power_w_per_gpu"]}
    )
    sweep = json.loads((d / "a100_gemma2_27b_tp2_latency_vs_freq.json").read_text())
    me = pd.read_csv(d / "mlenergy_h100_llama31_8b_tp1_decode.csv")
    mlenergy_8b = pd.DataFrame(
        {
            "batch": me["avg_batch_size"],
            # Mean step time: requests in flight / output tokens per second (every step emits one token per
            # running request); includes the steps that carry prefill chunks, as the power average does.
            "step_s": me["avg_batch_size"] / me["output_tokens_per_s"],
            "power_w": me["avg_power_w_per_gpu"],
            "output_tokens": me["avg_output_tokens"],
        }
    )
    m = measured_dir(data_root)
    prof = pd.read_csv(m / "profile.csv")
    h100_prefill = prof[(prof["phase"] == "prefill") & (prof["tp"] > 1)][
        ["tp", "batch_size", "input_len_sum", "attn_pairs", "latency_s"]
    ].reset_index(drop=True)
    h100_decode = pd.read_csv(m / "decode_graphs.csv")[
        ["tp", "batch_size", "context_len", "context_len_sum", "latency_s", "power_w"]
    ]
    return Datasets(
        vidur,
        allreduce,
        splitwise.reset_index(drop=True),
        prefill_power,
        idle_power,
        sweep,
        mlenergy_8b,
        h100_prefill,
        h100_decode,
    )


def splitwise_excluded(row: dict[Any, Any]) -> bool:
    """TP2 at batch 64 is inconsistent (prompt time 6.6x *below* batch 32, token time below batch 32): excluded."""
    return bool(row["tp"] == 2 and row["batch"] == 64)


def a100_prefill_ms(sweep: dict[str, Any], clock_mhz: int, tokens: int) -> float:
    """The published A100 prefill latency formula at ``clock_mhz`` for one batch of ``tokens`` tokens, ms."""
    entry = sweep["by_sm_clock_mhz"][str(clock_mhz)]["prefill"]
    idx = next((i for i, th in enumerate(entry["thres"]) if th >= tokens), len(entry["thres"]))
    a, b, c = entry["coefs"][idx]
    return float(a + b * tokens + c * tokens * tokens)


def a100_decode_ms(sweep: dict[str, Any], clock_mhz: int, batch: int, context_sum: int) -> float:
    """The published A100 decode latency formula at ``clock_mhz``, ms."""
    entry = sweep["by_sm_clock_mhz"][str(clock_mhz)]["decode"]
    idx = next((i for i, th in enumerate(entry["thres"]) if th >= batch), len(entry["thres"]))
    a, b, c = entry["coefs"][idx]
    return float(a + b * context_sum + c * batch)
