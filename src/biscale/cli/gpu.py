"""``biscale gpu ...``: inspect GPUs, lock / reset SM clocks safely, watch them, export Prometheus metrics.

Set ``BISCALE_FAKE_NVML=<state.json>`` to run every command on the fake NVML (tests, dry runs).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any

import typer

from biscale.cli.common import console, print_json, print_table
from biscale.errors import ControlSuspendedError, InputError, NoGpuError

gpu_app = typer.Typer(help="Real-GPU control plane: status, clock lock/reset, live watch, Prometheus exporter.")

#: Environment variable holding the exporter's bearer token (not an option: a command line is visible to every user).
TOKEN_ENV = "BISCALE_METRICS_TOKEN"
GPUS_HELP = "GPUs: NVML indices, UUIDs (or unique prefixes), cuda:N, or 'all'; default: CUDA_VISIBLE_DEVICES or all."


class _Stop(Exception):
    """SIGTERM reached the command: end the hold loop like Ctrl-C."""


@contextmanager
def _nvml_session(spec: str | None) -> Iterator[tuple[Any, list[int]]]:
    from biscale.gpu.nvml import load_nvml, nvml_init, resolve_gpus

    nvml = load_nvml()
    nvml_init(nvml)
    try:
        yield nvml, resolve_gpus(nvml, spec)
    except nvml.NVMLError as err:  # e.g. a GPU fell off the bus mid-query: one line, exit 2
        raise NoGpuError(f"NVML query failed: {err}") from err
    finally:
        with suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def _say(message: str) -> None:
    """One unwrapped line on stderr (rich would wrap long lines at the terminal width)."""
    print(message, file=sys.stderr, flush=True)


def _check_duration(duration_s: float | None) -> None:
    if duration_s is not None and not duration_s >= 0:  # NaN too (it would end the hold at once)
        raise InputError(f"must be >= 0 s (inf: until interrupted), got {duration_s}", field="--duration-s")


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="biscale: %(message)s", stream=sys.stderr)


@gpu_app.command("status")
def status(
    gpus: str = typer.Option(None, "--gpus", help=GPUS_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Show GPUs, clocks, supported clock range, power, energy counter and clock-event (throttle) reasons."""
    from biscale.gpu.status import gpu_status

    with _nvml_session(gpus) as (nvml, indices):
        try:
            driver = nvml.nvmlSystemGetDriverVersion()
        except nvml.NVMLError:
            driver = None
        rows = [gpu_status(nvml, i) for i in indices]
    if as_json:
        print_json({"driver_version": driver, "gpus_total": len(rows), "gpus": rows})
        return
    print_table(
        f"GPUs (driver {driver})",
        ["gpu", "SM MHz", "supported MHz", "power W", "energy J", "clock-event reasons", "name"],
        [
            [
                r["gpu"],
                r["sm_clock_mhz"],
                "{}-{} ({})".format(
                    r["supported_min_sm_clock_mhz"], r["supported_max_sm_clock_mhz"], r["supported_sm_clocks_count"]
                ),
                r["power_w"],
                r["energy_counter_j"],
                ", ".join(r["clock_event_reasons"] or []) or "-",
                r["name"],
            ]
            for r in rows
        ],
    )


