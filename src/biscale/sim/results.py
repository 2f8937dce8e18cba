"""Results of a run: per-request table, per-instance timeline, summary metrics, files on disk."""

from __future__ import annotations

import json
import math
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
from biscale.sim.config import SimConfig
from biscale.sim.engine import DONE, REJECTED, STATE_NAMES, STATUS_NAMES, Simulator
from biscale.workload.trace import Trace

TIMELINE_COLUMNS = (
    "time_s",
    "instance_id",
    "phase",
    "tp",
    "status",
    "clock_mhz",
    "power_w",
    "energy_j",
    "queue_len",
    "batch_size",
    "kv_used_tokens",
    "kv_capacity_tokens",
)


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
    """Every constant-power segment (only with ``SimConfig.record_segments``)."""
    meta: dict[str, Any] = field(default_factory=dict)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``requests.parquet``, ``timeline.parquet``, ``instances.parquet`` and ``summary.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "requests": out / "requests.parquet",
            "timeline": out / "timeline.parquet",
            "instances": out / "instances.parquet",
            "summary": out / "summary.json",
        }
        self.requests.to_parquet(paths["requests"], index=False)
        self.timeline.to_parquet(paths["timeline"], index=False)
        self.instances.to_parquet(paths["instances"], index=False)
        from biscale.cli.common import to_json_text

        paths["summary"].write_text(to_json_text({**self.summary, "meta": self.meta}) + "\n")
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


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


def collect(sim: Simulator) -> SimResult:
    """Turn a finished :class:`Simulator` into a :class:`SimResult`."""
    cfg = sim.cfg
    n = sim.n
    state = np.asarray(sim.state, dtype=np.int64)
    arrival = np.asarray(sim.arrival, dtype=np.float64)
    inp = np.asarray(sim.inp, dtype=np.int64)
    out = np.asarray(sim.out, dtype=np.int64)
    first = np.asarray(sim.first_tok, dtype=np.float64)
    last = np.asarray(sim.last_tok, dtype=np.float64)
    # decode energy of requests still running at the end: their share of the iterations they took part in
    d_energy = list(sim.d_energy)
    generated = np.zeros(n, dtype=np.int64)
    for inst in sim.instances:
        if inst.phase != "decode":
            continue
        for r in inst.running:
            k0 = sim.join_k[r]
            d_energy[r] = inst.cum[inst.k] - inst.cum[k0]
            generated[r] = 1 + inst.k - k0
    done = state == DONE
    generated[done] = out[done]
    has_first = np.isfinite(first)
    generated[has_first & ~done & (generated == 0)] = 1
    ttft = first - arrival
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(done & (out > 1), (last - first) / (out - 1), np.nan)
    status = np.where(done, "completed", np.where(state == REJECTED, "rejected", "unfinished"))
    p_energy = np.asarray(sim.p_energy, dtype=np.float64)
    d_energy_a = np.asarray(d_energy, dtype=np.float64)
    requests = pd.DataFrame(
        {
            "request_id": np.arange(n, dtype=np.int64),
            "arrival_s": arrival,
            "input_tokens": inp,
            "output_tokens": out,
            "status": status,
            "state": np.asarray(STATE_NAMES, dtype=object)[state],
            "reject_reason": [sim.reject_reason.get(i, "") for i in range(n)],
            "prefill_instance": np.asarray(sim.p_inst, dtype=np.int64),
            "decode_instance": np.asarray(sim.d_inst, dtype=np.int64),
            "prefill_start_s": np.asarray(sim.p_start, dtype=np.float64),
            "prefill_end_s": np.asarray(sim.p_end, dtype=np.float64),
            "kv_transfer_start_s": np.asarray(sim.kv_start, dtype=np.float64),
            "kv_transfer_end_s": np.asarray(sim.kv_end, dtype=np.float64),
            "first_token_s": first,
            "last_token_s": last,
            "ttft_s": ttft,
            "tpot_s": tpot,
            "max_tbt_s": np.asarray(sim.max_gap, dtype=np.float64),
            "tokens_generated": generated,
            "prefill_energy_j": p_energy,
            "decode_energy_j": d_energy_a,
            "energy_j": p_energy + d_energy_a,
        }
    )
    timeline = pd.DataFrame(sim.timeline_rows, columns=list(TIMELINE_COLUMNS))
    inst_rows = []
    for i in sim.instances:
        inst_rows.append(
            {
                "instance_id": i.id,
                "phase": i.phase,
                "tp": i.tp,
                "node": i.node,
                "gpus": ",".join(str(g) for g in i.gpus),
                "baseline_clock": "" if i.spec.clock is None else str(i.spec.clock),
                "start_s": i.t_start,
                "ready_s": i.t_ready,
                "stop_s": i.t_stop,
                "final_status": STATUS_NAMES[i.status],
                "iterations": i.iters,
                "tokens": i.tokens,
                "clock_switches": i.switches,
                "busy_energy_j": i.e_busy,
                "idle_energy_j": i.e_idle,
                "energy_j": i.e_busy + i.e_idle,
            }
        )
    instances = pd.DataFrame(inst_rows)
    segments = None
    if cfg.record_segments:
        segments = pd.DataFrame(sim.segments, columns=["instance_id", "start_s", "end_s", "power_w", "busy"])
    summary = summarize(sim, requests, instances)
    meta = {
        "trace": sim.trace.name,
        "placement": sim.target.spec(),
        "controllers": {p: c.name for p, c in sim.controllers.items()},
        "planner": None if sim.planner is None else sim.planner.name,
    }
    return SimResult(requests, timeline, instances, summary, segments, meta)


