"""The one registry helper and the registries built on it."""

from __future__ import annotations

import pytest

from biscale.control import CONTROLLERS, PLANNERS, ControllerContext, MaxClock
from biscale.errors import InputError
from biscale.plan.forecast import FORECASTERS
from biscale.predict.profilers import PROFILERS
from biscale.registry import Registry
from biscale.sim.costmodels import COST_MODELS
from biscale.sim.router import DECODE_ROUTERS, PREFILL_ROUTERS


def test_register_as_decorator_with_help_from_argument_or_docstring() -> None:
    reg: Registry[type] = Registry("widget", field="widget")

    @reg.register("plain")
    class Plain:
        """A plain widget.

        More text that is not the help line.
        """

    @reg.register("fancy", "a fancy one")
    class Fancy:
        pass

    assert reg.get("plain") is Plain and reg["fancy"] is Fancy
    assert reg.help("plain") == "A plain widget." and reg.help("fancy") == "a fancy one"
    assert reg.names() == ("fancy", "plain") and list(reg) == ["fancy", "plain"] and len(reg) == 2
    assert "plain" in reg and "other" not in reg


def test_unknown_name_is_an_input_error_naming_field_and_choices() -> None:
    reg: Registry[int] = Registry("widget", field="widget_name")
    reg.register("b", "bee")(2)
    reg.register("a", "ay")(1)
    with pytest.raises(InputError) as err:
        reg.get("c")
    assert str(err.value) == "field 'widget_name': unknown widget 'c' (choices: a, b)"
    empty: Registry[int] = Registry("forecaster", field="forecaster")
    assert empty.unknown_reason("x") == "unknown forecaster 'x' (choices: none registered)"


def test_registration_mistakes_are_programming_errors() -> None:
    reg: Registry[object] = Registry("widget", field="widget")
    reg.register("a", "ay")(1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", "again")(2)

    def undocumented() -> None:
        pass

    with pytest.raises(ValueError, match="needs a help line"):
        reg.register("b")(undocumented)
    with pytest.raises(ValueError, match="non-empty word"):
        reg.register("two words", "x")


def test_the_project_registries() -> None:
    tier2 = ("mpc", "mpc-greedy", "oracle", "slack", "static")
    others = ("baseline", "baseline-idlelow", "default", "ecofreq", "fixed", "max", "max-idlelow")
    assert CONTROLLERS.names() == (*others, *tier2)
    assert isinstance(CONTROLLERS.get("max")(ControllerContext(phase="decode")), MaxClock)
    assert PLANNERS.names() == (
        "biscale",
        "distserve",
        "distserve-lock",
        "distserve-static",
        "placeonly",
        "scheduled",
        "static",
    )
    assert COST_MODELS.names() == ("hardware", "predictor")
    assert PROFILERS.names() == ("sim", "torch")
    assert PREFILL_ROUTERS.names() == ("least-work", "round-robin")
    assert DECODE_ROUTERS.names() == ("most-free-kv", "state-space")
    assert FORECASTERS.names() == ("ewma", "peak", "previous", "quantile")
    for reg in (CONTROLLERS, PLANNERS, COST_MODELS, PROFILERS, PREFILL_ROUTERS, DECODE_ROUTERS, FORECASTERS):
        assert all(reg.help(n) for n in reg.names())
    hw = COST_MODELS.get("hardware")("h100-sxm", "llama-3.3-70b")
    assert hw.supported_clocks_mhz[-1] == 1980
