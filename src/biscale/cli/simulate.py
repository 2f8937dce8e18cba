"""``biscale simulate``: replay a trace on a placement with the hardware model; write Parquet + JSON."""

from __future__ import annotations

from pathlib import Path

import typer

from biscale.cli.common import print_json, print_table, progress_bar
from biscale.costmodel import CostModel
from biscale.errors import InputError


def register(app: typer.Typer) -> None:
    """Add ``simulate`` to the root app."""
    app.command("simulate")(simulate_cmd)


def simulate_cmd(
    trace: str = typer.Option(..., "--trace", metavar="NAME|PATH", help="Bundled trace name or trace file."),
    placement: str = typer.Option(
        ..., "--placement", metavar="SPEC|FILE", help="e.g. 'prefill:2xTP2,decode:3xTP4' or a placement JSON file."
    ),
    rate: float | None = typer.Option(None, "--rate", help="Rescale the trace to this mean rate, req/s."),
    lengths: str | None = typer.Option(
        None, "--lengths", metavar="NAME|PATH", help="Replace lengths by seeded draws from this table."
    ),
    clock: str | None = typer.Option(
        None,
        "--clock",
        metavar="MHZ|max|default",
        help="Clock for every instance: a locked clock, max, or default (GPU governor). Default: each "
        "instance's baseline from the placement (top clock if it has none).",
    ),
    gpu: str = typer.Option("h100-sxm", "--gpu", help="GPU of the hardware model."),
    model: str = typer.Option("llama-3.3-70b", "--model", help="LLM of the hardware model."),
    cost_model: str = typer.Option(
        "hardware",
        "--cost-model",
        help="What prices iterations: 'hardware' (ground truth) or 'predictor' (the bundled learned predictors).",
    ),
    nodes: int = typer.Option(2, "--nodes", min=1, help="Nodes in the cluster."),
    gpus_per_node: int = typer.Option(8, "--gpus-per-node", min=1, help="GPUs per node."),
    duration: float | None = typer.Option(None, "--duration", min=0.0, help="Only requests arriving before S s."),
    max_time: float | None = typer.Option(
        None, "--max-time", min=0.0, help="Horizon, s: stop starting work then; the rest is reported unfinished."
    ),
    switch_latency_ms: float = typer.Option(10.0, "--switch-latency-ms", min=0.0, help="Clock switch latency, ms."),
    ttft_slo_ms: float = typer.Option(600.0, "--ttft-slo-ms", min=0.0, help="TTFT target at P99, ms."),
    tpot_slo_ms: float = typer.Option(100.0, "--tpot-slo-ms", min=0.0, help="TPOT target at P99, ms."),
    sample_interval: float = typer.Option(1.0, "--sample-interval", min=1e-6, help="Timeline sampling interval, s."),
    seed: int = typer.Option(0, "--seed", help="Seed for rescaling and length sampling."),
    out: Path | None = typer.Option(None, "--out", help="Write requests/timeline/instances Parquet + summary.json."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Simulate a disaggregated cluster iteration by iteration; report latency, SLOs and energy."""
    from biscale.control import controller_from_clock, load_placement
    from biscale.control.state import Slo
    from biscale.hardware import get_hardware
    from biscale.sim import SimConfig, simulate
    from biscale.workload import load_lengths, load_trace, rescale_rate, with_lengths

    plc = load_placement(placement)
    hw = get_hardware(gpu, model)
    cm: CostModel = hw
    if cost_model == "predictor":
        from biscale.predict import PredictorCostModel, default_predictor

        cm = PredictorCostModel(default_predictor(gpu, model))
    elif cost_model != "hardware":
        raise InputError(f"unknown cost model '{cost_model}' (expected 'hardware' or 'predictor')", field="cost-model")
    ctrl = controller_from_clock(clock)
    tr = load_trace(trace)
    if rate is not None:
        if rate <= 0:
            raise InputError(f"rate must be > 0 req/s, got {rate}", field="rate")
        tr = rescale_rate(tr, rate, seed=seed)
    if lengths is not None:
        tr = with_lengths(tr, load_lengths(lengths), seed=seed)
    if out is not None and out.exists() and not out.is_dir():
        raise InputError("exists and is not a directory", path=out)
    cfg = SimConfig(
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        switch_latency_s=switch_latency_ms / 1e3,
        slo=Slo(ttft_s=ttft_slo_ms / 1e3, tpot_s=tpot_slo_ms / 1e3),
        duration_s=duration,
        max_time_s=max_time,
        sample_interval_s=sample_interval,
    )
    total = duration if duration is not None else tr.duration_s
    with progress_bar("simulating", total=total or None) as bar:
        result = simulate(tr, plc, cm, ctrl, config=cfg, progress=lambda t: bar.update(completed=t))
    result.meta.update(
        {"gpu": gpu, "model": model, "cost_model": cost_model, "rate_rps": rate, "lengths": lengths, "seed": seed}
    )
    if out is not None:
        result.write(out)
    s = result.summary
    if json_out:
        print_json({**s, "placement": plc.spec(), "out": None if out is None else str(out)})
        return
    rows = [
        [
            "requests (total / completed / unfinished / rejected)",
            " / ".join(
                str(s[k]) for k in ("requests_total", "requests_completed", "requests_unfinished", "requests_rejected")
            ),
        ],
        ["simulated time (s)", s["sim_time_s"]],
        ["TTFT P50 / P90 / P99 (ms)", f"{s['ttft_p50_ms']:.1f} / {s['ttft_p90_ms']:.1f} / {s['ttft_p99_ms']:.1f}"],
        ["TPOT P50 / P90 / P99 (ms)", f"{s['tpot_p50_ms']:.1f} / {s['tpot_p90_ms']:.1f} / {s['tpot_p99_ms']:.1f}"],
        ["SLO attainment (%)", s["slo_attainment_pct"]],
        ["SLO met at P99", str(s["slo_met"])],
        ["goodput (req/s)", s["goodput_rps"]],
        [
            "energy total / busy / idle (MJ)",
            f"{s['energy_total_j'] / 1e6:.3f} / {s['energy_busy_j'] / 1e6:.3f} / {s['energy_idle_j'] / 1e6:.3f}",
        ],
        ["prefill energy per prompt token (J)", s["prefill_energy_per_prompt_token_j"]],
        ["decode energy per output token (J)", s["decode_energy_per_output_token_j"]],
        ["energy per request (J)", s["energy_per_request_j"]],
        ["average power (W)", s["avg_power_w"]],
        ["clock switches", s["clock_switches"]],
    ]
    print_table(f"biscale simulate: {plc.spec()} on {tr.name}", ["metric", "value"], rows)
    if out is not None:
        typer.echo(f"wrote {out}/requests.parquet, timeline.parquet, instances.parquet, summary.json")
