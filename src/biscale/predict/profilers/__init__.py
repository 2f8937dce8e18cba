"""Profiler backends, by name in :data:`PROFILERS`: ``sim`` (the hardware model, measured like a GPU) and
``torch`` (a real local GPU). ``biscale profile --backend NAME`` resolves through the registry.

A backend turns a :class:`ProfileRequest` into a profile frame and its sidecar facts: :meth:`ProfilerBackend.prepare`
validates the request and fills its defaults (bad input is an :class:`~biscale.errors.InputError`), :meth:`run`
measures. Backends load lazily: only ``sim`` reads the hardware model, only ``torch`` needs PyTorch and NVML.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from biscale.predict.schema import ProfileMeta
from biscale.registry import Registry

#: Every backend's defaults (one source; ``biscale profile``'s options and the backends' configurations read them).
#: Prefill batches up to 16,384 tokens and decode batches up to 512 requests are twice the simulator's defaults
#: (``SimConfig.prefill_token_budget`` 8,192, ``decode_max_batch`` 256), so predictors fitted on a profile cover
#: every shape a run schedules with room for larger budgets. A real GPU profile takes >= ``min_window_s`` per shape
#: and clock, so scripts/profile_torch_gpu.py asks for fewer shapes (its docstring says why).
DEFAULT_SHAPES = 64
DEFAULT_MAX_PREFILL_TOKENS = 16_384
DEFAULT_MAX_DECODE_BATCH = 512


@dataclass(frozen=True)
class ProfileRequest:
    """What to profile (the CLI options of ``biscale profile``, the length mix already loaded)."""

    gpu: str
    """GPU name (sim: a hardware-model GPU; torch: a label for the rows)."""
    model: str
    """LLM (layer shape)."""
    input_lengths: np.ndarray
    """Prompt lengths of the mix the batch shapes are drawn from, tokens."""
    output_lengths: np.ndarray
    """Output lengths of that mix, tokens."""
    lengths_label: str
    """Name of the length mix (recorded in the profile)."""
    tps: tuple[int, ...] | None = None
    """TP degrees (None: the backend's default)."""
    clocks_mhz: tuple[int, ...] | None = None
    """SM clocks, MHz (None: the backend's default)."""
    shapes: int = DEFAULT_SHAPES
    """Batch shapes per phase and TP (each measured at every clock)."""
    max_prefill_tokens: int = DEFAULT_MAX_PREFILL_TOKENS
    """Largest prefill batch, tokens."""
    max_decode_batch: int = DEFAULT_MAX_DECODE_BATCH
    """Largest decode batch, requests."""
    seed: int = 0
    """Seed for shapes and measurement noise."""
    layers: int = 2
    """torch: full-size layers to instantiate (scaled to full depth)."""
    device: int = 0
    """torch: CUDA device index."""
    sweep_clocks: bool = False
    """torch: lock each clock via NVML (root)."""
    min_window_s: float = 1.0
    """torch: measurement window per shape, seconds."""


class ProfilerBackend(ABC):
    """Measures iteration latency and power over batch shapes x clocks x TP degrees."""

    @abstractmethod
    def prepare(self, request: ProfileRequest) -> ProfileRequest:
        """``request`` validated, with the backend's defaults filled in."""

    def total_steps(self, request: ProfileRequest) -> int | None:
        """Progress units :meth:`run` reports (None: unknown)."""
        return None

    @abstractmethod
    def run(self, request: ProfileRequest, progress: Callable[[int], None]) -> tuple[pd.DataFrame, ProfileMeta]:
        """Profile; ``progress(k)`` is called as ``k`` more units are done."""


#: Registry: backend name -> factory.
PROFILERS: Registry[Callable[[], ProfilerBackend]] = Registry("profiler backend", field="backend")


@PROFILERS.register("sim", "the hardware model, measured like a GPU (NVML-like noise)")
def sim_backend() -> ProfilerBackend:
    from biscale.predict.profilers.sim import SimProfiler

    return SimProfiler()


@PROFILERS.register("torch", "the local GPU through PyTorch (needs biscale[torch] and a CUDA GPU)")
def torch_backend() -> ProfilerBackend:
    from biscale.predict.profilers.torch_gpu import TorchProfiler

    return TorchProfiler()


def load_length_mix(name: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(prompt lengths, output lengths, label) of a bundled length mix (e.g. ``sharegpt-v3``) or a file.

    Bad names raise :class:`~biscale.errors.InputError` (from :func:`biscale.workload.load_lengths`).
    """
    from biscale.workload import load_lengths

    table = load_lengths(name)
    return np.asarray(table.input_tokens), np.asarray(table.output_tokens), str(name)
