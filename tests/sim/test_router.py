"""Routers: least queued work per capacity, round robin, most free KV; their registry; their effect in a run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from biscale.control import MaxClock, parse_placement
from biscale.errors import InputError
from biscale.sim import SimConfig, simulate
from biscale.sim.router import DECODE_ROUTERS, PREFILL_ROUTERS, LeastWork, MostFreeKv
from biscale.sim.toy import ToyCostModel
from biscale.workload import Trace


@dataclass
class Fake:
    id: int
    queued_prompt_tokens: int = 0
    weight: float = 1.0
    kv_capacity_tokens: int = 1000
    kv_used_tokens: int = 0


def test_least_work_weights_by_capacity_and_breaks_ties_by_id() -> None:
    a, b = Fake(0, queued_prompt_tokens=300, weight=1.0), Fake(1, queued_prompt_tokens=500, weight=2.0)
    assert LeastWork().choose([a, b], 10) is b  # 250 per unit of capacity < 300
    c, d = Fake(2, queued_prompt_tokens=100), Fake(3, queued_prompt_tokens=100)
    assert LeastWork().choose([c, d], 10) is c


def test_round_robin_cycles() -> None:
    route = PREFILL_ROUTERS.get("round-robin")()
    insts = [Fake(0), Fake(1), Fake(2)]
    assert [route.choose(insts, 1).id for _ in range(5)] == [0, 1, 2, 0, 1]
    assert PREFILL_ROUTERS.get("round-robin")().choose(insts, 1).id == 0  # each run builds a fresh router


def test_most_free_kv_needs_room() -> None:
    a, b = Fake(0, kv_used_tokens=100), Fake(1, kv_used_tokens=50)
    assert MostFreeKv().choose([a, b], 900) is b
    assert MostFreeKv().choose([a, b], 951) is None


def test_registries_list_their_routers_and_refuse_unknown_names() -> None:
    assert PREFILL_ROUTERS.names() == ("least-work", "round-robin")
    assert DECODE_ROUTERS.names() == ("most-free-kv",)
    assert "queued prompt tokens" in PREFILL_ROUTERS.help("least-work")
    with pytest.raises(
        InputError,
        match=r"field 'prefill_router': unknown prefill router 'fastest' \(choices: least-work, round-robin\)",
    ):
        PREFILL_ROUTERS.get("fastest")
    with pytest.raises(ValueError, match="unknown decode router 'x'"):
        SimConfig(decode_router="x")


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
