"""Placement SPEC grammar, JSON schema, controllers and planners."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from biscale.control import (
    GOVERNOR_MHZ,
    PLANNERS,
    BaselineClock,
    DefaultGovernor,
    FixedClock,
    InstanceSpec,
    MaxClock,
    Placement,
    PlannerContext,
    ScheduledPlanner,
    StaticPlanner,
    controller_from_clock,
    load_placement,
    parse_placement,
    snap_clock,
)
from biscale.errors import InputError


def test_parse_spec_groups_counts_and_clocks() -> None:
    p = parse_placement("prefill:2xTP2, decode:3xTP4@1410,decode:TP8@default")
    assert [(g.phase, g.count, g.tp, g.clock) for g in p.instances] == [
        ("prefill", 2, 2, None),
        ("decode", 3, 4, 1410),
        ("decode", 1, 8, "default"),
    ]
    assert p.total_gpus == 2 * 2 + 3 * 4 + 8
    assert p.num_instances("decode") == 4
    assert [s.tp for s in p.expand()] == [2, 2, 4, 4, 4, 8]
    assert all(s.count == 1 for s in p.expand())


def test_spec_is_case_insensitive_and_round_trips() -> None:
    p = parse_placement("PREFILL:1xtp2@MAX,Decode:2xTP4")
    assert p.spec() == "prefill:1xTP2@max,decode:2xTP4"
    assert parse_placement(p.spec()) == p


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "field 'placement': empty placement spec (expected e.g. 'prefill:2xTP2,decode:3xTP4')"),
        (
            "prefill:2xTP2,decode:3xTQ4",
            "field 'placement': bad placement token 'decode:3xTQ4' (expected PHASE:NxTPk[@MHZ|max|default], "
            "e.g. 'prefill:2xTP2')",
        ),
        (
            "prefil:2xTP2,decode:3xTP4",
            "field 'placement': bad placement token 'prefil:2xTP2': phase must be 'prefill' or 'decode'",
        ),
        (
            "prefill:0xTP2,decode:TP4",
            "field 'placement': bad placement token 'prefill:0xTP2': count and TP must be >= 1",
        ),
        ("prefill:TP0,decode:TP4", "field 'placement': bad placement token 'prefill:TP0': count and TP must be >= 1"),
        ("prefill:TP2@0,decode:TP4", "field 'placement': bad placement token 'prefill:TP2@0': clock must be > 0 MHz"),
        (
            "prefill:TP2,,decode:TP4",
            "field 'placement': bad placement token '' (expected PHASE:NxTPk[@MHZ|max|default], e.g. 'prefill:2xTP2')",
        ),
    ],
)
def test_bad_spec_names_the_token(spec: str, message: str) -> None:
    with pytest.raises(InputError) as err:
        parse_placement(spec)
    assert str(err.value) == message


def test_spec_needs_both_phases() -> None:
    with pytest.raises(InputError, match="needs at least one decode instance"):
        parse_placement("prefill:2xTP2")
    with pytest.raises(InputError, match="needs at least one prefill instance"):
        parse_placement("decode:2xTP2")


def test_json_file_round_trip(tmp_path: Path) -> None:
    p = Placement(
        instances=(
            InstanceSpec(phase="prefill", tp=2, count=2, clock=1500, capacity_rps=3.5),
            InstanceSpec(phase="decode", tp=4, count=3),
        )
    )
    f = tmp_path / "placement.json"
    f.write_text(p.to_json())
    assert Placement.load(f) == p
    assert load_placement(str(f)) == p
    data = json.loads(f.read_text())
    assert data["instances"][0] == {"phase": "prefill", "tp": 2, "count": 2, "clock": 1500, "capacity_rps": 3.5}


def test_json_file_errors_name_file_and_field(tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_text('{"instances": [{"phase": "prefill", "tp": 0}, {"phase": "decode", "tp": 4}]}')
    with pytest.raises(InputError) as err:
        Placement.load(f)
    assert str(err.value).startswith(f"{f}, field 'instances.0.tp': ")
    f.write_text("{not json")
    with pytest.raises(InputError, match=r"p\.json:1: not valid JSON"):
        Placement.load(f)
    with pytest.raises(InputError, match="placement file not found"):
        load_placement(str(tmp_path / "missing.json"))
    f.write_text('{"instances": [{"phase": "prefill", "tp": 2, "bogus": 1}, {"phase": "decode", "tp": 4}]}')
    with pytest.raises(InputError, match=r"instances\.0\.bogus"):
        Placement.load(f)


_groups = st.lists(
    st.tuples(
        st.sampled_from(["prefill", "decode"]),
        st.integers(1, 8),
        st.integers(1, 8),
        st.one_of(st.none(), st.integers(1, 3000), st.sampled_from(["max", "default"])),
    ),
    min_size=1,
    max_size=5,
)


@given(_groups)
def test_any_valid_placement_round_trips_through_spec_and_json(groups: list[tuple[str, int, int, object]]) -> None:
    groups = [*groups, ("prefill", 1, 2, None), ("decode", 1, 4, None)]
    p = Placement(
        instances=tuple(InstanceSpec(phase=ph, count=n, tp=tp, clock=c) for ph, n, tp, c in groups)  # type: ignore[arg-type]
    )
    assert parse_placement(p.spec()) == p
    assert Placement.model_validate_json(p.to_json()) == p
    assert p.total_gpus == sum(n * tp for _, n, tp, _ in groups)


def test_controllers_from_clock_option() -> None:
    assert isinstance(controller_from_clock(None), BaselineClock)
    assert isinstance(controller_from_clock("max"), MaxClock)
    assert isinstance(controller_from_clock("default"), DefaultGovernor)
    fixed = controller_from_clock("1410")
    assert isinstance(fixed, FixedClock) and fixed.clock_mhz == 1410
    with pytest.raises(InputError, match=r"unknown controller 'fast' \(choices: baseline"):
        controller_from_clock("fast")
    with pytest.raises(InputError, match="controller 'fixed' needs a clock"):
        controller_from_clock("fixed")
    assert isinstance(controller_from_clock("governor"), DefaultGovernor)
    assert isinstance(controller_from_clock(990), FixedClock)
    with pytest.raises(InputError, match="fixed clock must be > 0 MHz"):
        FixedClock(0)
    assert all(c.is_static for c in (MaxClock(), DefaultGovernor(), BaselineClock(), FixedClock(1000)))


def test_snap_clock() -> None:
    supported = (1000, 1100, 1200)
    assert snap_clock(1049, supported) == 1000
    assert snap_clock(1050, supported) == 1100  # ties go up
    assert snap_clock(5000, supported) == 1200
    assert snap_clock(1, supported) == 1000
    assert snap_clock(GOVERNOR_MHZ, supported) == GOVERNOR_MHZ


@given(
    st.lists(st.integers(1, 3000), min_size=1, max_size=40, unique=True).map(lambda c: tuple(sorted(c))),
    st.integers(1, 4000),
)
def test_snap_clock_is_the_nearest_supported_clock(supported: tuple[int, ...], clock: int) -> None:
    """The bisection finds what a scan over every clock finds: the nearest, the higher one on a tie."""
    assert snap_clock(clock, supported) == min(supported, key=lambda c: (abs(c - clock), -c))


def test_planners() -> None:
    a = parse_placement("prefill:TP2,decode:TP4")
    b = parse_placement("prefill:2xTP2,decode:TP4")
    assert StaticPlanner(a).is_static
    sched = ScheduledPlanner([(600.0, b), (0.0, a)])

    class Obs:
        def __init__(self, t: float) -> None:
            self.time_s = t

    assert sched.plan(Obs(300.0)) == a  # type: ignore[arg-type]
    assert sched.plan(Obs(600.0)) == b  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ScheduledPlanner([])
    assert isinstance(PLANNERS.get("static")(PlannerContext("static", a)), StaticPlanner)
    ctx = PlannerContext("scheduled", a, [(0.0, a), (60.0, b)])
    assert PLANNERS.get("scheduled")(ctx).plan(Obs(90.0)) == b  # type: ignore[arg-type]
    with pytest.raises(InputError, match="field 'schedule': the scheduled planner needs a schedule"):
        PLANNERS.get("scheduled")(PlannerContext("scheduled", a))
    with pytest.raises(InputError, match=r"field 'planner': unknown planner 'oracle' \(choices: biscale, "):
        PLANNERS.get("oracle")
