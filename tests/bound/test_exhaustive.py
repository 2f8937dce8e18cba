"""The bound against exhaustive search: every sequence of per-iteration clocks (the governor's included) of a tiny
cluster, simulated; the bound is below the least cluster energy of every schedule that meets the SLOs, and not
vacuous (a fair fraction of it, and above the idle floor alone)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from biscale.bound import cluster_lower_bound
from biscale.control import parse_placement
from biscale.control.controllers import ClockController
from biscale.control.state import GOVERNOR_MHZ, InstanceState, Slo
from biscale.sim import SimConfig, simulate
from biscale.sim.toy import ToyCostModel
from biscale.workload.trace import Trace

TOY = ToyCostModel(clocks=(990, 1485, 1980))


class ClockSequence(ClockController):
    """The i-th iteration of its phase runs at ``clocks[i]`` (the last one after the sequence ends)."""

    def __init__(self, clocks: tuple[int, ...]) -> None:
        self.clocks = clocks
        self.calls = 0

    def decide(self, state: InstanceState) -> int | None:
        clock = self.clocks[min(self.calls, len(self.clocks) - 1)]
        self.calls += 1
        return clock


def least_energy(trace: Trace, spec: str, sim: SimConfig, options: tuple[int, ...]) -> tuple[float | None, int, float]:
    """(least cluster energy of the SLO-meeting schedules or None, schedules tried, least energy of any schedule)."""
    placement = parse_placement(spec)
    probe = {"prefill": ClockSequence((TOY.clocks[-1],)), "decode": ClockSequence((TOY.clocks[-1],))}
    simulate(trace, placement, TOY, probe, config=sim)
    n_pre, n_dec = probe["prefill"].calls, probe["decode"].calls
    assert n_pre >= 1 and n_dec >= 1
    best: float | None = None
    least = np.inf
    tried = 0
    for pre in itertools.product(options, repeat=n_pre):
        for dec in itertools.product(options, repeat=n_dec):
            res = simulate(
                trace, placement, TOY, {"prefill": ClockSequence(pre), "decode": ClockSequence(dec)}, config=sim
            )
            tried += 1
            energy = float(res.summary["energy_cluster_j"])
            least = min(least, energy)
            if res.summary["slo_met"] and (best is None or energy < best):
                best = energy
    return best, tried, float(least)


ONE = Trace(arrival_s=np.array([0.0]), input_tokens=np.array([300]), output_tokens=np.array([4]))
TWO = Trace(arrival_s=np.array([0.0, 0.01]), input_tokens=np.array([300, 120]), output_tokens=np.array([3, 4]))


@pytest.mark.parametrize(
    ("trace", "gpus", "slo", "options"),
    [
        (ONE, 2, Slo(ttft_s=1.0, tpot_s=1.0, percentile=100), (990, 1485, 1980, GOVERNOR_MHZ)),
        (ONE, 2, Slo(ttft_s=0.05, tpot_s=0.0135, percentile=100), (990, 1485, 1980, GOVERNOR_MHZ)),
        (TWO, 3, Slo(ttft_s=0.05, tpot_s=0.015, percentile=100), (990, 1980)),
    ],
)
def test_bound_is_below_every_slo_meeting_schedule_and_not_vacuous(
    trace: Trace, gpus: int, slo: Slo, options: tuple[int, ...]
) -> None:
    sim = SimConfig(nodes=1, gpus_per_node=gpus, switch_latency_s=0.0, slo=slo)
    best, tried, least = least_energy(trace, "prefill:TP1,decode:TP1", sim, options)
    assert tried >= 64
    assert best is not None, "the case must have SLO-meeting schedules"
    bound = cluster_lower_bound(trace, TOY, sim)
    assert bound.cluster_j <= best
    assert bound.cluster_j <= least or best > least  # an SLO can only raise the least energy
    assert bound.cluster_j >= 0.3 * best  # not vacuous
    assert bound.cluster_j > bound.floor_j * 1.2  # the iterations' share is real
    tokens = int(trace.input_tokens.sum() + (trace.output_tokens - 1).sum())
    assert bound.cluster_j_per_token == pytest.approx(bound.cluster_j / tokens)


def test_a_tighter_slo_never_lowers_the_bound() -> None:
    loose = SimConfig(nodes=1, gpus_per_node=2, slo=Slo(ttft_s=1.0, tpot_s=1.0, percentile=100))
    tight = SimConfig(nodes=1, gpus_per_node=2, slo=Slo(ttft_s=0.05, tpot_s=0.0135, percentile=100))
    a = cluster_lower_bound(TWO, TOY, loose)
    b = cluster_lower_bound(TWO, TOY, tight)
    assert b.cluster_j >= a.cluster_j * (1 - 1e-9)
    assert b.cluster_j > a.cluster_j  # the TPOT target forces faster decode iterations here


def test_an_slo_no_iteration_can_meet_gives_an_infinite_bound() -> None:
    sim = SimConfig(nodes=1, gpus_per_node=2, slo=Slo(ttft_s=0.012, tpot_s=1.0, percentile=100))
    bound = cluster_lower_bound(ONE, TOY, sim)  # the 9 ms front-end overhead leaves 3 ms: no prefill is that fast
    assert bound.cluster_j == np.inf
