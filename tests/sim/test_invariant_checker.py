"""The invariant checker itself: a clean run passes, and each kind of corruption is caught and named."""

from __future__ import annotations

import numpy as np
import pytest

from biscale.control import MaxClock, ScheduledPlanner, parse_placement
from biscale.sim import SimConfig, SimResult, simulate
from biscale.sim.invariants import InvariantError, check_invariants
from biscale.sim.toy import ToyCostModel
from biscale.workload import Trace

TOY = ToyCostModel()
CFG = SimConfig(nodes=1, gpus_per_node=4, window_s=0.04, prefill_token_budget=64, record_segments=True)


def changed_run() -> SimResult:
    """Two requests over a change that stops both old instances and creates two on their GPUs."""
    a, b = parse_placement("prefill:1xTP2,decode:1xTP2"), parse_placement("prefill:1xTP1,decode:1xTP3")
    trace = Trace(np.array([0.0, 0.0, 0.3]), np.array([200, 200, 50]), np.array([50, 50, 5]))
    return simulate(trace, a, TOY, MaxClock(), planner=ScheduledPlanner([(0, a), (0.04, b)]), config=CFG)


def test_clean_run_passes() -> None:
    res = changed_run()
    assert (res.instances["final_status"] == "stopped").sum() == 2
    check_invariants(res, CFG, TOY)


def test_segment_after_stop_is_caught() -> None:
    res = changed_run()
    seg = res.segments
    assert seg is not None
    last = seg.index[seg["instance_id"] == 0][-1]
    seg.loc[last, "end_s"] += 0.01  # instance 0 drew power after it stopped
    with pytest.raises(InvariantError, match="instance 0: no segment after it stopped"):
        check_invariants(res, CFG, TOY)


def test_gpu_held_twice_is_caught() -> None:
    res = changed_run()
    inst = res.instances
    new = inst.index[inst["tp"] == 1][0]
    inst.loc[new, "start_s"] = inst.loc[0, "start_s"]  # the new TP1 instance "started" on instance 0's GPUs at once
    with pytest.raises(InvariantError, match=r"GPU \d held by instances 0 and \d at once"):
        check_invariants(res, CFG, TOY)


def test_uncounted_gpus_are_caught() -> None:
    res = changed_run()
    seg = res.segments
    assert seg is not None
    res.segments = seg[seg["instance_id"] != -1].reset_index(drop=True)  # GPUs in no instance vanish
    with pytest.raises(InvariantError, match="unassigned != 4"):
        check_invariants(res, CFG, TOY)


def test_double_ended_request_is_caught() -> None:
    res = changed_run()
    res.requests.loc[2, "status"] = "rejected"  # completed and rejected
    with pytest.raises(InvariantError, match="rejections carry a reason"):
        check_invariants(res, CFG, TOY)
