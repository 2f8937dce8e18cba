"""Golden regression tests: four small runs whose outputs are pinned, so refactoring the engine changes nothing.

Each scenario pins the summary (``golden.json``) and the per-request, per-instance and timeline tables (plus the
power segments where recorded) as CSV files (``golden/<scenario>/<table>.csv``, floats to 12 significant digits),
all compared to a relative 1e-9: a different CPU's libm may round the cost model's ``exp``/``log``/``pow`` one ULP
differently (2e-16 relative), which the run's arithmetic can grow by a few orders but not to 1e-9, while every
behaviour change seen so far moved some value by 1e-6 or more (the smallest modelled delay, the governor's 0.1 ms
wake-up, is 1e-5 of these runs' times). The CSV files also make a regeneration's ``git diff`` show which numbers
moved.

The goldens are regenerated from the code under test, so each scenario also checks values computed by hand in
this file (request 0's prefill, KV transfer and first token; energies from power x time) that would fail if the
engine composed its costs wrongly, whatever a regeneration wrote.

A *deliberate* behaviour change regenerates the goldens in its own commit, with the reason in the message::

    BISCALE_REGEN_GOLDEN=1 python -m pytest -q tests/sim/test_golden.py

(the run rewrites ``tests/sim/golden``; inspect ``git diff tests/sim/golden`` before committing).
"""

from __future__ import annotations

import functools
import io
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
from biscale.costmodel import PrefillShape
from biscale.hardware import get_hardware
from biscale.sim import SimConfig, SimResult, simulate
from biscale.workload import Trace

GOLDEN_DIR = Path(__file__).parent / "golden"
GOLDEN_FILE = GOLDEN_DIR / "golden.json"
"""The scenarios' summaries; their tables are ``GOLDEN_DIR/<scenario>/<table>.csv``."""
TABLES = ("requests", "instances", "timeline", "segments")
REGEN = os.environ.get("BISCALE_REGEN_GOLDEN", "") not in ("", "0")
REL = 1e-9
"""Relative tolerance of every pinned float (see the module docstring)."""
ABS = 1e-12
"""Absolute tolerance for values that should be 0 (a wait of 1e-17 s is 0): far below any modelled quantity."""
HW = get_hardware("h100-sxm", "llama-3.3-70b")


def mixed_trace(seed: int, n: int, span_s: float, max_in: int = 20_000, max_out: int = 160) -> Trace:
    """Prompts long enough to be chunked (8,000+ tokens) or rejected (> a TP2 instance's KV), one-token answers."""
    rng = np.random.default_rng(seed)
    arrival = np.sort(np.concatenate([[0.0], rng.uniform(0.0, span_s, n - 1)]))
    inp = rng.integers(20, 3_000, n)
    long = rng.random(n) < 0.08
    inp[long] = rng.integers(8_000, max_in, int(long.sum()))
    out = rng.integers(1, max_out, n)
    out[rng.random(n) < 0.1] = 1
    inp[n // 2] = 16_000  # above a TP2 prefill instance's KV capacity (12,939 tokens): rejected where none is larger
    return Trace(arrival, inp, out, name=f"golden-{seed}")


def burst_starts_s() -> tuple[float, ...]:
    """Start times of ``bursty_trace``'s bursts: short gaps (the GPUs stay at the governor's shallow idle) and long
    ones, each longer than the H100 model's governor down-clock delay plus a burst's service time (under 5 s here),
    so an unlocked GPU falls to deep idle and pays the wake-up delay at the next burst."""
    long_gap = HW.governor.downclock_after_s + 5.0
    return (0.0, 1.5, 1.5 + long_gap, 3.3 + long_gap, 3.3 + 2 * long_gap)


def bursty_trace(seed: int) -> Trace:
    """Bursts of 12 requests within 0.3 s, at :func:`burst_starts_s`."""
    rng = np.random.default_rng(seed)
    parts = [start + np.sort(rng.uniform(0.0, 0.3, 12)) for start in burst_starts_s()]
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


FIXED_BUDGET = 4096
"""Prefill token budget of ``fixed_placement``: longer prompts are chunked."""


def fixed_placement() -> SimResult:
    """Baseline clocks from the placement, chunked prompts, rejections, one-token answers; static clocks."""
    placement = parse_placement("prefill:1xTP2@1410,prefill:1xTP2,decode:1xTP4@max")
    cfg = SimConfig(nodes=1, gpus_per_node=8, prefill_token_budget=FIXED_BUDGET, sample_interval_s=0.5)
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
    """Dynamic prefill clocks with a 10 ms switch latency, the default governor on decode, idle gaps short and
    longer than the down-clock delay; a horizon inside the last burst; segments recorded."""
    placement = parse_placement("prefill:1xTP4,decode:1xTP4")
    cfg = SimConfig(
        nodes=1,
        gpus_per_node=8,
        prefill_token_budget=2048,
        switch_latency_s=0.010,
        max_time_s=burst_starts_s()[-1] + 0.4,
        sample_interval_s=0.25,
        record_segments=True,
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


@functools.cache
def result(name: str) -> SimResult:
    """Each scenario runs once per session (the golden and the coverage tests share it)."""
    return SCENARIOS[name]()


def table_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, float_format="%.12g", lineterminator="\n")


def tables(res: SimResult) -> dict[str, pd.DataFrame]:
    return {t: f for t in TABLES if (f := getattr(res, t)) is not None}


def summary_of(res: SimResult) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in res.summary.items()}


