"""``biscale plan`` (what to deploy for a load, and what it will draw) and ``biscale forecast`` (forecaster errors
on a trace's windows)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import typer

from biscale.cli.common import (
    SLO_TPOT_HELP,
    SLO_TTFT_HELP,
    check_cache_dir,
    check_host,
    check_output_file,
    hosts_list,
    int_list,
    print_json,
    print_table,
    progress_bar,
    slo_ms,
    to_json_text,
    write_error,
)
from biscale.errors import InputError
from biscale.limits import check_workers

#: The paper's workload when no trace is given: the Azure conversation arrival pattern with ShareGPT lengths.
DEFAULT_TRACE = "azure-conv"
DEFAULT_LENGTHS = "sharegpt-v3"


def register(app: typer.Typer) -> None:
    """Add ``plan`` and ``forecast`` to the root app."""
    app.command("plan")(plan_cmd)
    app.command("forecast")(forecast_cmd)


def planning_window_s(given: float | None) -> float:
    """``--window-s``, or the simulator's planning window (``SimConfig.window_s``, one source) when not given."""
    from biscale.sim.config import SimConfig

    return float(SimConfig.model_fields["window_s"].default) if given is None else given


def _workload(trace: str | None, lengths: str | None, seed: int) -> Any:
    from biscale.workload import load_lengths, load_trace, with_lengths

    tr = load_trace(trace or DEFAULT_TRACE)
    table = lengths if lengths is not None else (None if trace is not None else DEFAULT_LENGTHS)
    if table is not None and table != "native":
        tr = with_lengths(tr, load_lengths(table), seed=seed)
    return tr


