"""CLI: ``biscale calibrate``, ``biscale hardware list`` and ``biscale hardware show``."""

from __future__ import annotations

from pathlib import Path

import typer

from biscale.cli.common import console, print_json, print_table
from biscale.errors import InputError

hardware_app = typer.Typer(help="Inspect the calibrated hardware models.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``calibrate`` and the ``hardware`` group to the root app."""
    app.command("calibrate")(calibrate)
    app.add_typer(hardware_app, name="hardware")


def calibrate(
    gpu: str = typer.Option("h100-sxm", "--gpu", help="GPU whose fitted constants are checked."),
    model: str = typer.Option("llama-3.3-70b", "--model", help="Model for the end-to-end and power checks."),
    out: Path = typer.Option(Path("calibration-out"), "--out", help="Directory for the predicted-vs-measured PNGs."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Compare the hardware model with the reference measurements; exit 1 if a tolerance is missed."""
    from biscale.hardware import calibration, get_hardware

    get_hardware(gpu, model)  # validates both names (InputError -> exit 2)
    if gpu != calibration.GPU:
        raise InputError(
            f"calibration data exist only for '{calibration.GPU}' (the other GPUs' constants are transferred from it)",
            field="gpu",
        )
    checks = calibration.run_checks(gpu=gpu, model=model)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a directory", path=out)
    plots = calibration.plot_checks(checks, out)
    all_passed = all(c.passed for c in checks)
    if json_out:
        print_json(
            {
                "gpu": gpu,
                "model": model,
                "checks": [c.to_json() for c in checks],
                "plots": [str(p) for p in plots],
                "all_passed": all_passed,
            }
        )
    else:
        rows = [
            [c.name, c.dataset, c.metric, round(c.error_pct, 2), c.tolerance_pct, "yes" if c.passed else "NO"]
            for c in checks
        ]
        print_table(
            f"calibration of {gpu} / {model}",
            ["check", "dataset", "metric", "error %", "tolerance %", "pass"],
            rows,
        )
        console.print(f"plots written to {out}/ ({len(plots)} PNG)")
        console.print("all tolerances met" if all_passed else "SOME TOLERANCES MISSED")
    if not all_passed:
        raise typer.Exit(1)


@hardware_app.command("list")
def hardware_list(json_out: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """List the available (GPU, model) pairs with their key facts."""
    from biscale.hardware import get_hardware, list_hardware
    from biscale.hardware.roofline import RooflineHardwareModel

    items = []
    for g, m in list_hardware():
        hw = get_hardware(g, m)
        assert isinstance(hw, RooflineHardwareModel)
        items.append(hw.describe())
    if json_out:
        print_json({"pairs": items})
        return
    print_table(
        "hardware models",
        ["gpu", "model", "max clock MHz", "min TP", "KV capacity @ min TP (tokens)", "power limit W"],
        [
            [
                d["gpu"],
                d["model"],
                d["max_clock_mhz"],
                d["min_tp"],
                d["kv_capacity_tokens_min_tp"],
                d["power_limit_w"],
            ]
            for d in items
        ],
    )


@hardware_app.command("show")
def hardware_show(
    gpu: str = typer.Option(..., "--gpu", help="GPU name (see `biscale hardware list`)."),
    model: str = typer.Option(..., "--model", help="Model name (see `biscale hardware list`)."),
    tp: int | None = typer.Option(None, "--tp", help="Tensor-parallel degree (default: the smallest that fits)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show a model's constants and its prefill/decode latency and power at a few clocks."""
    from dataclasses import asdict

    from biscale.hardware import get_hardware
    from biscale.hardware.roofline import RooflineHardwareModel

    hw = get_hardware(gpu, model)
    assert isinstance(hw, RooflineHardwareModel)
    tp = hw.min_tp if tp is None else tp
    if tp not in hw.tp_degrees:
        raise InputError(f"tp {tp} not available for {model} on {gpu} (valid: {list(hw.tp_degrees)})", field="tp")
    clocks = hw.supported_clocks_mhz

    def nearest(target: float) -> int:
        return min(clocks, key=lambda f: abs(f - target))

    picks = sorted({clocks[0], nearest(0.5 * hw.max_clock_mhz), nearest(0.75 * hw.max_clock_mhz), clocks[-1]})
    rows = []
    for f in picks:
        p = hw.prefill([1024], tp, f)
        d = hw.decode([1024] * 32, tp, f)
        rows.append(
            {
                "sm_clock_mhz": f,
                "prefill_1024_latency_ms": p.latency_s * 1e3,
                "prefill_1024_power_w": p.power_w,
                "prefill_1024_effective_clock_mhz": p.effective_clock_mhz,
                "decode_b32_latency_ms": d.latency_s * 1e3,
                "decode_b32_power_w": d.power_w,
                "idle_power_w": hw.idle_power_w(tp, f),
            }
        )
    consts = {k: v for k, v in asdict(hw.consts).items() if k != "sources"}
    facts = hw.describe()
    facts["tp"] = tp
    facts["kv_capacity_tokens"] = hw.kv_capacity_tokens(tp)
    if json_out:
        print_json({**facts, "constants": consts, "clocks": rows})
        return
    print_table(f"{gpu} / {model}", ["fact", "value"], [[k, v] for k, v in facts.items()])
    print_table("fitted constants", ["constant", "value"], [[k, v] for k, v in consts.items()])
    print_table(
        f"TP{tp}: prefill of one 1024-token prompt, decode of 32 requests x 1024 tokens",
        ["clock MHz", "prefill ms", "prefill W", "eff. clock MHz", "decode ms", "decode W", "idle W"],
        [list(r.values()) for r in rows],
    )
