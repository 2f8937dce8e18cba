"""Parsing helpers shared by the trace loaders: strict CSV/JSONL reading with exact line numbers in errors.

Every problem becomes an :class:`~biscale.errors.InputError` naming the file, the 1-based line (header = line 1)
and the field. Files are read with pandas' C parser (fast); the slow exact line lookup runs only on error.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biscale.errors import InputError

#: Largest accepted token count: anything above is certainly a corrupt value (and would overflow int64 maths).
MAX_TOKENS = 10**9
_LINE_RE = re.compile(r"line (\d+)")


@dataclass
class Table:
    """A parsed text table: string cells, plus a way to find each data row's line in the file."""

    path: Path
    frame: pd.DataFrame
    """Cells as strings (CSV) or Python objects (JSONL), one row per data record."""
    lines: np.ndarray | None = None
    """1-based file line of each record when known up front (JSONL); CSV rows are looked up lazily."""
    rows: np.ndarray | None = None
    """Record index in the file of each row after :meth:`subset` (None: row i is record i)."""
    typed: bool = False
    """Read by the fast typed parser: its errors are provisional (the caller re-reads strictly for the message)."""

    def line_of(self, row: int) -> int:
        """1-based line in the file where data row ``row`` (0-based) starts."""
        record = row if self.rows is None else int(self.rows[row])
        if self.lines is not None:
            return int(self.lines[record])
        return _csv_line_of_row(self.path, record)

    def subset(self, keep: np.ndarray) -> Table:
        """The rows where ``keep`` is true, still reporting their original lines."""
        records = np.arange(len(self.frame)) if self.rows is None else self.rows
        frame = self.frame.loc[keep].reset_index(drop=True)
        return Table(self.path, frame, self.lines, records[keep], self.typed)

    def error(self, row: int, reason: str, field: str | None = None) -> InputError:
        if self.typed:  # provisional: skip the slow line lookup, the strict re-read reports it exactly
            return InputError(reason, path=self.path, field=field)
        return InputError(reason, path=self.path, line=self.line_of(row), field=field)


