"""Clock controllers: ``decide(state) -> clock`` before every iteration of an instance.

Return values of :meth:`ClockController.decide`:

* an ``int`` > 0: lock the instance's GPUs to that SM clock, MHz (snapped to the nearest supported clock);
* :data:`~biscale.control.state.GOVERNOR_MHZ` (0): unlock, i.e. hand the clock to the GPU's default governor;
* ``None``: leave the clock as it is (or as already requested).

A controller whose answer never depends on the state sets ``is_static = True``; the simulator then asks it only
once, when an instance starts, and skips building per-iteration snapshots (they are the expensive part).

Controllers are registered by name in :data:`CONTROLLERS` (the CLI's ``--clock`` and configuration files select
them through it); a new one registers where it is defined with ``@CONTROLLERS.register("name", "help line")``.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from biscale.control.state import GOVERNOR_MHZ, InstanceState, Slo
from biscale.errors import InputError
from biscale.registry import Registry

if TYPE_CHECKING:
    from biscale.control.placement import Placement
    from biscale.costmodel import CostModel
    from biscale.predict.predictor import Predictor
    from biscale.workload.trace import Trace


@dataclass(frozen=True)
class ControllerContext:
    """What a controller factory may use to build the controller of one phase for one run.

    Online controllers use only ``predictor`` (what they believe) and ``options``; the run-level fields exist for
    the offline ones: the static baseline searches ``trace`` on ``placement`` with ``sim_config``, and the
    clairvoyant oracle (the one truth reader) gets ``trace`` and the simulator's ``truth``.
    """

    phase: str
    """``prefill`` or ``decode``."""
    predictor: Predictor | None = None
    """Learned predictors; ``None``: the bundled ones of ``gpu`` / ``model`` (loaded only by factories that need
    them, see :meth:`load_predictor`)."""
    gpu: str = "h100-sxm"
    model: str = "llama-3.3-70b"
    slo: Slo = field(default_factory=Slo)
    trace: Trace | None = None
    """The run's requests (offline controllers only)."""
    truth: CostModel | None = None
    """The simulator's cost model (the clairvoyant oracle only)."""
    placement: Placement | None = None
    """The run's placement (the static baseline's offline search)."""
    sim_config: Any = None
    """The run's :class:`~biscale.sim.SimConfig` (the static baseline's offline search)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """The controller's own settings: its constructor's keyword arguments (see docs/control.md)."""

    def load_predictor(self) -> Predictor:
        """``predictor``, or the bundled one of ``gpu`` / ``model``."""
        if self.predictor is not None:
            return self.predictor
        from biscale.predict.predictor import default_predictor

        return default_predictor(self.gpu, self.model)

    def only_for(self, name: str, *phases: str) -> None:
        """Refuse a phase the controller ``name`` does not serve (:class:`InputError`)."""
        if self.phase not in phases:
            serves = " and ".join(sorted(phases))
            raise InputError(f"controller '{name}' serves {serves} instances, not {self.phase}", field="controller")

    def build(self, name: str, factory: Callable[..., ClockController], *args: Any, **fixed: Any) -> ClockController:
        """``factory(*args, **fixed, **options)``: an option ``factory`` does not take, or a missing one, is an
        :class:`InputError` naming the controller (and the options it takes)."""
        params = list(inspect.signature(factory).parameters.values())
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            allowed = [p.name for p in params[len(args) :] if p.kind in named and p.name not in fixed]
            unknown = sorted(set(self.options) - set(allowed))
            if unknown:
                raise InputError(
                    f"controller '{name}': unknown option(s) {', '.join(unknown)} "
                    f"(allowed: {', '.join(allowed) or 'none'})",
                    field="controller",
                )
        try:
            return factory(*args, **fixed, **self.options)
        except TypeError as err:
            raise InputError(f"controller '{name}': {err}", field="controller") from None


#: ``context -> controller`` (see :class:`ControllerContext`).
ControllerFactory = Callable[[ControllerContext], "ClockController"]

#: Registry: name -> :data:`ControllerFactory`. Build one with :func:`biscale.control.factory.make_controller`.
CONTROLLERS: Registry[ControllerFactory] = Registry("controller", field="controller")


class ClockController(ABC):
    """One controller serves every instance of a phase; per-instance memory is keyed by ``state.instance_id``."""

    is_static: ClassVar[bool] = False
    """True when ``decide`` ignores the state (asked once per instance start)."""
    name: ClassVar[str] = "controller"
    idle_lowest: bool = False
    """A static controller's idle rule: True parks an instance with no work at the lowest clock and restores its
    clock before its next batch (what an operator can do without any model: an idle GPU's power grows with its
    locked clock); dynamic controllers choose their idle clock themselves."""

    @abstractmethod
    def decide(self, state: InstanceState) -> int | None:
        """The clock to run the next iteration at (MHz), ``GOVERNOR_MHZ`` or ``None`` (no change)."""


class FixedClock(ClockController):
    """Always the same locked clock."""

    is_static = True
    name = "fixed"

    def __init__(self, clock_mhz: int) -> None:
        if clock_mhz <= 0:
            raise InputError(f"fixed clock must be > 0 MHz, got {clock_mhz}", field="clock")
        self.clock_mhz = int(clock_mhz)

    def decide(self, state: InstanceState) -> int | None:
        return self.clock_mhz


class MaxClock(ClockController):
    """Lock to the top supported clock (DistServe's setting); ``idle_lowest``: the lowest clock while idle."""

    is_static = True
    name = "max"

    def __init__(self, idle_lowest: bool = False) -> None:
        self.idle_lowest = bool(idle_lowest)

    def decide(self, state: InstanceState) -> int | None:
        return state.supported_clocks_mhz[-1]


class DefaultGovernor(ClockController):
    """Leave clocks unlocked: the GPU's default governor (what most real clusters run)."""

    is_static = True
    name = "default"

    def decide(self, state: InstanceState) -> int | None:
        return GOVERNOR_MHZ


class BaselineClock(ClockController):
    """Keep each instance at the baseline clock its placement gave it (never switches, unless ``idle_lowest``:
    the lowest clock while idle)."""

    is_static = True
    name = "baseline"

    def __init__(self, idle_lowest: bool = False) -> None:
        self.idle_lowest = bool(idle_lowest)

    def decide(self, state: InstanceState) -> int | None:
        return None


@CONTROLLERS.register("fixed", "lock every instance to one clock (option clock_mhz, MHz)")
def _fixed(ctx: ControllerContext) -> ClockController:
    if "clock_mhz" not in ctx.options:
        raise InputError("controller 'fixed' needs a clock: give it in MHz (e.g. 1410)", field="controller")
    return ctx.build("fixed", FixedClock)


@CONTROLLERS.register("max", "lock to the top supported clock (DistServe's setting)")
def _max(ctx: ControllerContext) -> ClockController:
    return ctx.build("max", MaxClock)


@CONTROLLERS.register("max-idlelow", "top clock while busy, the lowest clock while idle")
def _max_idlelow(ctx: ControllerContext) -> ClockController:
    return ctx.build("max-idlelow", MaxClock, idle_lowest=True)


@CONTROLLERS.register("baseline-idlelow", "each instance's baseline clock while busy, the lowest clock while idle")
def _baseline_idlelow(ctx: ControllerContext) -> ClockController:
    return ctx.build("baseline-idlelow", BaselineClock, idle_lowest=True)


@CONTROLLERS.register("default", "leave clocks unlocked: the GPU's default governor")
def _default(ctx: ControllerContext) -> ClockController:
    return ctx.build("default", DefaultGovernor)


@CONTROLLERS.register("baseline", "keep each instance at its placement's baseline clock")
def _baseline(ctx: ControllerContext) -> ClockController:
    return ctx.build("baseline", BaselineClock)


def parse_clock(clock: str | int | None) -> tuple[str, dict[str, Any]]:
    """``--clock MHZ|NAME`` -> (controller name, options): a number is ``fixed`` at that clock, ``governor`` is
    ``default``, ``None`` is ``baseline``."""
    if clock is None:
        return "baseline", {}
    if isinstance(clock, int):
        return "fixed", {"clock_mhz": clock}
    text = clock.strip().lower()
    if text.isdigit():
        return "fixed", {"clock_mhz": int(text)}
    try:
        float(text)
    except ValueError:
        return ("default" if text == "governor" else text), {}
    raise InputError(f"a clock is a whole number of MHz > 0, 'max' or 'default', got {clock.strip()!r}", field="clock")


def check_clock_in_range(clock_mhz: int, supported: Sequence[int], *, field: str, what: str = "clock") -> int:
    """``clock_mhz`` if it lies in the GPU's supported range, else an :class:`InputError` naming the range.

    Why: a clock inside the range is snapped to the nearest supported clock (:func:`snap_clock`: at most half a
    step, 7.5 MHz on H100 and A100), which is harmless; one outside it would silently run at the range's end.
    """
    lo, hi = min(supported), max(supported)
    if not lo <= clock_mhz <= hi:
        raise InputError(
            f"{what} {clock_mhz} MHz is outside the GPU's supported range {lo}-{hi} MHz "
            "(clocks inside it snap to the nearest supported clock)",
            field=field,
        )
    return clock_mhz


def check_placement_clocks(placement: Placement, supported: Sequence[int], field: str = "placement") -> None:
    """Every locked baseline clock of ``placement`` lies in the supported range (:func:`check_clock_in_range`)."""
    for group in placement.instances:
        if isinstance(group.clock, int):
            check_clock_in_range(group.clock, supported, field=field, what=f"'{group.token()}': clock")


def snap_clock(clock_mhz: int, supported: tuple[int, ...]) -> int:
    """The supported clock nearest to ``clock_mhz`` (ties go to the higher clock), MHz."""
    if clock_mhz == GOVERNOR_MHZ:
        return GOVERNOR_MHZ
    i = bisect_left(supported, clock_mhz)  # supported is ascending: the neighbours of clock_mhz are i - 1 and i
    if i == len(supported):
        return supported[-1]
    if i == 0 or supported[i] - clock_mhz <= clock_mhz - supported[i - 1]:
        return supported[i]
    return supported[i - 1]
