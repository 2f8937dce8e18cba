"""Shape checks for the files biscale reads back (run directories, results, summaries, run configurations): a file
of the wrong shape (a column missing, a string where a number was, a list where an object was, a newer layout) is
one :class:`~biscale.errors.InputError` naming the file and the field, never a ``KeyError`` deep in a report.

Only what the readers use is required, so a file with more columns or keys (a newer writer adding some) still
reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from biscale.errors import InputError

#: Columns each table of a run directory must have for ``biscale report`` (and the results readers): kind
#: ``number`` (any numeric dtype, NaN allowed) or ``text``.
TABLE_COLUMNS: dict[str, dict[str, str]] = {
    "requests.parquet": {
        "arrival_s": "number",
        "input_tokens": "number",
        "output_tokens": "number",
        "status": "text",
        "ttft_s": "number",
        "tpot_s": "number",
        "tokens_generated": "number",
    },
    "instances.parquet": {
        "phase": "text",
        "tp": "number",
        "start_s": "number",
        "stop_s": "number",
        "busy_energy_j": "number",
        "idle_energy_j": "number",
        "energy_j": "number",
    },
    "timeline.parquet": {
        "time_s": "number",
        "instance_id": "number",
        "phase": "text",
        "status": "text",
        "clock_mhz": "number",
        "power_w": "number",
    },
}

#: Keys of a run's ``summary.json`` the readers use, and their kinds (absent keys are allowed; present ones must
#: have this kind; ``number`` also accepts null, which JSON writes for NaN).
SUMMARY_KEYS: dict[str, str] = {
    "slo_ttft_ms": "number",
    "slo_tpot_ms": "number",
    "slo_percentile_pct": "number",
    "energy_total_j": "number",
    "requests_total": "number",
    "meta": "object",
}

#: Keys of a run's ``config.json`` (the run configuration written beside it) the readers use.
CONFIG_KEYS: dict[str, str] = {"sim": "object", "sim.window_s": "number", "sim.slo": "object"}


def check_table(df: pd.DataFrame, name: str, path: str | Path) -> pd.DataFrame:
    """``df`` (the table ``name`` read from ``path``) has the columns :data:`TABLE_COLUMNS` lists, of their kinds."""
    for column, kind in TABLE_COLUMNS.get(name, {}).items():
        if column not in df.columns:
            raise InputError(f"missing column '{column}' (not a biscale run table, or a newer layout)", path=path)
        dtype = df[column].dtype
        if kind == "number" and not (pd.api.types.is_numeric_dtype(dtype) or df[column].isna().all()):
            raise InputError(f"column '{column}' holds {dtype} values, expected numbers", path=path, field=column)
        if kind == "text" and not (
            pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype) or len(df) == 0
        ):
            raise InputError(f"column '{column}' holds {dtype} values, expected text", path=path, field=column)
    return df


def check_keys(data: Mapping[str, Any], spec: Mapping[str, str], path: str | Path) -> Mapping[str, Any]:
    """The keys of ``spec`` (dotted paths) that ``data`` has are of their kind (``number``, ``object``, ``text``)."""
    for dotted, kind in spec.items():
        node: Any = data
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                node = _ABSENT
                break
            node = node[part]
        if node is _ABSENT or node is None:
            continue
        ok = {
            "number": isinstance(node, int | float) and not isinstance(node, bool),
            "object": isinstance(node, Mapping),
            "text": isinstance(node, str),
        }[kind]
        if not ok:
            shown = repr(node) if len(repr(node)) <= 40 else type(node).__name__
            what = {"number": "a number", "object": "a JSON object", "text": "a string"}[kind]
            raise InputError(f"expected {what}, got {shown}", path=path, field=dotted)
    return data


_ABSENT = object()


def check_list_of_objects(value: Any, field: str, path: str | Path) -> None:
    """``value`` is a list of JSON objects (an :class:`InputError` naming ``field`` and the first bad item)."""
    if not isinstance(value, list):
        raise InputError(f"expected a list, got {type(value).__name__}", path=path, field=field)
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise InputError(f"expected a JSON object, got {type(item).__name__}", path=path, field=f"{field}.{i}")