def _load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(GOLDEN_FILE.read_text())
    return data


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    if REGEN:
        GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
        for name in SCENARIOS:
            (GOLDEN_DIR / name).mkdir(exist_ok=True)
            for old in (GOLDEN_DIR / name).glob("*.csv"):
                old.unlink()
            for table, frame in tables(result(name)).items():
                (GOLDEN_DIR / name / f"{table}.csv").write_text(table_csv(frame))
        fresh = {name: summary_of(result(name)) for name in SCENARIOS}
        GOLDEN_FILE.write_text(json.dumps(fresh, indent=2, sort_keys=True) + "\n")
    return _load()


def assert_summary_equal(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert sorted(got) == sorted(want)
    for key, w in want.items():
        g = got[key]
        if isinstance(w, float) and isinstance(g, float | int) and not isinstance(g, bool):
            assert g == pytest.approx(w, rel=REL, abs=ABS), key
        else:
            assert g == w, key


def assert_table_equal(name: str, table: str, frame: pd.DataFrame) -> None:
    """``frame`` (written and read back as its golden was) equals the golden CSV: strings and integers exactly
    (a 1-token or 1-count difference is far above ``REL`` times any count here), floats to ``REL``/``ABS``."""
    want = pd.read_csv(GOLDEN_DIR / name / f"{table}.csv", keep_default_na=False, na_values=[""])
    got = pd.read_csv(io.StringIO(table_csv(frame)), keep_default_na=False, na_values=[""])
    pd.testing.assert_frame_equal(got, want, check_dtype=False, check_exact=False, rtol=REL, atol=ABS, obj=table)


# ---------------------------------------------------------------------- values computed by hand
# Llama 3.3 70B's KV cache per token: 80 layers x 8 KV heads x 128 head dimensions x 2 (K and V) x 2 bytes (bf16).
KV_BYTES_PER_TOKEN = 80 * 8 * 128 * 2 * 2  # = 327,680 B
NVLINK_BYTES_PER_S = 450e9  # per GPU and direction (DGX H100 datasheet), the default NetworkConfig
NVLINK_LATENCY_S = 30e-6
FRONTEND_OVERHEAD_S = 0.0023  # vLLM 0.33 server path to the first streamed token (measured), the default SimConfig


def one_prompt(tokens: int) -> PrefillShape:
    """A batch of one whole prompt of ``tokens``: causal pairs L (L + 1) / 2."""
    return PrefillShape(num_seqs=1, tokens_sum=tokens, tokens_sq_sum=float(tokens * tokens),
                        attn_pairs=tokens * (tokens + 1) / 2)  # fmt: skip


def kv_transfer_s(tokens: int, prefill_tp: int, decode_tp: int) -> float:
    """One transfer inside a node: latency + bytes / (min(TP) GPUs x the per-GPU NVLink bandwidth)."""
    return NVLINK_LATENCY_S + tokens * KV_BYTES_PER_TOKEN / (min(prefill_tp, decode_tp) * NVLINK_BYTES_PER_S)


def check_first_request(res: SimResult, *, prefill_tp: int, decode_tp: int, end_s: float, energy_j: float) -> None:
    """Request 0 arrives at t = 0 on an idle cluster, alone (request 1 arrives later), so its prefill batch, formed
    at once, holds it alone: the prefill ends at ``end_s`` with ``energy_j``, its KV crosses NVLink, its first
    token reaches the user after the front-end overhead."""
    assert HW.kv_bytes_per_token == KV_BYTES_PER_TOKEN
    r = res.requests.loc[0]
    assert r["arrival_s"] == 0.0 and r["prefill_start_s"] == 0.0 and res.requests.loc[1, "arrival_s"] > 0.0
    assert r["prefill_end_s"] == pytest.approx(end_s, rel=REL)
    assert r["prefill_energy_j"] == pytest.approx(energy_j, rel=REL)
    transfer = kv_transfer_s(int(r["input_tokens"]), prefill_tp, decode_tp)
    assert r["kv_transfer_start_s"] == pytest.approx(end_s, rel=REL)
    assert r["kv_transfer_end_s"] == pytest.approx(end_s + transfer, rel=REL)
    assert r["ttft_s"] == pytest.approx(end_s + transfer + FRONTEND_OVERHEAD_S, rel=REL)


def hand_fixed_placement(res: SimResult) -> None:
    # request 0: 2,328 tokens on prefill instance 0 (TP2 locked at 1,410 MHz); decode is TP4.
    # transfer = 30 us + 2,328 x 327,680 B / (2 x 450e9 B/s) = 30 us + 847.6 us = 877.6 us
    rq = res.requests
    assert rq.loc[0, "input_tokens"] == 2328 and rq.loc[0, "prefill_instance"] == 0  # the lowest id wins a tie
    assert kv_transfer_s(2328, 2, 4) == pytest.approx(877.6e-6, rel=1e-4)
    c = HW.prefill_cost(one_prompt(2328), 2, 1410)
    check_first_request(res, prefill_tp=2, decode_tp=4, end_s=c.latency_s, energy_j=c.latency_s * c.power_w * 2)
    # the 16,000-token prompt exceeds the KV capacity of both (TP2) prefill instances: rejected, nothing else
    big = rq.loc[rq["input_tokens"] == 16_000]
    assert HW.kv_capacity_tokens(2) < 16_000 and (big["status"] == "rejected").all()
    assert (rq.loc[rq["input_tokens"] <= HW.kv_capacity_tokens(2), "status"] == "completed").all()


def hand_placement_schedule(res: SimResult) -> None:
    # request 0: 1,611 tokens on prefill instance 0 (TP2, MaxClock: 1,980 MHz) of the first placement, before any
    # change; transfer = 30 us + 1,611 x 327,680 B / (2 x 450e9 B/s) = 30 us + 586.6 us = 616.6 us
    assert res.requests.loc[0, "input_tokens"] == 1611
    assert kv_transfer_s(1611, 2, 4) == pytest.approx(616.6e-6, rel=1e-4)
    c = HW.prefill_cost(one_prompt(1611), 2, 1980)
    check_first_request(res, prefill_tp=2, decode_tp=4, end_s=c.latency_s, energy_j=c.latency_s * c.power_w * 2)


def hand_governor_switches(res: SimResult) -> None:
    # request 0: 1,039 tokens on prefill TP4, starting at the initial clock (max, 1,980 MHz). QueueClock sees an
    # empty queue at t = 0 and asks for clocks[110 // 3] = clocks[36]; the switch lands 10 ms into the iteration:
    # a fraction f = 0.010 / lat(1980) of the work is done at 1,980 MHz, the rest takes (1 - f) x lat(low).
    assert res.requests.loc[0, "input_tokens"] == 1039 and res.requests.loc[1, "arrival_s"] > 0.010
    low = HW.supported_clocks_mhz[len(HW.supported_clocks_mhz) // 3]
    hi_c, lo_c = HW.prefill_cost(one_prompt(1039), 4, 1980), HW.prefill_cost(one_prompt(1039), 4, low)
    assert hi_c.latency_s > 0.010  # the switch does land inside the iteration
    f = 0.010 / hi_c.latency_s
    end = 0.010 + (1 - f) * lo_c.latency_s
    energy = 0.010 * hi_c.power_w * 4 + (end - 0.010) * lo_c.power_w * 4
    check_first_request(res, prefill_tp=4, decode_tp=4, end_s=end, energy_j=energy)
    # The decode instance stays under the default governor: an idle gap of length G > D (the down-clock delay)
    # after an iteration draws 4 GPUs x (D x shallow idle power + (G - D) x deep idle power).
    g = HW.governor
    seg = res.segments
    busy = seg[(seg["instance_id"] == 1) & (seg["busy"] == 1)].sort_values("start_s")
    gaps = busy["start_s"].to_numpy()[1:] - busy["end_s"].to_numpy()[:-1]
    k = int(np.argmax(gaps))
    t0, t1 = busy["end_s"].iloc[k], busy["start_s"].iloc[k + 1]
    assert t1 - t0 > g.downclock_after_s
    idle = seg[(seg["instance_id"] == 1) & (seg["start_s"] >= t0) & (seg["end_s"] <= t1)]
    hand = 4 * (g.downclock_after_s * g.shallow_idle_power_w + (t1 - t0 - g.downclock_after_s) * g.idle_power_w)
    assert float(((idle["end_s"] - idle["start_s"]) * idle["power_w"]).sum()) == pytest.approx(hand, rel=REL)


def hand_dynamic_both_phases(res: SimResult) -> None:
    # request 0: 1,286 tokens on prefill TP2; QueueClock's first answer (clocks[36]) is in force at once (zero
    # switch latency), so the whole prompt runs at it; transfer = 30 us + 1,286 x 327,680 / (2 x 450e9) = 498.2 us
    assert res.requests.loc[0, "input_tokens"] == 1286
    assert kv_transfer_s(1286, 2, 2) == pytest.approx(498.2e-6, rel=1e-4)
    low = HW.supported_clocks_mhz[len(HW.supported_clocks_mhz) // 3]
    c = HW.prefill_cost(one_prompt(1286), 2, low)
    check_first_request(res, prefill_tp=2, decode_tp=2, end_s=c.latency_s, energy_j=c.latency_s * c.power_w * 2)


HAND_CHECKS: dict[str, Callable[[SimResult], None]] = {
    "fixed_placement": hand_fixed_placement,
    "placement_schedule": hand_placement_schedule,
    "governor_switches": hand_governor_switches,
    "dynamic_both_phases": hand_dynamic_both_phases,
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_matches_golden(name: str, golden: dict[str, Any]) -> None:
    """The values computed by hand first (they hold whatever a regeneration wrote), then the pinned ones."""
    res = result(name)
    HAND_CHECKS[name](res)
    assert_summary_equal(summary_of(res), golden[name])
    got = tables(res)
    assert sorted(got) == sorted(p.stem for p in (GOLDEN_DIR / name).glob("*.csv"))
    for table, frame in got.items():
        assert_table_equal(name, table, frame)


def test_scenarios_exercise_what_they_claim() -> None:
    """The goldens are only worth having if the scenarios reach the code paths they are meant to pin."""
    rq = result("fixed_placement").requests
    assert (rq["status"] == "rejected").sum() > 0
    assert ((rq["input_tokens"] > FIXED_BUDGET) & (rq["status"] == "completed")).sum() > 0  # chunked prompts
    assert ((rq["output_tokens"] == 1) & (rq["status"] == "completed")).sum() > 0
    st = result("placement_schedule").instances
    assert (st["final_status"] == "stopped").sum() >= 2 and len(st) >= 6
    gov = result("governor_switches")
    s = gov.summary
    assert s["clock_switches"] > 5 and s["requests_unfinished"] > 0
    assert (gov.timeline["clock_mhz"] == GOVERNOR_MHZ).any()
    # the unlocked decode GPUs (TP4) fall to deep idle in a long gap and pay the wake-up delay after it
    g = HW.governor
    seg = gov.segments
    dec = seg[seg["instance_id"] == 1]
    assert (~dec["busy"].astype(bool) & np.isclose(dec["power_w"], 4 * g.idle_power_w)).any()
    wake = dec[dec["busy"].astype(bool) & np.isclose(dec["power_w"], 4 * g.shallow_idle_power_w)]
    assert len(wake) > 0 and np.allclose(wake["end_s"] - wake["start_s"], g.wake_delay_s)
    both = result("dynamic_both_phases").instances
    assert (both.loc[both["phase"] == "decode", "clock_switches"] > 0).all()
