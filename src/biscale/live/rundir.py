"""The files a live run writes, through the results layout of ``biscale evaluate`` (:mod:`biscale.results.layout`).

Layout (docs/results.md): ``OUT/results.json`` (one run, scenario ``live``) and ``OUT/runs/live/<load label>/<system>/``
holding ``requests.parquet`` (the simulator's request columns, with what a client cannot see left NaN / -1, plus
``send_s`` and ``error``), ``tokens.parquet`` (request_id, token_index, time_s: every streamed token),
``instances.parquet`` and ``timeline.parquet`` (the simulator's columns; per GPU group when energy was measured, else
empty), ``summary.json`` (:func:`biscale.metrics.summarize` + ``meta``) and ``config.json``. The run's figures in
``results.json`` are computed from those files by the same code as an evaluation's, so ``biscale report OUT`` reads a
live run like any evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from biscale.results.layout import one_run_results, write_results, write_run_dir

SCENARIO = "live"


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
    ident = {"scenario": SCENARIO, "load": load_rps, "load_label": load, "system": system}
    run_dir = write_run_dir(
        root / "runs" / SCENARIO / load / system,
        tables={
            "requests.parquet": requests,
            "tokens.parquet": tokens,
            "instances.parquet": instances,
            "timeline.parquet": timeline,
        },
        summary={**summary, "meta": {**meta, **ident, "biscale_version": __version__}},
        config=config,
    )
    results = one_run_results(run_dir, root=root, description="a live load-generator run")
    write_results(root, results)
    return run_dir
