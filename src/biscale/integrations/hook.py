"""The per-iteration clock hook of a live serving instance, independent of the engine that hosts it.

One controller, two worlds: the simulator builds :class:`~biscale.control.state.InstanceState` from its bookkeeping
(:mod:`biscale.sim.snapshot`); a live engine builds the same snapshot here from what its scheduler holds, and the
same controller object decides. An engine adapter (the vLLM scheduler subclass, the emulated engine) calls
:meth:`ClockHook.before_step` after forming a batch and before running it, and :meth:`ClockHook.after_step` with the
step's measured latency. The decision goes to the non-blocking NVML actuator of the instance's TP group
(:meth:`biscale.gpu.nvml.NvmlActuator.request_clock`), so the serving loop never waits on a clock switch.

Serving never depends on the controller: an exception in the snapshot, the controller, the metrics or the actuator
sends the GPUs back to the default governor (the default clock), is logged once with its traceback (then only counted
in ``errors``), and the step runs. A suspension of the actuator (its watchdog parked an idle engine's GPUs, an NVML
error, a refused permission) is counted too (``errors``, ``suspensions``, the ``biscale_control_suspensions``
counter, one log line each) and re-armed at the next step once its cause cleared, so an idle gap never loses control.

Requests are read through four attributes that vLLM's ``Request`` has (``request_id``, ``num_prompt_tokens``,
``num_computed_tokens``, ``arrival_time``) plus ``num_output_tokens`` for first-token times, with vLLM's meaning:
``num_computed_tokens`` already counts the tokens of the step being decided (vLLM advances it when it schedules).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from biscale.actuator import GOVERNOR_MHZ, LiveClockActuator
from biscale.control.controllers import ClockController, snap_clock
from biscale.control.state import InstanceState, Slo
from biscale.errors import InputError
from biscale.integrations.config import HookConfig

log = logging.getLogger("biscale.integrations")


class LiveRequest(Protocol):
    """The request attributes the hook reads (names and meanings of vLLM V1's ``vllm.v1.request.Request``)."""

    request_id: str
    num_prompt_tokens: int
    num_computed_tokens: int
    """Tokens whose KV is (or is being) computed, the step being decided included."""
    arrival_time: float
    """Wall-clock arrival (``time.time()``), s."""

    @property
    def num_output_tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class LiveStep:
    """What an engine knows right after forming a batch and before running it."""

    scheduled: Sequence[tuple[Any, int]]
    """``(request, new tokens this step)`` in batch order."""
    waiting: Sequence[Any]
    """Requests behind the batch that could join it, in queue order (prefill: prompts still to prefill; decode:
    requests whose KV is here but that have not joined the batch)."""
    kv_used_tokens: int
    """KV cache in use, tokens (the engine's block manager)."""
    kv_capacity_tokens: int
    """KV cache size, tokens."""
    token_budget: int
    """Most new tokens per step (vLLM ``max_num_scheduled_tokens``)."""
    max_batch_seqs: int
    """Most sequences per step (vLLM ``max_num_seqs``)."""
    preempted: int = 0
    """Requests preempted while forming this batch."""


_NO_TOKENS = np.zeros(0, dtype=np.int64)
_NO_TIMES = np.zeros(0, dtype=np.float64)


def live_state(
    step: LiveStep,
    *,
    phase: str,
    time_s: float,
    wall_s: float,
    instance_id: int,
    tp: int,
    clock_mhz: int,
    pending_clock_mhz: int | None,
    supported_clocks_mhz: tuple[int, ...],
    recent_latencies_s: tuple[float, ...],
    slo: Slo,
    baseline_clock_mhz: int | None,
    preemptions: int,
    first_token_s: dict[str, float],
) -> InstanceState:
    """The controller's snapshot of a live step, field for field as :mod:`biscale.sim.snapshot` fills it.

    Prefill: the batch is every scheduled request (new tokens, tokens computed before this step, prompt length, age);
    the queue is the waiting requests' prompt tokens still to prefill. Decode: the running batch is every scheduled
    request with ``generated = max(1, computed - prompt)`` tokens (first token included, as the simulator counts a
    request joining its first decode step) and context ``prompt + generated``; decode time = time since its first
    token (0 before it, as for a request that just joined); the queue is the waiting requests' prompt lengths.
    Request ids stay empty (live ids are not trace indices; only the clairvoyant oracle reads them).
    """
    waiting = step.waiting
    common: dict[str, Any] = dict(
        time_s=time_s,
        instance_id=instance_id,
        phase=phase,
        tp=tp,
        clock_mhz=clock_mhz,
        pending_clock_mhz=pending_clock_mhz,
        supported_clocks_mhz=supported_clocks_mhz,
        waiting_time_s=np.array([wall_s - r.arrival_time for r in waiting], dtype=np.float64),
        kv_used_tokens=step.kv_used_tokens,
        kv_capacity_tokens=step.kv_capacity_tokens,
        recent_latencies_s=recent_latencies_s,
        slo=slo,
        max_batch_seqs=step.max_batch_seqs,
        baseline_clock_mhz=baseline_clock_mhz,
        preemptions=preemptions,
    )
    if phase == "prefill":
        sched = step.scheduled
        new = np.fromiter((n for _, n in sched), dtype=np.int64, count=len(sched))
        computed = np.fromiter((r.num_computed_tokens for r, _ in sched), dtype=np.int64, count=len(sched))
        return InstanceState(
            **common,
            waiting_prompt_tokens=np.array(
                [max(r.num_prompt_tokens - r.num_computed_tokens, 0) for r in waiting], dtype=np.int64
            ),
            running_context_tokens=_NO_TOKENS,
            running_generated_tokens=_NO_TOKENS,
            batch_new_tokens=new,
            batch_prefix_tokens=computed - new,
            batch_prompt_tokens=np.array([r.num_prompt_tokens for r, _ in sched], dtype=np.int64),
            batch_waiting_time_s=np.array([wall_s - r.arrival_time for r, _ in sched], dtype=np.float64),
            token_budget=step.token_budget,
        )
    running = [r for r, _ in step.scheduled]
    prompt = np.array([r.num_prompt_tokens for r in running], dtype=np.int64)
    computed = np.array([r.num_computed_tokens for r in running], dtype=np.int64)
    generated = np.maximum(computed - prompt, 1) if running else _NO_TOKENS
    return InstanceState(
        **common,
        waiting_prompt_tokens=np.array([r.num_prompt_tokens for r in waiting], dtype=np.int64),
        running_context_tokens=prompt + generated if running else _NO_TOKENS,
        running_generated_tokens=generated,
        running_decode_time_s=np.array(
            [time_s - first_token_s.get(r.request_id, time_s) for r in running], dtype=np.float64
        )
        if running
        else _NO_TIMES,
    )


class ClockHook:
    """Snapshot -> controller -> non-blocking actuator, once per engine step, for one instance (one TP group).

    ``actuator``: a :class:`~biscale.actuator.LiveClockActuator` (``None``: decide and export only). ``metrics``: a
    :class:`~biscale.gpu.exporter.ControlPlaneMetrics` (or ``None``). ``supported_clocks_mhz``: the group's lockable
    clocks (default: asked from the actuator). ``clock`` / ``wall``: monotonic and wall time sources (tests).
    """

    def __init__(
        self,
        config: HookConfig,
        controller: ClockController,
        *,
        tp: int,
        instance_id: int = 0,
        actuator: LiveClockActuator | None = None,
        gpus: Sequence[int] = (),
        metrics: Any = None,
        supported_clocks_mhz: Sequence[int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.controller = controller
        self.phase = config.role
        self.tp = int(tp)
        self.instance_id = int(instance_id)
        self.actuator = actuator
        self.gpus = tuple(int(g) for g in gpus)
        self.metrics = metrics
        if supported_clocks_mhz is None:
            if actuator is None:
                raise ValueError("supported_clocks_mhz is needed without an actuator")
            supported_clocks_mhz = actuator.supported_clocks_mhz(self.gpus)
        self.supported = tuple(sorted(int(c) for c in supported_clocks_mhz))
        if not self.supported:
            raise ValueError("no supported clocks")
        self.slo = config.slo
        self.clock = clock
        self.wall = wall
        self.t0 = clock()
        self.recent: deque[float] = deque(maxlen=config.recent_latencies)
        self.target: int | None = None
        """Clock last requested (``GOVERNOR_MHZ`` = default governor), MHz; ``None`` before the first request."""
        self.first_token_s: dict[str, float] = {}
        """Hook time (s since start) at which each live request's first output token was seen."""
        self.preemptions = 0
        self.decisions = 0
        self.errors = 0
        """Failed steps (snapshot, controller, metrics or actuator raised; each fell back to the default governor)
        plus suspensions of the actuator."""
        self.suspensions = 0
        """Suspensions of the actuator seen (each parked the GPUs at default clocks until re-armed)."""
        self.last_error: str | None = None
        self.failsafe: Any = None
        """:class:`~biscale.gpu.failsafe.FailSafe` restoring the clocks at exit and on signals (``open_hook``)."""
        self.guard: Any = None
        """:class:`~biscale.gpu.guard.Guard` process restoring the clocks if this process is killed (``open_hook``)."""

    # ------------------------------------------------------------------------------------------ the step
    def now_s(self) -> float:
        """Seconds since the hook started (the snapshots' ``time_s``)."""
        return self.clock() - self.t0

    def clocks_in_force(self) -> tuple[int, int | None]:
        """(clock in force, clock requested but not yet in force), MHz, as the snapshot carries them."""
        if self.actuator is None:
            return (self.target or GOVERNOR_MHZ), None
        applied = self.actuator.locked_clock_nowait(self.gpus[0])  # never waits on a switch in progress
        current = GOVERNOR_MHZ if applied is None else int(applied)
        pending = self.target if self.target is not None and self.target != current else None
        return current, pending

    def state(self, step: LiveStep) -> InstanceState:
        """The controller's snapshot of ``step`` now."""
        current, pending = self.clocks_in_force()
        return live_state(
            step,
            phase=self.phase,
            time_s=self.now_s(),
            wall_s=self.wall(),
            instance_id=self.instance_id,
            tp=self.tp,
            clock_mhz=current,
            pending_clock_mhz=pending,
            supported_clocks_mhz=self.supported,
            recent_latencies_s=tuple(self.recent),
            slo=self.slo,
            baseline_clock_mhz=self.config.baseline_clock_mhz,
            preemptions=self.preemptions,
            first_token_s=self.first_token_s,
        )

    def before_step(self, step: LiveStep) -> int | None:
        """Decide the clock of the batch about to run and hand it to the actuator; returns the request (MHz,
        ``GOVERNOR_MHZ``, or ``None`` for no change). Never raises."""
        try:
            if self.actuator is not None:
                self.actuator.heartbeat()
                self._watch_actuator(self.actuator)
            self.preemptions += step.preempted
            want = self.controller.decide(self.state(step))
            self.decisions += 1
            if want is not None:
                want = snap_clock(int(want), self.supported)
            self._request(want)
            if self.metrics is not None:
                shown = self.target if self.target is not None else GOVERNOR_MHZ
                self.metrics.record_decision(self.config.instance, self.phase, shown)
        except Exception as err:
            want = self.fall_back(err)
        return want

    def _watch_actuator(self, actuator: LiveClockActuator) -> None:
        """Count the actuator's new suspensions (one log line each) and re-arm it when their cause cleared: the next
        decision is then applied again (``target`` forgotten, since the park unlocked the GPUs)."""
        new = actuator.suspensions - self.suspensions
        reason = actuator.suspended_reason
        if new > 0:
            self.suspensions += new
            self.errors += new
            kind = (reason or "unknown").split(":")[0]
            self.last_error = f"suspended: {reason}"
            log.warning(
                "biscale clock hook (%s %s): clock control was suspended (%s), GPUs at default clocks; %s",
                self.phase,
                self.config.instance,
                reason,
                "re-arming now" if kind == "watchdog" else "re-armed once the cause clears",
            )
            if self.metrics is not None:
                self.metrics.record_suspension(self.config.instance, kind)
        if reason is not None and actuator.rearm():
            self.target = None

    def _request(self, want: int | None) -> None:
        if want is None or want == self.target:
            return
        if self.actuator is not None:
            self.actuator.request_clock(self.gpus, want)
        self.target = want

    def fall_back(self, err: BaseException) -> int:
        """A step failed with ``err``: log it (the first time), count it, hand the GPUs to the default governor."""
        self._fail(err)
        try:
            self._request(GOVERNOR_MHZ)
        except Exception as err2:  # the actuator itself is broken: it restored already, or its watchdog will
            self._fail(err2)
        return GOVERNOR_MHZ

    def _fail(self, err: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{type(err).__name__}: {err}"
        if self.errors == 1:
            log.error(
                "biscale clock hook (%s %s): %s; falling back to the default clock (further errors are only counted)",
                self.phase,
                self.config.instance,
                self.last_error,
                exc_info=err,
            )

    def after_step(self, latency_s: float) -> None:
        """The step just decided ran for ``latency_s`` seconds (the engine's measurement)."""
        if latency_s > 0:
            self.recent.append(float(latency_s))

    def note_outputs(self, requests: Iterable[Any]) -> None:
        """Record the first-token time of requests that produced their first output token in the last step."""
        now = self.now_s()
        first = self.first_token_s
        for r in requests:
            rid = r.request_id
            if rid not in first and r.num_output_tokens > 0:
                first[rid] = now

    def forget(self, request_ids: Iterable[str]) -> None:
        """Requests that left the instance."""
        first = self.first_token_s
        for rid in request_ids:
            first.pop(rid, None)

    # ---------------------------------------------------------------------------------------- lifecycle
    def prune(self, alive: Iterable[str]) -> None:
        """Drop first-token times of requests no longer alive (aborted ones never reach :meth:`forget`)."""
        keep = set(alive)
        self.first_token_s = {k: v for k, v in self.first_token_s.items() if k in keep}

    def close(self, reason: str = "exit") -> None:
        """Stop actuating, restore the default clocks, release the guard, stop the metrics server (idempotent; never
        raises: an engine's shutdown must not fail because of biscale)."""
        try:
            if self.actuator is not None:
                self.actuator.close(reason)
            if self.guard is not None:
                self.guard.release()
                self.guard = None
            if self.failsafe is not None:
                self.failsafe.uninstall()
                self.failsafe = None
            if self.metrics is not None:
                self.metrics.shutdown()
        except Exception as err:
            log.error("biscale clock hook (%s %s): close failed: %s", self.phase, self.config.instance, err)


#: Controllers that take candidate clocks (``clocks_mhz``) as an option.
_TAKES_CLOCKS = ("mpc", "mpc-greedy", "slack")


class PhaseInfo:
    """``biscale_gpu_phase_info{gpu, phase, engine_instance} = 1``: which GPUs serve which phase.

    Why: the exporter's energy series are per GPU; a load generator reading them from Prometheus joins on this
    gauge to split energy into prefill and decode (``biscale.live.prometheus``).
    """

    NAME = "biscale_gpu_phase_info"

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Gauge

        self.gauge = Gauge(
            self.NAME,
            "Phase served by each GPU (value is always 1)",
            ["gpu", "phase", "engine_instance"],
            registry=registry,
        )

    def set(self, instance: str, phase: str, gpus: Iterable[int]) -> None:
        for g in gpus:
            self.gauge.labels(gpu=str(g), phase=phase, engine_instance=instance).set(1)


def check_predictor_tp(config: HookConfig, predictor: Any, tp: int, *, field: str = "tp") -> None:
    """Refuse at start an instance whose TP degree the controller's predictors were never profiled at (it would fail
    every step and never control a clock). A fixed clock (a number as controller) needs no predictor."""
    tps = getattr(predictor, "tps", None)
    if config.controller_name.strip().isdigit() or not callable(tps):
        return
    have = tuple(tps(config.role))
    if int(tp) not in have:
        where = config.predictors or f"the bundled {config.gpu} / {config.model} predictors"
        raise InputError(
            f"{where} have no {config.role} model for TP {tp} (profiled TP degrees: "
            f"{', '.join(map(str, have)) or 'none'}); serve at one of those or fit predictors at TP {tp} (biscale fit)",
            field=field,
        )


def build_controller(config: HookConfig) -> tuple[ClockController, Any]:
    """(the controller the configuration names, the predictors it decides with: bundled or ``config.predictors``)."""
    from biscale.control.factory import controller_from_clock
    from biscale.predict import default_predictor, load_predictor

    predictor = load_predictor(config.predictors) if config.predictors else default_predictor(config.gpu, config.model)
    options = dict(config.controller_options)
    if config.clocks_mhz and config.controller_name in _TAKES_CLOCKS:
        options.setdefault("clocks_mhz", list(config.clocks_mhz))
    controller = controller_from_clock(
        config.controller_name,
        config.role,
        predictor=predictor,
        options=options,
        gpu=config.gpu,
        model=config.model,
        slo=config.slo,
    )
    return controller, predictor


def open_hook(
    config: HookConfig,
    *,
    tp: int,
    default_gpus: str | None = None,
    nvml: Any = None,
    instance_id: int = 0,
    install_failsafe: bool = True,
) -> ClockHook:
    """A :class:`ClockHook` with everything a real instance needs: controller, NVML actuator of its GPUs (fail-safe
    restore on exit and signals, a guard process against SIGKILL), and the Prometheus exporter when configured.

    ``default_gpus``: the GPU selection when the configuration names none (the engine's TP group). Fails open: any
    NVML error while opening the GPUs (no GPU, no permission, an unsupported or failing call), a GPU selection that
    this node cannot see, a metrics port in use, disables that part with one logged line and the hook still decides
    (and exports what it can); serving never depends on it. Only the operator's own configuration is refused
    (:class:`~biscale.errors.InputError`: a controller, predictor or ``gpus`` that does not exist).
    """
    from biscale.predict.costmodel import PredictorCostModel

    controller, predictor = build_controller(config)
    check_predictor_tp(config, predictor, tp)
    metrics = None
    if config.metrics_port is not None:
        from biscale.gpu.exporter import ControlPlaneMetrics

        metrics = ControlPlaneMetrics()
    actuator = None
    gpus: list[int] = []
    supported: tuple[int, ...] | None = None
    module = nvml
    what = f"biscale clock hook ({config.role} {config.instance})"
    if config.actuate:
        from biscale.gpu.nvml import NvmlActuator, load_nvml, nvml_init, resolve_gpus

        try:
            module = load_nvml() if module is None else module
            nvml_init(module)
            try:
                gpus = resolve_gpus(module, config.gpus or default_gpus)
            finally:
                module.nvmlShutdown()
            actuator = NvmlActuator(
                module, gpus, min_dwell_s=config.min_dwell_s, watchdog_s=config.watchdog_s, observer=metrics
            )
            actuator.reset(gpus)  # start from the default governor; also proves we may set clocks
            supported = actuator.supported_clocks_mhz(gpus)
            if not supported:
                raise RuntimeError(f"GPU(s) {gpus} have no SM clock in common")
        except Exception as err:
            if isinstance(err, InputError) and config.gpus:
                raise  # the operator named GPUs that do not exist: refused at start
            log.error("%s: clock control disabled, the engine serves at default clocks: %s", what, err)
            if actuator is not None:
                actuator.close("permission" if "permission" in str(err).lower() else "start_failed")
            actuator, gpus, supported = None, [], None
    if actuator is None:
        supported = PredictorCostModel(predictor).supported_clocks_mhz
    hook = ClockHook(
        config,
        controller,
        tp=tp,
        instance_id=instance_id,
        actuator=actuator,
        gpus=gpus,
        metrics=metrics,
        supported_clocks_mhz=supported,
    )
    if actuator is not None:
        log.info("%s: clocking GPU(s) %s (NVML indices)", what, ", ".join(map(str, gpus)))
        if install_failsafe:
            from biscale.gpu.failsafe import FailSafe

            hook.failsafe = FailSafe(actuator.restore).install()
        if config.guard:
            from biscale.gpu.guard import Guard

            try:
                hook.guard = Guard.start([actuator.uuids[g] for g in gpus])
            except Exception as err:
                log.error("%s: no guard process (%s); a SIGKILL would leave clocks locked", what, err)
    if metrics is not None:
        hook.metrics = _serve_metrics(metrics, config, module if actuator is not None else None, gpus, what)
    return hook


def _serve_metrics(metrics: Any, config: HookConfig, module: Any, gpus: list[int], what: str) -> Any:
    """Start the instance's exporter; ``None`` (the hook runs without) when it cannot serve, said once."""
    try:
        if module is not None:
            from biscale.gpu.energy import EnergyMeter

            metrics.attach_nvml(EnergyMeter(module, gpus))
            PhaseInfo(metrics.registry).set(config.instance, config.role, gpus)
        port = metrics.serve(config.metrics_port or 0, config.metrics_addr, config.metrics_token)
    except Exception as err:
        log.error("%s: metrics not served (%s:%s): %s", what, config.metrics_addr, config.metrics_port, err)
        return None
    log.info("%s: metrics on %s:%d", what, config.metrics_addr, port)
    return metrics
