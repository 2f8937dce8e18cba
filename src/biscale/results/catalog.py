"""The systems a results file can name: :data:`SYSTEMS` (a :class:`~biscale.registry.Registry` of
:class:`SystemDef`), from which the scenario checks, the CLI, the printed table and the report derive their lists,
their canonical order and the decomposition's steps.

Kept free of the simulator and planners (plain data) so the scenario model and the report can use the names without
importing them; :mod:`biscale.evaluate.systems` builds a system from its definition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from biscale.registry import Registry


@dataclass(frozen=True)
class SystemDef:
    """A system: a tier-1 planner and a controller per phase (names in ``PLANNER_CLASSES`` and ``CONTROLLERS``)."""

    name: str
    planner: str
    prefill: str
    decode: str
    description: str
    role: str = "baseline"
    """``baseline`` (an operator can run it without BiScale), ``biscale``, ``clairvoyant`` (reads the truth: a
    comparator, not a deployable system) or ``check`` (equal to another system by construction on the bundled
    hardware; kept out of the default table)."""
    in_default: bool = True
    """Whether a scenario runs it unless told otherwise."""
    decode_router: str | None = None
    """Decode router of its runs (a name in ``biscale.sim.router.DECODE_ROUTERS``); None: the scenario's."""


#: name -> :class:`SystemDef`.
SYSTEMS: Registry[SystemDef] = Registry("system", field="systems")

_DEFS = (
    SystemDef("distserve", "distserve", "max", "max", "DistServe's placement, re-planned every window, top clock"),
    SystemDef(
        "distserve-static",
        "distserve-static",
        "max",
        "max",
        "DistServe's placement for the busiest window, never changed, top clock",
        role="check",
        in_default=False,
    ),
    SystemDef(
        "distserve-governor",
        "distserve",
        "default",
        "default",
        "DistServe's re-planned placement, clocks left to the GPU's default governor (equals distserve: the measured "
        "governor keeps a GPU with a CUDA context at the top clock through 25 s of idleness)",
        role="check",
        in_default=False,
    ),
    SystemDef(
        "distserve-idlelow",
        "distserve",
        "max-idlelow",
        "max-idlelow",
        "DistServe's re-planned placement, top clock when busy, lowest clock when idle",
    ),
    SystemDef(
        "distserve-lock",
        "distserve-lock",
        "baseline-idlelow",
        "baseline-idlelow",
        "DistServe's re-planned placement, one locked clock per phase per window from the forecast and the capacity "
        "table (BiScale's headroom), lowest clock when idle",
    ),
    SystemDef(
        "placeonly",
        "placeonly",
        "baseline",
        "baseline",
        "BiScale's placement program (tier 1 alone), baseline clocks held",
    ),
    SystemDef(
        "placement-top",
        "placeonly",
        "max",
        "max",
        "BiScale's placement program with every GPU at the top clock (the decomposition's first step)",
        role="ablation",
    ),
    SystemDef(
        "placeonly-idlelow",
        "placeonly",
        "baseline-idlelow",
        "baseline-idlelow",
        "BiScale's placement program, baseline clocks when busy, lowest clock when idle (the decomposition)",
        role="ablation",
    ),
    SystemDef(
        "static",
        "distserve-static",
        "static",
        "static",
        "distserve-static's placement, one clock per phase searched offline on the predictors",
    ),
    SystemDef(
        "voltana",
        "distserve",
        "ecofreq",
        "ecofreq",
        "VoltanaLLM (arXiv 2509.04827): EcoFreq per phase with EcoPred on DistServe's re-planned placement, the "
        "default decode router",
    ),
    SystemDef(
        "voltana-route",
        "distserve",
        "ecofreq",
        "ecofreq",
        "VoltanaLLM with EcoRoute: as voltana, decode requests routed off the batch-tile boundary (state-space)",
        decode_router="state-space",
    ),
    SystemDef(
        "hindsight-lock",
        "hindsight",
        "baseline-idlelow",
        "baseline-idlelow",
        "clairvoyant comparator: per window and phase the locked clock of least true energy that met the window, "
        "chosen in hindsight on the better of DistServe's and BiScale's placements, lowest clock when idle",
        role="clairvoyant",
    ),
    SystemDef(
        "biscale",
        "biscale",
        "mpc",
        "slack",
        "BiScale: placement program + prefill MPC + decode slack",
        role="biscale",
    ),
    SystemDef(
        "voltana-on-biscale",
        "biscale",
        "ecofreq",
        "ecofreq",
        "VoltanaLLM's EcoFreq on BiScale's placement (the comparison's placement step)",
        role="ablation",
        in_default=False,
    ),
    SystemDef(
        "biscale-route",
        "biscale",
        "mpc",
        "slack",
        "BiScale with VoltanaLLM's state-space decode router (EcoRoute) instead of the most-free-KV one",
        role="ablation",
        in_default=False,
        decode_router="state-space",
    ),
    SystemDef(
        "oracle",
        "biscale",
        "oracle",
        "oracle",
        "BiScale's placement with the clairvoyant controllers (a heuristic, not a bound)",
        role="clairvoyant",
        in_default=False,
    ),
)
for _d in _DEFS:
    SYSTEMS.register(_d.name, _d.description)(_d)

#: Every system, in the table's order.
ALL_SYSTEMS: tuple[str, ...] = tuple(d.name for d in _DEFS)
#: What a scenario runs unless it names its systems.
DEFAULT_SYSTEMS: tuple[str, ...] = tuple(d.name for d in _DEFS if d.in_default)
#: Systems that read the truth (comparators, named as such).
CLAIRVOYANT: tuple[str, ...] = tuple(d.name for d in _DEFS if d.role == "clairvoyant")

#: The decomposition of BiScale's saving, step by step (each adds one lever to the previous):
#: (label, system).
DECOMPOSITION: tuple[tuple[str, str], ...] = (
    ("DistServe (top clock)", "distserve"),
    ("BiScale's placement at the top clock", "placement-top"),
    ("+ baseline clocks", "placeonly"),
    ("+ idle at the lowest clock", "placeonly-idlelow"),
    ("+ per-iteration DVFS (BiScale)", "biscale"),
)


def systems_in_order(names: Sequence[str]) -> list[str]:
    """``names`` in the canonical order of :data:`ALL_SYSTEMS`."""
    return [s for s in ALL_SYSTEMS if s in names]