def plan_cmd(
    rate: float | None = typer.Option(None, "--rate", help="Request rate to plan for, req/s."),
    trace: str | None = typer.Option(
        None,
        "--trace",
        metavar="NAME|PATH",
        help="Workload (arrival pattern and lengths) the capacities are measured on; without --rate the plan is "
        "for its peak window. Default: azure-conv with sharegpt-v3 lengths.",
    ),
    window_s: float | None = typer.Option(
        None, "--window-s", help="Window for the peak rate of --trace, s (default: the planning window, sim.window_s)."
    ),
    lengths: str | None = typer.Option(
        None, "--lengths", metavar="NAME|PATH|native", help="Replace the workload's lengths (seeded draws)."
    ),
    gpus: int = typer.Option(16, "--gpus", help="GPUs in the cluster."),
    gpus_per_node: int = typer.Option(8, "--gpus-per-node", help="GPUs per node (a TP group never spans nodes)."),
    slo_ttft_ms: float | None = typer.Option(None, "--slo-ttft-ms", help=SLO_TTFT_HELP),
    slo_tpot_ms: float | None = typer.Option(None, "--slo-tpot-ms", help=SLO_TPOT_HELP),
    planner: str = typer.Option("biscale", "--planner", help="biscale (= placeonly) or distserve."),
    alpha: float = typer.Option(0.2, "--alpha", help="Headroom: capacity >= (1 + alpha) x rate per phase."),
    unassigned_power: str | None = typer.Option(
        None,
        "--unassigned-power-w",
        metavar="W|off",
        help="Power of a GPU in no instance, W ('off' = 0). Default: deep idle under the default governor.",
    ),
    clocks: str | None = typer.Option(
        None, "--clocks", metavar="MHZ,...", help="Candidate baseline clocks (default: 7 from 40 % to 100 % of top)."
    ),
    tps: str | None = typer.Option(None, "--tps", metavar="N,...", help="TP degrees to consider (default: all)."),
    probe_s: float | None = typer.Option(
        None, "--probe-s", help="Workload slice each capacity probe replays, s (default: CapacitySettings')."
    ),
    gpu: str = typer.Option("h100-sxm", "--gpu", help="GPU (selects the bundled predictor)."),
    model: str = typer.Option("llama-3.3-70b", "--model", help="LLM (selects the bundled predictor)."),
    predictors: Path | None = typer.Option(None, "--predictors", metavar="DIR", help="Predictor artifact directory."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Capacity-table cache (default ~/.cache/biscale)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Rebuild the capacity table; do not write the cache."),
    workers: int | None = typer.Option(None, "--workers", help="Processes for the table (default: CPU count)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of length sampling and rate rescaling."),
    fmt: str = typer.Option("table", "--format", help="table or json (the Placement schema with predictions)."),
    json_out: bool = typer.Option(False, "--json", help="Same as --format json."),
    out: Path | None = typer.Option(None, "--out", help="Also write the placement JSON to this file."),
    # --- launch commands for the plan (biscale.integrations.emit; docs/deploy.md) ---
    emit: str | None = typer.Option(
        None, "--emit", metavar="vllm|sglang", help="Print launch commands (a bash script) for the plan instead."
    ),
    serve_model: str = typer.Option(
        "meta-llama/Llama-3.3-70B-Instruct", "--serve-model", help="Model the engines serve (with --emit)."
    ),
    hosts: str | None = typer.Option(None, "--hosts", metavar="H,...", help="Node addresses (with --emit)."),
    bind_addr: str = typer.Option(
        "127.0.0.1",
        "--bind-addr",
        metavar="ADDR",
        help="Address the emitted engines, exporters and router listen on (with --emit; default: this node only; "
        "a plan over several nodes needs one the other nodes reach).",
    ),
) -> None:
    """Plan the placement (instances, TP, baseline clocks, nodes) for a load; print its predicted power."""
    from biscale.control.state import Slo
    from biscale.plan.capacity import CapacitySettings, build_capacity_table
    from biscale.plan.forecast import window_rates
    from biscale.plan.solve import Cluster, Demand, PlanSettings, plan_outcome
    from biscale.predict import default_predictor, load_predictor

    if fmt not in ("table", "json"):
        raise InputError(f"unknown format {fmt!r} (expected 'table' or 'json')", field="format")
    if planner not in ("biscale", "placeonly", "distserve"):
        raise InputError(f"unknown planner {planner!r} (expected biscale, placeonly or distserve)", field="planner")
    if rate is None and trace is None:
        raise InputError("give --rate R (req/s) or --trace T (plans for its peak window)", field="rate")
    slo_ttft_ms, slo_tpot_ms = slo_ms(slo_ttft_ms, slo_tpot_ms)
    window_s = planning_window_s(window_s)
    if rate is not None and not (math.isfinite(rate) and rate >= 0):
        raise InputError(f"rate must be a number >= 0 req/s, got {rate}", field="rate")
    for name, v in (("slo-ttft-ms", slo_ttft_ms), ("slo-tpot-ms", slo_tpot_ms), ("window-s", window_s)):
        if not (math.isfinite(v) and v > 0):
            raise InputError(f"must be > 0, got {v}", field=name)
    default_probe_s = CapacitySettings().probe_duration_s
    probe_s = default_probe_s if probe_s is None else probe_s
    if not (math.isfinite(probe_s) and probe_s > 0):
        raise InputError(f"must be > 0 s, got {probe_s}", field="probe-s")
    check_workers(workers, field="workers")
    if out is not None:
        check_output_file(out, "--out")
    if not no_cache:
        check_cache_dir(cache_dir)
    p_un: float | None = None
    if unassigned_power is not None:
        text = unassigned_power.strip().lower()
        try:
            p_un = 0.0 if text == "off" else float(text)
        except ValueError:
            raise InputError(f"expected watts or 'off', got {unassigned_power!r}", field="unassigned-power-w") from None
    cluster = Cluster.of_gpus(gpus, gpus_per_node)
    host_names: list[str] | None = None
    if emit is not None:  # checked before the capacity table is built (tens of seconds)
        from biscale.integrations.emit import ENGINES

        if emit.strip().lower() not in ENGINES:
            raise InputError(f"unknown engine {emit!r} (expected vllm or sglang)", field="emit")
        host_names = hosts_list(hosts, cluster.nodes)
        check_host(bind_addr, "bind-addr")
    elif hosts is not None:
        raise InputError("--hosts names the nodes of the launch commands: give it with --emit", field="hosts")
    cap_settings = CapacitySettings(
        clocks_mhz=int_list(clocks, "--clocks"), tps=int_list(tps, "--tps"), probe_duration_s=probe_s, seed=seed
    )
    settings = PlanSettings(alpha=alpha, unassigned_gpu_power_w=p_un)
    pred = load_predictor(predictors) if predictors is not None else default_predictor(gpu, model)
    wl = _workload(trace, lengths, seed)
    if probe_s > max(wl.duration_s, default_probe_s):  # a longer probe replays the whole workload anyway, only slower
        raise InputError(
            f"must be at most the workload's span ({wl.duration_s:,.0f} s of {wl.name}), got {probe_s:g} s",
            field="probe-s",
        )
    basis = "given"
    if rate is None:
        rate = float(window_rates(wl, window_s).max())
        basis = f"peak {window_s:g} s window of {wl.name}"
    slo = Slo(ttft_s=slo_ttft_ms / 1e3, tpot_s=slo_tpot_ms / 1e3)
    with progress_bar("capacity table", total=None) as bar:
        table = build_capacity_table(
            pred,
            wl,
            slo,
            cap_settings,
            workers=workers,
            cache_dir=cache_dir,
            use_cache=not no_cache,
            progress=lambda done, total: bar.update(completed=100.0 * done / max(total, 1)),
        )
    method = "distserve" if planner == "distserve" else "biscale"
    placement, prediction = plan_outcome(
        table, cluster, Demand.of(table, rate), settings, method=method, planner_name=planner
    )
    if out is not None and placement is not None:
        try:
            out.write_text(placement.to_json() + "\n")
        except OSError as err:
            raise write_error(err, out, "--out") from err
    if emit is not None:
        from biscale.integrations.emit import build_plan, render_script
        from biscale.predict.costmodel import PredictorCostModel

        if placement is None:
            raise InputError(f"nothing to emit: {prediction.reason}", field="emit")
        deployment = build_plan(
            placement, emit.strip().lower(), gpus_per_node=cluster.gpus_per_node, nodes=cluster.nodes,
            hosts=host_names, serve_model=serve_model,
            slo=slo, gpu=gpu, model=model, predictors=None if predictors is None else str(predictors),
            top_clock_mhz=PredictorCostModel(pred).supported_clocks_mhz[-1], bind_addr=bind_addr,
        )  # fmt: skip
        sys.stdout.write(render_script(deployment))
    elif json_out or fmt == "json":
        if placement is not None:
            sys.stdout.write(to_json_text(placement.model_dump(mode="json", exclude_none=True)) + "\n")
        else:
            print_json({"instances": [], "prediction": prediction.model_dump(mode="json", exclude_none=True)})
    else:
        _print_plan(placement, prediction, table, cluster, basis, wl.name)
    if not prediction.feasible:
        raise typer.Exit(1)


def _print_plan(placement: Any, pred: Any, table: Any, cluster: Any, basis: str, workload: str) -> None:
    title = (
        f"biscale plan ({pred.planner}): {pred.forecast_rps:g} req/s ({basis}) on {cluster.gpus} x {table.gpu} "
        f"({cluster.nodes} x {cluster.gpus_per_node}), {table.model}, P99 TTFT {table.slo.ttft_s * 1e3:g} ms / "
        f"TPOT {table.slo.tpot_s * 1e3:g} ms, alpha {pred.alpha:g}, workload {workload}"
    )
    if placement is not None:
        rows = [
            [
                g.phase,
                g.count,
                f"TP{g.tp}",
                g.count * g.tp,
                g.clock,
                g.capacity_rps,
                g.load_rps,
                g.power_w,
                _ranges(g.nodes or ()),
            ]
            for g in placement.instances
        ]
        cols = ["phase", "count", "TP", "GPUs", "clock MHz", "R/inst req/s", "load/inst req/s", "W/inst", "nodes"]
        print_table(title, cols, rows)
    else:
        typer.echo(title)
    phase_rows = []
    for ph, p in (("prefill", pred.prefill), ("decode", pred.decode)):
        phase_rows.append(
            [
                ph,
                p.instances,
                p.gpus,
                p.capacity_rps,
                "-" if p.headroom_pct is None else f"{p.headroom_pct:.1f}",
                f"{p.utilisation_pct:.1f}",
                p.power_w,
                p.energy_per_token_j if p.energy_per_token_j is not None else float("nan"),
            ]
        )
    phase_rows.append(
        ["unassigned", "", pred.gpus_total - pred.gpus_used, "", "", "", pred.unassigned_power_w, float("nan")]
    )
    phase_rows.append(["cluster", "", pred.gpus_total, "", "", "", pred.cluster_power_w, float("nan")])
    print_table(
        "predicted (capacity-weighted routing; per-token energy over prompt / decode-generated tokens)",
        ["phase", "count", "GPUs", "capacity req/s", "headroom %", "util. %", "power W", "J/token"],
        phase_rows,
    )
    status = "feasible" if pred.feasible else f"INFEASIBLE: {pred.reason}"
    src = "from cache" if table.from_cache else f"built in {table.build_s:.1f} s"
    typer.echo(f"{status}")
    if placement is not None:
        typer.echo(f"placement: {placement.spec()}")
    typer.echo(f"capacity table {table.key[:12]} ({len(table.configs)} configurations, {src})")


def _ranges(nodes: tuple[int, ...] | list[int]) -> str:
    """Node indices as compact ranges: ``0-3,5``."""
    out: list[str] = []
    for n in sorted(set(nodes)):
        if out and "-" in out[-1] and int(out[-1].split("-")[1]) == n - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        elif out and "-" not in out[-1] and int(out[-1]) == n - 1:
            out[-1] = f"{out[-1]}-{n}"
        else:
            out.append(str(n))
    return ",".join(out)


def forecast_cmd(
    trace: str = typer.Option(..., "--trace", metavar="NAME|PATH", help="Trace whose windows are forecast."),
    window_s: float | None = typer.Option(
        None, "--window-s", help="Window length, s (default: the planning window, sim.window_s)."
    ),
    rate: float | None = typer.Option(None, "--rate", help="Rescale the trace to this mean rate first, req/s."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the rescaling."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Score each forecaster on a trace's windows: MAPE and how often it forecasts too low."""
    from biscale.plan.forecast import score_forecasters, window_rates
    from biscale.workload import load_trace, rescale_rate

    window_s = planning_window_s(window_s)
    tr = load_trace(trace)
    if rate is not None:
        tr = rescale_rate(tr, rate, seed=seed)
    rates = window_rates(tr, window_s)
    scores = score_forecasters(tr, window_s)
    if json_out:
        print_json(
            {
                "trace": tr.name,
                "window_s": window_s,
                "windows": int(rates.size),
                "mean_rate_rps": float(rates.mean()),
                "peak_rate_rps": float(rates.max()),
                "forecasters": {
                    s.name: {
                        "windows_scored": s.windows,
                        "mape_pct": s.mape_pct,
                        "under_forecast_pct": s.under_forecast_pct,
                        "mean_under_pct": s.mean_under_pct,
                        "bias_pct": s.bias_pct,
                    }
                    for s in scores
                },
            }
        )
        return
    print_table(
        f"biscale forecast: {tr.name}, {rates.size} windows of {window_s:g} s "
        f"(mean {rates.mean():.2f} req/s, peak {rates.max():.2f} req/s)",
        ["forecaster", "windows scored", "MAPE (%)", "under-forecast (% of windows)", "mean shortfall (%)", "bias (%)"],
        [[s.name, s.windows, s.mape_pct, s.under_forecast_pct, s.mean_under_pct, s.bias_pct] for s in scores],
    )
