"""``hindsight-lock``: a clairvoyant comparator (it reads the truth) for "the best locked clocks an operator could
have picked, had they known each window in advance".

Per planning window and phase it locks every instance to one clock, the one of least **true** energy that still
met that window's SLOs, chosen after seeing the window on the ground truth; instances idle at the lowest clock. The
choice is made on the better of DistServe's and BiScale's placements (their planners' decisions do not depend on the
clocks, so each placement sequence is the one of its own run).

How, within an evaluation's time budget: for each placement, one whole-trace simulation per candidate clock
(:data:`CANDIDATE_CLOCKS_MHZ`, both phases at that clock), on the truth, in ascending order until the choice is
settled (:func:`settled`: every window met by some pair and the last clock run chosen by no window; on the default
evaluation 3-4 of the 5 candidates). Each window's prefill energy, decode energy,
TTFT misses, TPOT misses and P99 TPOT are read per clock from those runs (prefill clocks barely move TPOT and decode
clocks barely move TTFT, so one run serves both phases); per window the pair (prefill clock, decode clock) of least
energy is taken whose TTFT misses plus TPOT misses (a union bound on the joint misses) stay within ``100 -
percentile`` % of the window's requests and whose P99 TPOT is within the ITL target (at a locked clock a request's
gaps are its iterations, so its mean gap stands for its gaps; the run's own ITL is reported, not assumed). No
feasible pair: the top clock. The placement whose chosen windows sum to less energy wins. The final run with that
schedule is the system's run, judged like every other (its verdict is not assumed from the search).

It is a heuristic comparator, not a bound: windows interact (a slow window leaves a backlog), and only the candidate
clocks are tried.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biscale.control.state import Slo
from biscale.evaluate.planning import build_planner, submitted

#: Candidate locked clocks, MHz: the capacity table's clocks from 990 up (795 MHz meets no SLO at these loads); run
#: in ascending order until the choice is settled, so the high ones cost nothing when no window needs them.
CANDIDATE_CLOCKS_MHZ = (990, 1185, 1380, 1590, 1785, 1980)
#: The placements tried: the planners whose placements hindsight-lock may use.
REFERENCE_PLANNERS = ("distserve", "biscale")

HINDSIGHT_FORMAT = "biscale-evaluate-hindsight"
HINDSIGHT_VERSION = 2


@dataclass
class HindsightSchedule:
    """What the search found: the placement's planner and each phase's clock per window (MHz)."""

    planner: str
    prefill_mhz: list[int]
    decode_mhz: list[int]
    estimated_energy_j: dict[str, float] = field(default_factory=dict)
    """Per reference planner, the chosen windows' instance energy summed over the candidate runs, J."""
    runs: int = 0
    """Simulations the search ran."""


@dataclass
class WindowFigures:
    """One candidate run's per-window figures (arrays over windows)."""

    prefill_j: np.ndarray
    decode_j: np.ndarray
    ttft_miss: np.ndarray
    """Requests that arrived in the window and missed TTFT (unfinished ones included), count."""
    tpot_miss: np.ndarray
    requests: np.ndarray
    p99_tpot_s: np.ndarray


def window_figures(
    requests: pd.DataFrame, timeline: pd.DataFrame, slo: Slo, window_s: float, windows: int
) -> WindowFigures:
    """Per window: each phase's instance energy (from the timeline's cumulative energies), the window's requests
    (by arrival) and their TTFT and TPOT misses, and their P99 TPOT."""
    energy = {"prefill": np.zeros(windows), "decode": np.zeros(windows)}
    if len(timeline):
        tl = timeline.sort_values(["instance_id", "time_s"])
        e = tl["energy_j"].to_numpy(dtype=np.float64)
        inc = np.diff(e, prepend=0.0)
        first = np.r_[True, tl["instance_id"].to_numpy()[1:] != tl["instance_id"].to_numpy()[:-1]]
        inc[first] = e[first]
        w = np.clip(np.ceil(tl["time_s"].to_numpy(dtype=np.float64) / window_s).astype(np.int64) - 1, 0, windows - 1)
        phase = tl["phase"].to_numpy()
        for ph in energy:
            m = phase == ph
            energy[ph] = np.bincount(w[m], weights=inc[m], minlength=windows)[:windows].astype(np.float64)
    arrival = requests["arrival_s"].to_numpy(dtype=np.float64)
    status = requests["status"].to_numpy()
    keep = status != "not_arrived"
    done = status == "completed"
    ttft = requests["ttft_s"].to_numpy(dtype=np.float64)
    tpot = requests["tpot_s"].to_numpy(dtype=np.float64)
    ttft_bad = keep & ~(done & (ttft <= slo.ttft_s))
    tpot_bad = keep & ~(done & ~(tpot > slo.tpot_s))
    idx = np.clip(np.floor(arrival / window_s).astype(np.int64), 0, windows - 1)
    n = np.bincount(idx[keep], minlength=windows)[:windows]
    p99 = np.zeros(windows)
    for k in range(windows):
        t = tpot[(idx == k) & done]
        t = t[np.isfinite(t)]
        p99[k] = float(np.percentile(t, slo.percentile)) if t.size else 0.0
    return WindowFigures(
        energy["prefill"],
        energy["decode"],
        np.bincount(idx[ttft_bad], minlength=windows)[:windows].astype(np.float64),
        np.bincount(idx[tpot_bad], minlength=windows)[:windows].astype(np.float64),
        n.astype(np.float64),
        p99,
    )


