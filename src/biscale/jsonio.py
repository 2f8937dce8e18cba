"""JSON output every part of biscale shares: one object per line, NaN/inf as ``null``, numpy values as Python.

Lives outside :mod:`biscale.cli` so that library code (simulator results, evaluation reports) writes exactly what
the CLI prints without importing the CLI.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays turned into Python values and non-finite floats into ``None``."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def to_json_text(obj: Mapping[str, Any], *, indent: int | None = None) -> str:
    """One JSON object (on one line unless ``indent``); NaN/inf become null so every consumer can parse it."""
    return json.dumps(jsonable(obj), sort_keys=False, allow_nan=False, indent=indent)


def write_json(path: str | Path, obj: Mapping[str, Any], *, indent: int | None = None) -> Path:
    """Write ``obj`` as JSON (see :func:`to_json_text`) plus a trailing newline; returns the path."""
    p = Path(path)
    p.write_text(to_json_text(obj, indent=indent) + "\n")
    return p
