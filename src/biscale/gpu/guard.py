"""Guard process: resets GPU clocks when the controlling process dies outright (SIGKILL, OOM kill).

Why a separate process: nothing inside a SIGKILLed process runs, so neither ``atexit`` nor signal handlers
nor the watchdog thread can restore. The guard is started by the controller (:meth:`Guard.start`) with a pipe
on its stdin; the kernel closes that pipe when the controller dies, however it dies. The guard then resets
the GPUs it was given (by UUID, so index changes cannot mislead it). When the controller ends normally it
writes ``release`` first, and the guard exits without touching anything.

Run as ``python -m biscale.gpu.guard --parent-pid PID --gpus UUID[,UUID...]``; it prints ``ready`` once
NVML is initialised. It ignores SIGINT (a Ctrl-C in the terminal reaches the controller, which restores and
releases). It uses the fake NVML when ``BISCALE_FAKE_NVML`` is set, like the CLI.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import IO, Any

from biscale.errors import NoGpuError, PermissionRequiredError
from biscale.gpu.nvml import error_code, load_nvml, nvml_init

log = logging.getLogger("biscale.gpu.guard")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reset_by_uuid(nvml: Any, uuids: Sequence[str], *, retries: int = 3, delay_s: float = 0.05) -> list[str]:
    """Reset the locked clocks of each GPU; returns the UUIDs that could not be reset."""
    failed = []
    for uuid in uuids:
        for attempt in range(retries + 1):
            try:
                nvml.nvmlDeviceResetGpuLockedClocks(nvml.nvmlDeviceGetHandleByUUID(uuid))
                log.warning("guard: reset clocks of %s", uuid)
                break
            except nvml.NVMLError as err:
                if error_code(nvml, err) == nvml.NVML_ERROR_NO_PERMISSION or attempt == retries:
                    log.error("guard: could not reset %s: %s", uuid, err)
                    failed.append(uuid)
                    break
                time.sleep(delay_s * 2**attempt)
    return failed


def watch(parent_pid: int, uuids: Sequence[str], *, poll_s: float = 0.2, stdin: IO[str] | None = None) -> int:
    """Wait for ``release`` (exit 0, no reset) or the parent's death (reset; exit 0, or 1 if a reset failed)."""
    stream = sys.stdin if stdin is None else stdin
    nvml = load_nvml()
    nvml_init(nvml)
    print("ready", flush=True)
    reason = None
    track_ppid = os.getppid() == parent_pid  # started directly by the controller (the usual case)
    while reason is None:
        ready, _, _ = select.select([stream], [], [], poll_s)
        if ready:
            line = stream.readline()
            if line == "":
                reason = "controller pipe closed"
            elif line.strip() == "release":
                log.info("guard: released by pid %d", parent_pid)
                nvml.nvmlShutdown()
                return 0
        elif not _alive(parent_pid) or (track_ppid and os.getppid() != parent_pid):
            reason = f"controller pid {parent_pid} is gone"
    log.error("guard: %s; restoring default clocks on %s", reason, ", ".join(uuids))
    failed = reset_by_uuid(nvml, uuids)
    with contextlib.suppress(nvml.NVMLError):
        nvml.nvmlShutdown()
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry of the guard process."""
    parser = argparse.ArgumentParser(
        prog="python -m biscale.gpu.guard", description=(__doc__ or "guard").splitlines()[0]
    )
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--gpus", required=True, help="comma-separated GPU UUIDs to reset if the parent dies")
    parser.add_argument("--poll-s", type=float, default=0.2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="biscale-guard: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    uuids = [u for u in args.gpus.split(",") if u]
    try:
        return watch(args.parent_pid, uuids, poll_s=args.poll_s)
    except (NoGpuError, PermissionRequiredError) as err:  # could not open NVML: say so in one line
        print(f"biscale-guard: error: {err}", file=sys.stderr, flush=True)
        return 2


class Guard:
    """Handle on a running guard process (see module doc)."""

    def __init__(self, proc: subprocess.Popen[str], uuids: Sequence[str]) -> None:
        self.proc = proc
        self.uuids = tuple(uuids)

    @classmethod
    def start(cls, uuids: Sequence[str], *, timeout_s: float = 30.0, poll_s: float = 0.2) -> Guard:
        """Spawn the guard for ``uuids`` and wait until it has NVML open; raises RuntimeError if it fails."""
        cmd = [sys.executable, "-m", "biscale.gpu.guard", "--parent-pid", str(os.getpid()), "--gpus", ",".join(uuids)]
        cmd += ["--poll-s", str(poll_s)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            proc.kill()
            proc.wait()
            raise RuntimeError(f"guard process did not start (exit code {proc.returncode}, said {line.strip()!r})")
        return cls(proc, uuids)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def hand_over(self, timeout_s: float = 30.0) -> int | None:
        """Close the pipe without ``release``: the guard resets the GPUs itself. Returns its exit code."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def release(self, timeout_s: float = 10.0) -> int | None:
        """Tell the guard the clocks were restored; it exits without resetting. Returns its exit code."""
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write("release\n")
                self.proc.stdin.flush()
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


if __name__ == "__main__":
    sys.exit(main())
