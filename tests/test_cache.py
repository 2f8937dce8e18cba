"""The one home of the caches: code fingerprints, keys, entries."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from biscale.cache import (
    CAPACITY_CODE,
    RESULT_CODE,
    cache_key,
    default_cache_dir,
    entry_path,
    load_entry,
    store_entry,
    tree_fingerprint,
)


def fake_tree(root: Path) -> Path:
    (root / "sim").mkdir(parents=True)
    (root / "sim" / "engine.py").write_bytes(b"x = 1\ny = 2\n")
    (root / "costmodel.py").write_bytes(b"z = 3\n")
    (root / "cli").mkdir()
    (root / "cli" / "main.py").write_bytes(b"w = 4\n")
    return root


def test_the_fingerprint_ignores_where_the_checkout_lies_and_its_line_endings(tmp_path: Path) -> None:
    a = fake_tree(tmp_path / "a" / "biscale")
    b = tmp_path / "elsewhere" / "deeper" / "biscale"
    shutil.copytree(a, b)
    (b / "sim" / "engine.py").write_bytes(b"x = 1\r\ny = 2\r\n")
    (b / "sim" / "__pycache__").mkdir()
    (b / "sim" / "__pycache__" / "engine.cpython-312.pyc").write_bytes(b"\0junk")
    parts = ("sim", "costmodel.py")
    assert tree_fingerprint(a, parts) == tree_fingerprint(b, parts)


def test_the_fingerprint_follows_the_code_in_scope_and_only_it(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "biscale")
    parts = ("sim", "costmodel.py")
    before = tree_fingerprint(root, parts)
    (root / "cli" / "main.py").write_bytes(b"w = 5\n")  # out of scope
    assert tree_fingerprint(root, parts) == before
    (root / "sim" / "engine.py").write_bytes(b"x = 1\ny = 3\n")
    assert tree_fingerprint(root, parts) != before
    (root / "sim" / "engine.py").write_bytes(b"x = 1\ny = 2\n")
    (root / "sim" / "engine2.py").write_bytes(b"")  # a new file counts too
    assert tree_fingerprint(root, parts) != before


def test_scopes_cover_the_simulator_hardware_and_belief_side() -> None:
    assert {"sim", "hardware", "plan", "predict", "control"} <= set(CAPACITY_CODE)
    assert {"sim", "hardware", "plan", "predict", "control", "workload"} <= set(RESULT_CODE)
    assert "cli" not in CAPACITY_CODE and "evaluate" not in CAPACITY_CODE


def test_keys_and_entries_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BISCALE_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    key = cache_key({"b": 1, "a": [1, 2]})
    assert key == cache_key({"a": [1, 2], "b": 1}) != cache_key({"a": [1, 2], "b": 2})
    path = entry_path("evaluate/static", key)
    assert path == tmp_path / "c" / "evaluate" / "static" / f"{key[:24]}.json"
    assert load_entry(path, key, "fmt") is None
    store_entry(path, key, "fmt", {"v": 1.5})
    assert load_entry(path, key, "fmt") == {"v": 1.5}
    assert load_entry(path, key, "other-fmt") is None
    assert load_entry(path, "0" * 64, "fmt") is None
    path.write_text("{not json")
    assert load_entry(path, key, "fmt") is None


def test_cached_search_stores_reuses_and_replaces_a_foreign_entry(tmp_path: Path) -> None:
    import dataclasses

    from biscale.cache import cached_search

    @dataclasses.dataclass
    class Found:
        clock_mhz: int

    calls: list[int] = []

    def search() -> Found:
        calls.append(1)
        return Found(990)

    payload = {"what": "a search", "code": "x"}
    args = ("evaluate/test", "fmt-test", payload, Found, search)
    assert cached_search(*args, cache_dir=tmp_path) == Found(990) and len(calls) == 1
    assert cached_search(*args, cache_dir=tmp_path) == Found(990) and len(calls) == 1  # from disk
    assert cached_search(*args, cache_dir=tmp_path, use_cache=False) == Found(990) and len(calls) == 2
    key = cache_key(payload)
    store_entry(entry_path("evaluate/test", key, tmp_path), key, "fmt-test", {"other": 1})  # another shape
    assert cached_search(*args, cache_dir=tmp_path) == Found(990) and len(calls) == 3
    assert cached_search(*args, cache_dir=tmp_path) == Found(990) and len(calls) == 3  # overwritten
    seeded: list[Path] = []
    cached_search(*args, cache_dir=tmp_path / "fresh", seed=seeded.append)
    assert seeded == [entry_path("evaluate/test", key, tmp_path / "fresh")] and len(calls) == 4
