"""``biscale loadgen``: replay a trace against an OpenAI-compatible endpoint and write a run directory."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import typer

from biscale.cli.common import SLO_TPOT_HELP, SLO_TTFT_HELP, check_output_dir, print_json, print_table, slo_ms
from biscale.errors import InputError
from biscale.limits import MAX_CONCURRENCY, MAX_SIM_REQUESTS, check_count


def register(app: typer.Typer) -> None:
    app.command("loadgen")(loadgen_cmd)


def _workload(
    trace: str,
    lengths: str | None,
    rate: float | None,
    rate_scale: float | None,
    duration_s: float | None,
    max_input: int | None,
    max_output: int | None,
    seed: int,
) -> Any:
    import numpy as np

    from biscale.workload import load_lengths, load_trace, rescale_rate, with_lengths
    from biscale.workload.ops import slice_window
    from biscale.workload.trace import Trace

    if rate is not None and rate_scale is not None:
        raise InputError("give --rate or --rate-scale, not both", field="rate")
    tr = load_trace(trace)
    if lengths is not None and lengths != "native":
        tr = with_lengths(tr, load_lengths(lengths), seed=seed)
    if rate_scale is not None:
        if not (math.isfinite(rate_scale) and rate_scale > 0):
            raise InputError(f"must be > 0, got {rate_scale}", field="rate-scale")
        rate = tr.mean_rate_rps * rate_scale
    if rate is not None:
        if not (math.isfinite(rate) and rate > 0):
            raise InputError(f"must be > 0 req/s, got {rate}", field="rate")
        tr = rescale_rate(tr, rate, seed=seed)
    if duration_s is not None:
        if not (math.isfinite(duration_s) and duration_s > 0):
            raise InputError(f"must be > 0 s, got {duration_s}", field="duration")
        tr = slice_window(tr, 0.0, duration_s)
    if len(tr) == 0:
        raise InputError("no request arrives within the duration", field="duration")
    for name, cap in (("max-input-tokens", max_input), ("max-output-tokens", max_output)):
        if cap is not None and cap < 1:
            raise InputError(f"must be >= 1, got {cap}", field=name)
    inp = tr.input_tokens if max_input is None else np.minimum(tr.input_tokens, max_input)
    out = tr.output_tokens if max_output is None else np.minimum(tr.output_tokens, max_output)
    return Trace(tr.arrival_s, inp, out, name=tr.name, source=tr.source, meta=dict(tr.meta))


def check_endpoint(endpoint: str, model: str | None, timeout_s: float = 10.0) -> str:
    """Before the replay: the endpoint answers, speaks the OpenAI API (``GET /v1/models`` lists models) and serves
    ``model`` (when given); returns the model to request. Every failure is an :class:`InputError` naming the
    endpoint and, for an HTTP error, the status."""
    import json
    import urllib.error
    import urllib.request

    url = endpoint.rstrip("/") + "/v1/models"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            raw = resp.read(1 << 20)
    except urllib.error.HTTPError as err:
        raise InputError(
            f"cannot list models at {url}: HTTP {err.code} ({err.reason}); is it an OpenAI-compatible server?",
            field="endpoint",
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise InputError(f"cannot list models at {url}: unreachable ({reason})", field="endpoint") from None
    try:
        body = json.loads(raw)
        served = [str(m["id"]) for m in body["data"]]
    except (ValueError, KeyError, TypeError):
        raise InputError(
            f"cannot list models at {url}: not an OpenAI model list (no data[].id)", field="endpoint"
        ) from None
    if not served:
        raise InputError(f"cannot list models at {url}: it lists none", field="endpoint")
    if model is not None and model not in served:
        raise InputError(f"the server does not serve model {model!r} (it serves: {', '.join(served)})", field="model")
    return model if model is not None else served[0]


def _instances(energy: Any, requests: Any, duration_s: float) -> Any:
    import pandas as pd

    cols = [
        "instance_id",
        "phase",
        "tp",
        "node",
        "gpus",
        "baseline_clock",
        "start_s",
        "ready_s",
        "stop_s",
        "final_status",
        "iterations",
        "tokens",
        "clock_switches",
        "busy_energy_j",
        "idle_energy_j",
        "energy_j",
        "instance_name",
    ]
    if energy is None or not energy.groups:
        return pd.DataFrame({c: [] for c in cols}).astype(
            {"instance_id": "int64", "tp": "int64", "tokens": "int64", "clock_switches": "int64"}
        )
    got_first = requests["first_token_s"].notna()
    phase_tokens = {
        "prefill": int(requests.loc[got_first, "input_tokens"].sum()),
        "decode": int((requests["tokens_generated"] - 1).clip(lower=0).sum()),
    }
    counts = {p: sum(g.phase == p for g in energy.groups) for p in phase_tokens}
    rows = []
    for i, g in enumerate(energy.groups):
        share = phase_tokens[g.phase] // counts[g.phase] if counts.get(g.phase) else 0
        rows.append(
            [
                i,
                g.phase,
                len(g.gpus),
                0,
                ",".join(g.gpus),
                "",
                0.0,
                0.0,
                duration_s,
                "stopped",
                -1,
                share,
                g.clock_switches,
                g.energy_j,
                0.0,
                g.energy_j,
                g.name,
            ]
        )
    return pd.DataFrame(rows, columns=cols)


def loadgen_cmd(
    endpoint: str = typer.Option(..., "--endpoint", metavar="URL", help="OpenAI-compatible server, e.g. http://h:8000"),
    trace: str = typer.Option(..., "--trace", metavar="NAME|PATH", help="Trace to replay (bundled name or file)."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Results folder (results.json + run directory)."),
    rate: float | None = typer.Option(None, "--rate", help="Rescale the trace to this mean rate, req/s."),
    rate_scale: float | None = typer.Option(None, "--rate-scale", help="Multiply the trace's own mean rate by this."),
    duration_s: float | None = typer.Option(None, "--duration", help="Replay the arrivals of the first S seconds."),
    lengths: str | None = typer.Option(None, "--lengths", metavar="NAME|PATH|native", help="Replace lengths."),
    max_input_tokens: int | None = typer.Option(None, "--max-input-tokens", help="Cap each prompt, tokens."),
    max_output_tokens: int | None = typer.Option(None, "--max-output-tokens", help="Cap each output, tokens."),
    seed: int = typer.Option(0, "--seed", help="Seed of rate rescaling and length draws."),
    api: str = typer.Option("completions", "--api", help="completions or chat."),
    model: str | None = typer.Option(None, "--model", help="Model to request (default: the server's first)."),
    max_concurrency: int = typer.Option(256, "--max-concurrency", help="Most requests in flight."),
    timeout_s: float = typer.Option(600.0, "--timeout-s", help="Per-request limit, s."),
    drain_timeout_s: float = typer.Option(600.0, "--drain-timeout-s", help="Wait after the last arrival, s."),
    energy: str = typer.Option(
        "none", "--energy", metavar="none|nvml|URL", help="GPU energy: local NVML or Prometheus."
    ),
    gpus: str | None = typer.Option(None, "--gpus", help="GPUs for --energy nvml (default: visible ones)."),
    prometheus_step_s: float = typer.Option(1.0, "--prometheus-step-s", help="Query resolution, s."),
    system: str = typer.Option("live", "--system", help="System name in results.json."),
    slo_ttft_ms: float | None = typer.Option(None, "--slo-ttft-ms", help=SLO_TTFT_HELP),
    slo_tpot_ms: float | None = typer.Option(None, "--slo-tpot-ms", help=SLO_TPOT_HELP),
    json_out: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Replay a trace against an OpenAI-compatible streaming endpoint; record TTFT and every token time."""
    from biscale.control.state import Slo
    from biscale.live.energy import NvmlEnergy, PrometheusEnergy
    from biscale.live.loadgen import LoadSettings, replay, request_table, token_table
    from biscale.live.rundir import write_live_run
    from biscale.metrics import summarize

    slo_ttft_ms, slo_tpot_ms = slo_ms(slo_ttft_ms, slo_tpot_ms)
    if not endpoint.startswith(("http://", "https://")):
        raise InputError(f"not an http(s) URL: {endpoint!r}", field="endpoint")
    for name, v in (
        ("slo-ttft-ms", slo_ttft_ms),
        ("slo-tpot-ms", slo_tpot_ms),
        ("timeout-s", timeout_s),
        ("drain-timeout-s", drain_timeout_s),
        ("prometheus-step-s", prometheus_step_s),
    ):
        if not (math.isfinite(v) and v > 0):
            raise InputError(f"must be > 0, got {v}", field=name)
    if not system or "/" in system or system.startswith("."):
        raise InputError(f"not a usable name: {system!r}", field="system")
    if api not in ("completions", "chat"):
        raise InputError(f"unknown api {api!r} (expected completions or chat)", field="api")
    if max_concurrency < 1:
        raise InputError(f"must be >= 1, got {max_concurrency}", field="max-concurrency")
    check_count(max_concurrency, MAX_CONCURRENCY, field="max-concurrency", what="connections")
    check_output_dir(out, "--out")
    wl = _workload(trace, lengths, rate, rate_scale, duration_s, max_input_tokens, max_output_tokens, seed)
    check_count(len(wl), MAX_SIM_REQUESTS, field="rate", what="requests")
    meter: Any = None
    if energy == "nvml":
        meter = NvmlEnergy(gpus)
    elif energy != "none":
        meter = PrometheusEnergy(energy, step_s=prometheus_step_s)
        meter.query("query", query="up")  # answers now, not only after the replay
    model = check_endpoint(endpoint, model)
    settings = LoadSettings(endpoint, api, model, max_concurrency, timeout_s, drain_timeout_s)
    if meter is not None:
        meter.start()
    records, wall_s = asyncio.run(replay(wl, settings))
    run_energy = None
    energy_error: InputError | None = None
    if meter is not None:
        try:  # a failure here must not lose the replay: the results are written first, the error said after
            run_energy = meter.stop()
        except InputError as err:
            energy_error = err
    requests = request_table(records)
    instances = _instances(run_energy, requests, wall_s)
    slo = Slo(ttft_s=slo_ttft_ms / 1e3, tpot_s=slo_tpot_ms / 1e3)
    summary = summarize(requests, instances, slo, wall_s)
    if run_energy is None:
        summary |= {k: math.nan for k in summary if "energy" in k or k == "avg_power_w"}
    summary["requests_failed"] = int((requests["status"] == "failed").sum())
    load = f"{rate:g}rps" if rate is not None and rate_scale is None else f"x{rate_scale:g}" if rate_scale else "native"
    meta = {
        "trace": wl.name,
        "endpoint": endpoint,
        "energy_source": "none" if run_energy is None else run_energy.source,
        "mean_rate_rps": wl.mean_rate_rps,
    }
    config = {
        "loadgen": {
            "endpoint": endpoint,
            "trace": trace,
            "rate_rps": rate,
            "rate_scale": rate_scale,
            "duration_s": duration_s,
            "lengths": lengths,
            "max_input_tokens": max_input_tokens,
            "max_output_tokens": max_output_tokens,
            "seed": seed,
            "api": api,
            "model": model,
            "max_concurrency": max_concurrency,
            "timeout_s": timeout_s,
            "drain_timeout_s": drain_timeout_s,
            "energy": energy,
            "gpus": gpus,
            "system": system,
        },
        "slo": slo.model_dump(mode="json"),
    }
    timeline = run_energy.timeline if run_energy is not None else None
    if timeline is None:
        from biscale.live.energy import empty_timeline

        timeline = empty_timeline()
    run_dir = write_live_run(
        out,
        load=load,
        load_rps=wl.mean_rate_rps if rate is None else rate,
        system=system,
        requests=requests,
        tokens=token_table(records),
        instances=instances,
        timeline=timeline,
        summary=summary,
        meta=meta,
        config=config,
    )
    if energy_error is not None:
        raise InputError(f"the replay's results are in {run_dir} without energy: {energy_error}")
    counts = requests["status"].value_counts().to_dict()
    result = {
        "run_dir": str(run_dir),
        "results_json": str(out / "results.json"),
        "requests_total": len(requests),
        "requests_completed": int(counts.get("completed", 0)),
        "requests_failed": int(counts.get("failed", 0)),
        "requests_unfinished": int(counts.get("unfinished", 0)),
        "duration_s": wall_s,
        **{
            k: summary[k]
            for k in (
                "ttft_p50_ms",
                "ttft_p99_ms",
                "tpot_p50_ms",
                "tpot_p99_ms",
                "slo_attainment_pct",
                "goodput_rps",
                "energy_total_j",
                "avg_power_w",
            )
        },
        "energy_source": meta["energy_source"],
    }
    if json_out:
        print_json(result)
        return
    print_table(
        f"biscale loadgen: {len(requests)} requests of {wl.name} at {wl.mean_rate_rps:.3g} req/s -> {endpoint}",
        ["metric", "value"],
        [[k, v] for k, v in result.items()],
    )
