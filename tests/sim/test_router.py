"""Routers: least queued work per capacity, round robin, most free KV, VoltanaLLM's state-space router; their
registry; their effect in a run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from biscale.control import MaxClock, parse_placement
from biscale.errors import InputError
from biscale.sim import SimConfig, simulate
from biscale.sim.router import DECODE_ROUTERS, PREFILL_ROUTERS, STATE_SPACE_TILE, LeastWork, MostFreeKv, StateSpace
from biscale.sim.toy import ToyCostModel
from biscale.workload import Trace


@dataclass
class Fake:
    id: int
    queued_prompt_tokens: int = 0
    weight: float = 1.0
    kv_capacity_tokens: int = 1000
    kv_used_tokens: int = 0
    clock_mhz: int = 1980
    requests: int = 0

    def work_items(self) -> int:
        return self.requests


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


def test_state_space_below_the_tile_prefers_the_lowest_clock_then_the_fewest_requests() -> None:
    a, b = Fake(0, clock_mhz=1980, requests=3), Fake(1, clock_mhz=1125, requests=90)
    c = Fake(2, clock_mhz=1125, requests=40)
    assert StateSpace().choose([a, b, c], 10) is c
    gov = Fake(3, clock_mhz=0, requests=0)  # the default governor counts as the top clock
    assert StateSpace().choose([gov, b], 10) is b


def test_state_space_routes_away_from_a_batch_boundary() -> None:
    tile = STATE_SPACE_TILE
    at_boundary = Fake(0, requests=tile, clock_mhz=1125)  # its next request opens a second tile
    inside = Fake(1, requests=tile + 40, clock_mhz=1980)  # two tiles started, room in the second
    assert StateSpace().choose([at_boundary, inside], 10) is inside
    # among instances that stay inside their tiles: fewest tiles, then the fullest (pack up to the boundary)
    low, full = Fake(2, requests=tile - 1), Fake(3, requests=tile - 30)
    assert StateSpace().choose([inside, full, low], 10) is low
    # every instance at a boundary: the first of the order (fewest tiles, most requests)
    both = [Fake(4, requests=2 * tile), Fake(5, requests=tile)]
    assert StateSpace().choose(both, 10).id == 5


def test_state_space_needs_room() -> None:
    roomy, tight = Fake(0, requests=tile_minus(1), kv_used_tokens=100), Fake(1, requests=5, kv_used_tokens=990)
    assert StateSpace().choose([tight, roomy], 50) is roomy  # tight's 10 free tokens cannot hold 50
    assert StateSpace().choose([tight], 50) is None


def tile_minus(k: int) -> int:
    return STATE_SPACE_TILE - k


def test_registries_list_their_routers_and_refuse_unknown_names() -> None:
    assert PREFILL_ROUTERS.names() == ("least-work", "round-robin")
    assert DECODE_ROUTERS.names() == ("most-free-kv", "state-space")
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
