"""The MPC's plan search: the exact solver is the optimum (brute force), the greedy is feasible and never better."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from biscale.control.mpc import Plan, finish_times, meets_deadlines, solve_exact, solve_greedy
from biscale.errors import InputError


@st.composite
def instances(draw, max_k: int = 5, max_n: int = 4, release: bool = False):
    """A K x N latency/energy table shaped like a prefill batch's (latency falls with the clock) and deadlines
    that bind somewhere between the all-top and the all-lowest plans (or not at all)."""
    k = draw(st.integers(1, max_k))
    n = draw(st.integers(2, max_n))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    f = np.linspace(1.0, 2.0, n)
    base = rng.uniform(0.02, 0.3, k)
    lat = base[:, None] / f[None, :] ** rng.uniform(0.6, 1.0, k)[:, None]
    power = rng.uniform(150, 300, k)[:, None] * f[None, :] ** rng.uniform(1.0, 3.0, k)[:, None] + 80.0
    energy = lat * power
    if draw(st.booleans()):  # non-monotone energies happen too (the greedy must still be feasible)
        energy = energy * rng.uniform(0.9, 1.1, energy.shape)
    lo, hi = np.cumsum(lat[:, -1]), np.cumsum(lat[:, 0])
    dl = np.where(rng.random(k) < 0.7, lo + rng.uniform(-0.1, 1.1, k) * (hi - lo), np.inf)
    rel = np.sort(rng.uniform(0, hi[-1] / 2, k)) * (rng.random(k) < 0.5) if release else None
    return lat, energy, dl, rel


def brute_force(lat, energy, dl, rel=None) -> float:
    k, n = lat.shape
    best = np.inf
    for combo in itertools.product(range(n), repeat=k):
        levels = np.array(combo)
        if meets_deadlines(lat, levels, dl, rel):
            best = min(best, float(energy[np.arange(k), levels].sum()))
    return best


@given(instances())
def test_exact_is_the_optimum_and_greedy_is_feasible_and_never_better(inst):
    lat, energy, dl, _ = inst
    k = lat.shape[0]
    best = brute_force(lat, energy, dl)
    ex, gr = solve_exact(lat, energy, dl), solve_greedy(lat, energy, dl)
    if not np.isfinite(best):
        assert not ex.feasible and not gr.feasible
        assert ex.levels.tolist() == gr.levels.tolist() == [lat.shape[1] - 1] * k
        return
    assert ex.feasible and gr.feasible
    assert ex.energy_j == pytest.approx(best, rel=1e-9)
    for plan in (ex, gr):
        assert meets_deadlines(lat, plan.levels, dl)
        assert plan.energy_j == pytest.approx(float(energy[np.arange(k), plan.levels].sum()), rel=1e-9)
    assert gr.energy_j >= ex.energy_j * (1 - 1e-12)


@given(instances(release=True))
def test_exact_with_release_times_is_the_optimum(inst):
    lat, energy, dl, rel = inst
    best = brute_force(lat, energy, dl, rel)
    ex = solve_exact(lat, energy, dl, rel)
    assert ex.feasible == bool(np.isfinite(best))
    if ex.feasible:
        assert ex.energy_j == pytest.approx(best, rel=1e-9)
        assert meets_deadlines(lat, ex.levels, dl, rel)


def test_finish_times_wait_for_release():
    lat = np.array([[0.2, 0.1], [0.2, 0.1]])
    assert finish_times(lat, np.array([1, 1]), np.array([0.0, 0.5])).tolist() == pytest.approx([0.1, 0.6])
    assert finish_times(lat, np.array([0, 0])).tolist() == pytest.approx([0.2, 0.4])


def test_greedy_follows_the_paper_level_by_level():
    # three identical batches, one deadline on the last: all-top costs 3 x 9, each step down saves 2 J and adds
    # 0.1 s; a 0.5 s budget over 3 x 0.1 s at top allows two step-downs at the first lower level, no more.
    lat = np.tile([0.3, 0.2, 0.1], (3, 1))
    energy = np.tile([5.0, 7.0, 9.0], (3, 1))
    dl = np.array([np.inf, np.inf, 0.5])
    gr = solve_greedy(lat, energy, dl)
    assert sorted(gr.levels.tolist()) == [1, 1, 2] and gr.energy_j == pytest.approx(23.0)
    # the exact optimum is the same here (two steps of 0.1 s fit; a step of 0.2 s for one batch saves 4 J too)
    assert solve_exact(lat, energy, dl).energy_j == pytest.approx(23.0)


def test_greedy_gap_example():
    # batch 1 saves most by dropping two levels, which only fits if batch 0 stays at the top; the greedy first moves
    # both one level down (the cheapest step), after which batch 1 cannot drop further
    lat = np.array([[0.7, 0.6, 0.2], [0.9, 0.4, 0.3]])
    energy = np.array([[7.0, 7.0, 9.0], [1.0, 4.0, 8.0]])
    dl = np.array([np.inf, 1.4])
    gr, ex = solve_greedy(lat, energy, dl), solve_exact(lat, energy, dl)
    assert gr.levels.tolist() == [1, 1] and gr.energy_j == pytest.approx(11.0)
    assert ex.levels.tolist() == [2, 0] and ex.energy_j == pytest.approx(10.0) == brute_force(lat, energy, dl)


def test_greedy_refuses_huge_horizons():
    lat = np.ones((17, 2))
    with pytest.raises(InputError, match="K must be"):
        solve_greedy(lat, lat, np.full(17, np.inf))
    assert isinstance(solve_exact(lat * 0.01, lat, np.full(17, np.inf)), Plan)


def test_exact_drops_tied_labels_of_a_power_capped_plateau():
    """Clocks above the power cap give identical latency and energy: the front must not keep a copy per clock (the
    oracle's 16 clocks x 16 batches once built tens of millions of labels). The optimum is that of the table with
    the plateau collapsed to one column."""
    k, n, plateau = 14, 16, 7
    rng = np.random.default_rng(3)
    f = np.minimum(np.linspace(1.0, 2.0, n), np.linspace(1.0, 2.0, n)[plateau])  # flat from the plateau's clock up
    base = rng.uniform(0.03, 0.2, k)
    lat = base[:, None] / f[None, :] ** 0.8
    energy = lat * (150.0 * f[None, :] ** 2 + 80.0)
    rel = np.cumsum(rng.uniform(0.0, 0.06, k)) * (rng.random(k) < 0.6)
    ends_top = finish_times(lat, np.full(k, n - 1), rel)
    ends_low = finish_times(lat, np.zeros(k, dtype=np.int64), rel)
    dl = ends_top + 0.3 * (ends_low - ends_top)  # binding: neither all-top nor all-cheapest is the answer
    plan = solve_exact(lat, energy, dl, rel)
    collapsed = solve_exact(lat[:, : plateau + 1], energy[:, : plateau + 1], dl, rel)
    assert plan.feasible and collapsed.feasible
    assert meets_deadlines(lat, plan.levels, dl, rel)
    assert plan.energy_j == pytest.approx(collapsed.energy_j, rel=1e-12)
