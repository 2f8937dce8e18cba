"""``biscale trace``: inspect workloads (bundled data sets, summary statistics of traces and length tables)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import typer

from biscale.cli.common import check_output_file, print_json, print_table
from biscale.errors import InputError

trace_app = typer.Typer(
    help="Inspect workloads: bundled traces and length tables, summary statistics.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add the ``trace`` command group to the root app."""
    app.add_typer(trace_app, name="trace")


@trace_app.command("list")
def list_cmd(json_out: bool = typer.Option(False, "--json", help="One JSON object on stdout.")) -> None:
    """List the bundled traces and length tables with their source and licence."""
    from biscale.workload import BUNDLED_LENGTHS, BUNDLED_TRACES

    items = [("trace", d) for d in BUNDLED_TRACES.values()] + [("lengths", d) for d in BUNDLED_LENGTHS.values()]
    if json_out:
        print_json(
            {
                "datasets": [
                    {
                        "name": d.name,
                        "kind": kind,
                        "format": d.format,
                        "description": d.description,
                        "source": d.source,
                        "licence": d.licence,
                    }
                    for kind, d in items
                ]
            }
        )
        return
    print_table(
        "Bundled workloads",
        ["name", "kind", "licence", "description", "source"],
        [[d.name, kind, d.licence, d.description, d.source] for kind, d in items],
    )


def _fmt_num(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return f"{v:,.{digits}g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


@trace_app.command("stats")
def stats_cmd(
    source: str = typer.Argument(..., metavar="NAME|PATH", help="Bundled name (see `biscale trace list`) or file."),
    format: str | None = typer.Option(
        None, "--format", "-f", help="azure, burstgpt, mooncake, biscale or lengths (default: inferred)."
    ),
    rate: float | None = typer.Option(
        None,
        "--rate",
        help="Target mean rate, req/s: rescale a trace (keeps burstiness); Poisson arrivals for a length table.",
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed for rescaling, length sampling and synthetic arrivals."),
    method: str = typer.Option("sample", "--method", help="Rescaling method: sample (thin/superpose) or time."),
    lengths: str | None = typer.Option(
        None, "--lengths", metavar="NAME|PATH", help="Replace lengths by seeded sampling from this table."
    ),
    start: float | None = typer.Option(None, "--start", help="Keep arrivals at or after this time, s."),
    end: float | None = typer.Option(None, "--end", help="Keep arrivals before this time, s."),
    exclude_failed: bool = typer.Option(
        False, "--exclude-failed", help="BurstGPT: drop failed requests (0 response tokens), counted in the output."
    ),
    out: str | None = typer.Option(
        None, "--out", metavar="PATH", help="Also write the resulting trace as biscale CSV (arrival_s, tokens)."
    ),
    json_out: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Summary of a trace or length table: requests, span, mean/peak rate, inter-arrival CV, length percentiles."""
    from biscale.workload import (
        RESCALE_METHODS,
        LengthTable,
        Trace,
        TraceOrderWarning,
        load_any,
        load_lengths,
        load_trace,
        rescale_rate,
        save_trace,
        slice_window,
        trace_stats,
        with_lengths,
    )

    if method not in RESCALE_METHODS:
        raise InputError(f"unknown rescale method {method!r} (known: {', '.join(RESCALE_METHODS)})", field="method")
    if out is not None:
        check_output_file(Path(out), "--out")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TraceOrderWarning)
        data: Trace | LengthTable = load_any(source, format, exclude_failed=exclude_failed)
        if isinstance(data, LengthTable) and rate is not None:
            data = load_trace(source, format, exclude_failed=exclude_failed, arrival_rate_rps=rate, seed=seed)
        elif isinstance(data, Trace):
            if start is not None or end is not None:
                data = slice_window(data, start or 0.0, float("inf") if end is None else end)
                if len(data) == 0:
                    window = f"[{data.meta['window_start_s']:g}, {data.meta['window_end_s']:g}) s"
                    raise InputError(f"{source}: no request arrives in the window {window}", field="start")
            if rate is not None:
                data = rescale_rate(data, rate, seed=seed, method=method)
                if len(data) == 0:
                    raise InputError(
                        f"rescaling {source} to {rate:g} req/s kept none of its requests; give a higher rate",
                        field="rate",
                    )
        elif start is not None or end is not None:
            raise InputError(f"{source}: a length table has no arrival times to cut a window from (add --rate)")
        if lengths is not None:
            table = load_lengths(lengths)
            data = with_lengths(data, table, seed=seed) if isinstance(data, Trace) else table
    for w in caught:
        typer.echo(f"biscale: warning: {w.message}", err=True)
    if out is not None:
        if not isinstance(data, Trace):
            raise InputError(f"{source}: a length table has no arrival times to write (add --rate)")
        save_trace(data, out)
    stats = trace_stats(data)
    stats["format"] = data.meta.get("format", "synthetic")
    if rate is not None:
        stats["target_rate_rps"] = rate
    if json_out:
        print_json(stats)
        return
    rows: list[list[Any]] = []
    labels = {
        "requests": "requests",
        "span_s": "span (s)",
        "mean_rate_rps": "mean rate (req/s)",
        "peak_rate_60s_rps": "peak 60 s rate (req/s)",
        "interarrival_cv": "inter-arrival CV",
        "excluded_failed_requests": "failed requests excluded",
        "out_of_order_rows": "out-of-order rows (sorted)",
    }
    for key, label in labels.items():
        if key in stats:
            rows.append([label, _fmt_num(stats[key])])
    for side in ("input", "output"):
        parts = [_fmt_num(stats[f"{side}_{p}_tokens"]) for p in ("mean", "p50", "p90", "p99", "max")]
        rows.append([f"{side} tokens mean/p50/p90/p99/max", " / ".join(parts)])
    print_table(f"{stats['name']} ({stats['format']}, {stats['source']})", ["statistic", "value"], rows)
