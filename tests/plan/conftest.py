"""Fixtures for the tier-1 tests: synthetic capacity tables (fast, controlled) and one small real table built on
the bundled predictor (2 clocks x 2 TP degrees per phase, 60 s probes)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from biscale.control.state import Slo
from biscale.plan.capacity import CapacitySettings, CapacityTable, ConfigCapacity, build_capacity_table
from biscale.predict import Predictor, default_predictor
from biscale.workload import Trace, load_lengths, load_trace, with_lengths

#: The small real table's settings: few configurations, short probes, coarse tolerance (fast, still meaningful).
SMALL = CapacitySettings(
    clocks_mhz=(1185, 1980),
    tps=(4, 8),
    probe_duration_s=60.0,
    rel_tol=0.08,
    load_fractions=(0.5,),
    reuse_brackets=False,
)


def config(
    phase: str,
    tp: int,
    clock: int,
    capacity: float,
    idle_w: float,
    busy_w: float,
    *,
    mid_w: float | None = None,
    kv_tokens: int = 10**9,
    mean_latency_ms: float = 30.0,
) -> ConfigCapacity:
    """A synthetic row: power idle_w at 0, mid_w (default: linear) at half load, busy_w at capacity."""
    mid = (idle_w + busy_w) / 2 if mid_w is None else mid_w
    loads = (0.0, capacity / 2, capacity) if capacity > 0 else (0.0,)
    power = (idle_w, mid, busy_w) if capacity > 0 else (idle_w,)
    return ConfigCapacity(
        phase=phase,
        tp=tp,
        clock_mhz=clock,
        capacity_rps=capacity,
        loads_rps=loads,
        power_w=power,
        p99_ms=100.0,
        mean_latency_ms=mean_latency_ms,
        kv_capacity_tokens=kv_tokens,
        throughput_est_rps=max(capacity, 1.0) * 1.5,
        probes=0,
    )


def synthetic_table(configs: Iterable[ConfigCapacity], *, top: int = 1980, unassigned_w: float = 70.0) -> CapacityTable:
    cfgs = tuple(configs)
    return CapacityTable(
        key="synthetic",
        gpu="test-gpu",
        model="test-model",
        slo=Slo(),
        clocks_mhz=tuple(sorted({c.clock_mhz for c in cfgs})),
        top_clock_mhz=top,
        supported_clocks_mhz=tuple(sorted({c.clock_mhz for c in cfgs} | {top})),
        unassigned_gpu_power_w=unassigned_w,
        workload={"mean_input_tokens": 200.0, "mean_output_tokens": 200.0, "kv_shape_factor": 1.0},
        settings={},
        configs=cfgs,
    )


@pytest.fixture(scope="session")
def workload() -> Trace:
    """The paper's workload: Azure conv arrivals with ShareGPT v3 lengths (seed 0)."""
    return with_lengths(load_trace("azure-conv"), load_lengths("sharegpt-v3"), seed=0)


@pytest.fixture(scope="session")
def small_table(workload: Trace, tmp_path_factory: pytest.TempPathFactory) -> CapacityTable:
    cache = tmp_path_factory.mktemp("capacity-cache")
    return build_capacity_table(default_predictor(), workload, Slo(), SMALL, workers=1, cache_dir=cache)


@pytest.fixture(scope="session")
def predictor() -> Predictor:
    return default_predictor("h100-sxm", "llama-3.3-70b")