def summarize(sim: Simulator, requests: pd.DataFrame, instances: pd.DataFrame) -> dict[str, Any]:
    """The summary metrics (definitions in ``docs/simulator.md``)."""
    slo = sim.cfg.slo
    status = requests["status"].to_numpy()
    done = status == "completed"
    total = len(requests)
    ttft = requests["ttft_s"].to_numpy()[done]
    tpot_all = requests["tpot_s"].to_numpy()[done]
    tpot = tpot_all[np.isfinite(tpot_all)]
    max_tbt = requests["max_tbt_s"].to_numpy()[done]
    ttft_ok = np.zeros(total, dtype=bool)
    tpot_ok = np.zeros(total, dtype=bool)
    ttft_ok[done] = ttft <= slo.ttft_s
    tpot_ok[done] = ~(tpot_all > slo.tpot_s)  # NaN (one-token outputs) meets the TPOT target
    both_ok = ttft_ok & tpot_ok
    end = float(sim.end_time)
    e_busy = float(instances["busy_energy_j"].sum()) if len(instances) else 0.0
    e_idle = float(instances["idle_energy_j"].sum()) if len(instances) else 0.0
    e_total = e_busy + e_idle
    by_phase = {
        ph: instances[instances["phase"] == ph] if len(instances) else instances for ph in ("prefill", "decode")
    }
    e_prefill = float(by_phase["prefill"]["energy_j"].sum())
    e_decode = float(by_phase["decode"]["energy_j"].sum())
    prompt_tokens = int(by_phase["prefill"]["tokens"].sum())
    decode_tokens = int(by_phase["decode"]["tokens"].sum())
    completed = int(done.sum())
    pct = slo.percentile

    def per(a: float, b: float) -> float:
        return a / b if b > 0 else math.nan

    def pct_of(mask: np.ndarray) -> float:
        return 100.0 * float(mask.sum()) / total if total else math.nan

    ttft_att = pct_of(ttft_ok)
    tpot_att = pct_of(tpot_ok)
    return {
        "requests_total": total,
        "requests_completed": completed,
        "requests_unfinished": int((status == "unfinished").sum()),
        "requests_rejected": int((status == "rejected").sum()),
        "sim_time_s": end,
        "ttft_p50_ms": 1e3 * _pct(ttft, 50),
        "ttft_p90_ms": 1e3 * _pct(ttft, 90),
        "ttft_p99_ms": 1e3 * _pct(ttft, 99),
        "ttft_mean_ms": 1e3 * float(ttft.mean()) if ttft.size else math.nan,
        "tpot_p50_ms": 1e3 * _pct(tpot, 50),
        "tpot_p90_ms": 1e3 * _pct(tpot, 90),
        "tpot_p99_ms": 1e3 * _pct(tpot, 99),
        "tpot_mean_ms": 1e3 * float(tpot.mean()) if tpot.size else math.nan,
        "max_tbt_p99_ms": 1e3 * _pct(max_tbt, 99),
        "slo_ttft_ms": 1e3 * slo.ttft_s,
        "slo_tpot_ms": 1e3 * slo.tpot_s,
        "slo_percentile_pct": pct,
        "ttft_attainment_pct": ttft_att,
        "tpot_attainment_pct": tpot_att,
        "slo_attainment_pct": pct_of(both_ok),
        "slo_met": bool(total > 0 and ttft_att >= pct and tpot_att >= pct),
        "slo_violations": int(total - both_ok.sum()),
        "goodput_rps": per(float(both_ok.sum()), end),
        "throughput_rps": per(float(completed), end),
        "prompt_tokens": prompt_tokens,
        "decode_tokens": decode_tokens,
        "energy_total_j": e_total,
        "energy_busy_j": e_busy,
        "energy_idle_j": e_idle,
        "energy_prefill_j": e_prefill,
        "energy_decode_j": e_decode,
        "prefill_energy_per_prompt_token_j": per(e_prefill, prompt_tokens),
        "decode_energy_per_output_token_j": per(e_decode, decode_tokens),
        "prefill_busy_energy_per_prompt_token_j": per(float(by_phase["prefill"]["busy_energy_j"].sum()), prompt_tokens),
        "decode_busy_energy_per_output_token_j": per(float(by_phase["decode"]["busy_energy_j"].sum()), decode_tokens),
        "energy_per_request_j": per(e_total, completed),
        "avg_power_w": per(e_total, end),
        "clock_switches": int(instances["clock_switches"].sum()) if len(instances) else 0,
        "instances_total": len(instances),
        "events": sim.events,
    }


def summary_json(result: SimResult) -> str:
    """The summary as one JSON line."""
    from biscale.cli.common import to_json_text

    return to_json_text(result.summary)


def read_summary(path: str | Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return data
