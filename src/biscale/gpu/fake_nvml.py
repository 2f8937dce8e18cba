"""A fake, ``pynvml``-compatible NVML for tests and dry runs (no GPU needed).

Why: clock control needs root and a GPU, and its failure paths (a crashed controller, an NVML error in the
middle of a switch) must be tested in CI. The real binding is plain ctypes, so a module object with the same
function names, constants and :class:`pynvml.NVMLError` class is a faithful stand-in: the actuator, meter,
guard and CLI run the *same code* on it, only the module object differs.

State lives in memory or, with ``state_path``, in a JSON file shared by every process that opens it (the
CLI loads it when ``BISCALE_FAKE_NVML=<state.json>`` is set), guarded by ``fcntl.flock``. Locked clocks
are device-wide, as on real GPUs: one process locks, another (the guard) resets, the test reads the file.
Every call is appended to ``calls`` (function, arguments, pid, error code) so tests can assert what
happened, including that no power-limit / persistence / compute-mode setter was ever called.

State file (JSON object)::

    {"root": true,                # false: set/reset raise NVML_ERROR_NO_PERMISSION (non-root)
     "library_present": true,     # false: nvmlInit raises NVML_ERROR_LIBRARY_NOT_FOUND
     "driver_version": "550.54.15",
     "gpus": [{"uuid": "GPU-...", "name": "...", "mem_clock_mhz": 2619,
               "graphics_clocks_mhz": [1980, 1965, ...],   # supported SM clocks, MHz
               "default_sm_clock_mhz": 1980,               # clock under the default governor
               "locked_mhz": null,                         # [min, max] while locked
               "clock_cap_mhz": null,                      # simulate throttling below the lock
               "clock_event_reasons": 0,                   # bitmask returned by the reasons query
               "idle_power_w": 70.0, "busy_power_w": 450.0,  # power at the top clock; scales with f^2
               "power_override_w": null,                   # if set: the power, W (drive_power)
               "energy_mj": 0, "energy_t": <unix s>,       # counter advances with power x time
               "energy_sequence_mj": []}],                 # if non-empty: next readings, popped in order
     "faults": [{"fn": "nvmlDeviceSetGpuLockedClocks", "code": 999,
                 "start": 1, "count": null, "gpu": null}],  # fail calls start..start+count-1 (1-based),
                                                            # counted per function (per GPU if "gpu" is set)
     "counts": {"fn": calls so far, "fn@gpu": calls on that GPU}, "calls": [...]}
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pynvml

from biscale.errors import InputError

#: Environment variable that makes the CLI (and the guard) use this fake with the given state file.
FAKE_ENV = "BISCALE_FAKE_NVML"

#: Energy counter modulus: NVML returns an unsigned 64-bit millijoule count.
U64 = 1 << 64

#: The call log keeps this many most recent calls (``counts`` keeps counting all of them).
MAX_CALLS_KEPT = 20_000

#: Setters the control plane must never call; the fake implements them only to record the call.
FORBIDDEN_SETTERS = (
    "nvmlDeviceSetPowerManagementLimit",
    "nvmlDeviceSetPowerManagementLimit_v2",
    "nvmlDeviceSetPersistenceMode",
    "nvmlDeviceSetComputeMode",
    "nvmlDeviceSetApplicationsClocks",
    "nvmlDeviceSetMemoryLockedClocks",
)


def h100_clocks_mhz() -> list[int]:
    """H100 SXM supported SM clocks: 1980 MHz down to 345 MHz in 15 MHz steps, descending as NVML lists them."""
    return list(range(1980, 344, -15))


def default_gpu(index: int, *, clocks_mhz: list[int] | None = None) -> dict[str, Any]:
    """One fake H100-like GPU entry of the state file."""
    clocks = sorted(clocks_mhz or h100_clocks_mhz(), reverse=True)
    return {
        "uuid": f"GPU-{index:08x}-fake-4000-8000-{index:012x}",
        "name": "NVIDIA H100 80GB HBM3 (fake)",
        "mem_clock_mhz": 2619,
        "graphics_clocks_mhz": clocks,
        "default_sm_clock_mhz": clocks[0],
        "locked_mhz": None,
        "clock_cap_mhz": None,
        "clock_event_reasons": 0,
        "idle_power_w": 70.0,
        "busy_power_w": 450.0,
        "energy_mj": 0,
        "energy_t": time.time(),
        "energy_sequence_mj": [],
    }


def default_state(num_gpus: int = 2, *, root: bool = True) -> dict[str, Any]:
    """A fresh state with ``num_gpus`` unlocked GPUs, no faults and an empty call log."""
    return {
        "root": root,
        "library_present": True,
        "driver_version": "550.54.15",
        "gpus": [default_gpu(i) for i in range(num_gpus)],
        "faults": [],
        "counts": {},
        "calls": [],
    }


def write_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write a state file atomically (tests build one, then point ``BISCALE_FAKE_NVML`` at it)."""
    p = Path(path)
    tmp = p.with_name(p.name + f".tmp{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, p)
    return p


def read_state(path: str | Path) -> dict[str, Any]:
    """Read a state file under its lock (a consistent snapshot even while other processes write)."""
    p = Path(path)
    with _file_lock(p):
        return parse_state(p.read_text(), p)


def parse_state(text: str, path: Path) -> dict[str, Any]:
    """A state file's JSON, checked against the shape :func:`default_state` writes: a truncated or hand-edited file
    is an :class:`InputError` naming the file, the field and ``BISCALE_FAKE_NVML``, not a ``KeyError`` mid-call."""
    where = f"fake NVML state ({FAKE_ENV})"
    try:
        state = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{where}: not valid JSON: {err.msg}", path=path, line=err.lineno) from None
    template = default_state(1)
    if not isinstance(state, dict):
        raise InputError(f"{where}: expected a JSON object", path=path)
    for key, value in template.items():
        if key not in state:
            raise InputError(f"{where}: missing", path=path, field=key)
        if type(state[key]) is not type(value):
            raise InputError(f"{where}: expected {type(value).__name__}", path=path, field=key)
    gpu_keys = set(template["gpus"][0])
    for i, gpu in enumerate(state["gpus"]):
        if not isinstance(gpu, dict):
            raise InputError(f"{where}: expected an object", path=path, field=f"gpus.{i}")
        missing = sorted(gpu_keys - set(gpu))
        if missing:
            raise InputError(f"{where}: missing {', '.join(missing)}", path=path, field=f"gpus.{i}")
    return state


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@dataclass(frozen=True)
class FakeHandle:
    """Device handle of the fake (the real one is a ctypes pointer); only the index matters."""

    index: int


class FakeNvml:
    """A pynvml-compatible module object backed by a JSON state (in memory or in a shared file)."""

    NVMLError = pynvml.NVMLError

    def __init__(self, state_path: str | Path | None = None, state: dict[str, Any] | None = None) -> None:
        # Same constants as the real binding (error codes, clock types, clock-event reason bits).
        for name in dir(pynvml):
            if name.startswith(("NVML_", "nvmlClocksEventReason", "nvmlClocksThrottleReason")):
                setattr(self, name, getattr(pynvml, name))
        self.state_path = None if state_path is None else Path(state_path)
        self._mem_lock = threading.Lock()
        self._init_count = 0
        if self.state_path is None:
            self._state = copy.deepcopy(state) if state is not None else default_state()
        else:
            self._state = {}
            if not self.state_path.parent.is_dir():
                raise InputError(
                    f"the fake NVML state's directory does not exist (set {FAKE_ENV} to a file in an existing one)",
                    path=self.state_path,
                )
            if not self.state_path.exists():
                write_state(self.state_path, state if state is not None else default_state())
            elif state is not None:
                write_state(self.state_path, state)
        for name in FORBIDDEN_SETTERS:
            setattr(self, name, self._recording_stub(name))

    # ----------------------------------------------------------------------------------------- state access
    @contextmanager
    def _txn(self) -> Iterator[dict[str, Any]]:
        if self.state_path is None:
            with self._mem_lock:
                yield self._state
            return
        with _file_lock(self.state_path):
            state = parse_state(self.state_path.read_text(), self.state_path)
            yield state
            write_state(self.state_path, state)

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of the current state (calls, counts, GPUs)."""
        with self._txn() as st:
            return copy.deepcopy(st)

    def update(self, fn: Callable[[dict[str, Any]], None]) -> None:
        """Mutate the state in one transaction (tests use it to add faults or change counters)."""
        with self._txn() as st:
            fn(st)

    def drive_power(self, gpu: int, power_w: float | None) -> None:
        """Pin GPU ``gpu``'s power draw to ``power_w`` watts (``None``: back to the clock-based model).

        The energy counter first accrues the time since its last reading at the old power, so it integrates a
        piecewise-constant power exactly, as the real counter does. An emulated engine calls it at every iteration
        boundary with the power its cost model gives the iteration. Not an NVML function (not in the call log).
        """

        def body(st: dict[str, Any]) -> None:
            g = st["gpus"][gpu]
            now = time.time()
            gained = self._power_w(g) * max(0.0, now - float(g["energy_t"])) * 1000.0
            g["energy_mj"] = (int(g["energy_mj"]) + round(gained)) % U64
            g["energy_t"] = now
            g["power_override_w"] = None if power_w is None else float(power_w)

        self.update(body)

    def calls(self, fn: str | None = None) -> list[dict[str, Any]]:
        """Recorded calls, optionally only those of one function."""
        return [c for c in self.snapshot()["calls"] if fn is None or c["fn"] == fn]

    def add_fault(
        self, fn: str, code: int, *, start: int = 1, count: int | None = None, gpu: int | None = None
    ) -> None:
        """Make calls ``start..start+count-1`` of ``fn`` raise ``code``.

        Calls are counted from 1 over all processes sharing the state, per function, or per function and GPU
        when ``gpu`` is given; ``count=None`` fails every call from ``start`` on.
        """
        self.update(
            lambda st: st["faults"].append({"fn": fn, "code": code, "start": start, "count": count, "gpu": gpu})
        )

    # ------------------------------------------------------------------------------------------ machinery
    def _call(self, fn: str, handle: FakeHandle | None, args: list[Any], body: Callable[[dict[str, Any]], Any]) -> Any:
        with self._txn() as st:
            n = int(st["counts"].get(fn, 0)) + 1
            st["counts"][fn] = n
            gpu = None if handle is None else handle.index
            if gpu is not None:  # per-GPU count, for faults aimed at one GPU
                st["counts"][f"{fn}@{gpu}"] = int(st["counts"].get(f"{fn}@{gpu}", 0)) + 1
            rec: dict[str, Any] = {
                "fn": fn,
                "gpu": gpu,
                "args": args,
                "pid": os.getpid(),
                "t": time.time(),
                "error": None,
            }
            st["calls"].append(rec)
            if len(st["calls"]) > MAX_CALLS_KEPT:  # long dry runs (watch, export): keep the file small
                del st["calls"][: len(st["calls"]) - MAX_CALLS_KEPT]
            code = self._fault_code(st, fn, n, gpu)
            if code is None and fn != "nvmlInit" and self._init_count <= 0:
                code = pynvml.NVML_ERROR_UNINITIALIZED
            if code is None and gpu is not None and not 0 <= gpu < len(st["gpus"]):
                code = pynvml.NVML_ERROR_INVALID_ARGUMENT
            if code is None:
                try:
                    return body(st)
                except pynvml.NVMLError as err:
                    code = err.value
            rec["error"] = code
        raise pynvml.NVMLError(code)

    @staticmethod
    def _fault_code(st: dict[str, Any], fn: str, n: int, gpu: int | None) -> int | None:
        for f in st.get("faults", []):
            if f["fn"] != fn or (f.get("gpu") is not None and f["gpu"] != gpu):
                continue
            if f.get("gpu") is not None:
                n = int(st["counts"].get(f"{fn}@{gpu}", 0))
            start = int(f.get("start", 1))
            count = f.get("count")
            if n >= start and (count is None or n < start + int(count)):
                return int(f["code"])
        return None

    def _recording_stub(self, name: str) -> Callable[..., None]:
        def stub(*args: Any) -> None:
            handle = args[0] if args and isinstance(args[0], FakeHandle) else None
            self._call(name, handle, [a for a in args[1:] if isinstance(a, int | float | str)], lambda st: None)

        return stub

    def __getattr__(self, name: str) -> Any:
        # Any other nvml* function: recorded, then "not found" (as on an old driver).
        if name.startswith("nvml"):

            def missing(*args: Any) -> Any:
                handle = args[0] if args and isinstance(args[0], FakeHandle) else None

                def body(st: dict[str, Any]) -> Any:
                    raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

                return self._call(name, handle, [], body)

            return missing
        raise AttributeError(name)

    @staticmethod
    def _applied_mhz(g: dict[str, Any]) -> int:
        clock = int(g["locked_mhz"][1]) if g["locked_mhz"] else int(g["default_sm_clock_mhz"])
        if g.get("clock_cap_mhz") is not None:
            clock = min(clock, int(g["clock_cap_mhz"]))
        return clock

    def _power_w(self, g: dict[str, Any]) -> float:
        if g.get("power_override_w") is not None:
            return float(g["power_override_w"])
        top = max(g["graphics_clocks_mhz"])
        idle, busy = float(g["idle_power_w"]), float(g["busy_power_w"])
        return idle + (busy - idle) * (self._applied_mhz(g) / top) ** 2

    # ------------------------------------------------------------------------------------------ NVML API
    def nvmlInit(self) -> None:
        def body(st: dict[str, Any]) -> None:
            if not st.get("library_present", True):
                raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
            self._init_count += 1

        self._call("nvmlInit", None, [], body)

    def nvmlShutdown(self) -> None:
        def body(st: dict[str, Any]) -> None:
            self._init_count -= 1

        self._call("nvmlShutdown", None, [], body)

    def nvmlSystemGetDriverVersion(self) -> str:
        return str(self._call("nvmlSystemGetDriverVersion", None, [], lambda st: st["driver_version"]))

    def nvmlDeviceGetCount(self) -> int:
        return int(self._call("nvmlDeviceGetCount", None, [], lambda st: len(st["gpus"])))

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        def body(st: dict[str, Any]) -> FakeHandle:
            if not 0 <= int(index) < len(st["gpus"]):
                raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            return FakeHandle(int(index))

        return self._call("nvmlDeviceGetHandleByIndex", None, [int(index)], body)

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> FakeHandle:
        text = uuid.decode() if isinstance(uuid, bytes) else str(uuid)

        def body(st: dict[str, Any]) -> FakeHandle:
            for i, g in enumerate(st["gpus"]):
                if g["uuid"] == text:
                    return FakeHandle(i)
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

        return self._call("nvmlDeviceGetHandleByUUID", None, [text], body)

    def nvmlDeviceGetIndex(self, h: FakeHandle) -> int:
        return int(self._call("nvmlDeviceGetIndex", h, [], lambda st: h.index))

    def nvmlDeviceGetUUID(self, h: FakeHandle) -> str:
        return str(self._call("nvmlDeviceGetUUID", h, [], lambda st: st["gpus"][h.index]["uuid"]))

    def nvmlDeviceGetName(self, h: FakeHandle) -> str:
        return str(self._call("nvmlDeviceGetName", h, [], lambda st: st["gpus"][h.index]["name"]))

    def nvmlDeviceGetSupportedMemoryClocks(self, h: FakeHandle) -> list[int]:
        return list(
            self._call("nvmlDeviceGetSupportedMemoryClocks", h, [], lambda st: [st["gpus"][h.index]["mem_clock_mhz"]])
        )

    def nvmlDeviceGetSupportedGraphicsClocks(self, h: FakeHandle, mem_mhz: int) -> list[int]:
        def body(st: dict[str, Any]) -> list[int]:
            g = st["gpus"][h.index]
            if int(mem_mhz) != int(g["mem_clock_mhz"]):
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
            return [int(c) for c in g["graphics_clocks_mhz"]]

        return list(self._call("nvmlDeviceGetSupportedGraphicsClocks", h, [int(mem_mhz)], body))

    def nvmlDeviceGetClockInfo(self, h: FakeHandle, clock_type: int) -> int:
        def body(st: dict[str, Any]) -> int:
            g = st["gpus"][h.index]
            if clock_type == pynvml.NVML_CLOCK_MEM:
                return int(g["mem_clock_mhz"])
            return self._applied_mhz(g)

        return int(self._call("nvmlDeviceGetClockInfo", h, [int(clock_type)], body))

    def nvmlDeviceGetMaxClockInfo(self, h: FakeHandle, clock_type: int) -> int:
        def body(st: dict[str, Any]) -> int:
            g = st["gpus"][h.index]
            return int(g["mem_clock_mhz"]) if clock_type == pynvml.NVML_CLOCK_MEM else max(g["graphics_clocks_mhz"])

        return int(self._call("nvmlDeviceGetMaxClockInfo", h, [int(clock_type)], body))

    def nvmlDeviceGetClock(self, h: FakeHandle, clock_type: int, clock_id: int) -> int:
        return int(
            self._call(
                "nvmlDeviceGetClock",
                h,
                [int(clock_type), int(clock_id)],
                lambda st: self._applied_mhz(st["gpus"][h.index]),
            )
        )

    def nvmlDeviceSetGpuLockedClocks(self, h: FakeHandle, min_mhz: int, max_mhz: int) -> None:
        def body(st: dict[str, Any]) -> None:
            if not st.get("root", True):
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)
            g = st["gpus"][h.index]
            lo, hi = min(g["graphics_clocks_mhz"]), max(g["graphics_clocks_mhz"])
            if not (lo <= int(min_mhz) <= int(max_mhz) <= hi):
                raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            g["locked_mhz"] = [int(min_mhz), int(max_mhz)]

        self._call("nvmlDeviceSetGpuLockedClocks", h, [int(min_mhz), int(max_mhz)], body)

    def nvmlDeviceResetGpuLockedClocks(self, h: FakeHandle) -> None:
        def body(st: dict[str, Any]) -> None:
            if not st.get("root", True):
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)
            st["gpus"][h.index]["locked_mhz"] = None

        self._call("nvmlDeviceResetGpuLockedClocks", h, [], body)

    def nvmlDeviceGetPowerUsage(self, h: FakeHandle) -> int:
        return int(
            self._call("nvmlDeviceGetPowerUsage", h, [], lambda st: round(self._power_w(st["gpus"][h.index]) * 1000))
        )

    def nvmlDeviceGetPowerManagementLimit(self, h: FakeHandle) -> int:
        return int(self._call("nvmlDeviceGetPowerManagementLimit", h, [], lambda st: 700_000))

    def nvmlDeviceGetTotalEnergyConsumption(self, h: FakeHandle) -> int:
        def body(st: dict[str, Any]) -> int:
            g = st["gpus"][h.index]
            now = time.time()
            if g.get("energy_sequence_mj"):
                g["energy_mj"] = int(g["energy_sequence_mj"].pop(0)) % U64
            else:
                gained = self._power_w(g) * max(0.0, now - float(g["energy_t"])) * 1000.0
                g["energy_mj"] = (int(g["energy_mj"]) + round(gained)) % U64
            g["energy_t"] = now
            return int(g["energy_mj"])

        return int(self._call("nvmlDeviceGetTotalEnergyConsumption", h, [], body))

    @staticmethod
    def _reasons(g: dict[str, Any]) -> int:
        reasons = int(g.get("clock_event_reasons", 0))
        if g["locked_mhz"] and g.get("clock_cap_mhz") is not None and g["clock_cap_mhz"] < g["locked_mhz"][1]:
            reasons |= pynvml.nvmlClocksEventReasonSwPowerCap
        return reasons

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: FakeHandle) -> int:
        return int(
            self._call("nvmlDeviceGetCurrentClocksEventReasons", h, [], lambda st: self._reasons(st["gpus"][h.index]))
        )

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: FakeHandle) -> int:
        """The pre-535 name of the same query."""
        return int(
            self._call(
                "nvmlDeviceGetCurrentClocksThrottleReasons", h, [], lambda st: self._reasons(st["gpus"][h.index])
            )
        )
