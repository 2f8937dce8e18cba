"""The cost-model seam: what one prefill or decode iteration costs, and the batch shapes that describe it.

This module is neutral ground between *truth* and *belief*. Two worlds implement :class:`CostModel`:

* the hardware model (:mod:`biscale.hardware`) is the simulator's ground truth (what the silicon does);
* the learned predictors (:mod:`biscale.predict`) are what controllers and planners believe.

The simulator prices iterations only through :class:`CostModel`, so it runs on either; controllers, planners
and predictors import this module and never :mod:`biscale.hardware`. Batches are described by sufficient
statistics (:class:`PrefillShape`, :class:`DecodeShape`) so the simulator can keep them incrementally and price an
iteration in O(1) without touching arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np


class IterationCost(NamedTuple):
    """What one iteration costs on one instance (a named tuple, immutable: the simulator builds one per iteration,
    half a million per simulated hour, and a tuple is built ~1.5x faster than a frozen dataclass)."""

    latency_s: float
    """Wall time of the iteration, seconds."""
    power_w: float
    """Mean electrical power per GPU of the instance over the iteration, watts."""
    effective_clock_mhz: float
    """SM clock actually run, MHz: the requested clock, lowered if the power limit throttled it."""

    @property
    def energy_per_gpu_j(self) -> float:
        """Energy per GPU over the iteration, joules (``latency_s * power_w``)."""
        return self.latency_s * self.power_w


class PrefillShape(NamedTuple):
    """Sufficient statistics of one prefill iteration (a batch of prompts or prompt chunks; a named tuple for the
    same reason as :class:`IterationCost`)."""

    num_seqs: int
    """Sequences (prompts or chunks) in the batch."""
    tokens_sum: int
    """New tokens processed this iteration (sum of chunk lengths)."""
    tokens_sq_sum: float
    """Sum of squared chunk lengths, tokens^2 (gives the std of lengths)."""
    attn_pairs: float
    """Causal query-key pairs: sum_i L_i * (P_i + (L_i + 1) / 2), with P_i the sequence's earlier-chunk tokens."""

    @staticmethod
    def from_lengths(
        input_lengths: Sequence[int] | np.ndarray, prefix_lengths: Sequence[int] | np.ndarray | None = None
    ) -> PrefillShape:
        lengths = np.asarray(input_lengths, dtype=np.float64)
        prefix = np.zeros_like(lengths) if prefix_lengths is None else np.asarray(prefix_lengths, np.float64)
        if lengths.ndim != 1 or prefix.shape != lengths.shape:
            raise ValueError("input_lengths and prefix_lengths must be 1-D and of equal length")
        if lengths.size and (lengths.min() <= 0 or prefix.min() < 0):
            raise ValueError("input lengths must be positive and prefix lengths non-negative")
        return PrefillShape(
            num_seqs=int(lengths.size),
            tokens_sum=int(lengths.sum()),
            tokens_sq_sum=float(np.dot(lengths, lengths)),
            attn_pairs=float(np.dot(lengths, prefix + (lengths + 1.0) / 2.0)),
        )


class DecodeShape(NamedTuple):
    """Sufficient statistics of one decode iteration (one new token per running request; a named tuple for the
    same reason as :class:`IterationCost`)."""

    batch_size: int
    """Requests in the batch (= tokens generated this iteration)."""
    context_sum: int
    """Sum of the requests' context lengths (prompt + tokens so far), tokens: the KV cache read."""
    context_sq_sum: float
    """Sum of squared context lengths, tokens^2 (gives the std of context lengths)."""

    @staticmethod
    def from_lengths(context_lengths: Sequence[int] | np.ndarray) -> DecodeShape:
        ctx = np.asarray(context_lengths, dtype=np.float64)
        if ctx.ndim != 1:
            raise ValueError("context_lengths must be 1-D")
        if ctx.size and ctx.min() <= 0:
            raise ValueError("context lengths must be positive")
        return DecodeShape(batch_size=int(ctx.size), context_sum=int(ctx.sum()), context_sq_sum=float(np.dot(ctx, ctx)))


@runtime_checkable
class CostModel(Protocol):
    """What the simulator needs to price iterations. ``sm_clock_mhz=None`` means the GPU's default governor."""

    @property
    def supported_clocks_mhz(self) -> tuple[int, ...]: ...

    def prefill_cost(self, shape: PrefillShape, tp: int, sm_clock_mhz: int | None) -> IterationCost: ...

    def decode_cost(self, shape: DecodeShape, tp: int, sm_clock_mhz: int | None) -> IterationCost: ...

    def idle_power_w(self, tp: int, sm_clock_mhz: int | None) -> float: ...

    def kv_capacity_tokens(self, tp: int) -> int: ...

    @property
    def kv_bytes_per_token(self) -> int: ...

    @property
    def governor(self) -> GovernorModel: ...


@dataclass(frozen=True, slots=True)
class GovernorModel:
    """The GPU's default clock governor (clocks not locked), as seen between iterations.

    While busy the GPU runs at the top clock within the power limit. After ``downclock_after_s`` of idleness it
    drops to a low idle state drawing ``idle_power_w``; the first iteration after that pays ``wake_delay_s``.
    """

    idle_power_w: float
    """Per-GPU power in the deep idle state, W (H100: ~64-75 W)."""
    downclock_after_s: float
    """Idle time before the clock falls to the idle state, s."""
    wake_delay_s: float
    """Extra latency of the first iteration after the GPU fell to the idle state, s."""
    shallow_idle_power_w: float
    """Per-GPU power while idle but not yet down-clocked (clock still high), W."""

    def idle_energy_j(self, gap_s: float) -> float:
        """Per-GPU energy of an idle gap of ``gap_s`` seconds that starts right after an iteration, J."""
        if gap_s <= 0:
            return 0.0
        shallow = min(gap_s, self.downclock_after_s)
        return shallow * self.shallow_idle_power_w + (gap_s - shallow) * self.idle_power_w

    def wake_penalty_s(self, gap_s: float) -> float:
        """Extra latency for an iteration that follows an idle gap of ``gap_s`` seconds, s."""
        return self.wake_delay_s if gap_s > self.downclock_after_s else 0.0
