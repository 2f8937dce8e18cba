"""Overload: at 4x a rate the placement sustains, the run still ends, in bounded memory, and reports violations.

(How fast it ends is a benchmark matter: ``benchmarks/sim_speed.py``.)"""

from __future__ import annotations

import tracemalloc

from biscale.control import MaxClock, parse_placement
from biscale.hardware import get_hardware
from biscale.sim import SimConfig, simulate
from biscale.workload import load_lengths, load_trace, rescale_rate, with_lengths

HW = get_hardware("h100-sxm", "llama-3.3-70b")
PLACEMENT = parse_placement("prefill:1xTP2,decode:1xTP4")


def workload(rate: float):  # type: ignore[no-untyped-def]
    return with_lengths(rescale_rate(load_trace("azure-conv"), rate, seed=0), load_lengths("sharegpt-v3"), seed=0)


def test_four_times_capacity_finishes_bounded_and_reports_violations() -> None:
    cfg = SimConfig(nodes=1, gpus_per_node=8, duration_s=120.0)
    ok = simulate(workload(15.0), PLACEMENT, HW, MaxClock(), config=cfg).summary
    assert ok["slo_met"] and ok["requests_completed"] == ok["requests_total"]  # 15 req/s is sustainable

    over_cfg = SimConfig(nodes=1, gpus_per_node=8, duration_s=120.0, max_time_s=150.0)
    tracemalloc.start()
    res = simulate(workload(60.0), PLACEMENT, HW, MaxClock(), config=over_cfg)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    s = res.summary
    assert peak < 64 * 2**20, f"peak traced memory {peak / 2**20:.1f} MiB"
    assert s["requests_total"] > 3.5 * ok["requests_total"]
    assert s["requests_unfinished"] > 0
    assert s["requests_total"] == s["requests_completed"] + s["requests_unfinished"] + s["requests_rejected"]
    assert not s["slo_met"]
    assert s["slo_violations"] >= s["requests_unfinished"] > 0
    assert s["slo_attainment_pct"] < 90.0
    assert s["ttft_p99_ms"] > s["slo_ttft_ms"]
    assert s["sim_time_s"] < 151.0  # the horizon stops new work; in-flight iterations end within a second
    unf = res.requests[res.requests["status"] == "unfinished"]
    assert set(unf["state"]) <= {
        "waiting_prefill",
        "prefilling",
        "waiting_decode_memory",
        "transferring",
        "waiting_decode",
        "decoding",
    }
