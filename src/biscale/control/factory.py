"""Build clock controllers by name: the one place the tier-2 controllers are registered.

Every entry of :data:`~biscale.control.controllers.CONTROLLERS` is a factory taking a
:class:`~biscale.control.controllers.ControllerContext`. ``make_controller("mpc", "prefill", predictor=...)`` and
``controllers_from_spec("prefill=mpc,decode=slack", ...)`` build that context from keyword arguments; they are what
``biscale simulate --controller`` and ``biscale evaluate`` call, so wiring a new name is one registration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from biscale.control.controllers import CONTROLLERS, ClockController, ControllerContext, parse_clock
from biscale.control.mpc import PrefillMpc
from biscale.control.placement import PHASES
from biscale.control.slack import DecodeSlack
from biscale.errors import InputError

#: Keyword arguments of :func:`make_controller` that fill the context rather than the controller's options.
CONTEXT_KEYS = ("gpu", "model", "slo", "trace", "truth", "placement", "sim_config")


@CONTROLLERS.register("mpc", "prefill MPC over the next K batches, exact solver")
def _mpc(ctx: ControllerContext) -> ClockController:
    ctx.only_for("mpc", "prefill")
    predictor = ctx.load_predictor()
    return ctx.build("mpc", PrefillMpc, predictor)


@CONTROLLERS.register("mpc-greedy", "prefill MPC with the paper's greedy descent")
def _mpc_greedy(ctx: ControllerContext) -> ClockController:
    ctx.only_for("mpc-greedy", "prefill")
    predictor = ctx.load_predictor()
    return ctx.build("mpc-greedy", PrefillMpc, predictor, solver="greedy")


@CONTROLLERS.register("slack", "decode: lowest clock keeping every request on its TPOT")
def _slack(ctx: ControllerContext) -> ClockController:
    ctx.only_for("slack", "decode")
    predictor = ctx.load_predictor()
    return ctx.build("slack", DecodeSlack, predictor)


@CONTROLLERS.register("ecofreq", "VoltanaLLM's EcoFreq: lowest listed clock whose EcoPred latency meets the SLO")
def _ecofreq(ctx: ControllerContext) -> ClockController:
    from biscale.control.voltana import EcoFreq
    from biscale.predict.ecopred import default_ecopred

    ecopred = default_ecopred(ctx.gpu, ctx.model)
    return ctx.build("ecofreq", EcoFreq, ecopred, ctx.phase)


@CONTROLLERS.register("oracle", "clairvoyant heuristic (not a bound): future arrivals, true costs (needs the trace)")
def _oracle(ctx: ControllerContext) -> ClockController:
    from biscale.control.oracle import make_oracle

    return ctx.build(
        "oracle", make_oracle, ctx.phase, trace=ctx.trace, cost_model=ctx.truth, gpu=ctx.gpu, model=ctx.model
    )


# The static baseline searches the run offline with the simulator (tier-1 machinery), so it lives in biscale.plan.
CONTROLLERS.register_lazy(
    "static",
    "one clock per phase, the lowest meeting both SLOs offline on the predictors (needs the run's trace and placement)",
    "biscale.plan.static:static_from_context",
)


def make_controller(
    name: str, phase: str, *, predictor: Any = None, options: Mapping[str, Any] | None = None, **kwargs: Any
) -> ClockController:
    """The controller called ``name`` for ``phase`` instances.

    ``kwargs`` named in :data:`CONTEXT_KEYS` fill the :class:`ControllerContext` (``cost_model`` is accepted for
    ``truth``); every other keyword, and ``options``, are the controller's own settings (its constructor's keyword
    arguments). Tier-2 controllers get ``predictor`` (default: the bundled one of ``gpu`` / ``model``). An unknown
    name, a phase the controller does not serve or a bad option is an :class:`InputError` naming the choices.
    """
    key = name.strip().lower()
    if phase not in PHASES:
        raise InputError(f"unknown phase '{phase}' (expected 'prefill' or 'decode')", field="controller")
    if "cost_model" in kwargs:
        kwargs["truth"] = kwargs.pop("cost_model")
    context = {k: kwargs.pop(k) for k in CONTEXT_KEYS if k in kwargs}
    ctx = ControllerContext(phase=phase, predictor=predictor, options={**(options or {}), **kwargs}, **context)
    return CONTROLLERS.get(key)(ctx)


def controller_from_clock(clock: str | int | None, phase: str = "prefill", **kwargs: Any) -> ClockController:
    """The controller ``--clock MHZ|NAME`` asks for (see :func:`~biscale.control.controllers.parse_clock`)."""
    name, options = parse_clock(clock)
    return make_controller(name, phase, options={**options, **(kwargs.pop("options", None) or {})}, **kwargs)


def parse_controller_spec(spec: str) -> dict[str, str]:
    """``"prefill=mpc,decode=slack"`` -> ``{"prefill": "mpc", "decode": "slack"}``; a bare name applies to both."""
    text = spec.strip()
    if not text:
        raise InputError("empty controller spec (expected e.g. 'prefill=mpc,decode=slack')", field="controller")
    if "=" not in text:
        return dict.fromkeys(PHASES, text.lower())
    out: dict[str, str] = {}
    for part in text.split(","):
        phase, sep, name = part.partition("=")
        phase, name = phase.strip().lower(), name.strip().lower()
        if not sep or phase not in PHASES or not name:
            raise InputError(f"bad controller spec part '{part.strip()}' (expected PHASE=NAME)", field="controller")
        if phase in out:
            raise InputError(f"controller for {phase} given twice", field="controller")
        out[phase] = name
    missing = [p for p in PHASES if p not in out]
    if missing:
        raise InputError(f"controller spec gives no controller for {', '.join(missing)}", field="controller")
    return out


def controllers_from_spec(
    spec: str,
    *,
    predictor: Any = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    **context: Any,
) -> dict[str, ClockController]:
    """``{"prefill": ..., "decode": ...}`` from a spec; ``options[phase]`` are that controller's own settings and
    ``context`` the run-level context (see :data:`CONTEXT_KEYS`)."""
    names = parse_controller_spec(spec)
    opts = options or {}
    return {
        phase: controller_from_clock(name, phase, predictor=predictor, options=dict(opts.get(phase, {})), **context)
        for phase, name in names.items()
    }
