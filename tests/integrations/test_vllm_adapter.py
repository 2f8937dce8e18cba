"""The vLLM scheduler adapter on CPU: small stand-ins with vLLM's attribute names (``__slots__``: the adapter cannot
read anything else), the fake NVML behind the real actuator, and the snapshot it builds for each step."""

from __future__ import annotations

import enum
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pynvml
import pytest

from biscale.control.controllers import ClockController
from biscale.control.state import GOVERNOR_MHZ, InstanceState, Slo
from biscale.gpu.fake_nvml import FAKE_ENV, FakeNvml, default_state, read_state, write_state
from biscale.integrations import vllm as adapter
from biscale.integrations.hook import live_state


# ----------------------------------------------------------------------------------------- vLLM stand-ins
class RequestStatus(enum.IntEnum):
    WAITING = enum.auto()
    WAITING_FOR_REMOTE_KVS = enum.auto()
    RUNNING = enum.auto()


class Request:
    """``vllm.v1.request.Request``: only the attributes the adapter may read, plus what the stand-in needs."""

    __slots__ = (
        "_out",
        "arrival_time",
        "max_tokens",
        "num_computed_tokens",
        "num_prompt_tokens",
        "request_id",
        "status",
    )

    def __init__(self, rid: str, prompt: int, max_tokens: int, arrival_time: float, status: RequestStatus) -> None:
        self.request_id = rid
        self.num_prompt_tokens = prompt
        self.num_computed_tokens = 0
        self.arrival_time = arrival_time
        self.status = status
        self.max_tokens = max_tokens
        self._out = 0

    @property
    def num_output_tokens(self) -> int:
        return self._out


class KVCacheManager:
    __slots__ = ("usage",)

    def __init__(self) -> None:
        self.usage = 0.25


@dataclass
class KVCacheConfig:
    num_blocks: int = 1000


@dataclass
class ParallelConfig:
    tensor_parallel_size: int = 2
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    nnodes: int = 1


@dataclass
class SchedulerConfig:
    async_scheduling: bool | None = False


@dataclass
class SchedulerOutput:
    num_scheduled_tokens: dict[str, int]
    total_num_scheduled_tokens: int
    preempted_req_ids: set[str] | None = field(default_factory=set)


class Scheduler:
    """``vllm.v1.core.sched.scheduler.Scheduler``: FCFS chunked scheduling, num_computed_tokens advanced at
    schedule time (as vLLM's ``_update_after_schedule``), one output token per step once the prompt is done."""

    __slots__ = (
        "__dict__",
        "block_size",
        "kv_cache_config",
        "kv_cache_manager",
        "kv_holding_waiting",
        "max_num_running_reqs",
        "max_num_scheduled_tokens",
        "parallel_config",
        "requests",
        "running",
        "scheduler_config",
        "waiting",
    )

    def __init__(self, tp: int = 2, budget: int = 8192, max_seqs: int = 128) -> None:
        self.requests: dict[str, Request] = {}
        self.waiting: deque[Request] = deque()
        self.kv_holding_waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.kv_cache_manager = KVCacheManager()
        self.kv_cache_config = KVCacheConfig()
        self.block_size = 16
        self.max_num_scheduled_tokens = budget
        self.max_num_running_reqs = max_seqs
        self.parallel_config = ParallelConfig(tensor_parallel_size=tp)
        self.scheduler_config = SchedulerConfig()

    def add_request(self, r: Request) -> None:
        self.requests[r.request_id] = r
        self.waiting.append(r)

    def schedule(self) -> SchedulerOutput:
        budget = self.max_num_scheduled_tokens
        sched: dict[str, int] = {}
        for r in self.running:
            if budget <= 0:
                break
            n = min(max(r.num_prompt_tokens - r.num_computed_tokens, 1), budget)
            sched[r.request_id] = n
            budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.max_num_running_reqs:
            r = self.waiting[0]
            if r.status == RequestStatus.WAITING_FOR_REMOTE_KVS:
                break
            self.waiting.popleft()
            n = min(r.num_prompt_tokens - r.num_computed_tokens, budget)
            r.status = RequestStatus.RUNNING
            self.running.append(r)
            sched[r.request_id] = n
            budget -= n
        for rid, n in sched.items():
            self.requests[rid].num_computed_tokens += n
        return SchedulerOutput(sched, sum(sched.values()))

    def update_from_output(self, out: SchedulerOutput, model_runner_output: Any) -> dict[int, Any]:
        for rid in out.num_scheduled_tokens:
            r = self.requests[rid]
            if r.num_computed_tokens >= r.num_prompt_tokens:
                r._out += 1
                if r._out >= r.max_tokens:
                    self.running.remove(r)
                    del self.requests[rid]
        return {}

    def shutdown(self) -> None:
        pass


