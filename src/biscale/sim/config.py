"""Simulation settings: cluster shape, network, batching limits, clocks, windows, outputs."""

from __future__ import annotations

from dataclasses import dataclass, field

from biscale.control.state import Slo


@dataclass(frozen=True)
class NetworkConfig:
    """KV-cache transfer links. A transfer of ``b`` bytes between a prefill instance of TP ``p`` and a decode
    instance of TP ``d`` takes ``latency + b / (min(p, d) * bandwidth)``: each GPU ships its own KV shard.

    Defaults: NVIDIA DGX H100 datasheet -- NVLink 4 gives each GPU 900 GB/s bidirectional (450 GB/s per
    direction); each GPU has its own ConnectX-7 400 Gb/s NDR InfiniBand port (50 GB/s). The intra-node latency is
    the ~30 us small-message NCCL all-reduce time on an H100 DGX (Vidur's measured profile); the inter-node
    latency (50 us) is an assumption (NIC + switch + software handshake).
    """

    nvlink_bw_bytes_per_s: float = 450e9
    """Per-GPU, per-direction NVLink bandwidth inside a node, bytes/s."""
    internode_bw_bytes_per_s: float = 50e9
    """Per-GPU inter-node (InfiniBand NDR 400 Gb/s) bandwidth, bytes/s."""
    nvlink_latency_s: float = 30e-6
    """Fixed cost of one transfer inside a node, seconds."""
    internode_latency_s: float = 50e-6
    """Fixed cost of one transfer across nodes, seconds."""


@dataclass(frozen=True)
class SimConfig:
    """Every knob of a simulation run (all times in seconds)."""

    nodes: int = 2
    """Nodes in the cluster."""
    gpus_per_node: int = 8
    """GPUs per node (a TP group never spans nodes)."""
    network: NetworkConfig = field(default_factory=NetworkConfig)
    prefill_token_budget: int = 8192
    """Most new tokens one prefill iteration processes, tokens; longer prompts are chunked."""
    prefill_max_seqs: int = 1024
    """Most sequences (prompts or chunks) in one prefill batch."""
    decode_max_batch: int = 256
    """Most requests in one decode batch (vLLM's default ``max_num_seqs``)."""
    switch_latency_s: float = 0.010
    """Delay between a clock request and the new clock taking effect, seconds (0 = immediate)."""
    startup_s: float = 0.0
    """Time from a new instance's creation (placement change) to serving, seconds; it draws idle power meanwhile."""
    window_s: float = 300.0
    """Planner window, seconds (the planner is asked at every multiple of it after 0)."""
    sample_interval_s: float = 1.0
    """Per-instance timeline sampling interval, seconds."""
    slo: Slo = field(default_factory=Slo)
    duration_s: float | None = None
    """Submit only requests arriving before this time, seconds (``None``: the whole trace)."""
    max_time_s: float | None = None
    """Horizon: no iteration starts after it; in-flight iterations and transfers finish; the rest is reported
    unfinished. ``None``: run until every request is done."""
    initial_clock: int | str = "max"
    """Clock of an instance whose placement gives none: MHz, ``"max"`` or ``"default"`` (governor)."""
    prefill_router: str = "least-work"
    """Name in :data:`biscale.sim.router.PREFILL_ROUTERS`."""
    decode_router: str = "most-free-kv"
    """Name in :data:`biscale.sim.router.DECODE_ROUTERS`."""
    recent_latencies: int = 16
    """How many recent iteration latencies the state snapshot carries."""
    record_segments: bool = False
    """Keep every constant-power segment (for checking the energy integral; costs memory)."""

    def __post_init__(self) -> None:
        positive = {
            "nodes": self.nodes,
            "gpus_per_node": self.gpus_per_node,
            "prefill_token_budget": self.prefill_token_budget,
            "prefill_max_seqs": self.prefill_max_seqs,
            "decode_max_batch": self.decode_max_batch,
            "window_s": self.window_s,
            "sample_interval_s": self.sample_interval_s,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.switch_latency_s < 0 or self.startup_s < 0:
            raise ValueError("switch_latency_s and startup_s must be >= 0")

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node
