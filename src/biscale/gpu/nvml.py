"""NVML backend: loading the binding, choosing GPUs, and the NVML clock actuator.

Why one module object everywhere: the real ``pynvml`` binding and the fake (:mod:`biscale.gpu.fake_nvml`) expose
the same functions and :class:`pynvml.NVMLError`; every class here takes the module as ``nvml`` so the code that
runs in CI on the fake is the code that runs on a GPU.

GPU ids in this module are **NVML indices** (``nvidia-smi`` order, PCI bus order). Use :func:`resolve_gpus` to
turn indices, UUIDs, ``cuda:N`` or ``CUDA_VISIBLE_DEVICES`` into NVML indices.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from biscale.actuator import GOVERNOR_MHZ, ClockActuator, LiveClockActuator
from biscale.errors import ControlSuspendedError, InputError, NoGpuError, NvmlCallError, PermissionRequiredError
from biscale.gpu.failsafe import Watchdog
from biscale.gpu.fake_nvml import FAKE_ENV, FakeNvml

log = logging.getLogger("biscale.gpu")

PERMISSION_HINT = (
    "setting GPU clocks needs root or the CAP_SYS_ADMIN capability (run with sudo, or grant it to the process); "
    "read-only commands such as 'biscale gpu status' work without it"
)


# --------------------------------------------------------------------------------------------------- loading
def load_nvml() -> Any:
    """The NVML module to use: the fake when ``BISCALE_FAKE_NVML`` is set, else the real ``pynvml`` binding."""
    path = os.environ.get(FAKE_ENV)
    if path:
        return FakeNvml(path)
    try:
        import pynvml
    except ImportError as err:  # pragma: no cover - nvidia-ml-py is a dependency
        raise NoGpuError("the nvidia-ml-py package (pynvml) is not installed") from err
    return pynvml


def error_code(nvml: Any, err: BaseException) -> int | None:
    """The NVML return code of ``err``, or ``None`` if it is not an NVML error."""
    return getattr(err, "value", None) if isinstance(err, nvml.NVMLError) else None


def error_name(nvml: Any, code: int | None) -> str:
    """``NVML_ERROR_NO_PERMISSION`` etc. for a code (for log lines and messages)."""
    for name in dir(nvml):
        if name.startswith("NVML_ERROR_") and getattr(nvml, name) == code:
            return name
    return f"NVML error {code}"


_NO_GPU_CODES = ("NVML_ERROR_LIBRARY_NOT_FOUND", "NVML_ERROR_DRIVER_NOT_LOADED", "NVML_ERROR_FUNCTION_NOT_FOUND")


def nvml_init(nvml: Any) -> None:
    """``nvmlInit`` with "no NVML library / driver / GPU" mapped to :class:`NoGpuError`."""
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as err:
        code = error_code(nvml, err)
        if code in {getattr(nvml, n) for n in _NO_GPU_CODES}:
            raise NoGpuError(
                f"no NVIDIA driver or NVML library found ({err}); a GPU is needed for this command"
            ) from err
        if code == nvml.NVML_ERROR_NO_PERMISSION:
            raise PermissionRequiredError(f"NVML refused to initialise: {PERMISSION_HINT}") from err
        raise NoGpuError(f"NVML failed to initialise: {err}") from err
    try:
        count = int(nvml.nvmlDeviceGetCount())
    except nvml.NVMLError as err:
        nvml.nvmlShutdown()
        raise NoGpuError(f"NVML could not count GPUs: {err}") from err
    if count == 0:
        nvml.nvmlShutdown()
        raise NoGpuError("NVML found no GPU on this machine")


# ------------------------------------------------------------------------------------------------- selection
@dataclass(frozen=True)
class GpuInfo:
    """Identity of one GPU as NVML sees it."""

    index: int
    uuid: str
    name: str


def list_gpus(nvml: Any) -> list[GpuInfo]:
    """All GPUs, in NVML index order (NVML must be initialised)."""
    out = []
    for i in range(int(nvml.nvmlDeviceGetCount())):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        out.append(GpuInfo(i, _text(nvml.nvmlDeviceGetUUID(h)), _text(nvml.nvmlDeviceGetName(h))))
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _match_uuid(gpus: Sequence[GpuInfo], token: str, *, what: str) -> GpuInfo:
    hits = [g for g in gpus if g.uuid.lower().startswith(token.lower())]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise InputError(f"{what}: no GPU has UUID {token!r} (known: {', '.join(g.uuid for g in gpus)})")
    raise InputError(f"{what}: UUID prefix {token!r} matches {len(hits)} GPUs; give more characters")


def cuda_visible_gpus(gpus: Sequence[GpuInfo], value: str) -> list[GpuInfo]:
    """GPUs visible to CUDA under ``CUDA_VISIBLE_DEVICES=value``, in CUDA ordinal order.

    Entries are NVML-order integers (this assumes ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; CUDA's default order,
    fastest first, can differ on mixed machines, so prefer UUIDs) or ``GPU-`` UUIDs / unique UUID prefixes.
    As CUDA does, parsing stops at the first invalid entry. MIG instances are refused (clocks are per GPU).
    """
    out: list[GpuInfo] = []
    for raw in value.split(","):
        tok = raw.strip()
        if tok.upper().startswith("MIG-"):
            raise InputError(
                f"CUDA_VISIBLE_DEVICES entry {tok!r}: MIG instances are not supported (clocks are per GPU)"
            )
        if tok.upper().startswith("GPU-"):
            try:
                g = _match_uuid(gpus, tok, what="CUDA_VISIBLE_DEVICES")
            except InputError:
                log.warning("CUDA_VISIBLE_DEVICES: %r matches no single GPU; later entries ignored (as CUDA does)", tok)
                break
        elif tok.isdigit() and int(tok) < len(gpus):
            g = gpus[int(tok)]
        else:
            if tok:
                log.warning("CUDA_VISIBLE_DEVICES: invalid entry %r; later entries ignored (as CUDA does)", tok)
            break
        if g not in out:
            out.append(g)
    return out


def resolve_gpus(nvml: Any, spec: str | None = None, *, env: Mapping[str, str] | None = None) -> list[int]:
    """NVML indices for a GPU selection (NVML must be initialised).

    ``spec``: ``None`` / ``""`` → the GPUs in ``CUDA_VISIBLE_DEVICES`` if it is set, else all; ``"all"``;
    or a comma list mixing NVML indices (``0``), UUIDs or unique UUID prefixes (``GPU-8932f937``) and CUDA
    ordinals (``cuda:0``, mapped through ``CUDA_VISIBLE_DEVICES`` by UUID, since NVML ignores that variable).
    """
    environ = os.environ if env is None else env
    gpus = list_gpus(nvml)
    cvd = environ.get("CUDA_VISIBLE_DEVICES")
    visible = cuda_visible_gpus(gpus, cvd) if cvd is not None else list(gpus)
    text = (spec or "").strip()
    if not text:
        if not visible:
            raise InputError("CUDA_VISIBLE_DEVICES hides every GPU", field="--gpus")
        return [g.index for g in visible]
    if text.lower() == "all":
        return [g.index for g in gpus]
    out: list[int] = []
    for raw in text.split(","):
        tok = raw.strip()
        if not tok:
            raise InputError(f"empty entry in GPU list {text!r}", field="--gpus")
        if tok.lower().startswith("cuda:"):
            n = tok[5:]
            if not n.isdigit() or int(n) >= len(visible):
                raise InputError(
                    f"{tok!r} is not a visible CUDA device (CUDA_VISIBLE_DEVICES={cvd!r}, {len(visible)} visible)",
                    field="--gpus",
                )
            idx = visible[int(n)].index
        elif tok.upper().startswith("GPU-"):
            idx = _match_uuid(gpus, tok, what="--gpus").index
        elif tok.isdigit():
            idx = int(tok)
            if idx >= len(gpus):
                raise InputError(f"GPU index {idx} does not exist (this machine has {len(gpus)} GPUs)", field="--gpus")
        else:
            raise InputError(f"{tok!r} is not a GPU index, UUID or cuda:N", field="--gpus")
        if idx not in out:
            out.append(idx)
    return out


# -------------------------------------------------------------------------------------------------- actuator
class ActuatorObserver(Protocol):
    """What the actuator reports to (the Prometheus exporter implements it)."""

    def record_switch(self, gpu: int, clock_mhz: int) -> None: ...

    def record_restore(self, gpu: int, reason: str) -> None: ...


@dataclass(frozen=True)
class ClockReadback:
    """What a GPU actually runs at, read back after a request."""

    gpu: int
    #: Clock this actuator locked the GPU to, MHz (``None``: default governor).
    requested_mhz: int | None
    #: Current SM clock reported by NVML, MHz (below the request when the GPU throttles).
    applied_mhz: int
    #: NVML clock-event (throttle) reason bitmask.
    reasons: int
    #: Names of the set reason bits (e.g. ``SwPowerCap``, ``HwThermalSlowdown``).
    reason_names: tuple[str, ...]


_REASON_TABLES: dict[int, tuple[tuple[str, int], ...]] = {}


def _reason_table(nvml: Any) -> tuple[tuple[str, int], ...]:
    """(name, bit) of every single-bit clock-event reason the module defines (computed once per module)."""
    table = _REASON_TABLES.get(id(nvml))
    if table is None:
        prefix = "nvmlClocksEventReason"
        rows = []
        for attr in sorted(dir(nvml)):
            if attr.startswith(prefix) and attr[len(prefix) :] not in ("All", "None", "UserDefinedClocks"):
                bit = getattr(nvml, attr)
                if isinstance(bit, int) and bit and bit & (bit - 1) == 0:
                    rows.append((attr[len(prefix) :], bit))
        table = _REASON_TABLES[id(nvml)] = tuple(rows)
    return table


def reason_names(nvml: Any, mask: int) -> tuple[str, ...]:
    """Decode a clock-event reason bitmask into names such as ``SwPowerCap``."""
    return tuple(name for name, bit in _reason_table(nvml) if mask & bit)


def nearest_clocks(supported: Sequence[int], mhz: int) -> tuple[int, ...]:
    """The supported clocks just below and just above ``mhz`` (one or two values)."""
    clocks = sorted(supported)
    i = bisect.bisect_left(clocks, mhz)
    return tuple(clocks[j] for j in (i - 1, i) if 0 <= j < len(clocks))


class NvmlActuator(ClockActuator, LiveClockActuator):
    """Locks SM clocks through NVML with dwell, retries, read-back, non-blocking mode and fail-safe restore.

    * ``set_clock`` locks every GPU of the group in parallel (``nvmlDeviceSetGpuLockedClocks(h, f, f)``);
      a repeat of the current clock is a no-op; a switch sooner than ``min_dwell_s`` after the previous one
      waits out the dwell. Clocks outside the supported list raise :class:`InputError` (a ``ValueError``).
    * ``request_clock`` is the non-blocking form: a background thread applies the most recent request per
      group and drops stale ones. It never raises for hardware trouble, so serving never waits on it.
    * An NVML call is retried ``retries`` times; if it still fails the actuator resets every GPU it
      locked, suspends control (``suspended_reason``) and raises :class:`ControlSuspendedError`.
      ``NO_PERMISSION`` raises :class:`PermissionRequiredError` at once.
    * ``watchdog_s``: restore and suspend when :meth:`heartbeat` is not called for that long (an idle engine sends
      none: :meth:`rearm` ends that suspension at the next heartbeat; an NVML error's after ``rearm_after_s``).
    * Only ``nvmlDeviceSetGpuLockedClocks`` / ``nvmlDeviceResetGpuLockedClocks`` change state: power limits,
      persistence and compute mode are never touched.
    """

    #: Codes that retrying cannot fix.
    _FINAL = (
        "NVML_ERROR_NO_PERMISSION",
        "NVML_ERROR_INVALID_ARGUMENT",
        "NVML_ERROR_NOT_SUPPORTED",
        "NVML_ERROR_FUNCTION_NOT_FOUND",
        "NVML_ERROR_LIBRARY_NOT_FOUND",
        "NVML_ERROR_GPU_IS_LOST",
        "NVML_ERROR_UNINITIALIZED",
    )

    def __init__(
        self,
        nvml: Any | None = None,
        gpus: Sequence[int] | None = None,
        *,
        min_dwell_s: float = 0.0,
        retries: int = 2,
        retry_delay_s: float = 0.01,
        watchdog_s: float | None = None,
        observer: ActuatorObserver | None = None,
        max_workers: int | None = None,
        rearm_after_s: float = 60.0,
    ) -> None:
        if min_dwell_s < 0 or retries < 0 or retry_delay_s < 0:
            raise ValueError("min_dwell_s, retries and retry_delay_s must be >= 0")
        self.nvml = load_nvml() if nvml is None else nvml
        nvml_init(self.nvml)
        self._open = True
        try:
            count = int(self.nvml.nvmlDeviceGetCount())
            indices = list(range(count)) if gpus is None else [int(g) for g in gpus]
            for g in indices:
                if not 0 <= g < count:
                    raise InputError(f"GPU index {g} does not exist (this machine has {count} GPUs)", field="gpus")
            self._handles = {g: self.nvml.nvmlDeviceGetHandleByIndex(g) for g in indices}
            self.uuids = {g: _text(self.nvml.nvmlDeviceGetUUID(h)) for g, h in self._handles.items()}
        except BaseException as err:
            self._shutdown_quietly()
            if isinstance(err, self.nvml.NVMLError):
                raise NoGpuError(f"NVML could not open the GPUs: {err}") from err
            raise
        self.gpus: tuple[int, ...] = tuple(indices)
        self.min_dwell_s = float(min_dwell_s)
        self.retries = int(retries)
        self.retry_delay_s = float(retry_delay_s)
        self.observer = observer
        self._final = {getattr(self.nvml, n) for n in self._FINAL if hasattr(self.nvml, n)}
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=max_workers or max(1, len(indices)), thread_name_prefix="nvml")
        self._inflight: set[Future[Any]] = set()
        self._supported: dict[int, tuple[int, ...]] = {}
        self._group_supported: dict[tuple[int, ...], tuple[tuple[int, ...], frozenset[int]]] = {}
        self._requested: dict[int, int | None] = dict.fromkeys(indices)
        self._maybe_locked: set[int] = set()
        self._last_switch: dict[int, float] = {}
        self.suspended_reason: str | None = None
        self.suspensions = 0
        self.rearm_after_s = float(rearm_after_s)
        self._suspended_at = 0.0
        self.switches = 0
        self.restores: list[tuple[int, str]] = []
        # non-blocking mode
        self._cond = threading.Condition()
        self._pending: dict[tuple[int, ...], int] = {}
        self._busy = False
        self._worker: threading.Thread | None = None
        self._stopping = False
        self.requests_dropped = 0
        self.requests_applied = 0
        self._watchdog = Watchdog(self._on_watchdog, watchdog_s) if watchdog_s is not None else None

    @classmethod
    def for_selection(cls, spec: str | None = None, nvml: Any | None = None, **kwargs: Any) -> NvmlActuator:
        """An actuator for the GPUs named by ``spec`` (indices, UUIDs, ``cuda:N``; see :func:`resolve_gpus`)."""
        module = load_nvml() if nvml is None else nvml
        nvml_init(module)
        try:
            gpus = resolve_gpus(module, spec)
        finally:
            module.nvmlShutdown()
        return cls(module, gpus, **kwargs)

    # ------------------------------------------------------------------------------------------- helpers
    def _check_gpus(self, gpus: Sequence[int]) -> list[int]:
        out = [int(g) for g in gpus]
        if not out:
            raise ValueError("empty GPU group")
        for g in out:
            if g not in self._handles:
                raise ValueError(f"GPU {g} is not managed by this actuator (managed: {list(self.gpus)})")
        return out

    def _call(self, fn: str, gpu: int, *args: Any) -> Any:
        """One NVML call with bounded retries; NO_PERMISSION → PermissionRequiredError."""
        attempts = 0
        while True:
            attempts += 1
            try:
                return getattr(self.nvml, fn)(self._handles[gpu], *args)
            except self.nvml.NVMLError as err:
                code = error_code(self.nvml, err)
                if code == self.nvml.NVML_ERROR_NO_PERMISSION:
                    raise PermissionRequiredError(f"{fn} on GPU {gpu} was refused: {PERMISSION_HINT}") from err
                if code in self._final or attempts > self.retries:
                    raise NvmlCallError(fn, gpu, code, error_name(self.nvml, code), attempts) from err
                log.warning("%s on GPU %d failed (%s); retry %d/%d", fn, gpu, err, attempts, self.retries)
                time.sleep(self.retry_delay_s * 2 ** (attempts - 1))

    def _parallel(self, fn: Callable[[int], Any], gpus: Sequence[int]) -> dict[int, BaseException | None]:
        """Run ``fn(gpu)`` for every GPU at once; returns each GPU's exception (or None).

        Falls back to one GPU after the other when the thread pool is gone: at interpreter exit the
        ``concurrent.futures`` pools shut down before ``atexit`` callbacks run, and restore must still work.
        """
        futures: dict[int, Future[Any]] = {}
        if len(gpus) > 1 and self._open:
            try:
                for g in gpus:
                    futures[g] = self._pool.submit(fn, g)
            except RuntimeError:  # "cannot schedule new futures after (interpreter) shutdown"
                pass
        seq: dict[int, BaseException | None] = {}
        for g in gpus:
            if g in futures:
                continue
            try:
                fn(g)
                seq[g] = None
            except Exception as err:
                seq[g] = err
        if not futures:
            return seq
        self._inflight.update(futures.values())
        out: dict[int, BaseException | None] = dict(seq)
        for g, fut in futures.items():
            try:
                fut.result()
                out[g] = None
            except Exception as err:
                out[g] = err
            finally:
                self._inflight.discard(fut)
        return out

    # ----------------------------------------------------------------------------------- ClockActuator
    def supported_clocks_mhz(self, gpus: Sequence[int]) -> tuple[int, ...]:
        """SM clocks every GPU of the group supports (at its highest memory clock), ascending, MHz."""
        key = tuple(sorted(self._check_gpus(gpus)))
        cached = self._group_supported.get(key)
        if cached is not None:
            return cached[0]
        common: set[int] | None = None
        for g in key:
            if g not in self._supported:
                mem = max(int(m) for m in self._call("nvmlDeviceGetSupportedMemoryClocks", g))
                clocks = self._call("nvmlDeviceGetSupportedGraphicsClocks", g, mem)
                self._supported[g] = tuple(sorted({int(c) for c in clocks}))
            common = set(self._supported[g]) if common is None else common & set(self._supported[g])
        result = tuple(sorted(common or ()))
        self._group_supported[key] = (result, frozenset(result))
        return result

    def check_clock(self, gpus: Sequence[int], sm_clock_mhz: int) -> None:
        """Raise :class:`InputError` naming the nearest supported clocks if ``sm_clock_mhz`` is not supported."""
        key = tuple(sorted(int(g) for g in gpus))
        cached = self._group_supported.get(key)
        if cached is not None and int(sm_clock_mhz) in cached[1]:
            return  # hot path: one dict and one set lookup
        supported = self.supported_clocks_mhz(gpus)
        if int(sm_clock_mhz) not in supported:
            near = ", ".join(str(c) for c in nearest_clocks(supported, int(sm_clock_mhz)))
            rng = f"{supported[0]}-{supported[-1]} MHz" if supported else "none"
            raise InputError(
                f"SM clock {sm_clock_mhz} MHz is not supported by GPU(s) {', '.join(map(str, gpus))} "
                f"(nearest supported: {near} MHz; range {rng})"
            )

    def set_clock(self, gpus: Sequence[int], sm_clock_mhz: int) -> None:
        """Lock all GPUs of the group to ``sm_clock_mhz`` in parallel (blocking; see class doc)."""
        group = self._check_gpus(gpus)
        mhz = int(sm_clock_mhz)
        self.check_clock(group, mhz)
        with self._lock:
            if not self._open:
                raise ControlSuspendedError("actuator is closed")
            if self.suspended_reason is not None:
                raise ControlSuspendedError(f"clock control is suspended: {self.suspended_reason}")
            targets = [g for g in group if self._requested.get(g) != mhz]
            if not targets:
                return
            if self.min_dwell_s > 0:
                wait = self.dwell_remaining_s(targets)
                if wait > 0:
                    time.sleep(wait)
            self._maybe_locked.update(targets)
            results = self._parallel(lambda g: self._call("nvmlDeviceSetGpuLockedClocks", g, mhz, mhz), targets)
            now = time.monotonic()
            for g, err in results.items():
                if err is None:
                    self._requested[g] = mhz
                    self._last_switch[g] = now
                    self.switches += 1
                    if self.observer is not None:
                        self.observer.record_switch(g, mhz)
            perm = [e for e in results.values() if isinstance(e, PermissionRequiredError)]
            for g, err in results.items():
                if isinstance(err, PermissionRequiredError) and self._requested.get(g) is None:
                    self._maybe_locked.discard(g)  # refused: the GPU was not changed
            if perm:
                self._mark_suspended(f"permission: {perm[0]}")
                self.restore("permission")
                raise perm[0]
            failed = [e for e in results.values() if e is not None]
            if failed:
                reason = f"nvml_error: {failed[0]}"
                self._suspend(reason)
                raise ControlSuspendedError(f"{reason}; default clocks restored and control suspended") from failed[0]

    def current_clock_mhz(self, gpus: Sequence[int]) -> dict[int, int | None]:
        """The clock this actuator locked each GPU to (``None``: default governor).

        NVML has no query for another process's lock; :meth:`read_back` gives the clock the GPU runs at.
        """
        with self._lock:
            return {g: self._requested.get(g) for g in self._check_gpus(gpus)}

    def locked_clock_nowait(self, gpu: int) -> int | None:
        """The clock this actuator last locked ``gpu`` to (``None``: default governor), without waiting for a switch
        in progress (``current_clock_mhz`` takes the lock a switch holds): what a serving loop's hot path reads."""
        return self._requested.get(int(gpu))

    def reset(self, gpus: Sequence[int]) -> None:
        """Unlock ``gpus`` (``nvmlDeviceResetGpuLockedClocks``); raises after trying all if any failed."""
        self._reset(self._check_gpus(gpus), "reset", raise_errors=True)

    # -------------------------------------------------------------------------------------- extensions
    def dwell_remaining_s(self, gpus: Sequence[int]) -> float:
        """Seconds until every GPU of the group may switch again (0 when free)."""
        if self.min_dwell_s <= 0:
            return 0.0
        last = max((self._last_switch.get(g, -1e18) for g in gpus), default=-1e18)
        return max(0.0, last + self.min_dwell_s - time.monotonic())

    def read_back(self, gpus: Sequence[int] | None = None) -> list[ClockReadback]:
        """Current SM clock and clock-event (throttle) reasons of each GPU."""
        out = []
        for g in self._check_gpus(self.gpus if gpus is None else gpus):
            applied = int(self._call("nvmlDeviceGetClockInfo", g, self.nvml.NVML_CLOCK_SM))
            try:
                mask = int(self._call("nvmlDeviceGetCurrentClocksEventReasons", g))
            except NvmlCallError:  # drivers before 535 only have the older name
                mask = int(self._call("nvmlDeviceGetCurrentClocksThrottleReasons", g))
            out.append(ClockReadback(g, self._requested.get(g), applied, mask, reason_names(self.nvml, mask)))
        return out

    def _reset(self, gpus: Sequence[int], reason: str, *, raise_errors: bool) -> list[int]:
        with self._lock:
            for fut in list(self._inflight):  # a set still in flight must not land after our reset
                fut.exception(timeout=5)
            results = self._parallel(lambda g: self._call("nvmlDeviceResetGpuLockedClocks", g), list(gpus))
            ok = []
            for g, err in results.items():
                if err is None:
                    ok.append(g)
                    self._requested[g] = None
                    self._maybe_locked.discard(g)
                    self.restores.append((g, reason))
                    if self.observer is not None:
                        self.observer.record_restore(g, reason)
            errors = [e for e in results.values() if e is not None]
            perm = [e for e in errors if isinstance(e, PermissionRequiredError)]
            raised = (perm or errors)[0] if errors and raise_errors else None
            for g, err in results.items():  # what is raised is the caller's to report (a permission error: all of them)
                same_cause = err is raised or (isinstance(raised, PermissionRequiredError) and err in perm)
                if err is not None and not same_cause:
                    log.error("restore of GPU %d (%s) failed: %s; it may still be locked", g, reason, err)
            if raised is not None:
                raise raised
            return ok

    def restore(self, reason: str = "restore") -> list[int]:
        """Reset every GPU this actuator may have locked; idempotent, never raises. Returns GPUs reset."""
        with self._lock:
            targets = sorted(self._maybe_locked)
            if not targets:
                return []
            log.info("restoring default clocks on GPU(s) %s (%s)", targets, reason)
            try:
                return self._reset(targets, reason, raise_errors=False)
            except Exception:  # pragma: no cover - _reset collects errors itself
                log.exception("restore failed")
                return []

    def _suspend(self, reason: str) -> None:
        log.error("suspending clock control: %s; restoring default clocks", reason)
        self._mark_suspended(reason)
        self.restore("nvml_error" if reason.startswith("nvml_error") else reason.split(":")[0])

    def _mark_suspended(self, reason: str) -> None:
        with self._lock:
            if self.suspended_reason is None:
                self.suspensions += 1
                self._suspended_at = time.monotonic()
            self.suspended_reason = reason

    def resume(self) -> None:
        """Allow clock control again after a suspension (the operator fixed the cause)."""
        with self._lock:
            self.suspended_reason = None

    def rearm(self) -> bool:
        """End the suspension if its cause cleared: a watchdog park at once (the caller's heartbeat is back), an NVML
        error once ``rearm_after_s`` passed (the next failure suspends again); a refused permission never."""
        with self._lock:
            reason = self.suspended_reason
            if reason is None:
                return True
            if not self._open or reason.startswith("permission"):
                return False
            if not reason.startswith("watchdog") and time.monotonic() - self._suspended_at < self.rearm_after_s:
                return False
            log.info("clock control re-armed (it was suspended: %s)", reason)
            self.suspended_reason = None
            return True

    @property
    def locked_gpus(self) -> list[int]:
        """GPUs this actuator may have left locked (empty once every restore succeeded)."""
        return sorted(self._maybe_locked)

    @property
    def suspended(self) -> bool:
        """True while control is suspended (every set is refused, GPUs are at default clocks)."""
        return self.suspended_reason is not None

    # ---------------------------------------------------------------------------------------- watchdog
    def heartbeat(self) -> None:
        """Tell the watchdog the controller is alive (no-op without a watchdog)."""
        if self._watchdog is not None:
            self._watchdog.heartbeat()

    def _on_watchdog(self, reason: str) -> None:
        with self._lock:
            if self._maybe_locked:
                self._mark_suspended(f"watchdog: no heartbeat within {self._watchdog_timeout()} s")
            self.restore(reason)

    def _watchdog_timeout(self) -> float | None:
        return None if self._watchdog is None else self._watchdog.timeout_s

    # ------------------------------------------------------------------------------------ non-blocking
    def request_clock(self, gpus: Sequence[int], sm_clock_mhz: int) -> None:
        """Queue a clock for the group and return at once; a newer request for the group replaces it.

        ``sm_clock_mhz = 0`` (a controller's ``GOVERNOR_MHZ``) queues a return to the default governor: it goes
        through the same queue, so it can neither overtake nor be overtaken by a lock requested before it.
        """
        group = tuple(sorted(self._check_gpus(gpus)))
        if sm_clock_mhz != GOVERNOR_MHZ:
            self.check_clock(group, sm_clock_mhz)
        if self.suspended_reason is not None:  # already logged when it was suspended
            self.requests_dropped += 1
            return
        with self._cond:
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="biscale-gpu-actuator", daemon=True)
                self._worker.start()
            if group in self._pending:
                self.requests_dropped += 1
            self._pending[group] = int(sm_clock_mhz)
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                # Wait out the dwell of the first group; newer requests keep replacing the pending one.
                group = next(iter(self._pending))
                wait = self.dwell_remaining_s(group)
                if wait > 0:
                    self._cond.wait(timeout=wait)
                    continue
                mhz = self._pending.pop(group)
                self._busy = True
            try:
                if mhz == GOVERNOR_MHZ:
                    self._reset(group, "governor", raise_errors=True)
                else:
                    self.set_clock(group, mhz)
                self.requests_applied += 1
            except Exception as err:  # logged; serving must never depend on the controller
                log.error("non-blocking clock request %s MHz for GPUs %s failed: %s", mhz, list(group), err)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued request was applied (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(timeout=left)
        return True

    # ------------------------------------------------------------------------------------------ closing
    def close(self, reason: str = "close") -> None:
        """Stop the worker and the watchdog, restore default clocks, shut NVML down (idempotent)."""
        if not self._open:
            return
        with self._cond:
            self._stopping = True
            self._pending.clear()
            self._cond.notify_all()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=10)
        if self._watchdog is not None:
            self._watchdog.stop()
        self.restore(reason)
        with self._lock:
            self._open = False
            self._pool.shutdown(wait=True)
            self._shutdown_quietly()

    def _shutdown_quietly(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError as err:
            log.warning("nvmlShutdown failed: %s", err)

    def __enter__(self) -> NvmlActuator:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close("exception" if exc_type is not None else "exit")
