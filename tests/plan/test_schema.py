"""The Placement schema extended with a planner's predictions: round trip, validation, backward compatibility."""

from __future__ import annotations

import json

import pytest

from biscale.control.placement import InstanceSpec, Placement, parse_placement
from biscale.errors import InputError
from biscale.plan.capacity import CapacityTable
from biscale.plan.solve import Cluster, Demand, plan_outcome


def test_plan_round_trips_through_json(small_table: CapacityTable, tmp_path) -> None:  # type: ignore[no-untyped-def]
    placement, pred = plan_outcome(small_table, Cluster(2, 8), Demand.of(small_table, 12.0))
    assert placement is not None and placement.prediction == pred
    path = tmp_path / "plan.json"
    path.write_text(placement.to_json())
    loaded = Placement.load(path)
    assert loaded == placement
    assert loaded.prediction is not None and loaded.prediction.prefill.power_w == pytest.approx(pred.prefill.power_w)
    data = json.loads(path.read_text())
    assert {"phase", "tp", "count", "clock", "capacity_rps", "nodes", "load_rps", "power_w"} <= set(
        data["instances"][0]
    )
    assert data["prediction"]["feasible"] is True and "cluster_power_w" in data["prediction"]


def test_expand_gives_each_instance_its_node() -> None:
    g = InstanceSpec(phase="decode", tp=4, count=3, clock=1200, nodes=(0, 0, 1))
    p = Placement(instances=(InstanceSpec(phase="prefill", tp=8), g))
    assert [s.nodes for s in p.expand()] == [None, (0,), (0,), (1,)]
    assert all(s.count == 1 for s in p.expand())


def test_new_fields_are_validated_and_old_files_still_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="one node index"):
        InstanceSpec(phase="decode", tp=4, count=2, nodes=(0,))
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"instances": [{"phase": "prefill", "tp": 2, "power_w": -1}, {"phase": "decode", "tp": 2}]})
    )
    with pytest.raises(InputError, match=r"instances\.0\.power_w"):
        Placement.load(bad)
    old = tmp_path / "old.json"
    old.write_text(
        json.dumps(
            {"instances": [{"phase": "prefill", "tp": 2, "count": 2, "clock": 1410}, {"phase": "decode", "tp": 4}]}
        )
    )
    assert Placement.load(old) == parse_placement("prefill:2xTP2@1410,decode:TP4")
