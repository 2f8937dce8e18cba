"""The ``bounds[]`` record the evaluation writes, and each run's gap to it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from biscale.bound import METHOD, bound_record, cluster_lower_bound
from biscale.control.state import Slo
from biscale.sim import SimConfig
from biscale.sim.toy import ToyCostModel
from biscale.workload.trace import Trace

TOY = ToyCostModel(clocks=(990, 1485, 1980))
TRACE = Trace(
    arrival_s=np.array([0.0, 0.5, 1.0]), input_tokens=np.array([300, 50, 800]), output_tokens=np.array([5, 1, 9])
)
SIM = SimConfig(nodes=1, gpus_per_node=2, slo=Slo(ttft_s=0.5, tpot_s=0.05))


def test_the_record_names_units_and_matches_the_bound() -> None:
    bound = cluster_lower_bound(TRACE, TOY, SIM)
    rec = bound_record("toy", 0.67, "67pct", 3.0, TRACE, TOY, SIM)
    assert rec["scenario"] == "toy" and rec["load"] == 0.67 and rec["load_label"] == "67pct"
    assert rec["method"] == METHOD
    assert rec["cluster_j_per_token"] == pytest.approx(bound.cluster_j_per_token)
    assert rec["energy_cluster_j"] == pytest.approx(
        rec["floor_j"] + rec["prefill_excess_j"] + rec["decode_excess_j"], rel=1e-5
    )
    assert rec["tokens"] == 300 + 50 + 800 + 4 + 0 + 8
    assert rec["gpus"] == 2
    assert rec["horizon_s"] >= rec["min_horizon_s"] >= 1.0  # the last arrival at least
    assert rec["base_cluster_j_per_token"] <= rec["cluster_j_per_token"]
    for key in rec:
        assert key in {"scenario", "load", "load_label", "method", "gpus", "tokens", "exempt_requests"} or key.endswith(
            ("_j", "_s", "_w", "_rps", "_j_per_token")
        ), key


def test_gap_to_the_bound() -> None:
    bound = cluster_lower_bound(TRACE, TOY, SIM)
    assert bound.gap_pct(bound.cluster_j_per_token * 1.25) == pytest.approx(25.0)
    assert bound.gap_pct(bound.cluster_j_per_token) == pytest.approx(0.0)


def test_deterministic_and_more_gpus_raise_the_idle_floor() -> None:
    a = cluster_lower_bound(TRACE, TOY, SIM)
    assert cluster_lower_bound(TRACE, TOY, SIM).cluster_j == a.cluster_j
    b = cluster_lower_bound(TRACE, TOY, SIM.model_copy(update={"gpus_per_node": 4}))
    assert b.floor_j == pytest.approx(2 * a.floor_j * b.horizon_s / a.horizon_s)
    assert b.cluster_j > a.cluster_j
    assert not math.isinf(b.cluster_j)


def test_one_phase_alone_is_refused() -> None:
    with pytest.raises(ValueError, match="covers both phases; this configuration simulates decode alone"):
        cluster_lower_bound(TRACE, TOY, SIM.model_copy(update={"isolate_phase": "decode"}))
