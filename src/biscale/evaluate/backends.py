"""Where an evaluation's independent simulations run: this process, a local process pool, or a Ray cluster.

Every task is a pure function of its (picklable, plain-data) input: the backend only changes where it runs, never
what it returns, so a grid gives identical results on every backend and worker count (tested). Results come back
to the caller (run tables as Parquet bytes), so Ray workers on other machines need no shared file system.
"""

from __future__ import annotations

import multiprocessing
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

from biscale.errors import InputError

T = TypeVar("T")
R = TypeVar("R")

#: Called as each task finishes: (index in the input, its result).
OnDone = Callable[[int, Any], None]

BACKENDS = ("pool", "ray")


class Backend(ABC):
    """Maps a function over tasks, calling ``on_done`` as each finishes; returns results in input order."""

    name: str = "backend"
    workers: int = 1

    @abstractmethod
    def map(self, fn: Callable[[T], R], items: Sequence[T], on_done: OnDone | None = None) -> list[R]: ...

    @abstractmethod
    def close(self) -> None:
        """Release workers (idempotent)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PoolBackend(Backend):
    """A local process pool (spawned workers: no fork of a process that may run threads); ``workers = 1`` runs the
    tasks in this process, one after the other."""

    name = "pool"

    def __init__(self, workers: int | None = None) -> None:
        n = workers if workers is not None else (os.cpu_count() or 1)
        if n < 1:
            raise InputError(f"workers must be >= 1, got {n}", field="--workers")
        self.workers = n
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_done: OnDone | None = None) -> list[R]:
        out: list[Any] = [None] * len(items)
        if self.workers == 1 or len(items) <= 1:
            for i, item in enumerate(items):
                out[i] = fn(item)
                if on_done is not None:
                    on_done(i, out[i])
            return out
        pool = self._executor()
        pending: dict[Future[R], int] = {pool.submit(fn, item): i for i, item in enumerate(items)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: pending[f]):
                    i = pending.pop(fut)
                    out[i] = fut.result()
                    if on_done is not None:
                        on_done(i, out[i])
        finally:
            for fut in pending:
                fut.cancel()
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class RayBackend(Backend):
    """Tasks as Ray remote functions: a local Ray instance (``address=None``, ``workers`` CPUs) or a running cluster
    (``address``, e.g. ``ray://head:10001`` or ``auto``). Needs the ``ray`` extra (``pip install 'biscale[ray]'``)."""

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        try:
            import ray
        except ImportError as err:
            raise InputError(
                "the Ray backend needs the 'ray' extra: pip install 'biscale[ray]'", field="--backend"
            ) from err
        self._ray = ray
        self.address = address
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if address is None:
                kwargs["num_cpus"] = workers if workers is not None else (os.cpu_count() or 1)
            else:
                kwargs["address"] = address
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise InputError(f"cannot start or reach Ray: {err}", field="--address") from err
            self._started = True
        self.workers = int(ray.cluster_resources().get("CPU", 1))

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_done: OnDone | None = None) -> list[R]:
        ray = self._ray
        remote = ray.remote(num_cpus=1)(fn)
        refs = [remote.remote(item) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        out: list[Any] = [None] * len(items)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                i = index[ref]
                out[i] = ray.get(ref)
                if on_done is not None:
                    on_done(i, out[i])
        return out

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False


def make_backend(name: str = "pool", *, workers: int | None = None, address: str | None = None) -> Backend:
    """The backend called ``name`` (``pool`` or ``ray``); ``address`` only for Ray."""
    if name == "pool":
        if address is not None:
            raise InputError("--address is for the Ray backend (--backend ray)", field="--address")
        return PoolBackend(workers)
    if name == "ray":
        return RayBackend(workers, address)
    raise InputError(f"unknown backend '{name}' (choices: {', '.join(BACKENDS)})", field="--backend")
