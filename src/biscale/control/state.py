"""What controllers and planners may see: state a real engine can observe, never the cost model.

The simulator fills these snapshots from its own bookkeeping; a live engine adapter (the vLLM scheduler hook in
:mod:`biscale.integrations`) fills the same fields from its scheduler, so one controller runs unchanged in both
worlds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

# ``decide`` returns GOVERNOR_MHZ to hand the clock back to the default governor (clocks unlocked).
from biscale.actuator import GOVERNOR_MHZ as GOVERNOR_MHZ
from biscale.control.placement import Placement

DEFAULT_PREFILL_TOKEN_BUDGET = 8192
"""Most new tokens one prefill iteration processes unless configured (the simulator's, the emulator's and the
controllers' default when a snapshot carries none), tokens."""


def _no_tokens() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


def _no_times() -> np.ndarray:
    return np.zeros(0, dtype=np.float64)


class Slo(BaseModel):
    """Latency objectives, checked at ``percentile`` (frozen; part of the serialisable run configuration)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    ttft_s: float = Field(default=0.600, gt=0, allow_inf_nan=False)
    """Time-to-first-token target, seconds, finite (paper: 600 ms at P99)."""
    tpot_s: float = Field(default=0.100, gt=0, allow_inf_nan=False)
    """Time-per-output-token target, seconds, finite (paper: 100 ms at P99)."""
    percentile: float = Field(default=99.0, gt=0, le=100)
    """Percentile at which both targets must hold, percent."""


#: :class:`Slo`'s default targets in milliseconds, for options and settings given in ms (one source: the fields).
SLO_TTFT_MS: float = Slo().ttft_s * 1e3
SLO_TPOT_MS: float = Slo().tpot_s * 1e3


@dataclass(frozen=True, slots=True)
class InstanceState:
    """A snapshot of one instance just before an iteration (what ``ClockController.decide`` sees)."""

    time_s: float
    """Current time, seconds since the run started."""
    instance_id: int
    phase: str
    """``prefill`` or ``decode``."""
    tp: int
    """GPUs of the instance."""
    clock_mhz: int
    """SM clock now in force, MHz (``GOVERNOR_MHZ`` = 0 under the default governor)."""
    pending_clock_mhz: int | None
    """Clock requested but not yet in force (switch latency), MHz; ``None`` if no switch is in flight."""
    supported_clocks_mhz: tuple[int, ...]
    """Clocks the instance may lock to, ascending, MHz."""
    waiting_prompt_tokens: np.ndarray
    """The queue *behind* the scheduled batch: prompt tokens still to prefill for each waiting request, FCFS
    order (prefill) / prompt length of each request whose KV arrived but that has not joined the batch (decode)."""
    waiting_time_s: np.ndarray
    """Time each waiting request has waited since arrival, seconds (same order)."""
    running_context_tokens: np.ndarray
    """Context length (prompt + tokens so far) of each request in the running batch, tokens (decode)."""
    running_generated_tokens: np.ndarray
    """Tokens generated so far by each running request (first token included), tokens (decode)."""
    kv_used_tokens: int
    """KV-cache tokens held (running, waiting to run and in-flight transfers), tokens."""
    kv_capacity_tokens: int
    """KV-cache capacity of the instance, tokens."""
    recent_latencies_s: tuple[float, ...]
    """Latencies of the most recent iterations, oldest first, seconds."""
    slo: Slo = field(default_factory=Slo)
    batch_new_tokens: np.ndarray = field(default_factory=_no_tokens)
    """Prefill: new tokens of each sequence in the batch about to run (its chunk), FCFS order; the clock being
    decided applies to this batch. Decode: empty (the running batch is ``running_*``)."""
    batch_prefix_tokens: np.ndarray = field(default_factory=_no_tokens)
    """Prefill: tokens of each batch sequence already prefilled by earlier chunks (same order)."""
    batch_prompt_tokens: np.ndarray = field(default_factory=_no_tokens)
    """Prefill: whole prompt length of each batch sequence; its chunk completes the prompt iff
    ``prefix + new == prompt`` (otherwise the rest waits at the head of the queue)."""
    batch_waiting_time_s: np.ndarray = field(default_factory=_no_times)
    """Prefill: time since arrival of each batch sequence, seconds (same order)."""
    token_budget: int = 0
    """Batching rule: most new tokens one prefill iteration processes (longer prompts are chunked), tokens
    (0 = unknown: controllers assume :data:`DEFAULT_PREFILL_TOKEN_BUDGET`)."""
    max_batch_seqs: int = 0
    """Batching rule: most sequences in one iteration (prefill max seqs / decode max batch) (0 = unknown)."""
    baseline_clock_mhz: int | None = None
    """The baseline clock tier 1 gave this instance, MHz (``None``: none given; 0: the default governor)."""
    running_decode_time_s: np.ndarray = field(default_factory=_no_times)
    """Decode: time since each running request's first token, seconds (same order as ``running_*``); its
    TPOT so far is this divided by ``running_generated_tokens - 1``."""
    preemptions: int = 0
    """Requests preempted on this instance so far (KV memory ran out), count."""
    batch_request_ids: np.ndarray = field(default_factory=_no_tokens)
    """The engine's request ids of the scheduled batch's sequences (same order as ``batch_*``; the trace index in
    the simulator). Online controllers ignore ids; the clairvoyant oracle looks requests up in the trace by them."""
    waiting_request_ids: np.ndarray = field(default_factory=_no_tokens)
    """Request ids of the waiting requests (same order as ``waiting_*``)."""
    running_request_ids: np.ndarray = field(default_factory=_no_tokens)
    """Request ids of the running decode batch (same order as ``running_*``)."""
    frontend_overhead_s: float = 0.0
    """The serving stack's TTFT cost outside the engine (API server, tokenisation, streaming the first token),
    seconds: a property of the deployment the engine reports (the simulator: ``SimConfig.frontend_overhead_s``; a
    live adapter: its configured or measured value), so a controller's TTFT prediction uses the same figure as the
    run it controls."""

    @property
    def kv_use_pct(self) -> float:
        """KV-cache use, percent of capacity."""
        return 100.0 * self.kv_used_tokens / self.kv_capacity_tokens if self.kv_capacity_tokens else 0.0

    @property
    def batch_use_pct(self) -> float:
        """Running batch, percent of the engine's sequence limit (0 when it has none)."""
        return 100.0 * self.batch_size / self.max_batch_seqs if self.max_batch_seqs else 0.0

    @property
    def queue_len(self) -> int:
        return int(self.waiting_prompt_tokens.size)

    @property
    def batch_size(self) -> int:
        return int(self.running_context_tokens.size)


@dataclass(frozen=True, slots=True)
class InstanceSummary:
    """A compact per-instance view for planners."""

    instance_id: int
    phase: str
    tp: int
    clock_mhz: int
    """SM clock in force, MHz (0 = default governor)."""
    status: str
    """``starting``, ``ready`` or ``draining``."""
    queue_len: int
    batch_size: int
    kv_used_tokens: int
    busy_energy_j: float
    """Busy energy since the instance started, joules."""
    idle_energy_j: float
    """Idle energy since the instance started, joules."""


@dataclass(frozen=True, slots=True)
class ClusterObservation:
    """What a planner sees at a window boundary (the previous window's load and the current cluster)."""

    time_s: float
    """Window boundary, seconds since the start."""
    window_s: float
    """Window length, seconds."""
    arrivals: int
    """Requests that arrived during the last window."""
    arrival_rate_rps: float
    """``arrivals / window_s``, requests per second."""
    mean_input_tokens: float
    """Mean prompt length of the last window's arrivals, tokens (NaN if none)."""
    mean_output_tokens: float
    """Mean output length of the requests completed during the last window, tokens (NaN if none): output
    lengths are known only once served."""
    completions: int
    """Requests completed during the last window."""
    placement: Placement
    """Placement in force (instances being drained excluded)."""
    instances: tuple[InstanceSummary, ...]
    total_gpus: int
    """GPUs in the cluster."""
    slo: Slo = field(default_factory=Slo)
