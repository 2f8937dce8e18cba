"""Building controllers by name: the registry, phase checks, the PHASE=NAME spec."""

from __future__ import annotations

import pytest

from biscale.control import CONTROLLERS, FixedClock, MaxClock
from biscale.control.factory import controllers_from_spec, make_controller, parse_controller_spec
from biscale.control.mpc import PrefillMpc
from biscale.control.oracle import OracleDecode, OraclePrefill
from biscale.control.slack import DecodeSlack
from biscale.errors import InputError
from biscale.workload import Trace


def test_tier2_names_are_registered_with_the_builtins():
    assert {"mpc", "mpc-greedy", "slack", "oracle", "static"} <= set(CONTROLLERS)
    assert {"fixed", "max", "default", "baseline"} <= set(CONTROLLERS)
    assert all(CONTROLLERS.help(n) for n in CONTROLLERS)


def test_make_controller_builds_each_kind(predictor):
    mpc = make_controller("mpc", "prefill", predictor=predictor, horizon=4)
    assert isinstance(mpc, PrefillMpc) and mpc.horizon == 4 and mpc.solver_name == "exact"
    greedy = make_controller("MPC-Greedy", "prefill", predictor=predictor)
    assert isinstance(greedy, PrefillMpc) and greedy.solver_name == "greedy"
    assert isinstance(make_controller("slack", "decode", predictor=predictor, margin_pct=5), DecodeSlack)
    assert isinstance(make_controller("max", "decode"), MaxClock)
    fixed = make_controller("fixed", "prefill", clock_mhz=1410)
    assert isinstance(fixed, FixedClock) and fixed.clock_mhz == 1410
    trace = Trace([0.0], [10], [5])
    assert isinstance(make_controller("oracle", "prefill", trace=trace), OraclePrefill)
    assert isinstance(make_controller("oracle", "decode", trace=trace), OracleDecode)


def test_make_controller_errors_name_the_choices(predictor):
    with pytest.raises(InputError, match=r"unknown controller 'warp'.*choices: .*mpc"):
        make_controller("warp", "prefill")
    with pytest.raises(InputError, match="serves prefill instances, not decode"):
        make_controller("mpc", "decode", predictor=predictor)
    with pytest.raises(InputError, match="serves decode instances, not prefill"):
        make_controller("slack", "prefill", predictor=predictor)
    with pytest.raises(InputError, match="unknown phase"):
        make_controller("max", "encode")
    with pytest.raises(InputError, match="controller 'fixed'"):
        make_controller("fixed", "prefill")  # no clock given
    with pytest.raises(InputError, match="needs the run's trace"):
        make_controller("oracle", "decode")


def test_spec_parsing():
    assert parse_controller_spec("prefill=mpc,decode=slack") == {"prefill": "mpc", "decode": "slack"}
    assert parse_controller_spec(" Decode = SLACK , prefill=max ") == {"decode": "slack", "prefill": "max"}
    assert parse_controller_spec("max") == {"prefill": "max", "decode": "max"}
    for bad, msg in [
        ("", "empty"),
        ("prefill=mpc", "no controller for decode"),
        ("prefill=mpc,prefill=max,decode=slack", "given twice"),
        ("prefill=,decode=slack", "bad controller spec part"),
        ("train=mpc,decode=slack", "bad controller spec part"),
    ]:
        with pytest.raises(InputError, match=msg):
            parse_controller_spec(bad)


def test_controllers_from_spec_passes_per_phase_options(predictor):
    got = controllers_from_spec(
        "prefill=mpc,decode=slack",
        predictor=predictor,
        options={"prefill": {"horizon": 3}, "decode": {"down_dwell": 5}},
    )
    assert isinstance(got["prefill"], PrefillMpc) and got["prefill"].horizon == 3
    assert isinstance(got["decode"], DecodeSlack) and got["decode"].down_dwell == 5
