"""The :class:`Trace` type: a request arrival sequence with prompt and output lengths."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Trace:
    """A workload: request ``i`` arrives at ``arrival_s[i]`` with ``input_tokens[i]`` prompt tokens and
    generates ``output_tokens[i]`` tokens.

    Invariants (checked on construction): equal lengths, ``arrival_s`` sorted ascending and starting at 0
    (empty traces excepted), all lengths >= 1.
    """

    arrival_s: np.ndarray
    """Arrival times, seconds from the first arrival (float64, ascending)."""
    input_tokens: np.ndarray
    """Prompt lengths, tokens (int64, >= 1)."""
    output_tokens: np.ndarray
    """Output lengths, tokens (int64, >= 1), including the first token produced by prefill."""
    name: str = "trace"
    """Short name (file stem or bundled name)."""
    source: str = ""
    """Where it came from: a path, a bundled dataset name, or a description of how it was synthesised."""
    meta: dict[str, object] = field(default_factory=dict)
    """Free-form provenance (rescaling factor, seed, window, ...)."""

    def __post_init__(self) -> None:
        arrival = np.ascontiguousarray(self.arrival_s, dtype=np.float64)
        inp = np.ascontiguousarray(self.input_tokens, dtype=np.int64)
        out = np.ascontiguousarray(self.output_tokens, dtype=np.int64)
        if not (arrival.ndim == inp.ndim == out.ndim == 1) or not (arrival.size == inp.size == out.size):
            raise ValueError("arrival_s, input_tokens and output_tokens must be 1-D arrays of equal length")
        if arrival.size:
            if not np.all(np.isfinite(arrival)):
                raise ValueError("arrival_s must be finite")
            if np.any(np.diff(arrival) < 0):
                raise ValueError("arrival_s must be sorted ascending")
            if abs(arrival[0]) > 1e-12:
                raise ValueError("arrival_s must start at 0")
            if inp.min() < 1 or out.min() < 1:
                raise ValueError("token counts must be >= 1")
        object.__setattr__(self, "arrival_s", arrival)
        object.__setattr__(self, "input_tokens", inp)
        object.__setattr__(self, "output_tokens", out)

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    @property
    def duration_s(self) -> float:
        """Time from first to last arrival, seconds."""
        return float(self.arrival_s[-1]) if len(self) else 0.0

    @property
    def mean_rate_rps(self) -> float:
        """Mean arrival rate, requests per second (requests / span)."""
        return len(self) / self.duration_s if self.duration_s > 0 else float("nan")
