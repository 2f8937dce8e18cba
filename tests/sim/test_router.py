"""Routers: least queued work per capacity, round robin, most free KV; and their effect in a run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from biscale.control import MaxClock, parse_placement
from biscale.sim import SimConfig, simulate
from biscale.sim.router import PREFILL_ROUTERS, least_work, most_free_kv
from biscale.sim.toy import ToyCostModel
from biscale.workload import Trace


@dataclass
class Fake:
    id: int
    queued_tokens: int = 0
    weight: float = 1.0
    kv_capacity: int = 1000
    kv_used: int = 0


def test_least_work_weights_by_capacity_and_breaks_ties_by_id() -> None:
    a, b = Fake(0, queued_tokens=300, weight=1.0), Fake(1, queued_tokens=500, weight=2.0)
    assert least_work([a, b], 10) is b  # 250 per unit of capacity < 300
    c, d = Fake(2, queued_tokens=100), Fake(3, queued_tokens=100)
    assert least_work([c, d], 10) is c


def test_round_robin_cycles() -> None:
    route = PREFILL_ROUTERS["round-robin"]()
    insts = [Fake(0), Fake(1), Fake(2)]
    assert [route(insts, 1).id for _ in range(5)] == [0, 1, 2, 0, 1]


def test_most_free_kv_needs_room() -> None:
    a, b = Fake(0, kv_used=100), Fake(1, kv_used=50)
    assert most_free_kv([a, b], 900) is b
    assert most_free_kv([a, b], 951) is None


def test_capacity_weighted_routing_in_a_run() -> None:
    rng = np.random.default_rng(0)
    n = 400
    tr = Trace(np.sort(np.concatenate([[0.0], rng.uniform(0, 20, n - 1)])), np.full(n, 2000), np.full(n, 2))
    plc = parse_placement("prefill:1xTP1,prefill:1xTP1,decode:1xTP2")
    weighted = plc.model_copy(
        update={"instances": (plc.instances[0].model_copy(update={"capacity_rps": 3.0}), *plc.instances[1:])}
    )
    res = simulate(tr, weighted, ToyCostModel(), MaxClock(), config=SimConfig(nodes=1, gpus_per_node=4))
    counts = res.requests["prefill_instance"].value_counts()
    assert counts[0] > counts[1]  # the instance declared 3x the capacity gets more work
    rr = simulate(
        tr, plc, ToyCostModel(), MaxClock(), config=SimConfig(nodes=1, gpus_per_node=4, prefill_router="round-robin")
    )
    assert rr.requests["prefill_instance"].value_counts().to_dict() == {0: n // 2, 1: n // 2}
