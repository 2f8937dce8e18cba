"""Profiler backends: ``sim`` (the hardware model, measured like a GPU) and ``torch`` (a real local GPU)."""

from __future__ import annotations

import numpy as np

BACKENDS = ("sim", "torch")


def load_length_mix(name: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(prompt lengths, output lengths, label) of a bundled length mix (e.g. ``sharegpt-v3``) or a file.

    Bad names raise :class:`~biscale.errors.InputError` (from :func:`biscale.workload.load_lengths`).
    """
    from biscale.workload import load_lengths

    table = load_lengths(name)
    return np.asarray(table.input_tokens), np.asarray(table.output_tokens), str(name)
