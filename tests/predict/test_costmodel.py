"""The CostModel adapter: usable in place of the hardware model, facts from the artifact, never the hardware model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from biscale.costmodel import CostModel, DecodeShape, PrefillShape
from biscale.errors import InputError
from biscale.predict import PredictorCostModel, load_predictor


@pytest.fixture(scope="module")
def cm(fitted) -> PredictorCostModel:  # type: ignore[no-untyped-def]
    return PredictorCostModel(load_predictor(fitted.artifact))


def test_satisfies_protocol(cm) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(cm, CostModel)


def test_costs_track_hardware_model(cm, hw) -> None:  # type: ignore[no-untyped-def]
    for clk in (1050, 1410, 1980):
        pre = PrefillShape.from_lengths([220, 180, 640])
        got, truth = cm.prefill_cost(pre, 4, clk), hw.prefill_cost(pre, 4, clk)
        assert got.effective_clock_mhz == clk
        assert got.latency_s == pytest.approx(truth.latency_s, rel=0.06)
        assert got.power_w == pytest.approx(truth.power_w, rel=0.08)
        dec = DecodeShape.from_lengths([400] * 48)
        got, truth = cm.decode_cost(dec, 8, clk), hw.decode_cost(dec, 8, clk)
        assert got.latency_s == pytest.approx(truth.latency_s, rel=0.06)
        assert got.power_w == pytest.approx(truth.power_w, rel=0.08)


def test_governor_clock_is_top_clock(cm) -> None:  # type: ignore[no-untyped-def]
    shape = PrefillShape.from_lengths([500])
    top = max(cm.predictor.clocks_mhz("prefill", 2))
    assert cm.prefill_cost(shape, 2, None) == cm.prefill_cost(shape, 2, top)


def test_facts_come_from_the_profile(cm, fitted) -> None:  # type: ignore[no-untyped-def]
    meta = fitted.meta
    for tp in (2, 4, 8):
        assert cm.kv_capacity_tokens(tp) == meta.kv_capacity_tokens[tp]
        clk = sorted(meta.idle_power_w[tp])[2]
        assert cm.idle_power_w(tp, clk) == pytest.approx(meta.idle_power_w[tp][clk])
    assert cm.kv_bytes_per_token == meta.kv_bytes_per_token
    assert meta.governor is not None
    assert cm.governor.idle_power_w == meta.governor.idle_power_w
    assert cm.idle_power_w(4, None) == meta.governor.idle_power_w
    assert cm.supported_clocks_mhz == tuple(meta.supported_clocks_mhz)
    # idle power between profiled clocks is interpolated and stays between its neighbours
    clocks = sorted(meta.idle_power_w[4])
    mid = (clocks[3] + clocks[4]) // 2
    lo, hi = sorted((meta.idle_power_w[4][clocks[3]], meta.idle_power_w[4][clocks[4]]))
    assert lo <= cm.idle_power_w(4, mid) <= hi


def test_empty_batches_cost_nothing(cm) -> None:  # type: ignore[no-untyped-def]
    c = cm.decode_cost(DecodeShape(0, 0, 0.0), 4, 1200)
    assert c.latency_s == 0.0 and c.power_w == pytest.approx(cm.idle_power_w(4, 1200))


def test_artifact_without_profile_facts(fitted, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "bare"
    shutil.copytree(fitted.artifact, d)
    meta = json.loads((d / "predictor.json").read_text())
    meta["profile_meta"] = None
    (d / "predictor.json").write_text(json.dumps(meta))
    cm = PredictorCostModel(load_predictor(d))
    assert cm.prefill_cost(PrefillShape.from_lengths([100]), 4, 1500).latency_s > 0
    with pytest.raises(InputError, match="has no KV capacity for tp=4"):
        cm.kv_capacity_tokens(4)
    with pytest.raises(InputError, match="has no governor facts"):
        _ = cm.governor
    assert np.isfinite(cm.max_clock_mhz)


def test_simulator_runs_on_beliefs(hw) -> None:  # type: ignore[no-untyped-def]
    """The same trace and placement on the bundled predictor and on the hardware model: close energy and TPOT."""
    from biscale.control import MaxClock, parse_placement
    from biscale.predict import default_predictor
    from biscale.sim import SimConfig, simulate
    from biscale.workload import Trace

    rng = np.random.default_rng(1)
    n = 300
    arrival = np.sort(np.concatenate([[0.0], rng.uniform(0, 30, n - 1)]))
    trace = Trace(arrival, rng.integers(1, 2000, n), rng.integers(1, 200, n))
    placement = parse_placement("prefill:2xTP2,decode:2xTP4")
    cfg = SimConfig(nodes=2, gpus_per_node=8)
    cm = PredictorCostModel(default_predictor())
    truth = simulate(trace, placement, hw, MaxClock(), config=cfg).summary
    belief = simulate(trace, placement, cm, MaxClock(), config=cfg).summary
    assert belief["requests_completed"] == truth["requests_completed"] == n
    assert belief["energy_total_j"] == pytest.approx(truth["energy_total_j"], rel=0.05)
    # p90 and mean, not p99: over 300 requests the p99 is the third-worst, a request of a few tokens whose TPOT
    # hinges on which iterations it happens to share (a 1 % latency difference reorders them).
    assert belief["tpot_p90_ms"] == pytest.approx(truth["tpot_p90_ms"], rel=0.05)
    assert belief["tpot_mean_ms"] == pytest.approx(truth["tpot_mean_ms"], rel=0.05)
