"""The package's on-disk caches, in one place: where they live (``BISCALE_CACHE_DIR``), the fingerprint of the code a
cached result depends on, how keys are derived, and how an entry is read and written.

Why one home: every cache (the tier-1 capacity table, the evaluation's capacity searches, static-baseline and
hindsight-lock searches) stores an expensive result under a SHA-256 key of everything it depends on, *code
included*, so that a change of the simulator, hardware model or controllers never reuses a stale result; each must
ignore an unreadable or foreign entry (search again and overwrite it), and may be written by two pool workers at once
(the write is atomic: a temporary file renamed into place).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import biscale
from biscale.jsonio import to_json_text

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

D = TypeVar("D", bound="DataclassInstance")

#: What the tier-1 capacity table depends on: the simulator that probes it, the hardware model, the planners,
#: predictors and controllers it runs, the neutral cost-model shapes and the workload slicing/rescaling of its probes.
CAPACITY_CODE = (
    "sim",
    "hardware",
    "plan",
    "predict",
    "control",
    "costmodel.py",
    "workload/ops.py",
)

#: What a simulated evaluation run depends on: the capacity table's code plus the workloads, summaries and actuator.
RESULT_CODE = (*CAPACITY_CODE[:-1], "workload", "metrics.py", "actuator.py")


def default_cache_dir() -> Path:
    """``$BISCALE_CACHE_DIR``, else ``$XDG_CACHE_HOME/biscale``, else ``~/.cache/biscale``."""
    env = os.environ.get("BISCALE_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "biscale"


def _source_files(root: Path, part: str) -> list[Path]:
    p = root / part
    if not p.is_dir():
        return [p]
    skip = (".pyc", ".pyo")
    return sorted(
        f
        for f in p.rglob("*")
        if f.is_file() and "__pycache__" not in f.parts and f.suffix not in skip and not f.name.startswith(".")
    )


def tree_fingerprint(root: Path, parts: tuple[str, ...]) -> str:
    """SHA-256 over every source and data file under ``parts`` (paths relative to ``root``): each file's
    ``root``-relative POSIX path and its bytes with CRLF read as LF, so the value depends neither on where the
    checkout lies nor on its line endings, only on the code."""
    h = hashlib.sha256()
    for part in parts:
        for f in _source_files(root, part):
            h.update(f.relative_to(root).as_posix().encode() + b"\0")
            data = f.read_bytes().replace(b"\r\n", b"\n")
            h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


@functools.lru_cache(maxsize=8)
def code_fingerprint(parts: tuple[str, ...] = RESULT_CODE) -> str:
    """:func:`tree_fingerprint` of the installed package's ``parts``: part of every cache key."""
    return tree_fingerprint(Path(biscale.__file__).parent, parts)


def cache_key(payload: dict[str, Any]) -> str:
    """The SHA-256 key of ``payload`` (JSON with sorted keys; values JSON cannot hold are written as ``str``)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def entry_path(kind: str, key: str, cache_dir: str | Path | None = None) -> Path:
    """Where the entry ``key`` of cache ``kind`` lives: ``<cache>/<kind>/<key[:24]>.json`` (``kind`` may hold a
    slash: ``evaluate/static``)."""
    return Path(cache_dir or default_cache_dir()) / kind / f"{key[:24]}.json"


def load_entry(path: Path, key: str, fmt: str) -> Any | None:
    """The stored result, or ``None`` when there is none, it is unreadable, or its key or format differ."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("key") == key and data.get("format") == fmt and "result" in data:
        return data["result"]
    return None


def cached_search(
    kind: str,
    fmt: str,
    payload: dict[str, Any],
    make: Callable[..., D],
    search: Callable[[], D],
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    seed: Callable[[Path], object] | None = None,
) -> D:
    """``search()``'s dataclass result, kept as JSON under ``<cache>/<kind>/`` keyed on ``payload`` (which names every
    input and the code): a stored entry is rebuilt with ``make(**fields)``, one of another shape is searched again and
    overwritten. ``seed(path)`` may first fill a missing entry (results shipped with the package)."""
    key = cache_key(payload)
    path = entry_path(kind, key, cache_dir)
    if use_cache:
        if seed is not None:
            seed(path)
        stored = load_entry(path, key, fmt)
        if isinstance(stored, dict):
            try:
                return make(**stored)
            except TypeError:
                pass
    found = search()
    if use_cache:
        store_entry(path, key, fmt, dataclasses.asdict(found))
    return found


def store_entry(path: Path, key: str, fmt: str, result: Any) -> None:
    """Write ``result`` under ``key`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(to_json_text({"format": fmt, "key": key, "result": result}))
    os.replace(tmp, path)