class AsyncScheduler(Scheduler):
    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scheduler_config = SchedulerConfig(async_scheduling=True)


class Spy(ClockController):
    """Records every snapshot; answers a fixed clock (or raises)."""

    name = "spy"

    def __init__(self, answer: int | None = 1410, fail: bool = False) -> None:
        self.states: list[InstanceState] = []
        self.answer = answer
        self.fail = fail

    def decide(self, state: InstanceState) -> int | None:
        self.states.append(state)
        if self.fail:
            raise RuntimeError("controller exploded")
        return self.answer


# ----------------------------------------------------------------------------------------------- fixtures
def make(role: str, monkeypatch: pytest.MonkeyPatch, base: type = Scheduler, **kw: Any) -> Any:
    monkeypatch.setenv("BISCALE_ROLE", role)
    cls = adapter.make_scheduler_class(base)
    sched = cls(**kw)
    return sched


def locked(path: Path) -> list[Any]:
    return [g["locked_mhz"] for g in read_state(path)["gpus"]]


# ------------------------------------------------------------------------------------------------- tests
def test_prefill_snapshot_is_the_batch_vllm_formed_and_the_queue_behind_it(
    nvml_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sched = make("prefill", monkeypatch)
    spy = Spy()
    sched._biscale.controller = spy
    now = time.time()
    for i, (prompt, age) in enumerate([(5000, 0.30), (3000, 0.20), (2000, 0.10), (700, 0.05)]):
        sched.add_request(Request(f"r{i}", prompt, 1, now - age, RequestStatus.WAITING))
    out = sched.schedule()
    assert out.num_scheduled_tokens == {"r0": 5000, "r1": 3000, "r2": 192}
    s = spy.states[-1]
    assert s.phase == "prefill" and s.tp == 2
    np.testing.assert_array_equal(s.batch_new_tokens, [5000, 3000, 192])
    np.testing.assert_array_equal(s.batch_prefix_tokens, [0, 0, 0])
    np.testing.assert_array_equal(s.batch_prompt_tokens, [5000, 3000, 2000])
    np.testing.assert_allclose(s.batch_waiting_time_s, [0.30, 0.20, 0.10], atol=0.05)
    np.testing.assert_array_equal(s.waiting_prompt_tokens, [700])
    assert s.token_budget == 8192 and s.max_batch_seqs == 128
    assert s.kv_capacity_tokens == 16_000 and s.kv_used_tokens == 4000
    # next step: the chunked prompt continues with its prefix, then the queue
    sched.update_from_output(out, None)
    sched.schedule()
    s = spy.states[-1]
    np.testing.assert_array_equal(s.batch_new_tokens, [1808, 700])
    np.testing.assert_array_equal(s.batch_prefix_tokens, [192, 0])
    np.testing.assert_array_equal(s.batch_prompt_tokens, [2000, 700])
    assert s.waiting_prompt_tokens.size == 0
    assert s.recent_latencies_s and s.recent_latencies_s[-1] > 0


def test_decode_snapshot_counts_tokens_as_the_simulator_and_skips_kv_still_arriving(
    nvml_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sched = make("decode", monkeypatch)
    spy = Spy()
    sched._biscale.controller = spy
    now = time.time()
    # a P/D decode instance: the prompt's KV arrives, the last prompt token is computed here, then one per step
    a = Request("a", 100, 10, now - 1.0, RequestStatus.WAITING)
    a.num_computed_tokens = 99
    sched.add_request(a)
    out = sched.schedule()
    s = spy.states[-1]
    np.testing.assert_array_equal(s.running_generated_tokens, [1])  # joining: counts as its first token
    np.testing.assert_array_equal(s.running_context_tokens, [101])
    np.testing.assert_array_equal(s.running_decode_time_s, [0.0])
    assert s.batch_new_tokens.size == 0
    sched.update_from_output(out, None)
    b = Request("b", 50, 5, now, RequestStatus.WAITING_FOR_REMOTE_KVS)
    c = Request("c", 70, 5, now - 0.5, RequestStatus.WAITING)
    sched.kv_holding_waiting.append(b)
    sched.requests["b"] = b
    for _ in range(3):
        out = sched.schedule()
        sched.update_from_output(out, None)
    sched.waiting.append(c)
    sched.requests["c"] = c
    sched.max_num_running_reqs = 1  # c cannot join: it waits behind the batch
    time.sleep(0.01)
    sched.schedule()
    s = spy.states[-1]
    np.testing.assert_array_equal(s.running_generated_tokens, [4])
    np.testing.assert_array_equal(s.running_context_tokens, [104])
    assert s.running_decode_time_s[0] > 0  # time since its first token
    np.testing.assert_array_equal(s.waiting_prompt_tokens, [70])  # b's KV is still arriving: not waiting yet
    assert s.waiting_time_s[0] == pytest.approx(0.5, abs=0.2)


def test_live_state_matches_the_simulator_s_identities() -> None:
    """The decode batch's context is prompt + generated and generated >= 1, as in sim/snapshot.py."""
    from biscale.integrations.hook import LiveStep

    reqs = [Request(f"r{i}", p, 9, 0.0, RequestStatus.RUNNING) for i, p in enumerate([10, 20, 30])]
    for r, c in zip(reqs, [10, 25, 31], strict=True):
        r.num_computed_tokens = c
    step = LiveStep([(r, 1) for r in reqs], [], 5, 100, 8192, 256)
    s = live_state(
        step,
        phase="decode",
        time_s=2.0,
        wall_s=10.0,
        instance_id=3,
        tp=4,
        clock_mhz=1410,
        pending_clock_mhz=None,
        supported_clocks_mhz=(990, 1410),
        recent_latencies_s=(0.02,),
        slo=Slo(),
        baseline_clock_mhz=None,
        preemptions=0,
        first_token_s={"r1": 1.5},
    )
    np.testing.assert_array_equal(s.running_generated_tokens, [1, 5, 1])
    np.testing.assert_array_equal(s.running_context_tokens, s.running_generated_tokens + np.array([10, 20, 30]))
    np.testing.assert_allclose(s.running_decode_time_s, [0.0, 0.5, 0.0])
    assert s.batch_size == 3 and s.kv_use_pct == 5.0


def test_the_clock_reaches_the_tp_group_of_the_engine_and_is_restored_at_shutdown(
    nvml_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sched = make("prefill", monkeypatch)
    sched._biscale.controller = Spy(answer=1400)  # snapped to the supported 1395 or 1410
    sched.add_request(Request("r", 300, 1, time.time(), RequestStatus.WAITING))
    sched.schedule()
    assert sched._biscale.actuator.flush(5.0)
    got = locked(nvml_file)
    assert got[0] is None and got[1] is None  # CUDA_VISIBLE_DEVICES=2,3: the engine's cuda:0,1
    assert got[2] == got[3] and got[2][0] in (1395, 1410)
    sched.shutdown()
    assert locked(nvml_file) == [None] * 4


def test_the_first_empty_step_after_a_batch_asks_the_controller_where_to_idle(
    nvml_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sched = make("prefill", monkeypatch)
    spy = Spy(answer=1400)
    sched._biscale.controller = spy
    sched.add_request(Request("r", 300, 1, time.time(), RequestStatus.WAITING))
    sched.update_from_output(sched.schedule(), None)  # the prompt's one step; the request is done
    for _ in range(3):
        assert sched.schedule().total_num_scheduled_tokens == 0
    assert len(spy.states) == 2  # the batch, then once when the engine ran out of work (not every empty step)
    idle = spy.states[1]
    assert idle.batch_new_tokens.size == 0 and idle.queue_len == 0
    sched.shutdown()


def test_a_controller_error_falls_back_to_the_default_clock_logs_once_and_serving_goes_on(
    nvml_file: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sched = make("decode", monkeypatch)
    hook = sched._biscale
    hook.controller = Spy(answer=990)
    for i in range(3):
        sched.add_request(Request(f"r{i}", 50, 100, time.time(), RequestStatus.WAITING))
    sched.update_from_output(sched.schedule(), None)
    assert hook.actuator.flush(5.0) and locked(nvml_file)[2] == [990, 990]
    hook.controller = Spy(fail=True)
    caplog.set_level(logging.ERROR, logger="biscale.integrations")
    for _ in range(4):
        out = sched.schedule()
        assert out.total_num_scheduled_tokens == 3  # vLLM's batch is untouched
        sched.update_from_output(out, None)
    assert hook.errors == 4 and "controller exploded" in (hook.last_error or "")
    assert sum("controller exploded" in r.getMessage() for r in caplog.records) == 1
    assert hook.actuator.flush(5.0)
    assert locked(nvml_file) == [None] * 4 and hook.target == GOVERNOR_MHZ
    sched.shutdown()


def test_async_scheduling_decides_step_k_plus_1_while_step_k_runs(
    nvml_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two schedule() calls before the first update (vLLM's batch queue of 2): each latency is measured from the
    later of the step's scheduling and the previous step's end."""
    now = [100.0]
    monkeypatch.setattr(adapter.time, "monotonic", lambda: now[0])
    sched = make("decode", monkeypatch, base=AsyncScheduler)
    spy = Spy()
    sched._biscale.controller = spy
    for i in range(2):
        r = Request(f"r{i}", 40, 100, time.time(), RequestStatus.WAITING)
        r.num_computed_tokens = 39
        sched.add_request(r)
    out1 = sched.schedule()  # step 1 decided at t=100.000
    now[0] = 100.001
    out2 = sched.schedule()  # step 2 decided while step 1 runs
    assert len(spy.states) == 2
    np.testing.assert_array_equal(spy.states[1].running_context_tokens, [41, 41])  # step 1's token in flight
    now[0] = 100.050
    sched.update_from_output(out1, None)
    now[0] = 100.080
    out3 = sched.schedule()
    assert spy.states[-1].recent_latencies_s == pytest.approx((0.050,))  # step 2 still runs: k-1's latency
    now[0] = 100.100
    sched.update_from_output(out2, None)
    now[0] = 100.160
    sched.update_from_output(out3, None)
    assert tuple(sched._biscale.recent) == pytest.approx((0.050, 0.050, 0.060))
    sched.shutdown()


@pytest.mark.parametrize(
    ("base", "resolved", "want"),
    [(Scheduler, True, "BiScaleScheduler"), (AsyncScheduler, False, "BiScaleSyncScheduler")],
)
def test_a_scheduler_of_the_wrong_kind_for_the_async_setting_is_refused_with_the_class_to_use(
    nvml_file: Path, monkeypatch: pytest.MonkeyPatch, base: type, resolved: bool, want: str
) -> None:
    from biscale.errors import InputError

    class Resolved(base):  # type: ignore[valid-type, misc]
        __slots__ = ()

        def __init__(self) -> None:
            super().__init__()
            self.scheduler_config = SchedulerConfig(async_scheduling=resolved)

    on = "on" if resolved else "off"
    with pytest.raises(InputError, match=f"async scheduling {on}.*biscale.integrations.vllm.{want}"):
        make("prefill", monkeypatch, base=Resolved)


def test_each_data_parallel_rank_clocks_its_own_gpus_as_vllm_s_workers_pick_them() -> None:
    # no get_local_gpu_index (an older config): ranks side by side on one node
    assert adapter.rank_gpu_selection(ParallelConfig(tensor_parallel_size=4, pipeline_parallel_size=2)) == (
        "cuda:0,cuda:1,cuda:2,cuda:3,cuda:4,cuda:5,cuda:6,cuda:7"
    )
    pc = ParallelConfig(tensor_parallel_size=2, data_parallel_size=2)
    pc.data_parallel_rank_local = 1  # type: ignore[attr-defined]
    assert adapter.rank_gpu_selection(pc) == "cuda:2,cuda:3"

    @dataclass
    class WithMapping(ParallelConfig):
        local_world_size: int = 2
        data_parallel_rank_local: int = 1
        assigned_physical_gpu_ids: list[int] | None = None

        def get_local_gpu_index(self, local_rank: int) -> int:  # vLLM 0.33's rule on one node
            return local_rank + self.data_parallel_rank_local * self.tensor_parallel_size

    assert adapter.rank_gpu_selection(WithMapping()) == "cuda:2,cuda:3"
    assert adapter.rank_gpu_selection(WithMapping(assigned_physical_gpu_ids=[7, 6, 5, 4])) == "5,4"  # NVML indices
    # TP 8 x PP 2 over two nodes: this node's share only (no 'cuda:8')
    spans = WithMapping(
        tensor_parallel_size=8, pipeline_parallel_size=2, nnodes=2, local_world_size=8, data_parallel_rank_local=0
    )
    assert adapter.rank_gpu_selection(spans) == ",".join(f"cuda:{i}" for i in range(8))


def test_data_parallel_ranks_get_their_own_instance_name_and_metrics_port() -> None:
    from biscale.errors import InputError
    from biscale.integrations.config import HookConfig

    pc = ParallelConfig(data_parallel_size=2)
    pc.data_parallel_rank = 3  # type: ignore[attr-defined]
    pc.data_parallel_rank_local = 1  # type: ignore[attr-defined]
    got = adapter.per_rank_config(HookConfig(role="decode", instance="d", metrics_port=9400), pc)
    assert (got.instance, got.metrics_port) == ("d-dp3", 9401)
    one = HookConfig(role="decode", instance="d", metrics_port=9400)
    assert adapter.per_rank_config(one, ParallelConfig()) is one
    with pytest.raises(InputError, match="every one of the 2 data-parallel ranks"):
        adapter.per_rank_config(HookConfig(role="decode", gpus="0,1"), pc)


def test_version_check() -> None:
    assert adapter.version_supported("0.33.0") and adapter.version_supported("0.33.2rc1")
    assert not adapter.version_supported("0.32.1") and not adapter.version_supported("dev")


def test_a_bad_configuration_stops_start_up_with_the_reason(nvml_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from biscale.errors import InputError

    monkeypatch.setenv("BISCALE_SLO_TTFT_MS", "-5")
    with pytest.raises(InputError, match="BISCALE_SLO_TTFT_MS"):
        make("prefill", monkeypatch)


def test_without_nvml_permission_it_decides_and_serves_without_clocking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_state(tmp_path / "nvml.json", default_state(2, root=False))
    monkeypatch.setenv(FAKE_ENV, str(path))
    monkeypatch.setenv("BISCALE_GUARD", "false")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    caplog.set_level(logging.ERROR, logger="biscale.integrations")
    sched = make("prefill", monkeypatch)
    assert sched._biscale.actuator is None
    assert any("clock control disabled" in r.getMessage() for r in caplog.records)
    sched.add_request(Request("r", 300, 1, time.time(), RequestStatus.WAITING))
    assert sched.schedule().total_num_scheduled_tokens == 300
    assert sched._biscale.decisions == 1 and sched._biscale.target is not None
    sched.shutdown()


def test_with_a_guard_process_the_clocks_are_restored_and_the_guard_released(
    nvml_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BISCALE_GUARD", "true")
    sched = make("decode", monkeypatch)
    hook = sched._biscale
    assert hook.guard is not None and hook.guard.proc.poll() is None
    hook.controller = Spy(answer=1005)
    sched.add_request(Request("r", 64, 8, time.time(), RequestStatus.WAITING))
    sched.update_from_output(sched.schedule(), None)
    assert hook.actuator.flush(5) and locked(nvml_file)[2] == [1005, 1005]
    guard = hook.guard
    sched.shutdown()
    assert guard.proc.poll() == 0 and locked(nvml_file) == [None] * 4


# ------------------------------------------------------------------------------------------------ faults
NVML_CALLS = (
    "nvmlInit",
    "nvmlShutdown",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetName",
    "nvmlDeviceGetSupportedMemoryClocks",
    "nvmlDeviceGetSupportedGraphicsClocks",
    "nvmlDeviceResetGpuLockedClocks",
    "nvmlDeviceSetGpuLockedClocks",
    "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetPowerUsage",
)


def drive(sched: Any) -> list[int]:
    totals = []
    sched.add_request(Request("r", 300, 3, time.time(), RequestStatus.WAITING))
    while sched.requests:
        out = sched.schedule()
        totals.append(out.total_num_scheduled_tokens)
        sched.update_from_output(out, None)
    return totals


def test_the_fault_list_is_every_nvml_call_the_hook_makes(nvml_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BISCALE_METRICS_PORT", "0")
    sched = make("prefill", monkeypatch)
    sched._biscale.controller = Spy(990)
    drive(sched)
    assert sched._biscale.actuator.flush(5.0)
    sched._biscale.metrics.render()
    sched.shutdown()
    made = {c["fn"] for c in FakeNvml(nvml_file).calls()}
    assert made == set(NVML_CALLS)


@pytest.mark.parametrize("fn", NVML_CALLS)
def test_serving_goes_on_at_default_clocks_whatever_nvml_call_fails_for_good(
    fn: str, nvml_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    codes = {
        "nvmlDeviceResetGpuLockedClocks": pynvml.NVML_ERROR_NOT_SUPPORTED,
        "nvmlDeviceGetSupportedGraphicsClocks": pynvml.NVML_ERROR_UNKNOWN,
    }
    monkeypatch.setenv("BISCALE_METRICS_PORT", "0")
    FakeNvml(nvml_file).add_fault(fn, codes.get(fn, pynvml.NVML_ERROR_UNKNOWN))
    sched = make("prefill", monkeypatch)
    assert sched._biscale is not None
    sched._biscale.controller = Spy(990)
    assert drive(sched) == [300, 1, 1]  # vLLM's batches, untouched
    if sched._biscale.actuator is not None:
        assert sched._biscale.actuator.flush(5.0)
    if sched._biscale.metrics is not None:
        sched._biscale.metrics.render()
    sched.shutdown()
    assert locked(nvml_file) == [None] * 4


def test_a_metrics_port_in_use_is_said_once_and_serving_goes_on(
    nvml_file: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    caplog.set_level(logging.ERROR, logger="biscale.integrations")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setenv("BISCALE_METRICS_PORT", str(busy.getsockname()[1]))
        sched = make("decode", monkeypatch)
    assert sched._biscale.metrics is None and sched._biscale.actuator is not None
    assert sum("metrics not served" in r.getMessage() for r in caplog.records) == 1
    assert drive(sched) == [300, 1, 1]
    sched.shutdown()


def test_any_other_start_up_failure_leaves_the_engine_serving_at_default_clocks(
    nvml_file: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from biscale.integrations import vllm as adapter

    def broken(self: Any, config: Any, pc: Any) -> Any:
        raise RuntimeError("something unforeseen")

    monkeypatch.setattr(adapter.BiScaleSchedulerMixin, "_biscale_open", broken)
    caplog.set_level(logging.ERROR, logger="biscale.integrations")
    sched = make("decode", monkeypatch)
    assert sched._biscale is None
    assert sum("serves at default clocks" in r.getMessage() for r in caplog.records) == 1
    assert drive(sched) == [300, 1, 1]
