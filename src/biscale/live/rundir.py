"""The files a live run writes: a run directory as ``SimResult.write`` makes one, and a one-run ``results.json``.

Layout (RESULTS_FORMAT.md): ``OUT/results.json`` and ``OUT/runs/live/<load label>/<system>/`` holding
``requests.parquet`` (the simulator's request columns, with what a client cannot see left NaN / -1, plus ``send_s``
and ``error``), ``tokens.parquet`` (request_id, token_index, time_s: every streamed token), ``instances.parquet`` and
``timeline.parquet`` (the simulator's columns; per GPU group when energy was measured, else empty), ``summary.json``
(:func:`biscale.metrics.summarize` + ``meta``) and ``config.json``. :func:`write_live_run` is the one place that
writes them, so it can move onto the shared results writer of ``biscale evaluate`` when that lands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from biscale.jsonio import write_json

RESULTS_FORMAT = "biscale-results"
RESULTS_VERSION = 1
SCENARIO = "live"


def run_fields(summary: dict[str, Any]) -> dict[str, Any]:
    """The ``runs[]`` entry of ``results.json`` from a run's summary (every key names its unit)."""
    tokens = (summary.get("prompt_tokens") or 0) + (summary.get("decode_tokens") or 0)
    energy = summary.get("energy_total_j")
    keys = ("p50", "p90", "p99")
    return {
        "prefill_j_per_token": summary.get("prefill_energy_per_prompt_token_j"),
        "decode_j_per_token": summary.get("decode_energy_per_output_token_j"),
        "cluster_j_per_token": energy / tokens if energy is not None and tokens else None,
        "energy_total_j": energy,
        "avg_power_w": summary.get("avg_power_w"),
        **{f"ttft_{k}_ms": summary.get(f"ttft_{k}_ms") for k in keys},
        **{f"tpot_{k}_ms": summary.get(f"tpot_{k}_ms") for k in keys},
        "p99_ttft_ms": summary.get("ttft_p99_ms"),
        "p99_tpot_ms": summary.get("tpot_p99_ms"),
        "slo_met": summary.get("slo_met"),
        "slo_attainment_pct": summary.get("slo_attainment_pct"),
        "windows_slo_met_pct": None,
        "goodput_rps": summary.get("goodput_rps"),
        "clock_switches": summary.get("clock_switches"),
        "preemptions": None,
        "controller_time_per_decision_us": None,
        "requests_total": summary.get("requests_total"),
        "requests_completed": summary.get("requests_completed"),
        "requests_failed": summary.get("requests_failed"),
    }


def write_live_run(
    out: str | Path,
    *,
    load: str,
    load_rps: float | None,
    system: str,
    requests: pd.DataFrame,
    tokens: pd.DataFrame,
    instances: pd.DataFrame,
    timeline: pd.DataFrame,
    summary: dict[str, Any],
    meta: dict[str, Any],
    config: dict[str, Any],
) -> Path:
    """Write the run directory and ``OUT/results.json``; returns the run directory."""
    from biscale import __version__

    root = Path(out)
    run_dir = root / "runs" / SCENARIO / load / system
    run_dir.mkdir(parents=True, exist_ok=True)
    requests.to_parquet(run_dir / "requests.parquet", index=False)
    tokens.to_parquet(run_dir / "tokens.parquet", index=False)
    instances.to_parquet(run_dir / "instances.parquet", index=False)
    timeline.to_parquet(run_dir / "timeline.parquet", index=False)
    ident = {"scenario": SCENARIO, "load": load_rps, "load_label": load, "system": system}
    write_json(run_dir / "summary.json", {**summary, "meta": {**meta, **ident, "biscale_version": __version__}})
    write_json(run_dir / "config.json", config, indent=2)
    run = {**ident, "run_dir": str(run_dir.relative_to(root))}
    write_json(
        root / "results.json",
        {
            "format": RESULTS_FORMAT,
            "version": RESULTS_VERSION,
            "biscale_version": __version__,
            "config": config,
            "scenarios": [{"name": SCENARIO, "description": "a live load-generator run", "capacity_rps": None}],
            "runs": [{**run, **run_fields(summary)}],
            "savings": [],
            "oracle_gap": [],
        },
        indent=2,
    )
    return run_dir
