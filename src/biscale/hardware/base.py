"""The ground-truth side of the cost-model seam: :class:`HardwareModel`, a :class:`~biscale.costmodel.CostModel`
that only the simulator (and the named clairvoyant oracle) may read.

The protocol and the batch shapes live in :mod:`biscale.costmodel`, which controllers and predictors import.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from biscale.costmodel import DecodeShape, GovernorModel, IterationCost, PrefillShape


class HardwareModel(ABC):
    """Ground truth for one (GPU, LLM) pair: latency and power of iterations at a given SM clock.

    Only the simulator (and the explicitly named clairvoyant oracle) may read it; controllers use predictors.
    """

    gpu_name: str
    model_name: str

    @property
    @abstractmethod
    def supported_clocks_mhz(self) -> tuple[int, ...]:
        """Lockable SM clocks, ascending, MHz."""

    @property
    def max_clock_mhz(self) -> int:
        return self.supported_clocks_mhz[-1]

    @property
    @abstractmethod
    def min_tp(self) -> int:
        """Smallest tensor-parallel degree whose weights fit in GPU memory."""

    @property
    @abstractmethod
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes per token for the whole model (all layers, all GPUs of an instance)."""

    @property
    @abstractmethod
    def governor(self) -> GovernorModel:
        """The default (unlocked) clock governor's idle behaviour."""

    @abstractmethod
    def prefill_cost(self, shape: PrefillShape, tp: int, sm_clock_mhz: int | None) -> IterationCost:
        """Cost of one prefill iteration; ``sm_clock_mhz=None`` = default governor, busy."""

    @abstractmethod
    def decode_cost(self, shape: DecodeShape, tp: int, sm_clock_mhz: int | None) -> IterationCost:
        """Cost of one decode iteration; ``sm_clock_mhz=None`` = default governor, busy."""

    @abstractmethod
    def idle_power_w(self, tp: int, sm_clock_mhz: int | None) -> float:
        """Per-GPU power of a loaded instance that is not computing, W. ``None``: the governor's deep idle."""

    @abstractmethod
    def kv_capacity_tokens(self, tp: int) -> int:
        """KV-cache tokens that fit beside the weights on an instance of ``tp`` GPUs."""

    # Convenience array API (the public API); the simulator uses the *_cost fast paths.
    def prefill(
        self,
        input_lengths: Sequence[int] | np.ndarray,
        tp: int,
        sm_clock_mhz: int | None,
        prefix_lengths: Sequence[int] | np.ndarray | None = None,
    ) -> IterationCost:
        """One prefill iteration over prompts (or chunks with ``prefix_lengths`` earlier tokens each)."""
        return self.prefill_cost(PrefillShape.from_lengths(input_lengths, prefix_lengths), tp, sm_clock_mhz)

    def decode(self, context_lengths: Sequence[int] | np.ndarray, tp: int, sm_clock_mhz: int | None) -> IterationCost:
        """One decode iteration: one new token for each request with these context lengths."""
        return self.decode_cost(DecodeShape.from_lengths(context_lengths), tp, sm_clock_mhz)
