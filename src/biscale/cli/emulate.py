"""``biscale emulate-engine``: an OpenAI-compatible engine on loopback, timed by the hardware model (no GPU)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import signal
import socket
import sys
from pathlib import Path

import typer

from biscale.cli.common import SLO_TPOT_HELP, SLO_TTFT_HELP, check_host, slo_ms
from biscale.errors import InputError


def register(app: typer.Typer) -> None:
    app.command("emulate-engine")(emulate_cmd)


def _check_tps(gpu: str, model: str, predictors: Path | None, tps: dict[str, int], role: str) -> None:
    """Each served phase's TP degree is one the hardware model and the predictors both have (named with the value)."""
    from biscale.hardware import get_hardware
    from biscale.predict import default_predictor, load_predictor

    hw_tps = tuple(getattr(get_hardware(gpu, model), "tp_degrees", ()))  # () when the model does not list them
    pred = load_predictor(predictors) if predictors is not None else default_predictor(gpu, model)
    for phase, tp in tps.items():
        if role not in (phase, "both"):
            continue
        field = f"{phase}-tp"
        if hw_tps and tp not in hw_tps:
            raise InputError(f"TP {tp} not available for {model} on {gpu} (valid: {list(hw_tps)})", field=field)
        if tp not in pred.tps(phase):
            have = ", ".join(str(t) for t in pred.tps(phase)) or "none"
            raise InputError(f"the predictors have no {phase} model for TP {tp} (they have: {have})", field=field)


def emulate_cmd(
    role: str = typer.Option("both", "--role", help="prefill, decode or both (one instance of each)."),
    port: int = typer.Option(8000, "--port", help="TCP port (0: pick a free one; the URL is printed)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (default loopback only)."),
    prefill_tp: int = typer.Option(4, "--prefill-tp", help="TP degree of the prefill instance."),
    decode_tp: int = typer.Option(4, "--decode-tp", help="TP degree of the decode instance."),
    controller: str = typer.Option("prefill=mpc,decode=slack", "--controller", help="Clock controllers per phase."),
    gpu: str = typer.Option("h100-sxm", "--gpu", help="GPU of the hardware model (and bundled predictor)."),
    model: str = typer.Option("llama-3.3-70b", "--model", help="LLM of the hardware model (and bundled predictor)."),
    served_model_name: str = typer.Option("biscale-emulated", "--served-model-name", help="Model id of the API."),
    predictors: Path | None = typer.Option(None, "--predictors", metavar="DIR", help="Predictor artifact."),
    slo_ttft_ms: float | None = typer.Option(None, "--slo-ttft-ms", help=SLO_TTFT_HELP),
    slo_tpot_ms: float | None = typer.Option(None, "--slo-tpot-ms", help=SLO_TPOT_HELP),
    speed: float = typer.Option(1.0, "--speed", help="Run this many times faster than real time."),
    duration_s: float | None = typer.Option(None, "--duration-s", help="Serve this long, s (default: until Ctrl-C)."),
) -> None:
    """Serve /v1/completions, /v1/chat/completions, /v1/models and /metrics with emulated GPUs."""
    from biscale.control.factory import parse_controller_spec
    from biscale.live.emulator import ROLES, EmulatorSettings, serve

    slo_ttft_ms, slo_tpot_ms = slo_ms(slo_ttft_ms, slo_tpot_ms)
    if role not in ROLES:
        raise InputError(f"unknown role {role!r} (expected prefill, decode or both)", field="role")
    if not 0 <= port <= 65535:
        raise InputError(f"not a TCP port: {port}", field="port")
    for name, v in (("speed", speed), ("slo-ttft-ms", slo_ttft_ms), ("slo-tpot-ms", slo_tpot_ms)):
        if not (math.isfinite(v) and v > 0):
            raise InputError(f"must be > 0, got {v}", field=name)
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s >= 0):
        raise InputError(f"must be a number of seconds >= 0, got {duration_s}", field="duration-s")
    check_host(host, "host")
    if not served_model_name.strip() or any(c.isspace() for c in served_model_name):
        raise InputError(
            f"not a model id: {served_model_name!r} (a non-empty name without spaces)", field="served-model-name"
        )
    _check_tps(gpu, model, predictors, {"prefill": prefill_tp, "decode": decode_tp}, role)
    settings = EmulatorSettings(
        role=role,
        gpu=gpu,
        model=model,
        model_name=served_model_name,
        prefill_tp=prefill_tp,
        decode_tp=decode_tp,
        controllers=parse_controller_spec(controller),
        slo_ttft_ms=slo_ttft_ms,
        slo_tpot_ms=slo_tpot_ms,
        speed=speed,
        predictors=None if predictors is None else str(predictors),
    )

    def ready(bound: int) -> None:
        print(f"emulated engine ({role}) listening on http://{host}:{bound}", flush=True)

    async def main() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            if task is not None:
                loop.add_signal_handler(sig, task.cancel)
        await serve(settings, port, host, duration_s, ready)

    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        try:
            asyncio.run(main())
        except OSError as err:
            # a name that does not resolve or an address this machine does not have is the host's fault; a port
            # in use or privileged is the port's
            blame = "host" if isinstance(err, socket.gaierror) or err.errno == errno.EADDRNOTAVAIL else "port"
            raise InputError(f"cannot listen on {host}:{port}: {err.strerror}", field=blame) from err
    sys.stdout.flush()
