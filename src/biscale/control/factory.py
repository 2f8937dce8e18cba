"""Build clock controllers by name: the one place the tier-2 controllers are registered.

``make_controller("mpc", "prefill", predictor=...)`` and ``controllers_from_spec("prefill=mpc,decode=slack", ...)``
are what ``biscale simulate --controller`` and ``biscale evaluate`` call, so wiring a new name is one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from biscale.control.controllers import CONTROLLERS, ClockController
from biscale.control.mpc import PrefillMpc
from biscale.control.placement import PHASES
from biscale.control.slack import DecodeSlack
from biscale.errors import InputError
from biscale.predict.predictor import Predictor, default_predictor


@dataclass(frozen=True)
class Tier2Entry:
    """A per-iteration controller: how to build it and which phases it serves."""

    factory: Callable[..., ClockController]
    """``factory(phase=..., predictor=..., **options)``."""
    phases: frozenset[str]
    help: str


def _mpc(phase: str, predictor: Predictor, **options: Any) -> ClockController:
    return PrefillMpc(predictor, **options)


def _mpc_greedy(phase: str, predictor: Predictor, **options: Any) -> ClockController:
    return PrefillMpc(predictor, **{**options, "solver": "greedy"})


def _slack(phase: str, predictor: Predictor, **options: Any) -> ClockController:
    return DecodeSlack(predictor, **options)


def _oracle(phase: str, predictor: Predictor, **options: Any) -> ClockController:
    from biscale.control.oracle import make_oracle

    return make_oracle(phase, **options)


def _static(phase: str, predictor: Predictor, **options: Any) -> ClockController:
    from biscale.control.static import static_controller

    return static_controller(phase, predictor, **options)


TIER2: dict[str, Tier2Entry] = {
    "mpc": Tier2Entry(_mpc, frozenset({"prefill"}), "prefill MPC over the next K batches, exact solver"),
    "mpc-greedy": Tier2Entry(_mpc_greedy, frozenset({"prefill"}), "prefill MPC with the paper's greedy descent"),
    "slack": Tier2Entry(_slack, frozenset({"decode"}), "decode: lowest clock keeping every request on its TPOT"),
    "oracle": Tier2Entry(
        _oracle, frozenset(PHASES), "clairvoyant bound: future arrivals, true costs (needs trace= and cost_model=)"
    ),
    "static": Tier2Entry(
        _static,
        frozenset(PHASES),
        "one clock per phase, the lowest meeting both SLOs offline (needs trace=, placement=)",
    ),
}
"""Tier-2 controllers by name (also registered in :data:`~biscale.control.controllers.CONTROLLERS`)."""

CONTROLLERS.update({name: entry.factory for name, entry in TIER2.items()})


def make_controller(name: str, phase: str, *, predictor: Predictor | None = None, **options: Any) -> ClockController:
    """The controller called ``name`` for ``phase`` instances.

    Tier-2 names (:data:`TIER2`) get ``predictor`` (default: the bundled H100 / Llama-3.3-70B one) and ``options``
    (their constructor's keyword arguments); the static ones (``max``, ``default``, ``baseline``, ``fixed``) get
    ``options`` only (``fixed`` needs ``clock_mhz``). An unknown name or a phase the controller does not serve is an
    :class:`InputError` naming the choices.
    """
    key = name.strip().lower()
    if phase not in PHASES:
        raise InputError(f"unknown phase '{phase}' (expected 'prefill' or 'decode')", field="controller")
    entry = TIER2.get(key)
    if entry is not None:
        if phase not in entry.phases:
            serves = " and ".join(sorted(entry.phases))
            raise InputError(f"controller '{key}' serves {serves} instances, not {phase}", field="controller")
        return entry.factory(phase=phase, predictor=predictor or default_predictor(), **options)
    factory = CONTROLLERS.get(key)
    if factory is None:
        raise InputError(f"unknown controller '{name}' (choices: {', '.join(sorted(CONTROLLERS))})", field="controller")
    try:
        return factory(**options)
    except TypeError as err:
        raise InputError(f"controller '{key}': {err}", field="controller") from None


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
    predictor: Predictor | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, ClockController]:
    """``{"prefill": ..., "decode": ...}`` from a spec; ``options[phase]`` are that controller's keyword options."""
    names = parse_controller_spec(spec)
    opts = options or {}
    return {
        phase: make_controller(name, phase, predictor=predictor, **dict(opts.get(phase, {})))
        for phase, name in names.items()
    }