def feasible_pairs(figures: dict[int, WindowFigures], slo: Slo) -> list[tuple[float, int, int] | None]:
    """Per window, ``(energy J, prefill clock, decode clock)`` of the least-energy pair that met the window (see the
    module docstring), or None where no pair did."""
    clocks = sorted(figures)
    windows = figures[clocks[-1]].requests.size
    allowed = (100.0 - slo.percentile) / 100.0
    out: list[tuple[float, int, int] | None] = []
    for w in range(windows):
        best: tuple[float, int, int] | None = None
        for cp in clocks:
            fp = figures[cp]
            for cd in clocks:
                fd = figures[cd]
                n = max(fp.requests[w], 1.0)
                if fp.ttft_miss[w] + fd.tpot_miss[w] > allowed * n + 1e-9 or fd.p99_tpot_s[w] > slo.itl_target_s:
                    continue
                e = float(fp.prefill_j[w] + fd.decode_j[w])
                if best is None or e < best[0]:
                    best = (e, cp, cd)
        out.append(best)
    return out


def choose(figures: dict[int, WindowFigures], slo: Slo) -> tuple[list[int], list[int], float]:
    """Per window, the (prefill, decode) clock pair of least energy meeting the window (see the module docstring);
    the top clock where none does. Returns the two schedules and the chosen windows' energy, J."""
    top = max(figures)
    pre: list[int] = []
    dec: list[int] = []
    total = 0.0
    for w, best in enumerate(feasible_pairs(figures, slo)):
        if best is None:
            best = (float(figures[top].prefill_j[w] + figures[top].decode_j[w]), top, top)
        total += best[0]
        pre.append(best[1])
        dec.append(best[2])
    return pre, dec, total


def settled(figures: dict[int, WindowFigures], slo: Slo) -> bool:
    """Whether the ascending candidate runs so far suffice: at least two clocks ran, every window has a pair that
    met it, and no window chose the highest clock run so far in either phase. A higher clock only helps a window
    it makes feasible or where energy falls again with the clock; above the clocks chosen, a locked clock's energy
    per token rises with the clock (the hardware model's and the profiles' shape), so further runs would not
    change the choice."""
    if len(figures) < 2:
        return False
    top = max(figures)
    pairs = feasible_pairs(figures, slo)
    return all(p is not None and top not in p[1:] for p in pairs)


def search_hindsight(scenario: Any, trace: Any, table: Any, truth: Any) -> HindsightSchedule:
    """Run the candidate simulations on the truth and choose the schedule (see the module docstring)."""
    from biscale.control.controllers import snap_clock
    from biscale.control.factory import make_controller
    from biscale.plan.planners import ClockSchedulePlanner
    from biscale.sim import simulate

    sim = scenario.sim_config()
    arrivals = submitted(trace, sim.duration_s)
    span = float(arrivals[-1]) if arrivals.size else 0.0
    windows = max(1, math.ceil(span / sim.window_s + 1e-9))
    supported = truth.supported_clocks_mhz
    cands = sorted({snap_clock(c, tuple(supported)) for c in CANDIDATE_CLOCKS_MHZ})
    ctrl = {ph: make_controller("baseline-idlelow", ph) for ph in ("prefill", "decode")}
    results: dict[str, tuple[list[int], list[int], float]] = {}
    runs = 0
    for ref in REFERENCE_PLANNERS:
        figures: dict[int, WindowFigures] = {}
        for c in cands:  # ascending, until the choice is settled
            inner, first, _ = build_planner(scenario, ref, table, arrivals)
            planner = ClockSchedulePlanner(inner, {"prefill": [c], "decode": [c]}, first)
            res = simulate(trace, planner.clocked(first, 0), truth, ctrl, planner, sim)
            runs += 1
            figures[c] = window_figures(res.requests, res.timeline, sim.slo, sim.window_s, windows)
            if settled(figures, sim.slo):
                break
        results[ref] = choose(figures, sim.slo)
    best = min(results, key=lambda r: results[r][2])
    pre, dec, _ = results[best]
    return HindsightSchedule(best, pre, dec, {r: v[2] for r, v in results.items()}, runs)


def cached_hindsight(
    scenario: Any,
    trace: Any,
    table: Any,
    truth: Any,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> HindsightSchedule:
    """:func:`search_hindsight`, cached as JSON under ``<cache>/evaluate/hindsight/`` keyed on every input and the
    code (as the static baseline's search)."""
    from biscale import __version__
    from biscale.cache import cached_search, code_fingerprint
    from biscale.plan.capacity import workload_fingerprint

    payload = {
        "format": HINDSIGHT_FORMAT,
        "version": HINDSIGHT_VERSION,
        "package_version": __version__,
        "code": code_fingerprint(),
        "workload": workload_fingerprint(trace),
        "scenario": scenario.fingerprint(),
        "table": table.key,
        "candidates": list(CANDIDATE_CLOCKS_MHZ),
    }
    return cached_search(
        "evaluate/hindsight",
        HINDSIGHT_FORMAT,
        payload,
        HindsightSchedule,
        lambda: search_hindsight(scenario, trace, table, truth),
        cache_dir=cache_dir,
        use_cache=use_cache,
    )
