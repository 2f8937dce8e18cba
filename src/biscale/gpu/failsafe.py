"""Fail-safe restore: put GPUs back under the default governor whatever happens to the controller.

Why: a controller that dies with eight GPUs locked at 900 MHz breaks every SLO of the cluster. Layers, each
independent of the others (see docs/gpu.md for the failure table):

* :class:`FailSafe` — ``atexit`` plus SIGINT/SIGTERM handlers that restore first, then chain to the handler
  that was installed before (or re-deliver the signal with the default action, so the exit status is kept).
* :class:`Watchdog` — a thread that restores when the controller stops sending heartbeats (a hung loop).
* the guard process (:mod:`biscale.gpu.guard`) — restores when the process dies outright (SIGKILL, OOM kill).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType, TracebackType
from typing import Any

log = logging.getLogger("biscale.gpu")

#: A restore callback: takes the reason (e.g. ``"signal:SIGTERM"``), must be idempotent and never raise.
RestoreFn = Callable[[str], object]


class FailSafe:
    """Restore on interpreter exit and on SIGINT/SIGTERM, chaining to the previous signal handlers.

    Signal handlers can only be installed from the main thread; elsewhere only ``atexit`` is used (logged).
    """

    def __init__(
        self,
        restore: RestoreFn,
        *,
        signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
        use_atexit: bool = True,
    ) -> None:
        self._restore = restore
        self._signals = tuple(signals)
        self._use_atexit = use_atexit
        self._previous: dict[int, Any] = {}
        self._installed = False

    def _safe_restore(self, reason: str) -> None:
        try:
            self._restore(reason)
        except Exception:  # a restore failure must not hide the original exit path
            log.exception("restore failed (%s)", reason)

    def _atexit(self) -> None:
        self._safe_restore("atexit")

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self._safe_restore(f"signal:{name}")
        prev = self._previous.get(signum, signal.SIG_DFL)
        if callable(prev):
            prev(signum, frame)
        elif prev == signal.SIG_DFL:
            # Re-deliver with the default action so the process ends exactly as it would have.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        # SIG_IGN: the signal was being ignored before us; keep ignoring it.

    def install(self) -> FailSafe:
        """Register the handlers (idempotent)."""
        if self._installed:
            return self
        if self._use_atexit:
            atexit.register(self._atexit)
        if threading.current_thread() is threading.main_thread():
            for sig in self._signals:
                self._previous[int(sig)] = signal.getsignal(sig)
                signal.signal(sig, self._handler)
        else:
            log.warning("FailSafe installed outside the main thread: signal handlers skipped, atexit only")
        self._installed = True
        return self

    def uninstall(self) -> None:
        """Put the previous handlers back (only those we replaced and still own)."""
        if not self._installed:
            return
        if self._use_atexit:
            atexit.unregister(self._atexit)
        for signum, prev in self._previous.items():
            if signal.getsignal(signum) == self._handler:
                signal.signal(signum, prev)
        self._previous.clear()
        self._installed = False

    def __enter__(self) -> FailSafe:
        return self.install()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._safe_restore("exception" if exc_type is not None else "exit")
        self.uninstall()


class Watchdog:
    """Calls ``restore("watchdog")`` once if no :meth:`heartbeat` arrives within ``timeout_s`` seconds.

    After firing it stays quiet until the next heartbeat re-arms it; what the owner does next (suspend control,
    say) is up to the ``restore`` callback.
    """

    def __init__(self, restore: RestoreFn, timeout_s: float, *, poll_s: float | None = None) -> None:
        if timeout_s <= 0:
            raise ValueError(f"watchdog timeout must be > 0 s, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self._poll_s = poll_s if poll_s is not None else min(0.05, self.timeout_s / 4)
        self._restore = restore
        self._last = time.monotonic()
        self._armed = True
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.fired = 0
        self._thread = threading.Thread(target=self._run, name="biscale-gpu-watchdog", daemon=True)
        self._thread.start()

    def heartbeat(self) -> None:
        """The controller is alive: push the deadline ``timeout_s`` into the future and re-arm."""
        with self._lock:
            self._last = time.monotonic()
            self._armed = True

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            with self._lock:
                late = self._armed and time.monotonic() - self._last > self.timeout_s
                if late:
                    self._armed = False
            if late:
                self.fired += 1
                log.error("watchdog: no heartbeat for %.3f s; restoring default clocks", self.timeout_s)
                try:
                    self._restore("watchdog")
                except Exception:
                    log.exception("watchdog restore failed")

    def stop(self) -> None:
        """Stop the thread (no restore)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
