"""JSON every part of biscale shares: output (one object per line, NaN/inf as ``null``, numpy values as Python) and
reading a JSON file a user gives (every failure an :class:`~biscale.errors.InputError` naming the file).

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

from biscale.errors import InputError


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


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of a file a user gives; unreadable or non-UTF-8 files raise :class:`InputError` naming it
    (``what`` names the kind of file, e.g. ``"placement file"``)."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"cannot read {what}: {err.strerror}", path=p) from err
    except UnicodeDecodeError as err:
        raise InputError(f"not a {what}: not UTF-8 text (byte {err.start})", path=p) from err


def loads_json(text: str, path: str | Path) -> Any:
    """``json.loads(text)``; malformed or too deeply nested JSON raises :class:`InputError` naming ``path`` (and
    the line)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"not valid JSON: {err.msg}", path=Path(path), line=err.lineno) from err
    except RecursionError as err:
        raise InputError("not valid JSON: nested too deeply", path=Path(path)) from err


def read_json_object(path: str | Path, what: str = "JSON file", shape_hint: str = "") -> dict[str, Any]:
    """The JSON object in ``path``. Unreadable, non-UTF-8, malformed or too deeply nested files, and any top-level
    value other than an object, raise :class:`InputError` naming the file (``what`` names the kind of file, e.g.
    ``"placement file"``; ``shape_hint`` is appended to the "expected an object" message)."""
    p = Path(path)
    data = loads_json(read_text(p, what), p)
    if not isinstance(data, dict):
        raise InputError(f"a {what} holds one JSON object{shape_hint}", path=p)
    return data
