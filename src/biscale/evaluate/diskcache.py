"""The evaluation's on-disk caches (capacity searches, static-baseline searches): one JSON file per key.

Why one helper: both caches store an expensive result under a SHA-256 key of everything it depends on, must ignore an
unreadable or foreign entry (search again and overwrite it), and may be written by two pool workers at once (the
write is atomic: a temporary file renamed into place).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from biscale.jsonio import to_json_text
from biscale.plan.capacity import default_cache_dir


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
