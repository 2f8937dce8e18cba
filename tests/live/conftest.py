"""An emulated engine served from a background thread on a free loopback port (stopped after the test)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from biscale.live.emulator import EmulatorSettings, serve


@dataclass
class RunningEmulator:
    url: str
    port: int
    engine: Any
    stop: Callable[[], None]


def start_emulator(settings: EmulatorSettings) -> RunningEmulator:
    """Start ``serve`` in a thread with its own event loop; returns once it listens."""
    bound: dict[str, Any] = {}
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    task_box: dict[str, asyncio.Task[None]] = {}

    def on_ready(port: int) -> None:
        bound["port"] = port
        ready.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        task = loop.create_task(serve(settings, 0, "127.0.0.1", None, on_ready))
        task_box["task"] = task
        try:
            loop.run_until_complete(task)
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not ready.wait(60):
        raise RuntimeError("emulated engine did not start")

    def stop() -> None:
        loop.call_soon_threadsafe(task_box["task"].cancel)
        thread.join(30)

    port = bound["port"]
    return RunningEmulator(f"http://127.0.0.1:{port}", port, None, stop)


@pytest.fixture
def emulator() -> Iterator[Callable[..., RunningEmulator]]:
    """``emulator(role="both", speed=4.0, ...)`` starts one; every one started is stopped at the end."""
    started: list[RunningEmulator] = []

    def make(**kwargs: Any) -> RunningEmulator:
        emu = start_emulator(EmulatorSettings(**kwargs))
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()
