"""From a table and a forecast to a placement: headroom, DistServe's rule, predictions, and infeasible answers."""

from __future__ import annotations

import math

import pytest

from biscale.errors import InputError
from biscale.plan.solve import Cluster, Demand, PlanSettings, plan_outcome

from .conftest import config, synthetic_table


def _table():  # type: ignore[no-untyped-def]
    rows = []
    for ph, base in (("prefill", 10.0), ("decode", 8.0)):
        for tp in (2, 4, 8):
            for clock, speed, watts in ((1000, 0.7, 0.5), (1500, 0.9, 0.75), (1980, 1.0, 1.0)):
                cap = base * tp / 2 * speed * (0.9 if tp == 8 else 1.0)  # TP8 scales a little worse per GPU
                rows.append(config(ph, tp, clock, cap, 60.0 * tp * (0.6 + 0.4 * watts), 500.0 * tp * watts))
    return synthetic_table(rows)


@pytest.mark.parametrize("rate", [0.0, 1.0, 7.5, 15.0, 20.0])
def test_feasible_plans_cover_the_forecast_with_headroom(rate: float) -> None:
    table = _table()
    cluster = Cluster(2, 8)
    placement, pred = plan_outcome(table, cluster, Demand.of(table, rate), PlanSettings(alpha=0.25))
    assert placement is not None and pred.feasible and pred.reason is None
    assert placement.total_gpus == pred.gpus_used <= cluster.gpus
    for ph, p in (("prefill", pred.prefill), ("decode", pred.decode)):
        assert p.capacity_rps >= 1.25 * rate - 1e-9 and p.instances >= 1
        groups = [g for g in placement.instances if g.phase == ph]
        assert p.capacity_rps == pytest.approx(sum(g.count * (g.capacity_rps or 0) for g in groups), rel=1e-6)
        tokens = rate * (200.0 if ph == "prefill" else 199.0)
        if rate > 0:
            assert p.energy_per_token_j == pytest.approx(p.power_w / tokens)
            assert p.utilisation_pct == pytest.approx(100 * rate / p.capacity_rps)
        for g in groups:  # capacity-weighted routing: every instance at the phase's utilisation
            assert g.load_rps == pytest.approx(p.utilisation_pct / 100 * (g.capacity_rps or 0), rel=1e-6)
            assert g.nodes is not None and len(g.nodes) == g.count
    assert pred.cluster_power_w == pytest.approx(pred.prefill.power_w + pred.decode.power_w + pred.unassigned_power_w)
    assert pred.unassigned_power_w == pytest.approx(70.0 * (cluster.gpus - pred.gpus_used))
    # node assignment: no node over-full
    used = [0] * cluster.nodes
    for g in placement.instances:
        for n in g.nodes or ():
            used[n] += g.tp
    assert max(used) <= cluster.gpus_per_node


def test_biscale_never_predicts_more_power_than_distserve() -> None:
    table = _table()
    for rate in (2.0, 10.0, 20.0):
        demand = Demand.of(table, rate)
        _, mine = plan_outcome(table, Cluster(2, 8), demand)
        _, theirs = plan_outcome(table, Cluster(2, 8), demand, method="distserve")
        assert mine.feasible and theirs.feasible
        assert mine.cluster_power_w <= theirs.cluster_power_w * (1 + 1e-9)


def test_distserve_rule_best_goodput_per_gpu_at_the_top_clock() -> None:
    table = _table()
    placement, pred = plan_outcome(table, Cluster(4, 8), Demand.of(table, 30.0), method="distserve")
    assert placement is not None and pred.feasible and pred.planner == "distserve"
    for ph, base in (("prefill", 10.0), ("decode", 8.0)):
        (g,) = [g for g in placement.instances if g.phase == ph]
        assert g.clock == 1980 and g.tp in (2, 4)  # TP8 has less capacity per GPU in this table
        assert g.count == math.ceil(1.2 * 30.0 / (base * g.tp / 2))


def test_unreachable_slo_is_a_structured_answer_with_a_top_clock_fallback() -> None:
    table = _table()
    dead = synthetic_table(
        [c for c in table.configs if c.phase == "prefill"]
        + [config("decode", tp, clk, 0.0, 60.0 * tp, 0.0) for tp in (2, 4, 8) for clk in (1000, 1980)]
    )
    placement, pred = plan_outcome(dead, Cluster(2, 8), Demand.of(dead, 5.0))
    assert (
        not pred.feasible and pred.reason is not None and pred.reason.startswith("SLO unreachable: no tabulated decode")
    )
    assert pred.gpus_needed is None and pred.nodes_needed is None
    assert placement is not None and placement.prediction == pred
    assert {g.clock for g in placement.instances} == {1980}
    assert {g.phase for g in placement.instances} == {"prefill", "decode"}


def test_cluster_too_small_says_what_would_suffice_and_falls_back() -> None:
    table = _table()
    small = Cluster(1, 8)
    placement, pred = plan_outcome(table, small, Demand.of(table, 60.0))
    assert not pred.feasible and pred.reason is not None and "cluster too small" in pred.reason
    assert pred.gpus_needed is not None and pred.nodes_needed is not None and pred.gpus_needed > small.gpus
    # the answer is right: that many nodes make it feasible
    _, big = plan_outcome(table, Cluster(pred.nodes_needed, 8), Demand.of(table, 60.0))
    assert big.feasible and big.gpus_used >= pred.gpus_needed
    _, one_less = plan_outcome(table, Cluster(pred.nodes_needed - 1, 8), Demand.of(table, 60.0))
    assert not one_less.feasible
    # fallback: top clock, the whole small cluster, capacity below the forecast but both phases present
    assert placement is not None and {g.clock for g in placement.instances} == {1980}
    assert pred.gpus_used <= small.gpus and pred.prefill.utilisation_pct > 100 / 1.2


def test_no_fallback_when_one_instance_per_phase_does_not_fit() -> None:
    table = _table()
    placement, pred = plan_outcome(table, Cluster.of_gpus(2, 8), Demand.of(table, 1.0))
    assert placement is None and not pred.feasible
    assert pred.reason is not None and "cannot hold one prefill and one decode instance" in pred.reason


def test_clock_restriction_and_unassigned_power_setting() -> None:
    table = _table()
    placement, pred = plan_outcome(
        table, Cluster(2, 8), Demand.of(table, 5.0), PlanSettings(clocks_mhz=(1500,), unassigned_gpu_power_w=0.0)
    )
    assert placement is not None and {g.clock for g in placement.instances} == {1500}
    assert pred.unassigned_power_w == 0.0


def test_bad_settings_and_demand() -> None:
    with pytest.raises(InputError, match="alpha"):
        PlanSettings(alpha=-0.1)
    with pytest.raises(InputError, match="do not divide"):
        Cluster.of_gpus(12, 8)
    with pytest.raises(InputError, match="forecast rate"):
        Demand.of(_table(), -1.0)
    with pytest.raises(InputError, match="unknown planning method"):
        plan_outcome(_table(), Cluster(1, 8), Demand.of(_table(), 1.0), method="magic")
    d = Demand.of(_table(), 3.0, float("nan"), 0.0)  # unknown lengths fall back to the table's workload
    assert (d.mean_input_tokens, d.mean_output_tokens) == (200.0, 200.0)
