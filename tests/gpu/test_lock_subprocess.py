"""``biscale gpu lock`` as a real process: signals restore; SIGKILL restores only through the guard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from biscale.gpu.fake_nvml import read_state

RESET = "nvmlDeviceResetGpuLockedClocks"


def _lock(*extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "biscale.cli.main", "gpu", "lock", "--clock", "990", "--gpus", "0,1", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_line(proc: subprocess.Popen[str], needle: str, max_lines: int = 50) -> str:
    """Read the child's stderr until a line contains ``needle`` (the lock is fully in place after it)."""
    assert proc.stderr is not None
    for _ in range(max_lines):
        line = proc.stderr.readline()
        if needle in line:
            return line
        if not line:
            break
    raise AssertionError(f"{needle!r} never printed (exit code {proc.poll()})")


def _locked(path: Path) -> list[list[int] | None]:
    return [g["locked_mhz"] for g in read_state(path)["gpus"]]


def _gone(pid: int) -> bool:
    """Not running (absent or a zombie waiting for its new parent to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_lock_restores(fake_file: Path, wait: Callable[..., bool], sig: signal.Signals) -> None:
    proc = _lock("--json")
    try:
        _wait_for_line(proc, "locked at 990 MHz")
        assert _locked(fake_file) == [[990, 990]] * 2
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert _locked(fake_file) == [None, None]
    resets = [c for c in read_state(fake_file)["calls"] if c["fn"] == RESET]
    assert sorted(c["gpu"] for c in resets) == [0, 1]
    assert {c["pid"] for c in resets} == {proc.pid}
    report = json.loads(out)
    assert report["interrupted_by"] == sig.name
    assert {r["reason"] for r in report["restores"]} == {f"signal:{sig.name}"}
    assert [g["applied_sm_clock_mhz"] for g in report["gpus"]] == [990, 990]
    assert "restored default clocks on GPU(s) 0, 1 (signal:" in err


def test_sigkill_with_guard_restores_through_the_guard(fake_file: Path, wait: Callable[..., bool]) -> None:
    proc = _lock("--guard")
    try:
        assert wait(lambda: _locked(fake_file) == [[990, 990]] * 2), "lock never took effect"
        guard_pids = {c["pid"] for c in read_state(fake_file)["calls"] if c["fn"] == "nvmlInit"} - {proc.pid}
        assert len(guard_pids) == 1
        (guard_pid,) = guard_pids
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
        assert wait(lambda: _locked(fake_file) == [None, None]), "guard did not restore"
    finally:
        proc.kill()
        proc.communicate()
    resets = [c for c in read_state(fake_file)["calls"] if c["fn"] == RESET]
    assert {c["pid"] for c in resets} == {guard_pid}
    assert len(resets) == 2
    assert wait(lambda: _gone(guard_pid)), "guard did not exit after restoring"


def test_sigkill_without_guard_leaves_the_clock_locked(fake_file: Path, wait: Callable[..., bool]) -> None:
    # Why the guard exists: nothing inside a SIGKILLed process runs.
    proc = _lock()
    try:
        assert wait(lambda: _locked(fake_file) == [[990, 990]] * 2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)
    finally:
        proc.kill()
        proc.communicate()
    assert _locked(fake_file) == [[990, 990]] * 2
    assert not [c for c in read_state(fake_file)["calls"] if c["fn"] == RESET]


def test_lock_exports_metrics_while_holding(fake_file: Path, wait: Callable[..., bool]) -> None:
    import re
    import urllib.request

    proc = _lock("--metrics-port", "0")
    try:
        m = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", _wait_for_line(proc, "serving Prometheus metrics"))
        assert m is not None
        port = int(m.group(1))
        _wait_for_line(proc, "locked at 990 MHz")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert 'biscale_gpu_requested_sm_clock_mhz{gpu="1"} 990.0' in text
        assert 'biscale_gpu_clock_switches_total{gpu="0"} 1.0' in text
        assert 'biscale_gpu_sm_clock_mhz{gpu="0"} 990.0' in text
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert _locked(fake_file) == [None, None]
