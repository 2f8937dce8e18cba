"""Simulation settings: cluster shape, network, batching limits, clocks, windows, outputs.

Pydantic models (frozen, unknown keys rejected), so a configuration round-trips through JSON/TOML and has a JSON
schema (``biscale config schema``). Every field's unit is in its name or its docstring; the docstrings are the
schema's descriptions.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from biscale.control.placement import MAX_CLUSTER_GPUS, ClockSetting, clock_setting
from biscale.control.state import DEFAULT_PREFILL_TOKEN_BUDGET, Slo
from biscale.sim.router import DECODE_ROUTERS, PREFILL_ROUTERS

_MODEL_CONFIG = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

DEFAULT_FRONTEND_OVERHEAD_S = 0.0023
"""Per-request front-end cost on the TTFT path, seconds: measured on vLLM 0.33.0's own OpenAI server path (API
server, AsyncLLM, the ZMQ hop to the engine core, the real scheduler) in front of an engine that answers every step
at once, on CPU: median time to the first streamed token 1.7 / 1.8 / 4.2 / 2.8 ms at 128 / 512 / 2,048 / 4,000
prompt tokens, the median of those medians (data/measured/vllm-frontend-cpu/2026-12-07,
scripts/measure_vllm_frontend.py). Not in it: tokenising a text prompt, detokenising, a router hop and TLS, so it
is a floor for a deployment with those (docs/simulator.md)."""


class NetworkConfig(BaseModel):
    """KV-cache transfer links. A transfer of ``b`` bytes between a prefill instance of TP ``p`` and a decode
    instance of TP ``d`` takes ``latency + b / (min(p, d) * bandwidth)``: each GPU ships its own KV shard.

    Defaults: NVIDIA DGX H100 datasheet -- NVLink 4 gives each GPU 900 GB/s bidirectional (450 GB/s per
    direction); each GPU has its own ConnectX-7 400 Gb/s NDR InfiniBand port (50 GB/s). The intra-node latency is
    the ~30 us small-message NCCL all-reduce time on an H100 DGX (Vidur's measured profile); the inter-node
    latency (50 us) is an assumption (NIC + switch + software handshake).
    """

    model_config = _MODEL_CONFIG

    nvlink_bw_bytes_per_s: float = Field(default=450e9, gt=0)
    """Per-GPU, per-direction NVLink bandwidth inside a node, bytes/s."""
    internode_bw_bytes_per_s: float = Field(default=50e9, gt=0)
    """Per-GPU inter-node (InfiniBand NDR 400 Gb/s) bandwidth, bytes/s."""
    nvlink_latency_s: float = Field(default=30e-6, ge=0, allow_inf_nan=False)
    """Fixed cost of one transfer inside a node, seconds."""
    internode_latency_s: float = Field(default=50e-6, ge=0, allow_inf_nan=False)
    """Fixed cost of one transfer across nodes, seconds."""


class SimConfig(BaseModel):
    """Every knob of a simulation run (all times in seconds)."""

    model_config = _MODEL_CONFIG

    nodes: int = Field(default=2, ge=1)
    """Nodes in the cluster."""
    gpus_per_node: int = Field(default=8, ge=1)
    """GPUs per node (a TP group never spans nodes)."""
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    """KV-transfer links."""
    prefill_token_budget: int = Field(default=DEFAULT_PREFILL_TOKEN_BUDGET, ge=1)
    """Most new tokens one prefill iteration processes, tokens; longer prompts are chunked."""
    prefill_max_seqs: int = Field(default=1024, ge=1)
    """Most sequences (prompts or chunks) in one prefill batch."""
    decode_max_batch: int = Field(default=256, ge=1)
    """Most requests in one decode batch (vLLM's default ``max_num_seqs``)."""
    switch_latency_s: float = Field(default=0.010, ge=0, allow_inf_nan=False)
    """Delay between a clock request and the new clock taking effect, seconds (0 = immediate)."""
    startup_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """Time from a new instance's creation (placement change) to serving, seconds; it draws idle power meanwhile."""
    window_s: float = Field(default=300.0, gt=0)
    """Planner window, seconds (the planner is asked at every multiple of it after 0)."""
    sample_interval_s: float = Field(default=1.0, gt=0)
    """Per-instance timeline sampling interval, seconds."""
    slo: Slo = Field(default_factory=Slo)
    """Latency objectives the summary checks."""
    duration_s: float | None = Field(default=None, gt=0)
    """Submit only requests arriving before this time, seconds (``None``: the whole trace)."""
    max_time_s: float | None = Field(default=None, gt=0)
    """Horizon: no iteration starts after it; in-flight iterations and transfers finish; the rest is reported
    unfinished. ``None``: run until every request is done."""
    initial_clock: ClockSetting = "max"
    """Clock of an instance whose placement gives none: MHz, ``"max"`` or ``"default"`` (governor)."""
    prefill_router: str = "least-work"
    """Name in :data:`biscale.sim.router.PREFILL_ROUTERS`."""
    decode_router: str = "most-free-kv"
    """Name in :data:`biscale.sim.router.DECODE_ROUTERS`."""
    recent_latencies: int = Field(default=16, ge=1)
    """How many recent iteration latencies the state snapshot carries."""
    record_segments: bool = False
    """Keep every constant-power segment (for checking the energy integral; costs memory)."""
    decode_kv_policy: Literal["paged", "full"] = "paged"
    """Decode KV memory: ``paged`` (vLLM: blocks allocated as tokens are generated, preemption with recomputation
    when they run out) or ``full`` (reserve each request's final size when its transfer starts; no preemption)."""
    kv_block_tokens: int = Field(default=16, ge=1)
    """Tokens per KV block of the paged policy (vLLM's default block size, 16), tokens."""
    kv_watermark_frac: float = Field(default=0.01, ge=0, lt=1)
    """Paged policy: fraction of an instance's KV blocks an admission (or a recomputation) must leave free
    (vLLM's block-manager ``watermark``, default 0.01)."""
    kv_link_sharing: Literal["fifo", "off"] = "fifo"
    """KV transfers that share a GPU's link: ``fifo`` (one transfer per GPU lane at a time, in admission order) or
    ``off`` (no contention: every transfer at full speed)."""
    unassigned_gpu_power_w: float | Literal["idle", "off"] = "idle"
    """Power of a GPU in no instance, W per GPU: ``idle`` (the GPU's deep-idle power under the default governor,
    from the cost model), ``off`` (0 W: powered down or lent to other work), or a number of watts."""
    frontend_overhead_s: float = Field(default=DEFAULT_FRONTEND_OVERHEAD_S, ge=0, allow_inf_nan=False)
    """Front-end cost added to every request's token times, so to its TTFT (API server, tokenisation,
    scheduling, streaming the first token), seconds; default 9 ms (:data:`DEFAULT_FRONTEND_OVERHEAD_S`). 0: TTFT is
    GPU, queueing and transfer time alone (the behaviour before this setting existed)."""
    isolate_phase: Literal["prefill", "decode"] | None = None
    """Simulate one phase only (tier 1's capacity probes): ``prefill`` (requests complete when their KV transfer
    ends), ``decode`` (requests arrive with their KV; TTFT is the wait for decode admission); the other phase's
    instances in the placement are ignored. None: both phases."""

    @field_validator("initial_clock", mode="before")
    @classmethod
    def _clock(cls, v: object) -> ClockSetting:
        return clock_setting(v)

    @field_validator("unassigned_gpu_power_w")
    @classmethod
    def _non_negative_power(cls, v: float | str) -> float | str:
        if isinstance(v, float | int) and not 0 <= v < math.inf:
            raise ValueError("unassigned GPU power must be a finite number of W >= 0, 'idle' or 'off'")
        return v

    @field_validator("prefill_router")
    @classmethod
    def _known_prefill_router(cls, v: str) -> str:
        if v not in PREFILL_ROUTERS:
            raise ValueError(PREFILL_ROUTERS.unknown_reason(v))
        return v

    @field_validator("decode_router")
    @classmethod
    def _known_decode_router(cls, v: str) -> str:
        if v not in DECODE_ROUTERS:
            raise ValueError(DECODE_ROUTERS.unknown_reason(v))
        return v

    @model_validator(mode="after")
    def _cluster_size(self) -> SimConfig:
        if self.total_gpus > MAX_CLUSTER_GPUS:
            raise ValueError(
                f"a cluster of {self.nodes} nodes x {self.gpus_per_node} GPUs = {self.total_gpus:,} GPUs is more "
                f"than the limit of {MAX_CLUSTER_GPUS:,}"
            )
        return self

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node