@gpu_app.command("lock")
def lock(
    clock: int = typer.Option(..., "--clock", help="SM clock to lock, MHz (must be a supported clock)."),
    gpus: str = typer.Option(None, "--gpus", help=GPUS_HELP),
    guard: bool = typer.Option(False, "--guard", help="Start a guard process that resets clocks if this one dies."),
    watchdog_s: float = typer.Option(5.0, "--watchdog-s", help="Restore if the hold loop stalls this long, s."),
    duration_s: float = typer.Option(None, "--duration-s", help="Hold this long, s (default: until interrupted)."),
    metrics_port: int = typer.Option(None, "--metrics-port", help="Also serve Prometheus metrics on 127.0.0.1:PORT."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout when the hold ends."),
) -> None:
    """Lock the SM clock of GPUs until interrupted (Ctrl-C / SIGTERM), then restore the default governor."""
    from biscale.gpu.energy import EnergyMeter
    from biscale.gpu.exporter import ControlPlaneMetrics
    from biscale.gpu.failsafe import FailSafe
    from biscale.gpu.guard import Guard
    from biscale.gpu.nvml import NvmlActuator

    _setup_logging()
    if not (math.isfinite(watchdog_s) and watchdog_s > 0):
        raise InputError(f"must be > 0 s and finite, got {watchdog_s}", field="--watchdog-s")
    _check_duration(duration_s)
    if metrics_port is not None and not 0 <= metrics_port <= 65535:
        raise InputError(f"{metrics_port} is not a TCP port", field="--metrics-port")
    with _nvml_session(gpus) as (nvml, indices):
        pass
    metrics = ControlPlaneMetrics() if metrics_port is not None else None
    act = NvmlActuator(nvml, indices, watchdog_s=watchdog_s, observer=metrics)
    meter: EnergyMeter | None = None
    try:
        act.check_clock(indices, clock)  # before anything is started: bad input is exit 2, nothing touched
        if metrics is not None and metrics_port is not None:
            meter = EnergyMeter(nvml, indices)
            metrics.attach_nvml(meter)
            bound = metrics.serve(metrics_port)
            _say(f"serving Prometheus metrics on http://127.0.0.1:{bound}/metrics")
    except BaseException as err:
        act.close("exit")
        if meter is not None:
            meter.close()
        if isinstance(err, OSError):
            raise InputError(f"cannot listen on port {metrics_port}: {err}", field="--metrics-port") from err
        raise
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _on_term(signum: int, frame: FrameType | None) -> None:
        raise _Stop()

    guard_proc: Guard | None = None
    interrupted = None
    t0 = time.monotonic()
    readback: list[Any] = []
    signal.signal(signal.SIGTERM, _on_term)
    failsafe = FailSafe(act.restore).install()  # restores first, then chains to _on_term / KeyboardInterrupt
    try:
        if guard:
            try:
                guard_proc = Guard.start([act.uuids[g] for g in indices])
            except RuntimeError as err:  # refuse to lock unguarded when a guard was asked for
                _say(f"biscale: error: {err}")
                raise typer.Exit(1) from err
            _say(f"guard process {guard_proc.pid} watches GPU(s) {', '.join(map(str, indices))}")
        act.set_clock(indices, clock)
        readback = act.read_back(indices)
        applied = ", ".join(f"GPU {r.gpu}: {r.applied_mhz} MHz" for r in readback)
        _say(f"locked at {clock} MHz ({applied}); Ctrl-C or SIGTERM restores the default clocks")
        sys.stderr.flush()
        t0 = time.monotonic()
        while duration_s is None or time.monotonic() - t0 < duration_s:
            act.heartbeat()
            if act.suspended:
                raise ControlSuspendedError(f"clock control suspended: {act.suspended_reason}")
            time.sleep(0.1 if duration_s is None else min(0.1, max(0.0, duration_s - (time.monotonic() - t0))))
    except (KeyboardInterrupt, _Stop) as err:
        interrupted = "SIGINT" if isinstance(err, KeyboardInterrupt) else "SIGTERM"
    except ControlSuspendedError as err:
        _say(f"biscale: error: {err}")
        raise typer.Exit(1) from err
    finally:
        held_s = time.monotonic() - t0
        # A second signal must not interrupt the restore itself: ignore them until it is done.
        failsafe.uninstall()
        for sig in handlers:
            signal.signal(sig, signal.SIG_IGN)
        try:
            act.close("exit")
            if guard_proc is not None:
                if act.locked_gpus:  # our restore failed: let the guard try with its own retries
                    guard_proc.hand_over()
                else:
                    guard_proc.release()
            if metrics is not None:
                metrics.shutdown()
            if meter is not None:
                meter.close()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    reasons = sorted({r for _, r in act.restores})
    if act.locked_gpus:
        _say(f"biscale: warning: GPU(s) {act.locked_gpus} may still be locked; run 'biscale gpu reset'")
    else:
        _say(f"restored default clocks on GPU(s) {', '.join(map(str, indices))} ({', '.join(reasons)})")
    if as_json:
        print_json(
            {
                "requested_sm_clock_mhz": clock,
                "held_s": held_s,
                "interrupted_by": interrupted,
                "gpus": [
                    {
                        "gpu": r.gpu,
                        "uuid": act.uuids[r.gpu],
                        "applied_sm_clock_mhz": r.applied_mhz,
                        "clock_event_reasons": list(r.reason_names),
                    }
                    for r in readback
                ],
                "restores": [{"gpu": g, "reason": r} for g, r in act.restores],
                "guard_pid": None if guard_proc is None else guard_proc.pid,
            }
        )


@gpu_app.command("reset")
def reset(
    gpus: str = typer.Option(None, "--gpus", help=GPUS_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Return GPUs to the default clock governor (nvmlDeviceResetGpuLockedClocks); needs root."""
    from biscale.gpu.nvml import NvmlActuator

    with _nvml_session(gpus) as (nvml, indices):
        pass
    with NvmlActuator(nvml, indices) as act:
        act.reset(indices)
    if as_json:
        print_json({"reset_gpus": indices, "gpus_total": len(indices)})
    else:
        console.print(f"reset GPU(s) {', '.join(map(str, indices))} to the default clock governor")


def _watch_rows(nvml: Any, indices: list[int], energy: dict[int, float]) -> list[dict[str, Any]]:
    from biscale.gpu.status import gpu_status

    rows = []
    for i in indices:
        s = gpu_status(nvml, i)
        rows.append(
            {
                "gpu": i,
                "sm_clock_mhz": s["sm_clock_mhz"],
                "mem_clock_mhz": s["mem_clock_mhz"],
                "power_w": s["power_w"],
                "energy_j": energy.get(i),
                "clock_event_reasons": s["clock_event_reasons"],
            }
        )
    return rows


@gpu_app.command("watch")
def watch(
    gpus: str = typer.Option(None, "--gpus", help=GPUS_HELP),
    interval_s: float = typer.Option(1.0, "--interval-s", help="Refresh period, s."),
    count: int = typer.Option(None, "--count", help="Stop after this many refreshes (default: until Ctrl-C)."),
    as_json: bool = typer.Option(False, "--json", help="Collect the samples and print one JSON object at the end."),
) -> None:
    """A live table of SM clock, power, energy since start and clock-event reasons (read-only)."""
    from rich.live import Live
    from rich.table import Table

    from biscale.gpu.energy import EnergyMeter

    if not (math.isfinite(interval_s) and interval_s > 0):
        raise InputError(f"must be > 0 s and finite, got {interval_s}", field="--interval-s")
    if count is not None and count < 1:
        raise InputError("must be >= 1", field="--count")
    if as_json and count is not None:  # --json keeps every sample until the end
        from biscale.limits import MAX_WATCH_SAMPLES, check_count

        check_count(count, MAX_WATCH_SAMPLES, field="--count", what="samples kept for --json")
    with _nvml_session(gpus) as (nvml, indices):
        pass
    samples: list[dict[str, Any]] = []
    meter = EnergyMeter(nvml, indices)
    t0 = time.monotonic()

    def table(rows: list[dict[str, Any]]) -> Table:
        t = Table(title=f"biscale gpu watch (every {interval_s:g} s)")
        for col in ("gpu", "SM MHz", "mem MHz", "power W", "energy J", "reasons"):
            t.add_column(col)
        for r in rows:
            p = "-" if r["power_w"] is None else f"{r['power_w']:.1f}"
            e = "-" if r["energy_j"] is None else f"{r['energy_j']:.1f}"
            reasons = ",".join(r["clock_event_reasons"] or []) or "-"
            t.add_row(str(r["gpu"]), str(r["sm_clock_mhz"]), str(r["mem_clock_mhz"]), p, e, reasons)
        return t

    live = Live(console=console, auto_refresh=False) if (console.is_terminal and not as_json) else None
    try:
        if live is not None:
            live.start()
        n = 0
        while count is None or n < count:
            if n:
                time.sleep(interval_s)
            rows = _watch_rows(nvml, indices, meter.poll())
            if as_json:
                samples.append({"t_s": time.monotonic() - t0, "gpus": rows})
            n += 1
            if live is not None:
                live.update(table(rows), refresh=True)
            elif not as_json:
                console.print(table(rows))
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
        meter.close()
    if as_json:
        print_json({"interval_s": interval_s, "samples_total": len(samples), "samples": samples})


@gpu_app.command("export")
def export(
    port: int = typer.Option(9400, "--port", help="TCP port (0: pick a free one)."),
    addr: str = typer.Option("127.0.0.1", "--addr", help="Bind address (default loopback only)."),
    gpus: str = typer.Option(None, "--gpus", help=GPUS_HELP),
    duration_s: float = typer.Option(None, "--duration-s", help="Serve this long, s (default: until Ctrl-C)."),
) -> None:
    """Serve Prometheus metrics (SM clock, power, energy per GPU) over HTTP until interrupted.

    Only /metrics is answered; with the environment variable BISCALE_METRICS_TOKEN set, only to requests carrying
    'Authorization: Bearer <token>'.
    """
    from biscale.gpu.energy import EnergyMeter
    from biscale.gpu.exporter import ControlPlaneMetrics

    if not 0 <= port <= 65535:
        raise InputError(f"{port} is not a TCP port", field="--port")
    _check_duration(duration_s)
    with _nvml_session(gpus) as (nvml, indices):
        pass
    meter = EnergyMeter(nvml, indices)
    metrics = ControlPlaneMetrics()
    metrics.attach_nvml(meter)
    try:
        bound = metrics.serve(port, addr, os.environ.get(TOKEN_ENV) or None)
    except OSError as err:
        meter.close()
        field = "--addr" if isinstance(err, socket.gaierror) else "--port"  # a name that does not resolve
        raise InputError(f"cannot listen on {addr}:{port}: {err.strerror or err}", field=field) from err
    _say(f"serving Prometheus metrics on http://{addr}:{bound}/metrics")
    sys.stderr.flush()
    t0 = time.monotonic()
    try:
        while duration_s is None or time.monotonic() - t0 < duration_s:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        metrics.shutdown()
        meter.close()


def register(app: typer.Typer) -> None:
    """Add the ``gpu`` command group to the root app."""
    app.add_typer(gpu_app, name="gpu")
