"""CLI: ``biscale calibrate``, ``biscale hardware list`` and ``biscale hardware show``."""

from __future__ import annotations

from pathlib import Path

import typer

from biscale.cli.common import check_output_dir, console, print_json, print_table, to_json_text
from biscale.errors import InputError

hardware_app = typer.Typer(help="Inspect the calibrated hardware models.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``calibrate`` and the ``hardware`` group to the root app."""
    app.command("calibrate")(calibrate)
    app.add_typer(hardware_app, name="hardware")


def calibrate(
    gpu: str | None = typer.Option(None, "--gpu", help="Only the checks on measurements of this GPU."),
    model: str | None = typer.Option(None, "--model", help="Only the checks on measurements of this model."),
    out: Path = typer.Option(
        Path("calibration-out"), "--out", help="Directory for calibration.csv/.json and the predicted-vs-measured PNGs."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Compare the hardware model with the reference measurements; exit 1 if a tolerance is missed.

    Every check names its dataset and says whether it was a fit target (in-sample, with the leave-one-dataset-out
    error), allowed data not used in fitting (out-of-sample) or published results reserved for validation
    (held-out). Without --gpu/--model: every check.
    """
    from biscale.hardware import calibration, get_hardware, list_hardware

    if gpu is not None and model is not None:
        get_hardware(gpu, model)  # validates both names (InputError -> exit 2)
    elif gpu is not None or model is not None:
        names = {g for g, _ in list_hardware()} if gpu is not None else {m for _, m in list_hardware()}
        given = gpu if gpu is not None else model
        if given not in names:
            what = "GPU" if gpu is not None else "model"
            raise InputError(f"unknown {what} '{given}' (valid: {', '.join(sorted(names))})", field=what.lower())
    check_output_dir(out, "--out")
    checks = calibration.select_checks(calibration.run_checks(), gpu, model)
    if not checks:
        pairs = ", ".join(f"{g}/{m}" for g, m in calibration.calibrated_pairs())
        raise InputError(
            f"no calibration data for {gpu or 'any GPU'} / {model or 'any model'} (measured pairs: {pairs})",
            field="model" if model is not None else "gpu",
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        table = calibration.checks_table(checks)
        table.to_csv(out / "calibration.csv", index=False)
        report = {"gpu": gpu, "model": model, "checks": [c.to_json() for c in checks]}
        (out / "calibration.json").write_text(to_json_text(report) + "\n")
        plots = calibration.plot_checks(checks, out)
    except OSError as err:
        raise InputError(f"cannot write the report: {err.strerror}", path=out) from err
    all_passed = all(c.passed for c in checks)
    files = [str(out / "calibration.csv"), str(out / "calibration.json"), *(str(p) for p in plots)]
    if json_out:
        print_json({**report, "files": files, "all_passed": all_passed})
    else:
        titles = {
            "in-sample": "in-sample (fit targets; LODO: the error with that dataset left out of the fit)",
            "out-of-sample": "out-of-sample (allowed data not used in fitting)",
            "held-out": "held-out (published results reserved for validation, never fitted)",
        }
        for role, title in titles.items():
            rows = [
                [
                    c.name,
                    c.dataset,
                    round(c.error_pct, 2),
                    "-" if c.lodo_error_pct is None else round(c.lodo_error_pct, 2),
                    c.tolerance_pct,
                    "yes" if c.passed else "NO",
                ]
                for c in checks
                if c.role == role
            ]
            if rows:
                print_table(
                    f"calibration, {title}: {checks[0].metric} %",
                    ["check", "dataset", "error %", "LODO %", "tol. %", "pass"],
                    rows,
                    min_width=150,
                )
        console.print(f"report and plots written to {out}/ (calibration.csv, calibration.json, {len(plots)} PNG)")
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
        ["gpu", "model", "max clock MHz", "min TP", "KV capacity @ min TP (tokens)", "power limit W", "experimental"],
        [
            [
                d["gpu"],
                d["model"],
                d["max_clock_mhz"],
                d["min_tp"],
                d["kv_capacity_tokens_min_tp"],
                d["power_limit_w"],
                "yes" if d["experimental"] else "no",
            ]
            for d in items
        ],
    )
    reasons = {str(d["gpu"]): str(d["experimental_reason"]) for d in items if d["experimental"]}
    for g, why in sorted(reasons.items()):
        console.print(f"{g} is experimental: {why}")


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
