"""``biscale simulate``: replay a trace on a placement; write Parquet + JSON.

The run is described by a :class:`~biscale.sim.runconfig.SimulateConfig` read from ``--config FILE`` (TOML or
JSON); each option below that is given overrides the file. Options default to "not given": the defaults live in
the configuration models (``biscale config schema`` shows them), not here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from biscale.cli.common import check_output_dir, print_json, print_table, progress_bar, write_error
from biscale.errors import InputError


def register(app: typer.Typer) -> None:
    """Add ``simulate`` to the root app."""
    app.command("simulate")(simulate_cmd)


def _one_of(value: float | None, old: float | None, name: str, old_name: str) -> float | None:
    """An option given under its name or its old spelling (not both)."""
    if value is not None and old is not None:
        raise InputError(f"{old_name} is the old spelling of {name}: give one of them", field=name)
    return value if value is not None else old


def simulate_cmd(
    config: Path | None = typer.Option(
        None, "--config", metavar="FILE", help="Run configuration, .toml or .json (schema: biscale config schema)."
    ),
    trace: str | None = typer.Option(None, "--trace", metavar="NAME|PATH", help="Bundled trace name or trace file."),
    placement: str | None = typer.Option(
        None, "--placement", metavar="SPEC|FILE", help="e.g. 'prefill:2xTP2,decode:3xTP4' or a placement JSON file."
    ),
    rate: float | None = typer.Option(None, "--rate", help="Rescale the trace to this mean rate, req/s."),
    lengths: str | None = typer.Option(
        None, "--lengths", metavar="NAME|PATH", help="Replace lengths by seeded draws from this table."
    ),
    clock: str | None = typer.Option(
        None,
        "--clock",
        metavar="MHZ|max|default|NAME",
        help="Controller for every instance: a locked clock, max, default (GPU governor) or a registered "
        "controller. Default: each instance's baseline from the placement (top clock if it has none).",
    ),
    controller: str | None = typer.Option(
        None,
        "--controller",
        metavar="PHASE=NAME,...",
        help="Per-phase controllers, e.g. 'prefill=mpc,decode=slack' (names or MHz; a bare name applies to both "
        "phases; see docs/control.md).",
    ),
    planner: str | None = typer.Option(
        None, "--planner", help="Re-plan the placement every window: static (default), biscale, distserve, ..."
    ),
    gpu: str | None = typer.Option(None, "--gpu", help="GPU of the cost model."),
    model: str | None = typer.Option(None, "--model", help="LLM of the cost model."),
    cost_model: str | None = typer.Option(
        None,
        "--cost-model",
        help="What prices iterations: 'hardware' (ground truth) or 'predictor' (the bundled learned predictors).",
    ),
    nodes: int | None = typer.Option(None, "--nodes", help="Nodes in the cluster."),
    gpus_per_node: int | None = typer.Option(None, "--gpus-per-node", help="GPUs per node."),
    duration: float | None = typer.Option(None, "--duration", help="Only requests arriving before S s."),
    max_time: float | None = typer.Option(
        None, "--max-time", help="Horizon, s: stop starting work then; the rest is reported unfinished."
    ),
    switch_latency_ms: float | None = typer.Option(None, "--switch-latency-ms", help="Clock switch latency, ms."),
    slo_ttft_ms: float | None = typer.Option(None, "--slo-ttft-ms", help="TTFT target, ms."),
    slo_tpot_ms: float | None = typer.Option(None, "--slo-tpot-ms", help="TPOT target, ms."),
    # the spellings before 0.2 (every other command spells them --slo-*): kept working, no longer shown
    old_ttft_slo_ms: float | None = typer.Option(None, "--ttft-slo-ms", hidden=True),
    old_tpot_slo_ms: float | None = typer.Option(None, "--tpot-slo-ms", hidden=True),
    sample_interval: float | None = typer.Option(None, "--sample-interval", help="Timeline sampling interval, s."),
    seed: int | None = typer.Option(None, "--seed", min=0, help="Seed for rescaling and length sampling."),
    out: Path | None = typer.Option(
        None, "--out", help="Write requests/timeline/instances Parquet, summary.json and config.json."
    ),
    json_out: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Simulate a disaggregated cluster iteration by iteration; report latency, SLOs and energy."""
    from biscale.sim.runconfig import load_simulate_config

    ttft_slo_ms = _one_of(slo_ttft_ms, old_ttft_slo_ms, "--slo-ttft-ms", "--ttft-slo-ms")
    tpot_slo_ms = _one_of(slo_tpot_ms, old_tpot_slo_ms, "--slo-tpot-ms", "--tpot-slo-ms")
    given: dict[str, Any] = {
        "trace": trace,
        "placement": placement,
        "rate_rps": rate,
        "lengths": lengths,
        "clock": clock,
        "gpu": gpu,
        "model": model,
        "cost_model": cost_model,
        "seed": seed,
        "sim.nodes": nodes,
        "sim.gpus_per_node": gpus_per_node,
        "sim.duration_s": duration,
        "sim.max_time_s": max_time,
        "sim.switch_latency_s": None if switch_latency_ms is None else switch_latency_ms / 1e3,
        "sim.slo.ttft_s": None if ttft_slo_ms is None else ttft_slo_ms / 1e3,
        "sim.slo.tpot_s": None if tpot_slo_ms is None else tpot_slo_ms / 1e3,
        "sim.sample_interval_s": sample_interval,
    }
    if controller is not None:
        from biscale.control.factory import parse_controller_spec

        given.update({f"controllers.{ph}": name for ph, name in parse_controller_spec(controller).items()})
    given["planner"] = planner
    cfg = load_simulate_config(config, {k: v for k, v in given.items() if v is not None})
    prepared = cfg.prepare()
    if out is not None:
        check_output_dir(out, "--out")
    total = cfg.sim.duration_s if cfg.sim.duration_s is not None else prepared.trace.duration_s
    with progress_bar("simulating", total=total or None) as bar:
        result = cfg.run(progress=lambda t: bar.update(completed=t), prepared=prepared)
    if out is not None:
        try:
            result.write(out)
        except OSError as err:
            raise write_error(err, out, "--out") from err
    s = result.summary
    spec = result.meta["placement"]
    if json_out:
        print_json({**s, "placement": spec, "out": None if out is None else str(out)})
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
    print_table(f"biscale simulate: {spec} on {result.meta['trace']}", ["metric", "value"], rows)
    if out is not None:
        typer.echo(f"wrote {out}/requests.parquet, timeline.parquet, instances.parquet, summary.json, config.json")
