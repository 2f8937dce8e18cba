"""Same simulator, two cost models: the hardware model (truth) and the learned predictors (belief)."""

from __future__ import annotations

import json

import pytest

from biscale.control import MaxClock, parse_placement
from biscale.costmodel import CostModel
from biscale.hardware import get_hardware
from biscale.predict import PredictorCostModel, default_predictor
from biscale.sim import SimConfig, simulate
from biscale.workload import load_lengths, load_trace, rescale_rate, with_lengths


def test_predictor_cost_model_plugs_in_and_agrees_with_truth() -> None:
    hw = get_hardware("h100-sxm", "llama-3.3-70b")
    belief = PredictorCostModel(default_predictor())
    assert isinstance(belief, CostModel) and isinstance(hw, CostModel)
    tr = with_lengths(rescale_rate(load_trace("azure-conv"), 10.0, seed=1), load_lengths("sharegpt-v3"), seed=1)
    cfg = SimConfig(nodes=1, gpus_per_node=8, duration_s=40.0)
    plc = parse_placement("prefill:1xTP2,decode:1xTP4")
    truth = simulate(tr, plc, hw, MaxClock(), config=cfg).summary
    pred = simulate(tr, plc, belief, MaxClock(), config=cfg)
    s = pred.summary
    assert s["requests_completed"] == truth["requests_completed"] == s["requests_total"]
    assert pred.requests["energy_j"].sum() == pytest.approx(s["energy_busy_j"], rel=1e-9)
    # the predictors are fitted to the hardware model within a few percent
    for key in ("ttft_p50_ms", "tpot_p50_ms", "energy_total_j", "decode_energy_per_output_token_j"):
        assert s[key] == pytest.approx(truth[key], rel=0.10), key


def test_cli_cost_model_option(run_cli) -> None:  # type: ignore[no-untyped-def]
    base = ["simulate", "--trace", "azure-conv", "--placement", "prefill:1xTP2,decode:1xTP4", "--duration", "10"]
    res = run_cli(*base, "--cost-model", "predictor", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["requests_completed"] > 0
    bad = run_cli(*base, "--cost-model", "oracle")
    assert bad.code == 2 and "unknown cost model 'oracle'" in bad.err
