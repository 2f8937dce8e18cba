"""Helpers shared by every CLI command: JSON output, tables, progress bars (TTY only), input errors."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from biscale.errors import InputError
from biscale.jsonio import to_json_text

#: Human-readable output goes here; ``--json`` output goes to plain stdout.
console = Console()
err_console = Console(stderr=True)


def print_json(obj: Mapping[str, Any]) -> None:
    """Write exactly one JSON object (one line) to stdout."""
    sys.stdout.write(to_json_text(obj) + "\n")
    sys.stdout.flush()


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Render a simple table with rich; numbers are formatted compactly."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*[_fmt(v) for v in row])
    console.print(table)


def _fmt(v: Any) -> str:
    if isinstance(v, float | np.floating):
        f = float(v)
        if not math.isfinite(f):
            return "-"
        if f != 0 and (abs(f) >= 1e5 or abs(f) < 1e-3):
            return f"{f:.3e}"
        return f"{f:.4g}"
    return str(v)


@contextmanager
def progress_bar(description: str, total: float | None) -> Iterator[Any]:
    """A rich progress bar when stderr is a TTY; otherwise a no-op object with the same ``update`` method."""
    if not sys.stderr.isatty():

        class _Null:
            def update(self, completed: float | None = None, advance: float | None = None) -> None:
                return None

        yield _Null()
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
    with progress:
        task = progress.add_task(description, total=total)

        class _Bar:
            def update(self, completed: float | None = None, advance: float | None = None) -> None:
                progress.update(task, completed=completed, advance=advance)

        yield _Bar()


def fail(reason: str) -> InputError:
    """Build an :class:`InputError` for a bad option value (the caller raises it)."""
    return InputError(reason)
