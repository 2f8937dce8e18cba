"""Fixtures for the GPU control-plane tests: the fake NVML in memory and as a shared state file."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from biscale.gpu.fake_nvml import FAKE_ENV, FakeNvml, default_state, write_state


@pytest.fixture
def fake() -> FakeNvml:
    """An in-memory fake with two H100-like GPUs (root)."""
    return FakeNvml(state=default_state(2))


@pytest.fixture
def fake_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A two-GPU state file, with BISCALE_FAKE_NVML pointing at it (for the CLI and subprocesses)."""
    path = write_state(tmp_path / "nvml.json", default_state(2))
    monkeypatch.setenv(FAKE_ENV, str(path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return path


def wait_until(pred: Callable[[], bool], timeout_s: float = 20.0, poll_s: float = 0.05) -> bool:
    """Poll ``pred`` until true or timeout (slow CI machines: generous timeouts, short polls)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(poll_s)
    return bool(pred())


@pytest.fixture
def wait() -> Callable[..., bool]:
    return wait_until
