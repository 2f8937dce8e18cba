"""The :class:`LengthTable` type: a pool of (prompt, output) length pairs to sample request sizes from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class LengthTable:
    """Paired request lengths with no arrival times (e.g. ShareGPT): row ``i`` is one request.

    Rows are kept paired because prompt and output lengths are correlated in real conversations; sampling
    draws whole rows.
    """

    input_tokens: np.ndarray
    """Prompt lengths, tokens (int64, >= 1)."""
    output_tokens: np.ndarray
    """Output lengths, tokens (int64, >= 1)."""
    name: str = "lengths"
    """Short name (file stem or bundled name)."""
    source: str = ""
    """Where it came from: a path or a bundled dataset name."""
    meta: dict[str, object] = field(default_factory=dict)
    """Free-form provenance (format, rows read, failed rows excluded, ...)."""

    def __post_init__(self) -> None:
        inp = np.ascontiguousarray(self.input_tokens, dtype=np.int64)
        out = np.ascontiguousarray(self.output_tokens, dtype=np.int64)
        if inp.ndim != 1 or out.ndim != 1 or inp.size != out.size:
            raise ValueError("input_tokens and output_tokens must be 1-D arrays of equal length")
        if inp.size == 0:
            raise ValueError("a length table needs at least one row")
        if inp.min() < 1 or out.min() < 1:
            raise ValueError("token counts must be >= 1")
        object.__setattr__(self, "input_tokens", inp)
        object.__setattr__(self, "output_tokens", out)

    def __len__(self) -> int:
        return int(self.input_tokens.size)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` rows drawn uniformly with replacement: (input_tokens, output_tokens)."""
        idx = rng.integers(0, len(self), size=int(n))
        return self.input_tokens[idx], self.output_tokens[idx]
