"""Golden regression tests: four small runs whose outputs are pinned, so refactoring the engine changes nothing.

Each scenario pins the summary (floats to a relative 1e-9, NaN equal to NaN) and a SHA-256 of the per-request,
per-instance and timeline tables (plus the power segments where recorded), written as CSV with floats rounded to
9 significant digits so the digests do not depend on the platform's last-bit rounding.

The golden values live in ``tests/sim/golden/golden.json``. A *deliberate* behaviour change regenerates them in
its own commit, with the reason in the message::

    BISCALE_REGEN_GOLDEN=1 python -m pytest -q tests/sim/test_golden.py

(the run rewrites the file; inspect ``git diff tests/sim/golden`` before committing).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from biscale.control import (
    GOVERNOR_MHZ,
    ClockController,
    DefaultGovernor,
    InstanceState,
    MaxClock,
    ScheduledPlanner,
    parse_placement,
)
from biscale.hardware import get_hardware
from biscale.sim import SimConfig, SimResult, simulate
from biscale.workload import Trace

GOLDEN_FILE = Path(__file__).parent / "golden" / "golden.json"
REGEN = os.environ.get("BISCALE_REGEN_GOLDEN", "") not in ("", "0")
REL = 1e-9
HW = get_hardware("h100-sxm", "llama-3.3-70b")


def mixed_trace(seed: int, n: int, span_s: float, max_in: int = 20_000, max_out: int = 160) -> Trace:
    """Prompts long enough to be chunked (> 8,192 tokens) or rejected (> a TP2 instance's KV), one-token answers."""
    rng = np.random.default_rng(seed)
    arrival = np.sort(np.concatenate([[0.0], rng.uniform(0.0, span_s, n - 1)]))
    inp = rng.integers(20, 3_000, n)
    long = rng.random(n) < 0.08
    inp[long] = rng.integers(8_000, max_in, int(long.sum()))
    out = rng.integers(1, max_out, n)
    out[rng.random(n) < 0.1] = 1
    inp[n // 2] = 16_000  # above a TP2 prefill instance's KV capacity (12,939 tokens): rejected where none is larger
    return Trace(arrival, inp, out, name=f"golden-{seed}")


def bursty_trace(seed: int) -> Trace:
    """Bursts separated by gaps longer than the governor's down-clock delay (0.5 s on the H100 model)."""
    rng = np.random.default_rng(seed)
    parts = [start + np.sort(rng.uniform(0.0, 0.3, 12)) for start in (0.0, 1.5, 2.2, 4.0, 6.5)]
    arrival = np.concatenate(parts)
    arrival -= arrival[0]
    n = arrival.size
    return Trace(arrival, rng.integers(50, 1_500, n), rng.integers(1, 90, n), name=f"bursty-{seed}")


class QueueClock(ClockController):
    """A deterministic dynamic controller reading only the queue behind the batch, the clock and the time."""

    name = "queue-clock"

    def decide(self, state: InstanceState) -> int | None:
        if state.pending_clock_mhz is not None:
            return None
        clocks = state.supported_clocks_mhz
        if state.queue_len >= 3:
            return clocks[-1]
        if state.queue_len > 0:
            return clocks[len(clocks) // 2]
        if int(state.time_s * 4) % 2:
            return GOVERNOR_MHZ
        return clocks[len(clocks) // 3]


def fixed_placement() -> SimResult:
    """Baseline clocks from the placement, chunked prompts, rejections, one-token answers; static fast path."""
    placement = parse_placement("prefill:1xTP2@1410,prefill:1xTP2,decode:1xTP4@max")
    cfg = SimConfig(nodes=1, gpus_per_node=8, prefill_token_budget=4096, sample_interval_s=0.5)
    return simulate(mixed_trace(11, 60, 12.0), placement, HW, config=cfg)


def placement_schedule() -> SimResult:
    """Scale out, scale in with draining, a full reconfiguration; start-up time; segments recorded."""
    a = parse_placement("prefill:1xTP2,decode:1xTP4")
    b = parse_placement("prefill:2xTP2,decode:2xTP4")
    c = parse_placement("prefill:1xTP4,decode:1xTP8")
    planner = ScheduledPlanner([(0.0, a), (3.0, b), (7.0, c)])
    cfg = SimConfig(
        nodes=2, gpus_per_node=8, prefill_token_budget=4096, window_s=1.5, startup_s=0.4, record_segments=True
    )
    return simulate(mixed_trace(12, 50, 11.0, max_in=12_000), a, HW, MaxClock(), planner=planner, config=cfg)


def governor_switches() -> SimResult:
    """Dynamic prefill clocks with a 10 ms switch latency, the default governor on decode, idle gaps; a horizon."""
    placement = parse_placement("prefill:1xTP4,decode:1xTP4")
    cfg = SimConfig(
        nodes=1,
        gpus_per_node=8,
        prefill_token_budget=2048,
        switch_latency_s=0.010,
        max_time_s=6.9,
        sample_interval_s=0.25,
    )
    ctrl = {"prefill": QueueClock(), "decode": DefaultGovernor()}
    return simulate(bursty_trace(13), placement, HW, ctrl, config=cfg)


def dynamic_both_phases() -> SimResult:
    """A dynamic controller on decode too, with immediate switches (zero switch latency)."""
    placement = parse_placement("prefill:1xTP2,decode:2xTP2")
    cfg = SimConfig(nodes=1, gpus_per_node=8, prefill_token_budget=2048, switch_latency_s=0.0)
    return simulate(bursty_trace(14), placement, HW, QueueClock(), config=cfg)


SCENARIOS: dict[str, Callable[[], SimResult]] = {
    "fixed_placement": fixed_placement,
    "placement_schedule": placement_schedule,
    "governor_switches": governor_switches,
    "dynamic_both_phases": dynamic_both_phases,
}


def table_digest(frame: pd.DataFrame) -> str:
    """SHA-256 of the table as CSV, floats to 9 significant digits (platform-stable)."""
    text = frame.to_csv(index=False, float_format="%.9g", lineterminator="\n")
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(res: SimResult) -> dict[str, Any]:
    digests = {
        "requests": table_digest(res.requests),
        "instances": table_digest(res.instances),
        "timeline": table_digest(res.timeline),
    }
    if res.segments is not None:
        digests["segments"] = table_digest(res.segments)
    summary = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in res.summary.items()}
    return {"summary": summary, "sha256": digests}


def _load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(GOLDEN_FILE.read_text())
    return data


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    if REGEN:
        fresh = {name: fingerprint(run()) for name, run in SCENARIOS.items()}
        GOLDEN_FILE.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN_FILE.write_text(json.dumps(fresh, indent=2, sort_keys=True) + "\n")
    return _load()


def assert_summary_equal(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert sorted(got) == sorted(want)
    for key, w in want.items():
        g = got[key]
        if isinstance(w, float) and isinstance(g, float | int) and not isinstance(g, bool):
            assert g == pytest.approx(w, rel=REL, abs=0.0), key
        else:
            assert g == w, key


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_matches_golden(name: str, golden: dict[str, Any]) -> None:
    got = fingerprint(SCENARIOS[name]())
    want = golden[name]
    assert_summary_equal(got["summary"], want["summary"])
    assert got["sha256"] == want["sha256"]


def test_scenarios_exercise_what_they_claim() -> None:
    """The goldens are only worth having if the scenarios reach the code paths they are meant to pin."""
    fixed = fixed_placement()
    rq = fixed.requests
    assert (rq["status"] == "rejected").sum() > 0
    assert ((rq["input_tokens"] > 8192) & (rq["status"] == "completed")).sum() > 0  # chunked prompts
    assert ((rq["output_tokens"] == 1) & (rq["status"] == "completed")).sum() > 0
    sched = placement_schedule()
    st = sched.instances
    assert (st["final_status"] == "stopped").sum() >= 2 and len(st) >= 6
    gov = governor_switches()
    s = gov.summary
    assert s["clock_switches"] > 5 and s["requests_unfinished"] > 0
    assert (gov.timeline["clock_mhz"] == GOVERNOR_MHZ).any()
    both = dynamic_both_phases().instances
    assert (both.loc[both["phase"] == "decode", "clock_switches"] > 0).all()
