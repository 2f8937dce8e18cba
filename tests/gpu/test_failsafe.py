"""Fail-safe restore in-process: signal-handler chaining, atexit, the heartbeat watchdog, guard release."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import pytest

from biscale.errors import ControlSuspendedError
from biscale.gpu.failsafe import FailSafe, Watchdog
from biscale.gpu.fake_nvml import FakeNvml, read_state
from biscale.gpu.guard import Guard
from biscale.gpu.nvml import NvmlActuator


def test_signal_handler_restores_then_chains_to_the_previous_handler() -> None:
    events: list[str] = []

    def previous(signum: int, frame: FrameType | None) -> None:
        events.append(f"previous:{signum}")

    old = signal.signal(signal.SIGUSR1, previous)
    try:
        fs = FailSafe(lambda reason: events.append(reason), signals=(signal.SIGUSR1,), use_atexit=False).install()
        signal.raise_signal(signal.SIGUSR1)
        assert events == ["signal:SIGUSR1", f"previous:{int(signal.SIGUSR1)}"]
        fs.uninstall()
        assert signal.getsignal(signal.SIGUSR1) is previous
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_ignored_signal_stays_ignored_after_restore() -> None:
    events: list[str] = []
    old = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        with FailSafe(lambda reason: events.append(reason), signals=(signal.SIGUSR2,), use_atexit=False):
            signal.raise_signal(signal.SIGUSR2)  # would kill the process if re-delivered with SIG_DFL
        assert events == ["signal:SIGUSR2", "exit"]
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR2, old)


def test_failing_restore_does_not_break_the_chain() -> None:
    events: list[str] = []

    def bad_restore(reason: str) -> None:
        raise RuntimeError("nvml gone")

    def previous(signum: int, frame: FrameType | None) -> None:
        events.append("previous")

    old = signal.signal(signal.SIGUSR1, previous)
    try:
        with FailSafe(bad_restore, signals=(signal.SIGUSR1,), use_atexit=False):
            signal.raise_signal(signal.SIGUSR1)
        assert events == ["previous"]
    finally:
        signal.signal(signal.SIGUSR1, old)


def _script(body: str) -> list[str]:
    code = textwrap.dedent(
        """
        import logging, sys, time
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
        from biscale.gpu.failsafe import FailSafe
        from biscale.gpu.nvml import NvmlActuator
        act = NvmlActuator(gpus=[0, 1])  # the fake, through BISCALE_FAKE_NVML
        FailSafe(act.restore).install()
        act.set_clock([0, 1], 990)
        """
    )
    return [sys.executable, "-c", code + textwrap.dedent(body)]


def test_default_sigterm_is_redelivered_after_restore(fake_file: Path, wait: Callable[..., bool]) -> None:
    # the signal comes once set_clock has returned (the child says so), while the process sleeps
    body = "print('locked', flush=True)\ntime.sleep(60)"
    proc = subprocess.Popen(_script(body), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        assert wait(lambda: [g["locked_mhz"] for g in read_state(fake_file)["gpus"]] == [[990, 990]] * 2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGTERM  # died of SIGTERM, as without us
    st = read_state(fake_file)
    assert [g["locked_mhz"] for g in st["gpus"]] == [None, None]
    assert "signal:SIGTERM" in err
    assert {c["pid"] for c in st["calls"] if c["fn"] == "nvmlDeviceResetGpuLockedClocks"} == {proc.pid}


def test_atexit_restores_on_plain_exit(fake_file: Path) -> None:
    out = subprocess.run(_script("sys.exit(3)"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 3
    assert [g["locked_mhz"] for g in read_state(fake_file)["gpus"]] == [None, None]
    assert "(atexit)" in out.stderr


def test_watchdog_restores_when_heartbeats_stop(fake: FakeNvml, wait: Callable[..., bool]) -> None:
    with NvmlActuator(fake, watchdog_s=0.3) as act:
        act.set_clock([0, 1], 990)
        # heartbeats keep it locked
        for _ in range(8):
            act.heartbeat()
            time.sleep(0.05)
        assert [g["locked_mhz"] for g in fake.snapshot()["gpus"]] == [[990, 990]] * 2
        # silence: restored within timeout + poll
        assert wait(lambda: len(act.restores) == 2, timeout_s=10)
        assert [g["locked_mhz"] for g in fake.snapshot()["gpus"]] == [None, None]
        assert {r for _, r in act.restores} == {"watchdog"}
        assert act.suspended and "watchdog" in str(act.suspended_reason)
        with pytest.raises(ControlSuspendedError):
            act.set_clock([0], 1200)


def test_watchdog_fires_once_per_silence() -> None:
    fired: list[str] = []
    dog = Watchdog(fired.append, 0.1, poll_s=0.01)
    try:
        time.sleep(0.4)
        assert fired == ["watchdog"]
        dog.heartbeat()
        time.sleep(0.4)
        assert fired == ["watchdog", "watchdog"]
    finally:
        dog.stop()
    with pytest.raises(ValueError, match="> 0"):
        Watchdog(fired.append, 0)


def test_released_guard_exits_without_resetting(fake_file: Path) -> None:
    fake = FakeNvml(fake_file)
    fake.nvmlInit()
    fake.nvmlDeviceSetGpuLockedClocks(fake.nvmlDeviceGetHandleByIndex(0), 990, 990)
    guard = Guard.start([fake.nvmlDeviceGetUUID(fake.nvmlDeviceGetHandleByIndex(0))], poll_s=0.05)
    assert guard.release() == 0
    st = read_state(fake_file)
    assert st["gpus"][0]["locked_mhz"] == [990, 990]  # released: the guard touched nothing
    assert not [c for c in st["calls"] if c["fn"] == "nvmlDeviceResetGpuLockedClocks"]
    assert guard.pid in {c["pid"] for c in st["calls"] if c["fn"] == "nvmlInit"}
