"""Helpers shared by every CLI command: JSON output, tables, progress bars (TTY only), input errors, the defaults
options share (taken from the models that hold them)."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
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

#: Help of the ``--slo-*`` options: they default to the :class:`~biscale.control.state.Slo` model's targets (read
#: when the command runs, so that ``biscale --help`` does not import the models).
SLO_TTFT_HELP = "P99 TTFT target, ms (default: the Slo model's sim.slo.ttft_s; biscale config schema shows it)."
SLO_TPOT_HELP = "P99 TPOT target, ms (default: the Slo model's sim.slo.tpot_s; biscale config schema shows it)."


def slo_ms(ttft_ms: float | None, tpot_ms: float | None) -> tuple[float, float]:
    """The ``--slo-ttft-ms`` / ``--slo-tpot-ms`` values, the :class:`~biscale.control.state.Slo` defaults where not
    given."""
    from biscale.control.state import SLO_TPOT_MS, SLO_TTFT_MS

    return (SLO_TTFT_MS if ttft_ms is None else ttft_ms, SLO_TPOT_MS if tpot_ms is None else tpot_ms)


#: Width tables are laid out in when stdout is not a terminal: wide enough that no name or value is cut or wrapped
#: (a script reading ``biscale evaluate --list | cat`` sees whole names); tables are only as wide as their cells.
PIPE_WIDTH = 10_000


def print_json(obj: Mapping[str, Any]) -> None:
    """Write exactly one JSON object (one line) to stdout."""
    sys.stdout.write(to_json_text(obj) + "\n")
    sys.stdout.flush()


def readable(text: str) -> str:
    """``text`` with undecodable bytes of file names (``os.fsdecode``'s surrogate escapes) written as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def print_table(title: str, columns: list[str], rows: list[list[Any]], *, min_width: int | None = None) -> None:
    """Render a simple table with rich; numbers are formatted compactly. On a terminal, ``min_width`` lays the table
    out at least this wide even when the terminal is narrower (cells then never wrap), and a cell too wide for the
    terminal wraps (never cut); piped, the table has its natural width (:data:`PIPE_WIDTH`)."""
    table = Table(title=readable(title))
    for col in columns:
        table.add_column(col, no_wrap=min_width is not None, overflow="fold")
    for row in rows:
        table.add_row(*[_fmt(v) for v in row])
    if not console.is_terminal:
        out = Console(width=PIPE_WIDTH)
    else:
        out = console if min_width is None or console.width >= min_width else Console(width=min_width)
    out.print(table)


def _fmt(v: Any) -> str:
    if isinstance(v, float | np.floating):
        f = float(v)
        if not math.isfinite(f):
            return "-"
        if f != 0 and (abs(f) >= 1e5 or abs(f) < 1e-3):
            return f"{f:.3e}"
        return f"{f:.4g}"
    return readable(str(v))


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


def int_list(text: str | None, option: str, *, most: int | None = None) -> tuple[int, ...] | None:
    """A comma-separated list of whole numbers > 0 (at most ``most``); ``None`` when the option was not given.

    An option given with nothing in it (``--clocks ""``, often an unset shell variable) is an error, not "use the
    default"."""
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise InputError(f"{option} must be comma-separated whole numbers, got {text!r}") from None
    if not values:
        raise InputError(f"{option} is empty: give comma-separated whole numbers, or leave the option out")
    if min(values) <= 0:
        raise InputError(f"{option} values must be positive, got {text!r}")
    if most is not None and max(values) > most:
        raise InputError(f"{option} values must be at most {most:,}, got {max(values):,}")
    return values


def check_cache_dir(cache_dir: Path | None) -> Path:
    """Refuse, before any work, a capacity cache that cannot be written: ``cache_dir`` (``--cache-dir``) or the
    default one, naming it and ``BISCALE_CACHE_DIR`` (which moves it) or ``--no-cache``."""
    from biscale.cache import default_cache_dir

    path = cache_dir or default_cache_dir()
    option = "--cache-dir" if cache_dir is not None else "the capacity cache"
    try:
        return check_output_dir(path, option)
    except InputError as err:
        raise InputError(
            f"{err.reason} (set BISCALE_CACHE_DIR or --cache-dir to a writable directory, or give --no-cache)",
            path=path,
        ) from None


_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def check_host(text: str, field: str) -> str:
    """``text`` as a host: an IPv4/IPv6 address or a DNS name (RFC 1123 labels); an :class:`InputError` naming
    ``field`` and the value otherwise (``999.1.1.1`` is a bad IPv4 address, not a name)."""
    if re.fullmatch(r"[0-9.]+", text) or ":" in text:
        try:
            ipaddress.ip_address(text.strip("[]"))
        except ValueError:
            kind = "IPv6" if ":" in text else "IPv4"
            raise InputError(f"not an {kind} address: {text!r}", field=field) from None
        return text
    labels = text.removesuffix(".").split(".")
    if not text or len(text) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise InputError(
            f"not a host name or address: {text!r} (letters, digits, '-' and '.', or an IP address)", field=field
        )
    return text


def hosts_list(text: str | None, nodes: int, field: str = "hosts") -> list[str] | None:
    """``--hosts H1,H2,...``: exactly one distinct, well-formed host per node (``None`` when not given)."""
    if text is None:
        return None
    parts = text.split(",")
    hosts: list[str] = []
    for i, part in enumerate(parts):
        host = part.strip()
        if not host:
            raise InputError(f"host {i + 1} of {text!r} is empty (give one host per node, separated by commas)",
                             field=field)  # fmt: skip
        if any(c.isspace() for c in host):
            raise InputError(f"host {host!r} contains whitespace (separate hosts with commas)", field=field)
        check_host(host, field)
        if host in hosts:
            raise InputError(f"host {host!r} is given twice (one host per node)", field=field)
        hosts.append(host)
    if len(hosts) != nodes:
        raise InputError(f"{len(hosts)} host(s) given for {nodes} nodes (give exactly one per node)", field=field)
    return hosts


def check_output_dir(path: Path, option: str) -> Path:
    """Refuse, before any work is done, an output directory that cannot be written: a file, a path inside a file,
    a read-only place (an :class:`InputError` naming the option and the path). Nothing is created here."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} must name a directory, and this is a file", path=path)
    _check_creatable(path, option, path)
    return path


def check_output_file(path: Path, option: str) -> Path:
    """Refuse, before any work is done, an output file that cannot be written: a directory, a path inside a file,
    a read-only file or place (an :class:`InputError` naming the option and the path). Nothing is created here."""
    if path.is_dir():
        raise InputError(f"{option} must name a file, and this is a directory", path=path)
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{option}: this file is not writable", path=path)
    _check_creatable(path.parent, option, path)
    return path


def write_error(err: OSError, path: Path, option: str) -> InputError:
    """An :class:`InputError` for a write that failed although the checks above passed (e.g. a full disk)."""
    return InputError(f"{option}: cannot write ({err.strerror or ' '.join(str(err).split())})", path=path)


def _check_creatable(folder: Path, option: str, shown: Path) -> None:
    """``folder`` exists as a writable directory, or its nearest existing ancestor is one (so it can be made)."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{option}: {existing} is a file, not a directory", path=shown)
    try:  # a real attempt: os.access says yes to root even where nothing can be created (/proc, /sys)
        os.rmdir(tempfile.mkdtemp(prefix=".biscale-write-check-", dir=existing))
    except OSError as err:
        raise InputError(f"{option}: cannot write in {existing} ({err.strerror or err})", path=shown) from err
