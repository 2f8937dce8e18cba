"""Trace and length-table loaders: Azure LLM CSV, BurstGPT CSV, Mooncake JSONL, ShareGPT-style length tables.

Formats live in a registry (:data:`TRACE_FORMATS`); a new one is a :class:`TraceFormat` passed to
:func:`register_trace_format`. The format is given explicitly or inferred from the file extension (``.jsonl``
means JSON lines) and the CSV header. Loading is strict: a bad cell raises :class:`~biscale.errors.InputError`
naming file, line and column; rows are never dropped except BurstGPT failures with ``exclude_failed=True``,
which are counted in ``trace.meta["excluded_failed_requests"]``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from biscale.errors import InputError
from biscale.workload._parse import (
    Table,
    numeric_column,
    read_csv_table,
    read_jsonl_table,
    require_columns,
    require_rows,
    token_column,
)
from biscale.workload.bundled import BUNDLED_LENGTHS, BUNDLED_TRACES
from biscale.workload.lengths import LengthTable
from biscale.workload.rate import check_rate, check_seed
from biscale.workload.trace import Trace


class TraceOrderWarning(UserWarning):
    """A trace file's timestamps were out of order; the loader sorted them (stable) and says where."""


@dataclass
class LoadOptions:
    """Options that some formats honour."""

    exclude_failed: bool = False
    """BurstGPT: drop rows with 0 response tokens (failed requests), counting them, instead of raising."""


@dataclass
class ParsedRows:
    """What a format parser returns: raw (unsorted, un-rebased) times in seconds, or None for length tables."""

    time_s: np.ndarray | None
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    rows: np.ndarray
    """Data-row index (0-based) of each kept request, for line numbers in later errors/warnings."""
    meta: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class TraceFormat:
    """One file format: how to recognise it and how to turn its table into requests."""

    name: str
    kind: Literal["csv", "jsonl"]
    columns: tuple[str, ...]
    """Required columns (CSV header names or JSON keys); also used to recognise the format."""
    parse: Callable[[Table, LoadOptions], ParsedRows]
    description: str
    has_arrivals: bool = True


TRACE_FORMATS: dict[str, TraceFormat] = {}
"""Known formats by name, in detection order."""


def register_trace_format(fmt: TraceFormat) -> None:
    """Add (or replace) a format in the registry."""
    TRACE_FORMATS[fmt.name] = fmt


