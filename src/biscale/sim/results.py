"""Results of a run: per-request table, per-instance timeline and table, summary metrics, files on disk."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biscale.control.controllers import ClockController
from biscale.control.placement import Placement
from biscale.control.planner import Planner
from biscale.costmodel import CostModel
from biscale.jsonio import write_json
from biscale.metrics import summarize
from biscale.sim.config import SimConfig
from biscale.sim.engine import Simulator
from biscale.sim.instance import STATUS_LABELS, DecodeInstance, PrefillInstance
from biscale.workload.trace import Trace

#: Columns of the power-segment table (``instance_id`` -1: the GPUs in no instance, all together).
SEGMENT_COLUMNS = ("instance_id", "start_s", "end_s", "power_w", "busy")


@dataclass
class SimResult:
    """Everything a run produced. ``summary`` is JSON-ready; tables are pandas DataFrames."""

    requests: pd.DataFrame
    """One row per request of the (possibly truncated) trace; columns in ``docs/simulator.md``."""
    timeline: pd.DataFrame
    """One row per instance per sample time."""
    instances: pd.DataFrame
    """One row per instance that ever existed: GPUs, lifetime, energy, clock switches."""
    summary: dict[str, Any]
    """Aggregate metrics (every numeric key names its unit)."""
    segments: pd.DataFrame | None = None
    """Every constant-power segment (only with ``SimConfig.record_segments``); ``instance_id`` -1 rows are the
    GPUs in no instance."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Provenance: trace, placement, controllers, planner, package version (written into ``summary.json``)."""
    config: dict[str, Any] = field(default_factory=dict)
    """The resolved configuration of the run (written as ``config.json``): the simulator settings under ``sim``;
    ``biscale simulate`` replaces it with its whole run configuration, which ``--config`` reads back."""

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``requests.parquet``, ``timeline.parquet``, ``instances.parquet``, ``summary.json`` and
        ``config.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "requests": out / "requests.parquet",
            "timeline": out / "timeline.parquet",
            "instances": out / "instances.parquet",
            "summary": out / "summary.json",
            "config": out / "config.json",
        }
        self.requests.to_parquet(paths["requests"], index=False)
        self.timeline.to_parquet(paths["timeline"], index=False)
        self.instances.to_parquet(paths["instances"], index=False)
        write_json(paths["summary"], {**self.summary, "meta": self.meta})
        write_json(paths["config"], self.config, indent=2)
        return paths


def simulate(
    trace: Trace,
    placement: Placement,
    cost_model: CostModel,
    controllers: ClockController | Mapping[str, ClockController] | None = None,
    planner: Planner | None = None,
    config: SimConfig | None = None,
    progress: Callable[[float], None] | None = None,
) -> SimResult:
    """Replay ``trace`` on ``placement`` priced by ``cost_model``.

    ``controllers``: one controller for both phases or ``{"prefill": ..., "decode": ...}`` (default: keep each
    instance's baseline clock). ``planner``: asked at every window boundary (default: the placement stays).
    """
    sim = Simulator(trace, placement, cost_model, controllers, planner, config, progress)
    sim.run()
    return collect(sim)


def instance_table(sim: Simulator) -> pd.DataFrame:
    """One row per instance that ever existed (columns in ``docs/simulator.md``)."""
    rows = []
    for i in sim.instances:
        led = i.ledger
        rows.append(
            {
                "instance_id": i.id,
                "phase": i.phase,
                "tp": i.tp,
                "node": i.node,
                "gpus": ",".join(str(g) for g in i.gpus),
                "baseline_clock": "" if i.spec.clock is None else str(i.spec.clock),
                "start_s": i.start_s,
                "ready_s": i.ready_s,
                "stop_s": i.stop_s,
                "final_status": STATUS_LABELS[i.status],
                "iterations": led.iterations,
                "tokens": i.tokens,
                "clock_switches": led.clock_switches,
                "busy_energy_j": led.busy_energy_j,
                "idle_energy_j": led.idle_energy_j,
                "energy_j": led.busy_energy_j + led.idle_energy_j,
                "kv_capacity_tokens": i.kv_capacity_tokens,
                "kv_peak_tokens": i.kv_peak_tokens,
                "kv_blocked_s": i.kv_blocked_s if isinstance(i, PrefillInstance) else 0.0,
                "preemptions": i.preemptions if isinstance(i, DecodeInstance) else 0,
                "recomputed_tokens": i.recomputed_tokens if isinstance(i, DecodeInstance) else 0,
            }
        )
    return pd.DataFrame(rows)


def collect(sim: Simulator) -> SimResult:
    """Turn a finished :class:`Simulator` into a :class:`SimResult`."""
    from biscale import __version__

    cfg = sim.config
    requests = sim.requests.to_frame()
    instances = instance_table(sim)
    segments = None
    if sim.segments is not None:
        segments = pd.DataFrame(sim.segments, columns=list(SEGMENT_COLUMNS))
    decode = [i for i in sim.instances if isinstance(i, DecodeInstance)]
    token_gaps = (
        np.fromiter((g for i in decode for g in i.token_gap_s), dtype=np.float64),
        np.fromiter((n for i in decode for n in i.token_gap_tokens), dtype=np.int64),
    )
    summary = summarize(
        requests,
        instances,
        cfg.slo,
        sim.end_time_s,
        unassigned_energy_j=sim.fleet.unassigned_energy_j,
        token_gaps=token_gaps,
    )
    summary["events"] = sim.events_processed
    meta = {
        "trace": sim.trace.name,
        "placement": sim.fleet.target.spec(),
        "controllers": {p: c.name for p, c in sim.controllers.items()},
        "planner": None if sim.planner is None else sim.planner.name,
        "biscale_version": __version__,
    }
    config = {"sim": cfg.model_dump(mode="json")}
    return SimResult(requests, sim.timeline.to_frame(), instances, summary, segments, meta, config)