def _csv_line_of_row(path: Path, row: int) -> int:
    """Line where CSV data row ``row`` starts, counting like pandas (blank lines skipped, quoted newlines kept)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            prev_end = 0
            record = -1  # the header is record -1
            for fields in reader:
                start = prev_end + 1
                prev_end = reader.line_num
                if not fields or (len(fields) == 1 and not fields[0].strip()):  # pandas skips blank lines
                    continue
                if record == row:
                    return start
                record += 1
    except (OSError, UnicodeDecodeError, csv.Error):
        pass
    return row + 2  # best effort: header on line 1, no blank lines


def read_csv_table(path: Path, *, typed: bool = False) -> Table:
    """Read a CSV file. Errors name the file and, where the parser knows it, the line.

    ``typed=False`` keeps every cell as the exact string in the file (strict: errors can quote it).
    ``typed=True`` lets pandas' C parser convert numeric columns itself (several times faster on
    million-row files); only empty cells become NaN, so any text a number column cannot hold leaves that
    column as strings and fails validation, after which the caller re-reads strictly for the exact message.
    """
    options: dict[str, object] = (
        {"keep_default_na": False, "na_values": [""], "low_memory": False}
        if typed
        else {"dtype": str, "keep_default_na": False, "na_filter": False}
    )
    try:
        frame = pd.read_csv(
            path,
            skip_blank_lines=True,
            encoding="utf-8-sig",
            engine="c",
            compression=None,
            **options,  # type: ignore[call-overload]
        )
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except IsADirectoryError:
        raise InputError("is a directory, not a file", path=path) from None
    except PermissionError:
        raise InputError("permission denied", path=path) from None
    except pd.errors.EmptyDataError:
        raise InputError("file is empty (no header, no data)", path=path) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", path=path) from None
    except pd.errors.ParserError as exc:
        text = " ".join(str(exc).split())
        m = _LINE_RE.search(text)
        line = int(m.group(1)) if m else None
        reason = text.split("C error: ")[-1] if "C error: " in text else text
        raise InputError(f"malformed CSV: {reason}", path=path, line=line) from None
    except (OSError, ValueError, csv.Error) as exc:
        raise InputError(f"cannot read as CSV: {' '.join(str(exc).split())}", path=path) from None
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas silently turns the leading cells into an index when data rows are longer than the header
        n_header = len(frame.columns)
        raise InputError(
            f"malformed CSV: the header has {n_header} fields but data rows have {n_header + frame.index.nlevels}",
            path=path,
            line=_csv_line_of_row(path, 0),
        )
    frame.columns = [str(c).strip() for c in frame.columns]
    # A short row leaves missing cells as NaN even with na_filter off: treat them as empty strings.
    if not typed and frame.isna().to_numpy().any():
        frame = frame.fillna("")
    return Table(path, frame, typed=typed)


def read_jsonl_table(path: Path) -> Table:
    """Read a JSON-lines file: one object per non-blank line. Errors name the line."""
    try:
        with open(path, encoding="utf-8-sig", newline=None) as fh:
            raw_lines = fh.read().split("\n")
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except IsADirectoryError:
        raise InputError("is a directory, not a file", path=path) from None
    except PermissionError:
        raise InputError("permission denied", path=path) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror})", path=path) from None
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    for lineno, text in enumerate(raw_lines, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise InputError(f"not valid JSON ({msg})", path=path, line=lineno) from None
        if not isinstance(obj, dict):
            raise InputError("each line must be a JSON object", path=path, line=lineno)
        records.append(obj)
        lines.append(lineno)
    if not records:
        raise InputError("file is empty (no JSON records)", path=path)
    columns: dict[str, None] = {}
    for rec in records:
        columns.update(dict.fromkeys(rec))
    # Object columns keep the JSON values as parsed (no coercion), so errors quote exactly what the file says.
    frame = pd.DataFrame({c: pd.Series([rec.get(c) for rec in records], dtype=object) for c in columns})
    return Table(path, frame, np.asarray(lines, dtype=np.int64))


def require_columns(table: Table, columns: list[str], fmt: str) -> None:
    """Raise naming the first missing column (header line 1)."""
    missing = [c for c in columns if c not in table.frame.columns]
    if missing:
        have = ", ".join(repr(c) for c in table.frame.columns[:8])
        line = 1 if table.lines is None else int(table.lines[0])
        raise InputError(
            f"missing column {missing[0]!r} for {fmt} format (found: {have or 'none'})",
            path=table.path,
            line=line,
            field=missing[0],
        )


def require_rows(table: Table) -> None:
    if len(table.frame) == 0:
        raise InputError("no data rows (header only)", path=table.path)


def _describe(raw: Any) -> str:
    text = repr(raw) if not isinstance(raw, str) else repr(raw.strip())
    return text if len(text) <= 40 else text[:37] + "..."


def numeric_column(table: Table, column: str, *, integer: bool) -> np.ndarray:
    """Column as float64; raises on the first empty, non-numeric or non-finite cell (and non-integers if asked)."""
    raw = table.frame[column]
    if table.lines is None:  # CSV: strings
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    else:  # JSONL: python objects; only real JSON numbers count (no strings, booleans, lists)
        values = np.array([_json_number(v) for v in raw.tolist()], dtype=np.float64)
    bad = ~np.isfinite(values)
    if integer:
        with np.errstate(invalid="ignore"):
            bad |= values != np.floor(values)
    if bad.any():
        row = int(np.argmax(bad))
        cell = raw.iloc[row]
        missing_json = cell is None or (isinstance(cell, float) and math.isnan(cell) and table.lines is not None)
        if missing_json or (isinstance(cell, str) and not cell.strip()):
            reason = "missing value"
        elif np.isfinite(values[row]):
            reason = f"not a whole number: {_describe(cell)}"
        elif math.isnan(values[row]) and not _looks_nan(cell):
            reason = f"not a number: {_describe(cell)}"
        else:
            reason = f"not a finite number: {_describe(cell)}"
        raise table.error(row, reason, field=column)
    return values


def _looks_nan(cell: Any) -> bool:
    return isinstance(cell, str) and cell.strip().lower() in {"nan", "-nan", "+nan"}


def _json_number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return math.nan
    try:
        return float(v)
    except OverflowError:
        return math.inf


def token_column(table: Table, column: str, *, allow_zero: bool = False) -> np.ndarray:
    """Whole-number token counts, >= 1 (>= 0 with ``allow_zero``), at most :data:`MAX_TOKENS`."""
    values = numeric_column(table, column, integer=True)
    low = 0 if allow_zero else 1
    bad = (values < low) | (values > MAX_TOKENS)
    if bad.any():
        row = int(np.argmax(bad))
        v = values[row]
        reason = (
            f"token count must be >= {low} (got {v:.0f})"
            if v < low
            else f"token count {v:.0f} exceeds the limit of {MAX_TOKENS}"
        )
        raise table.error(row, reason, field=column)
    return values.astype(np.int64)