def _all_rows(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


def _parse_azure(table: Table, opts: LoadOptions) -> ParsedRows:
    del opts
    raw = table.frame["TIMESTAMP"]
    ts = pd.to_datetime(raw.astype("string").str.strip(), format="ISO8601", utc=True, errors="coerce")
    bad = ts.isna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        cell = str(raw.iloc[row]).strip()
        reason = "missing value" if not cell else f"not a date-time (expected e.g. 2023-11-16 18:15:46.68): {cell!r}"
        raise table.error(row, reason, field="TIMESTAMP")
    seconds = ((ts - ts.min()) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)
    inp = token_column(table, "ContextTokens")
    out = token_column(table, "GeneratedTokens")
    return ParsedRows(seconds, inp, out, _all_rows(len(inp)))


def _parse_burstgpt(table: Table, opts: LoadOptions) -> ParsedRows:
    resp = token_column(table, "Response tokens", allow_zero=True)
    failed = resp == 0
    n_failed = int(failed.sum())
    if n_failed and not opts.exclude_failed:
        row = int(np.argmax(failed))
        raise table.error(
            row,
            f"0 response tokens marks a failed request in BurstGPT ({n_failed} such rows); "
            "exclude them explicitly with exclude_failed=True (CLI: --exclude-failed)",
            field="Response tokens",
        )
    keep = ~failed
    kept_rows = np.flatnonzero(keep)
    if n_failed:
        table = table.subset(keep)
    times = numeric_column(table, "Timestamp", integer=False)
    inp = token_column(table, "Request tokens")
    meta: dict[str, object] = {"excluded_failed_requests": n_failed}
    if "Model" in table.frame.columns:
        counts = table.frame["Model"].fillna("").astype(str).str.strip().value_counts()
        meta["models"] = {str(k): int(v) for k, v in counts.items()}
    return ParsedRows(times, inp, resp[keep], kept_rows, meta)


def _parse_mooncake(table: Table, opts: LoadOptions) -> ParsedRows:
    del opts
    ms = numeric_column(table, "timestamp", integer=False)
    inp = token_column(table, "input_length")
    out = token_column(table, "output_length")
    return ParsedRows(ms / 1000.0, inp, out, _all_rows(len(inp)))


def _parse_biscale(table: Table, opts: LoadOptions) -> ParsedRows:
    del opts
    times = numeric_column(table, "arrival_s", integer=False)
    inp = token_column(table, "input_tokens")
    out = token_column(table, "output_tokens")
    return ParsedRows(times, inp, out, _all_rows(len(inp)))


def _parse_lengths(table: Table, opts: LoadOptions) -> ParsedRows:
    del opts
    inp = token_column(table, "num_prefill_tokens")
    out = token_column(table, "num_decode_tokens")
    return ParsedRows(None, inp, out, _all_rows(len(inp)))


register_trace_format(
    TraceFormat(
        "azure",
        "csv",
        ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
        _parse_azure,
        "Azure LLM inference trace CSV (2023 and 2024): date-time, prompt tokens, output tokens",
    )
)
register_trace_format(
    TraceFormat(
        "burstgpt",
        "csv",
        ("Timestamp", "Request tokens", "Response tokens"),
        _parse_burstgpt,
        "BurstGPT CSV: Timestamp (s), Model, Request tokens, Response tokens, Total tokens, Log Type",
    )
)
register_trace_format(
    TraceFormat(
        "mooncake",
        "jsonl",
        ("timestamp", "input_length", "output_length"),
        _parse_mooncake,
        "Mooncake JSON lines: timestamp (ms), input_length, output_length, hash_ids",
    )
)
register_trace_format(
    TraceFormat(
        "biscale",
        "csv",
        ("arrival_s", "input_tokens", "output_tokens"),
        _parse_biscale,
        "biscale's own CSV (save_trace): arrival_s (s), input_tokens, output_tokens",
    )
)
register_trace_format(
    TraceFormat(
        "lengths",
        "csv",
        ("num_prefill_tokens", "num_decode_tokens"),
        _parse_lengths,
        "ShareGPT-style length table CSV: num_prefill_tokens, num_decode_tokens (no arrival times)",
        has_arrivals=False,
    )
)

_JSONL_EXTENSIONS = {".jsonl", ".json", ".ndjson"}


def _sniff_kind(path: Path) -> Literal["csv", "jsonl"]:
    if path.suffix.lower() in _JSONL_EXTENSIONS:
        return "jsonl"
    if path.suffix.lower() == ".csv":
        return "csv"
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return "csv"  # the CSV reader reports the OS error with the path
    return "jsonl" if head.startswith(b"{") else "csv"


def _read(path: Path, fmt_name: str | None, typed: bool = False) -> tuple[Table, TraceFormat]:
    """Read the file and pick its format (explicit or from extension + columns)."""
    if fmt_name is not None:
        key = fmt_name.strip().lower()
        if key not in TRACE_FORMATS:
            known = ", ".join(TRACE_FORMATS)
            raise InputError(f"unknown trace format {fmt_name!r} (known: {known})", field="format")
        fmt = TRACE_FORMATS[key]
        table = read_jsonl_table(path) if fmt.kind == "jsonl" else read_csv_table(path, typed=typed)
        require_columns(table, list(fmt.columns), fmt.name)
        require_rows(table)
        return table, fmt
    kind = _sniff_kind(path)
    table = read_jsonl_table(path) if kind == "jsonl" else read_csv_table(path, typed=typed)
    candidates = [f for f in TRACE_FORMATS.values() if f.kind == kind]
    for fmt in candidates:
        if all(c in table.frame.columns for c in fmt.columns):
            require_rows(table)
            return table, fmt
    if len(candidates) == 1:
        require_columns(table, list(candidates[0].columns), candidates[0].name)
    expected = "; ".join(f"{f.name} ({', '.join(f.columns)})" for f in candidates)
    have = ", ".join(repr(c) for c in list(table.frame.columns)[:8]) or "none"
    line = 1 if table.lines is None else int(table.lines[0])
    raise InputError(
        f"cannot tell the trace format from the columns (found {have}); expected one of: {expected}; "
        "or give the format explicitly",
        path=path,
        line=line,
    )


def _order(rows: ParsedRows, table: Table) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    """Sort times (stable), warning with the first offending line; returns (order, times from 0, meta)."""
    assert rows.time_s is not None
    t = rows.time_s
    meta: dict[str, object] = {}
    if t.size == 0:
        return np.arange(0), t, meta
    back = np.diff(t) < 0
    if back.any():
        first = int(np.argmax(back)) + 1
        line = table.line_of(int(rows.rows[first]))
        n_back = int(back.sum())
        warnings.warn(
            f"{table.path}:{line}: timestamps out of order ({n_back} row(s) earlier than the row before); "
            "sorted by time",
            TraceOrderWarning,
            stacklevel=4,
        )
        order = np.argsort(t, kind="stable")
        meta["out_of_order_rows"] = n_back
        meta["sorted"] = True
    else:
        order = np.arange(t.size)
    ts = t[order]
    return order, ts - ts[0], meta


def _load(
    source: str | Path, format: str | None, exclude_failed: bool
) -> tuple[ParsedRows, Table, TraceFormat, str, str]:
    """Parse a bundled name or path: (rows, table, format, name, source description)."""
    bundled = {**BUNDLED_TRACES, **BUNDLED_LENGTHS}
    if isinstance(source, str) and source in bundled:
        item = bundled[source]
        path, name, src = item.path, source, f"bundled:{source}"
        format = format or item.format
    else:
        path = Path(source).expanduser()
        if not path.exists():
            names = ", ".join(bundled)
            raise InputError(f"file not found (and not a bundled name: {names})", path=path)
        name, src = path.stem, str(path)
    options = LoadOptions(exclude_failed=exclude_failed)
    try:  # fast path: pandas converts the numbers; any problem at all -> strict re-read for the exact message
        table, fmt = _read(path, format, typed=True)
        rows = fmt.parse(table, options)
    except InputError as err:
        if path.suffix.lower() in _JSONL_EXTENSIONS:
            raise err from None  # JSON lines have one strict reader only
        table, fmt = _read(path, format, typed=False)
        rows = fmt.parse(table, options)
    return rows, table, fmt, name, src


def _to_trace(
    rows: ParsedRows,
    table: Table,
    fmt: TraceFormat,
    name: str,
    src: str,
    arrival_rate_rps: float | None,
    seed: int,
) -> Trace:
    meta: dict[str, object] = {"format": fmt.name, "rows": len(table.frame), **rows.meta}
    if rows.time_s is None:
        if arrival_rate_rps is None:
            raise InputError(
                f"a {fmt.name} table has no arrival times: use it as the lengths of a trace (CLI --lengths), or give "
                "it Poisson arrivals at a rate (arrival_rate_rps=..., `biscale trace stats --rate`; "
                "load_lengths() with poisson_trace()/gamma_trace()/with_lengths())",
                path=table.path,
            )
        n = len(rows.input_tokens)
        check_rate(arrival_rate_rps, n / arrival_rate_rps if arrival_rate_rps > 0 else math.inf)
        gen = np.random.default_rng(np.random.SeedSequence(check_seed(seed)))
        gaps = gen.exponential(1.0 / arrival_rate_rps, size=n)
        gaps[0] = 0.0
        meta.update({"arrivals": "poisson", "arrival_rate_rps": arrival_rate_rps, "seed": seed})
        return Trace(np.cumsum(gaps), rows.input_tokens, rows.output_tokens, name=name, source=src, meta=meta)
    order, times, order_meta = _order(rows, table)
    meta.update(order_meta)
    return Trace(times, rows.input_tokens[order], rows.output_tokens[order], name=name, source=src, meta=meta)


def load_trace(
    source: str | Path,
    format: str | None = None,
    *,
    exclude_failed: bool = False,
    arrival_rate_rps: float | None = None,
    seed: int = 0,
) -> Trace:
    """Load a trace: a bundled name (``azure-conv``, ``azure-code``) or a file path.

    ``format`` is one of :data:`TRACE_FORMATS` (``azure``, ``burstgpt``, ``mooncake``, ``lengths``) or None to
    infer it. A length table has no arrival times: loading one as a trace needs ``arrival_rate_rps`` (requests
    then arrive in file order as a seeded Poisson process) and raises :class:`InputError` otherwise.
    Out-of-order timestamps are sorted (stable) with a :class:`TraceOrderWarning`.
    """
    rows, table, fmt, name, src = _load(source, format, exclude_failed)
    return _to_trace(rows, table, fmt, name, src, arrival_rate_rps, seed)


def load_any(source: str | Path, format: str | None = None, *, exclude_failed: bool = False) -> Trace | LengthTable:
    """A :class:`Trace` if the file has arrival times, else a :class:`LengthTable` (for tools that take both)."""
    rows, table, fmt, name, src = _load(source, format, exclude_failed)
    if rows.time_s is None:
        meta: dict[str, object] = {"format": fmt.name, "rows": len(table.frame), **rows.meta}
        return LengthTable(rows.input_tokens, rows.output_tokens, name=name, source=src, meta=meta)
    return _to_trace(rows, table, fmt, name, src, None, 0)


def load_lengths(source: str | Path, format: str | None = None, *, exclude_failed: bool = False) -> LengthTable:
    """Load a length table: a bundled name (``sharegpt-v3``, or a bundled trace) or a path in any format
    (a trace's arrival times are ignored, so its rows need not be in time order)."""
    rows, table, fmt, name, src = _load(source, format, exclude_failed)
    meta: dict[str, object] = {"format": fmt.name, "rows": len(table.frame), **rows.meta}
    return LengthTable(rows.input_tokens, rows.output_tokens, name=name, source=src, meta=meta)


def save_trace(trace: Trace, path: str | Path) -> Path:
    """Write ``trace`` as biscale CSV (``arrival_s,input_tokens,output_tokens``; seconds to the microsecond),
    which :func:`load_trace` reads back (format ``biscale``)."""
    path = Path(path).expanduser()
    frame = pd.DataFrame(
        {"arrival_s": trace.arrival_s, "input_tokens": trace.input_tokens, "output_tokens": trace.output_tokens}
    )
    try:
        frame.to_csv(path, index=False, float_format="%.6f")
    except OSError as exc:
        raise InputError(f"cannot write file ({exc.strerror or ' '.join(str(exc).split())})", path=path) from None
    return path
