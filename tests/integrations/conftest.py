"""Where the serving engines' downloaded sources are (never a dependency: tests that read them skip without them).

Each location is a folder holding the unpacked package tree or the wheel itself (``pip download PKG --no-deps -d DIR``):
``BISCALE_VLLM_SRC`` (default /tmp/vllm), ``BISCALE_SGLANG_SRC`` (/tmp/sglang), ``BISCALE_VLLM_ROUTER_SRC``
(/tmp/vrouter), ``BISCALE_SGLANG_ROUTER_SRC`` (/tmp/srouter).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from biscale.gpu.fake_nvml import FAKE_ENV, FakeNvml, default_state, write_state

SOURCES = {
    "vllm": ("BISCALE_VLLM_SRC", "/tmp/vllm", "vllm 0.33.0"),
    "sglang": ("BISCALE_SGLANG_SRC", "/tmp/sglang", "sglang 0.5.23"),
    "vllm-router": ("BISCALE_VLLM_ROUTER_SRC", "/tmp/vrouter", "vllm-router 0.1.17"),
    "sglang-router": ("BISCALE_SGLANG_ROUTER_SRC", "/tmp/srouter", "sglang-router 0.3.2"),
}


class SourceTree:
    """Files of one downloaded package: from an unpacked tree under ``root`` or from a wheel in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.wheels = sorted(root.glob("*.whl"))

    def read(self, rel: str) -> str:
        for base in (self.root, *(d for d in self.root.iterdir() if d.is_dir())):
            if (base / rel).is_file():
                return (base / rel).read_text()
        for wheel in self.wheels:
            with zipfile.ZipFile(wheel) as z:
                if rel in z.namelist():
                    return z.read(rel).decode()
        raise FileNotFoundError(f"{rel} not in {self.root}")

    def glob(self, prefix: str, suffix: str = ".py") -> dict[str, str]:
        """Every file under ``prefix`` ending in ``suffix``: relative path -> text."""
        out: dict[str, str] = {}
        for wheel in self.wheels:
            with zipfile.ZipFile(wheel) as z:
                for n in z.namelist():
                    if n.startswith(prefix) and n.endswith(suffix):
                        out[n] = z.read(n).decode()
        for base in (self.root, *(d for d in self.root.iterdir() if d.is_dir())):
            for f in (base / prefix).rglob(f"*{suffix}") if (base / prefix).is_dir() else ():
                out.setdefault(str(f.relative_to(base)), f.read_text())
        return out


@pytest.fixture
def engine_source() -> Callable[[str], SourceTree]:
    """``engine_source("vllm")``: that package's downloaded source, or skip with where to put it."""

    def get(name: str) -> SourceTree:
        env, default, version = SOURCES[name]
        root = Path(os.environ.get(env, default))
        if not root.is_dir() or not (any(root.glob("*.whl")) or any(p.is_dir() for p in root.iterdir())):
            pytest.skip(f"{version} source not found at {root} (pip download it there or set {env})")
        return SourceTree(root)

    return get


@pytest.fixture
def nvml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A four-GPU fake NVML state file; the engine sees GPUs 2 and 3 (CUDA_VISIBLE_DEVICES=2,3), no guard."""
    path = write_state(tmp_path / "nvml.json", default_state(4))
    monkeypatch.setenv(FAKE_ENV, str(path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setenv("BISCALE_GUARD", "false")
    for k in ("BISCALE_CONFIG", "BISCALE_GPUS", "BISCALE_CONTROLLER", "BISCALE_METRICS_PORT"):
        monkeypatch.delenv(k, raising=False)
    return path


@pytest.fixture
def fake() -> FakeNvml:
    """An in-memory fake with two H100-like GPUs (root)."""
    return FakeNvml(state=default_state(2))
