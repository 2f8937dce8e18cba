"""The evaluation's on-disk caches (capacity searches, static-baseline and hindsight searches): one JSON file per key,
and the code fingerprint every key includes.

Why one helper: both caches store an expensive result under a SHA-256 key of everything it depends on, must ignore an
unreadable or foreign entry (search again and overwrite it), and may be written by two pool workers at once (the
write is atomic: a temporary file renamed into place).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import biscale
from biscale.jsonio import to_json_text
from biscale.plan.capacity import default_cache_dir

#: The parts of the package whose code or data decide a simulated run's outcome (simulator, hardware model,
#: controllers, planners, predictors, workloads, summaries); a change to any of them invalidates cached searches.
_RESULT_CODE = (
    "sim",
    "hardware",
    "control",
    "plan",
    "predict",
    "workload",
    "costmodel.py",
    "metrics.py",
    "actuator.py",
)


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 of every source and data file under :data:`_RESULT_CODE`: part of the key of every cached search
    result, so that a cache written before a change of the simulator (without a version bump) is never reused."""
    root = Path(biscale.__file__).parent
    h = hashlib.sha256()
    for part in _RESULT_CODE:
        p = root / part
        files = sorted(f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts) if p.is_dir() else [p]
        for f in files:
            h.update(f.relative_to(root).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def entry_path(kind: str, key: str, cache_dir: str | Path | None = None) -> Path:
    """Where the entry ``key`` of cache ``kind`` lives: ``<cache>/evaluate/<kind>/<key[:24]>.json``."""
    return Path(cache_dir or default_cache_dir()) / "evaluate" / kind / f"{key[:24]}.json"


def load_entry(path: Path, key: str, fmt: str) -> Any | None:
    """The stored result, or ``None`` when there is none, it is unreadable, or its key or format differ."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("key") == key and data.get("format") == fmt and "result" in data:
        return data["result"]
    return None


def store_entry(path: Path, key: str, fmt: str, result: Any) -> None:
    """Write ``result`` under ``key`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(to_json_text({"format": fmt, "key": key, "result": result}))
    os.replace(tmp, path)
