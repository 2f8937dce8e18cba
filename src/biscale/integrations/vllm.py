"""vLLM adapter: a V1 scheduler that asks BiScale's controller for the clock of every batch it schedules.

Usage (supported vLLM: :data:`SUPPORTED_VLLM`; recipe in docs/deploy.md)::

    BISCALE_CONFIG=prefill-0.json vllm serve MODEL --scheduler-cls biscale.integrations.vllm.BiScaleScheduler ...

``BiScaleScheduler`` extends vLLM's ``AsyncScheduler`` (async scheduling, vLLM's default); with
``--no-async-scheduling`` use ``BiScaleSyncScheduler`` (extends ``Scheduler``). Both are built on first access
(vLLM is imported only then) by :func:`make_scheduler_class`, which tests also apply to small stand-ins.

Per step, after vLLM formed the batch (``schedule()``): the batch is ``SchedulerOutput.num_scheduled_tokens``
(request id -> new tokens, in vLLM's order: running requests, then admitted ones), the queue behind it is the
waiting queues (``kv_holding_waiting`` then ``waiting``; on a decode instance without the requests whose KV is still
arriving, status ``WAITING_FOR_REMOTE_KVS``), KV use is ``kv_cache_manager.usage`` x ``kv_cache_config.num_blocks``
x ``block_size``, the batching rule is ``max_num_scheduled_tokens`` / ``max_num_running_reqs``; the snapshot is
built by :func:`biscale.integrations.hook.live_state` and the clock goes to the non-blocking actuator. After the step
(``update_from_output()``) the hook gets the step's latency: from the later of its scheduling and the previous step's
end to now. With async scheduling the step being decided (k+1) is scheduled while step k runs: the decision is made
then, lands while step k runs, and the latencies the controller sees end with step k-1's (one step older than in the
simulator; docs/deploy.md). The scheduler runs in vLLM's engine-core process, one per TP group (per data-parallel
rank), so one process actuates each group; worker processes never load this module.

A controller, snapshot or actuator error never stops serving: the step is scheduled as vLLM decided, the clock goes
back to the default governor, the error is logged once (:class:`~biscale.integrations.hook.ClockHook`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from biscale.errors import InputError
from biscale.integrations.config import KV_ROLE_PHASE, HookConfig, load_hook_config
from biscale.integrations.hook import ClockHook, LiveStep, open_hook

log = logging.getLogger("biscale.integrations")

#: vLLM versions this adapter was checked against (attribute names in :data:`VLLM_READS`), as a PEP 440 specifier.
SUPPORTED_VLLM = ">=0.33,<0.34"
SUPPORTED_MINOR = (0, 33)

#: Every name the adapter reads from vLLM, by source file of the pinned wheel (tests check each exists there).
VLLM_READS: dict[str, tuple[str, ...]] = {
    "vllm/v1/core/sched/scheduler.py": (
        "class Scheduler(SchedulerInterface)",
        "self.vllm_config = vllm_config",
        "def schedule(self",
        "def update_from_output(",
        "def shutdown(self)",
        "self.requests: dict[str, Request]",
        "self.waiting = ",
        "self.kv_holding_waiting = ",
        "self.kv_cache_manager = ",
        "self.kv_cache_config = ",
        "self.block_size = ",
        "self.max_num_scheduled_tokens = ",
        "self.max_num_running_reqs = ",
        "self.parallel_config = ",
        "self.scheduler_config = ",
        "request.num_computed_tokens += num_scheduled_token",
    ),
    "vllm/v1/core/sched/async_scheduler.py": ("class AsyncScheduler(Scheduler)",),
    "vllm/v1/core/sched/output.py": (
        "num_scheduled_tokens: dict[str, int]",
        "total_num_scheduled_tokens: int",
        "preempted_req_ids: set[str] | None",
    ),
    "vllm/v1/core/sched/request_queue.py": ("def __iter__(self) -> Iterator[Request]",),
    "vllm/v1/request.py": (
        "self.request_id = request_id",
        "self.num_prompt_tokens = ",
        "self.num_computed_tokens = 0",
        "self.arrival_time = ",
        "self.status = RequestStatus.WAITING",
        "def num_output_tokens(self) -> int",
        "WAITING_FOR_REMOTE_KVS = enum.auto()",
    ),
    "vllm/v1/core/kv_cache_manager.py": ("def usage(self) -> float",),
    "vllm/v1/kv_cache_interface.py": ("num_blocks: int",),
    "vllm/config/parallel.py": (
        "tensor_parallel_size: int",
        "pipeline_parallel_size: int",
        "data_parallel_size: int",
        "nnodes: int",
        "data_parallel_rank: int",
        "data_parallel_rank_local: int | None",
        "assigned_physical_gpu_ids: list[int] | None",
        "def nnodes_within_dp(self) -> int",
        "def local_world_size(self) -> int",
        "def get_local_gpu_index(",
    ),
    "vllm/config/kv_transfer.py": ("kv_role: KVRole | None",),
    "vllm/config/scheduler.py": ("async_scheduling: bool | None",),
}

#: Base classes (in vLLM) of the two schedulers this module offers.
BASES = {
    "BiScaleScheduler": ("vllm.v1.core.sched.async_scheduler", "AsyncScheduler"),
    "BiScaleSyncScheduler": ("vllm.v1.core.sched.scheduler", "Scheduler"),
}

_REMOTE_KV = "WAITING_FOR_REMOTE_KVS"


def rank_gpu_selection(parallel_config: Any) -> str:
    """This engine's GPUs on this node as a ``biscale gpu`` selection, as vLLM's own workers pick them.

    vLLM 0.33 maps a worker's local rank to a host-local logical GPU with ``ParallelConfig.get_local_gpu_index``
    (``local_rank + data-parallel local rank x world size`` on one node) over ``local_world_size`` GPUs (the whole
    TP x PP group, or this node's share when it spans nodes); a logical GPU is a visible CUDA device (``cuda:N``),
    or the physical GPU (NVML index) listed at that place in ``assigned_physical_gpu_ids`` when vLLM set it (Ray,
    ``--device-ids``). So each data-parallel rank clocks exactly its own GPUs.
    """
    pc = parallel_config
    world = int(pc.tensor_parallel_size) * int(pc.pipeline_parallel_size)
    local = int(getattr(pc, "local_world_size", world))
    index = getattr(pc, "get_local_gpu_index", None)
    if callable(index):
        logical = [int(index(i)) for i in range(local)]
    else:  # an older ParallelConfig: one node, data-parallel ranks side by side
        dp_local = getattr(pc, "data_parallel_rank_local", None) or 0
        logical = [int(dp_local) * world + i for i in range(local)]
    assigned = getattr(pc, "assigned_physical_gpu_ids", None)
    if assigned:
        return ",".join(str(int(assigned[i])) for i in logical)
    return ",".join(f"cuda:{i}" for i in logical)


def per_rank_config(config: HookConfig, parallel_config: Any) -> HookConfig:
    """With data parallelism every rank reads the same configuration: each gets its own instance name
    (``<instance>-dp<rank>``) and metrics port (``metrics_port + local rank``); a ``gpus`` list, which would be the
    same for every rank, is refused (each rank clocks the GPUs vLLM gave it)."""
    pc = parallel_config
    if int(getattr(pc, "data_parallel_size", 1)) <= 1:
        return config
    if config.gpus:
        raise InputError(
            f"gpus={config.gpus!r} would be clocked by every one of the {pc.data_parallel_size} data-parallel ranks; "
            "leave it unset (each rank clocks the GPUs vLLM assigned it)",
            field="gpus",
        )
    rank = int(getattr(pc, "data_parallel_rank", 0))
    local = getattr(pc, "data_parallel_rank_local", None)
    local = rank if local is None else int(local)
    update: dict[str, Any] = {"instance": f"{config.instance}-dp{rank}"}
    if config.metrics_port:  # 0 (any free port) stays 0
        update["metrics_port"] = config.metrics_port + local
    return config.model_copy(update=update)


def engine_role(vllm_config: Any) -> tuple[str | None, str]:
    """(the phase vLLM's KV-transfer role implies, or None; where it came from, for messages)."""
    kv = getattr(vllm_config, "kv_transfer_config", None)
    kv_role = getattr(kv, "kv_role", None)
    return KV_ROLE_PHASE.get(str(kv_role)), f"vLLM's kv_transfer_config.kv_role={kv_role!r}"


def check_async(resolved: bool | None, cls: type) -> None:
    """Refuse a scheduler class that does not match vLLM's resolved async-scheduling setting: the engine core's
    loop follows the setting, and the wrong base class breaks its output handling (or its throughput)."""
    base_async = any(c.__name__ == "AsyncScheduler" for c in cls.__mro__)
    if resolved is None or bool(resolved) == base_async:
        return
    want = "BiScaleScheduler" if resolved else "BiScaleSyncScheduler"
    raise InputError(
        f"vLLM resolved async scheduling {'on' if resolved else 'off'} but the scheduler class {cls.__name__} is "
        f"{'an AsyncScheduler' if base_async else 'a synchronous Scheduler'}; "
        f"use --scheduler-cls biscale.integrations.vllm.{want}",
        field="--scheduler-cls",
    )


class BiScaleSchedulerMixin:
    """The BiScale part of the scheduler (combined with a vLLM scheduler by :func:`make_scheduler_class`).

    Start-up refuses (one :class:`~biscale.errors.InputError` line) only what the operator must fix: a bad
    configuration, a role that contradicts vLLM's KV-transfer role, a class that does not match vLLM's async
    setting. Anything else that goes wrong while opening the hook is logged once and the engine serves at default
    clocks.
    """

    _biscale: ClockHook | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._biscale_started: dict[int, float] = {}
        self._biscale_busy = False
        """Whether the last step ran a batch (the first empty step after one asks the controller where to idle)."""
        self._biscale_last_end = 0.0
        self._biscale = None
        self._biscale_calls = {"schedule": 0, "update_from_output": 0}
        """How often vLLM called each hooked method (tests check vLLM still calls them)."""
        check_async(getattr(self.scheduler_config, "async_scheduling", None), type(self))  # type: ignore[attr-defined]
        role, source = engine_role(getattr(self, "vllm_config", None))
        pc = self.parallel_config  # type: ignore[attr-defined]
        config = per_rank_config(load_hook_config(engine_role=role, engine_role_source=source), pc)
        nodes = int(getattr(pc, "nnodes_within_dp", getattr(pc, "nnodes", 1)) or 1)
        try:
            self._biscale = self._biscale_open(config, pc)
        except InputError:
            raise
        except Exception as err:  # fail open: the engine serves at default clocks
            log.error("biscale: the clock hook could not start (%s); the engine serves at default clocks", err)
            return
        if nodes > 1:
            log.warning(
                "biscale: the TP x PP group spans %d nodes; this node clocks its local GPUs %s (NVML indices) only; "
                "the other nodes' GPUs stay at default clocks",
                nodes,
                list(self._biscale.gpus),
            )

    def _biscale_open(self, config: HookConfig, pc: Any) -> ClockHook:
        """The instance's hook (tests override it to inject a fake NVML)."""
        return open_hook(config, tp=pc.tensor_parallel_size, default_gpus=rank_gpu_selection(pc))

    def _biscale_step(self, out: Any) -> LiveStep:
        """What the hook needs about the batch vLLM just formed."""
        reqs = self.requests  # type: ignore[attr-defined]
        batch = out.num_scheduled_tokens
        scheduled = [(reqs[rid], n) for rid, n in batch.items()]
        queued = [*getattr(self, "kv_holding_waiting", ()), *self.waiting]  # type: ignore[attr-defined]
        hook = self._biscale
        assert hook is not None
        if hook.phase == "decode":
            waiting = [r for r in queued if r.request_id not in batch and getattr(r.status, "name", "") != _REMOTE_KV]
        else:
            waiting = [r for r in queued if r.request_id not in batch]
        capacity = int(self.kv_cache_config.num_blocks) * int(self.block_size)  # type: ignore[attr-defined]
        used = round(float(self.kv_cache_manager.usage) * capacity)  # type: ignore[attr-defined]
        return LiveStep(
            scheduled=scheduled,
            waiting=waiting,
            kv_used_tokens=used,
            kv_capacity_tokens=capacity,
            token_budget=int(self.max_num_scheduled_tokens),  # type: ignore[attr-defined]
            max_batch_seqs=int(self.max_num_running_reqs),  # type: ignore[attr-defined]
            preempted=len(out.preempted_req_ids or ()),
        )

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        out = super().schedule(*args, **kwargs)  # type: ignore[misc]
        self._biscale_calls["schedule"] += 1
        hook = self._biscale
        if hook is None:
            return out
        busy = out.total_num_scheduled_tokens > 0
        if busy or self._biscale_busy:  # a batch, or the first empty step after one (the controller's idle rule)
            try:
                step = self._biscale_step(out)
            except Exception as err:  # a vLLM change the adapter does not know: serve on, at the default clock
                hook.fall_back(err)
            else:
                hook.before_step(step)
        self._biscale_busy = busy
        if busy:
            started = self._biscale_started
            if len(started) > 16:  # outputs vLLM never reported back (an aborted step): keep the newest only
                for key in list(started)[:-8]:
                    del started[key]
            started[id(out)] = time.monotonic()
        return out

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        result = super().update_from_output(scheduler_output, model_runner_output)  # type: ignore[misc]
        self._biscale_calls["update_from_output"] += 1
        hook = self._biscale
        started = self._biscale_started.pop(id(scheduler_output), None)
        if hook is None or started is None:
            return result
        try:
            now = time.monotonic()
            hook.after_step(now - max(started, self._biscale_last_end))
            self._biscale_last_end = now
            reqs = self.requests  # type: ignore[attr-defined]
            ids = scheduler_output.num_scheduled_tokens
            hook.note_outputs(reqs[rid] for rid in ids if rid in reqs)
            hook.forget(rid for rid in ids if rid not in reqs)
            if len(hook.first_token_s) > 2 * len(reqs) + 64:
                hook.prune(reqs)
        except Exception as err:
            hook.fall_back(err)
        return result

    def shutdown(self) -> None:
        if self._biscale is not None:
            self._biscale.close("exit")
        super().shutdown()  # type: ignore[misc]


def make_scheduler_class(base: type, name: str = "BiScaleScheduler") -> type:
    """``base`` (a vLLM scheduler class, or a stand-in) with BiScale's per-step clock control."""
    return type(name, (BiScaleSchedulerMixin, base), {"__module__": __name__, "__doc__": BiScaleSchedulerMixin.__doc__})


def version_supported(version: str) -> bool:
    """Whether a vLLM version string is in :data:`SUPPORTED_VLLM` (major.minor 0.33)."""
    parts = version.split(".")
    try:
        return (int(parts[0]), int(parts[1])) == SUPPORTED_MINOR
    except (IndexError, ValueError):
        return False


def _check_version() -> None:
    import vllm

    version = str(getattr(vllm, "__version__", "unknown"))
    if not version_supported(version):
        log.warning("biscale: vLLM %s is outside the checked range %s (docs/deploy.md)", version, SUPPORTED_VLLM)


def __getattr__(name: str) -> Any:
    where = BASES.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    _check_version()
    base = getattr(importlib.import_module(where[0]), where[1])
    cls = make_scheduler_class(base, name)
    globals()[name] = cls
    return cls
