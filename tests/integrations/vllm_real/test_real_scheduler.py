"""The clock hook inside vLLM 0.33's *real* ``Scheduler`` and ``AsyncScheduler`` (``-m vllm_real``).

Built as vLLM's engine core builds them (``scheduler_cls`` = biscale's class) from a minimal ``VllmConfig``: the tiny
Llama config beside this file, ``DeviceConfig(device="cpu")``, ``num_gpu_blocks`` and a ``KVCacheConfig`` with one
``FullAttentionSpec`` set by hand, no tokenizer. ``schedule()`` / ``update_from_output(ModelRunnerOutput(...))`` are
driven as the engine core's loop drives them; the GPUs are the fake NVML's. vLLM is never a dependency of the main
test run: without it these skip (``.ci/run`` runs them in a second virtual environment with vLLM 0.33).
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pynvml
import pytest

from biscale.control.controllers import ClockController
from biscale.control.state import GOVERNOR_MHZ, InstanceState
from biscale.errors import InputError
from biscale.gpu.fake_nvml import FAKE_ENV, FakeNvml, default_state, read_state, write_state

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (never a test dependency; .ci/run installs 0.33)")
torch = pytest.importorskip("torch", reason="vLLM's torch is not installed")

from vllm.config import (  # noqa: E402
    CacheConfig,
    DeviceConfig,
    KVTransferConfig,
    ModelConfig,
    ParallelConfig,
    SchedulerConfig,
    VllmConfig,
)
from vllm.sampling_params import SamplingParams  # noqa: E402
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec  # noqa: E402
from vllm.v1.outputs import KVConnectorOutput, ModelRunnerOutput  # noqa: E402
from vllm.v1.request import Request, RequestStatus  # noqa: E402
from vllm.v1.structured_output import StructuredOutputManager  # noqa: E402

from biscale.integrations import vllm as adapter  # noqa: E402

pytestmark = pytest.mark.vllm_real

MODEL_DIR = Path(__file__).with_name("tiny-llama")
BLOCK = 16
BLOCKS = 1000
BUDGET = 256
MAX_SEQS = 8


class Spy(ClockController):
    """Records every snapshot; answers a fixed clock."""

    name = "spy"

    def __init__(self, answer: int = 990) -> None:
        self.states: list[InstanceState] = []
        self.answer = answer

    def decide(self, state: InstanceState) -> int | None:
        self.states.append(state)
        return self.answer


@pytest.fixture(scope="module")
def model_config() -> ModelConfig:
    return ModelConfig(model=str(MODEL_DIR), skip_tokenizer_init=True, dtype="float32", max_model_len=4096)


@pytest.fixture
def nvml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = write_state(tmp_path / "nvml.json", default_state(4))
    monkeypatch.setenv(FAKE_ENV, str(path))
    monkeypatch.setenv("BISCALE_GUARD", "false")
    for k in ("BISCALE_CONFIG", "BISCALE_ROLE", "BISCALE_GPUS", "BISCALE_METRICS_PORT", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(k, raising=False)
    yield path


def build(model_config: ModelConfig, *, sync: bool, kv_role: str | None = None, **parallel: Any) -> Any:
    """biscale's scheduler class built the way vLLM's engine core builds its scheduler."""
    kv = KVTransferConfig(kv_connector="NixlConnector", kv_role=kv_role) if kv_role else None
    vc = VllmConfig(
        model_config=model_config,
        cache_config=CacheConfig(block_size=BLOCK),
        scheduler_config=SchedulerConfig(
            max_num_seqs=MAX_SEQS,
            max_num_batched_tokens=BUDGET,
            max_model_len=4096,
            is_encoder_decoder=False,
            enable_chunked_prefill=True,
            async_scheduling=not sync,
            scheduler_cls=adapter.BiScaleSyncScheduler if sync else adapter.BiScaleScheduler,
        ),
        device_config=DeviceConfig(device="cpu"),
        parallel_config=ParallelConfig(tensor_parallel_size=2, **parallel),
        kv_transfer_config=kv,
    )
    vc.cache_config.num_gpu_blocks = BLOCKS
    spec = FullAttentionSpec(block_size=BLOCK, num_kv_heads=2, head_size=16, dtype=torch.float32)
    kv_cache = KVCacheConfig(num_blocks=BLOCKS, kv_cache_tensors=[], kv_cache_groups=[KVCacheGroupSpec(["l"], spec)])
    cls = vc.scheduler_config.get_scheduler_cls()  # what the engine core instantiates
    return cls(
        vllm_config=vc,
        kv_cache_config=kv_cache,
        structured_output_manager=StructuredOutputManager(vc),
        block_size=BLOCK,
        log_stats=True,
    )


def request(rid: str, prompt: int, max_tokens: int, *, age_s: float = 0.0, remote: bool = False) -> Request:
    extra = None
    if remote:  # a decode instance's request whose prompt KV a prefill instance computed (NixlConnector pull)
        extra = {
            "kv_transfer_params": {
                "do_remote_prefill": True,
                "remote_engine_id": "prefill-0",
                "remote_request_id": rid,
                "remote_host": "127.0.0.1",
                "remote_port": 5600,
                "remote_block_ids": list(range(-(-prompt // BLOCK))),
            }
        }
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True, extra_args=extra)
    return Request(rid, list(range(3, 3 + prompt)), params, None, arrival_time=time.time() - age_s)


def step(sched: Any, *, received: set[str] | None = None) -> Any:
    """One engine-core step: schedule, 'run' (a token for every request whose prompt is done), update."""
    out = sched.schedule()
    ids = list(out.num_scheduled_tokens)
    reqs = sched.requests
    sampled = [[7] if reqs[r].num_computed_tokens >= reqs[r].num_prompt_tokens else [] for r in ids]
    kv_out = KVConnectorOutput(finished_recving=received) if received else None
    mro = ModelRunnerOutput(
        req_ids=ids,
        req_id_to_index={r: i for i, r in enumerate(ids)},
        sampled_token_ids=sampled,
        kv_connector_output=kv_out,
    )
    sched.update_from_output(out, mro)
    return out


def locked(path: Path) -> list[Any]:
    return [g["locked_mhz"] for g in read_state(path)["gpus"]]


def wait_for(predicate: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# ------------------------------------------------------------------------------------------------- tests
def test_the_engine_core_still_calls_the_hooked_methods() -> None:
    """The hook lives in schedule() / update_from_output() / shutdown(): vLLM's engine core must call them."""
    from vllm.v1.engine.core import EngineCore

    src = inspect.getsource(EngineCore)
    for call in ("self.scheduler.schedule(", "self.scheduler.update_from_output(", "self.scheduler.shutdown("):
        assert call in src, f"vLLM's EngineCore no longer calls {call}...): the clock hook would never run"


def test_prefill_in_the_real_sync_scheduler_sees_vllm_s_batches_and_clocks_exactly_its_gpus(
    model_config: ModelConfig, nvml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BISCALE_ROLE", "prefill")
    sched = build(model_config, sync=True)
    hook = sched._biscale
    assert hook is not None and hook.gpus == (0, 1) and hook.phase == "prefill"
    spy = Spy(990)
    hook.controller = spy
    sched.add_request(request("a", 300, 2, age_s=0.3))
    sched.add_request(request("b", 200, 2, age_s=0.1))
    out = step(sched)
    assert out.num_scheduled_tokens == {"a": 256}
    s = spy.states[-1]
    np.testing.assert_array_equal(s.batch_new_tokens, [256])
    np.testing.assert_array_equal(s.batch_prefix_tokens, [0])
    np.testing.assert_array_equal(s.batch_prompt_tokens, [300])
    np.testing.assert_array_equal(s.waiting_prompt_tokens, [200])
    assert s.token_budget == BUDGET and s.max_batch_seqs == MAX_SEQS and s.tp == 2
    assert s.kv_capacity_tokens == BLOCKS * BLOCK
    assert s.kv_used_tokens == round(sched.kv_cache_manager.usage * BLOCKS * BLOCK) > 0
    out = step(sched)  # a's last 44 tokens after its 256-token prefix, then b
    assert out.num_scheduled_tokens == {"a": 44, "b": 200}
    s = spy.states[-1]
    np.testing.assert_array_equal(s.batch_new_tokens, [44, 200])
    np.testing.assert_array_equal(s.batch_prefix_tokens, [256, 0])
    assert s.waiting_prompt_tokens.size == 0 and s.recent_latencies_s
    assert hook.actuator.flush(5.0)
    assert locked(nvml) == [[990, 990], [990, 990], None, None]  # the TP group's two GPUs, no other
    while sched.requests:
        step(sched)
    n_schedule = sched._biscale_calls["schedule"]
    assert n_schedule >= 3 and sched._biscale_calls["update_from_output"] == n_schedule
    assert hook.decisions == len(spy.states) >= 3 and hook.errors == 0
    sched.shutdown()
    assert locked(nvml) == [None] * 4


def test_decode_consumer_waits_for_remote_kv_then_joins_with_the_role_from_kv_transfer_config(
    model_config: ModelConfig, nvml: Path
) -> None:
    sched = build(model_config, sync=False, kv_role="kv_consumer")  # no BISCALE_ROLE: the KV role says decode
    hook = sched._biscale
    assert type(sched).__name__ == "BiScaleScheduler" and hook.phase == "decode"
    spy = Spy(1005)
    hook.controller = spy
    sched.add_request(request("r1", 64, 4, remote=True))
    out = step(sched)
    assert out.total_num_scheduled_tokens == 0
    assert sched.requests["r1"].status == RequestStatus.WAITING_FOR_REMOTE_KVS
    assert not spy.states  # nothing ran: no decision
    step(sched, received={"r1"})  # the KV arrived
    sched.add_request(request("r2", 32, 4, remote=True))
    out = step(sched)
    assert "r1" in out.num_scheduled_tokens
    s = spy.states[-1]
    assert s.phase == "decode"
    np.testing.assert_array_equal(s.running_generated_tokens, [1])  # joining counts its first token
    np.testing.assert_array_equal(s.running_context_tokens, [65])
    assert s.waiting_prompt_tokens.size == 0  # r2's KV is still arriving: not waiting to join yet
    assert hook.actuator.flush(5.0) and locked(nvml)[:2] == [[1005, 1005]] * 2
    sched.shutdown()
    assert locked(nvml) == [None] * 4


def test_a_role_that_contradicts_the_kv_role_is_refused_and_a_producer_is_prefill(
    model_config: ModelConfig, nvml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BISCALE_ROLE", "decode")
    with pytest.raises(
        InputError, match=re.escape("'decode' contradicts vLLM's kv_transfer_config.kv_role='kv_producer'")
    ):
        build(model_config, sync=True, kv_role="kv_producer")
    monkeypatch.delenv("BISCALE_ROLE")
    sched = build(model_config, sync=True, kv_role="kv_producer")
    assert sched._biscale.phase == "prefill"
    sched.shutdown()
    with pytest.raises(InputError, match="BISCALE_ROLE"):  # kv_both names no phase: the configuration must
        build(model_config, sync=True, kv_role="kv_both")


def test_a_class_that_does_not_match_the_async_setting_is_refused(model_config: ModelConfig, nvml: Path) -> None:
    with pytest.raises(InputError, match=re.escape("use --scheduler-cls biscale.integrations.vllm.BiScaleScheduler")):
        _build_with_class(model_config, adapter.BiScaleSyncScheduler, async_on=True)


def _build_with_class(model_config: ModelConfig, cls: type, *, async_on: bool) -> Any:
    vc = VllmConfig(
        model_config=model_config,
        cache_config=CacheConfig(block_size=BLOCK),
        scheduler_config=SchedulerConfig(
            max_num_seqs=MAX_SEQS,
            max_num_batched_tokens=BUDGET,
            max_model_len=4096,
            is_encoder_decoder=False,
            async_scheduling=async_on,
            scheduler_cls=cls,
        ),
        device_config=DeviceConfig(device="cpu"),
    )
    vc.cache_config.num_gpu_blocks = BLOCKS
    spec = FullAttentionSpec(block_size=BLOCK, num_kv_heads=2, head_size=16, dtype=torch.float32)
    kv_cache = KVCacheConfig(num_blocks=BLOCKS, kv_cache_tensors=[], kv_cache_groups=[KVCacheGroupSpec(["l"], spec)])
    return vc.scheduler_config.get_scheduler_cls()(
        vllm_config=vc,
        kv_cache_config=kv_cache,
        structured_output_manager=StructuredOutputManager(vc),
        block_size=BLOCK,
    )


def test_an_idle_gap_longer_than_the_watchdog_is_followed_by_a_burst_under_control(
    model_config: ModelConfig, nvml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BISCALE_ROLE", "decode")
    monkeypatch.setenv("BISCALE_WATCHDOG_S", "0.5")
    monkeypatch.setenv("BISCALE_METRICS_PORT", "0")
    sched = build(model_config, sync=False)
    hook = sched._biscale
    hook.controller = Spy(345)
    sched.add_request(request("a", 32, 3))
    while sched.requests:
        step(sched)
    assert hook.actuator.flush(5.0) and locked(nvml)[:2] == [[345, 345]] * 2
    # vLLM calls nothing while it has no request: the watchdog parks the GPUs at default clocks
    assert wait_for(lambda: hook.actuator.suspended and locked(nvml) == [None] * 4)
    assert hook.errors == 0  # not counted until the engine is back
    sched.add_request(request("b", 32, 3))  # burst 2
    step(sched)
    assert hook.suspensions == 1 and hook.errors == 1 and not hook.actuator.suspended
    assert hook.actuator.flush(5.0) and locked(nvml)[:2] == [[345, 345]] * 2  # under control again
    text = hook.metrics.render()
    assert 'biscale_control_suspensions_total{instance="0",reason="watchdog"} 1.0' in text
    sched.shutdown()
    assert locked(nvml) == [None] * 4


def _calls_of_a_clean_run(model_config: ModelConfig, nvml: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("BISCALE_ROLE", "prefill")
    monkeypatch.setenv("BISCALE_METRICS_PORT", "0")
    sched = build(model_config, sync=True)
    sched._biscale.controller = Spy(990)
    sched.add_request(request("a", 40, 2))
    while sched.requests:
        step(sched)
    assert sched._biscale.actuator.flush(5.0)
    sched._biscale.metrics.render()  # a scrape
    sched.shutdown()
    return sorted({c["fn"] for c in FakeNvml(nvml).calls() if c["fn"].startswith("nvml")})


def test_serving_goes_on_at_default_clocks_whatever_nvml_call_fails(
    model_config: ModelConfig, nvml: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every NVML call the hook makes (taken from a clean run's call log) fails for good in turn: the engine starts,
    schedules exactly what vLLM decides, and no GPU stays locked."""
    fns = _calls_of_a_clean_run(model_config, nvml, monkeypatch)
    assert len(fns) >= 10, fns  # 13 in vLLM 0.33 with the exporter on
    assert {"nvmlDeviceSetGpuLockedClocks", "nvmlDeviceResetGpuLockedClocks", "nvmlInit"} <= set(fns)
    codes = {
        "nvmlDeviceResetGpuLockedClocks": pynvml.NVML_ERROR_NOT_SUPPORTED,
        "nvmlDeviceGetSupportedGraphicsClocks": pynvml.NVML_ERROR_UNKNOWN,
    }
    for fn in fns:
        write_state(nvml, default_state(4))
        fake = FakeNvml(nvml)
        fake.add_fault(fn, codes.get(fn, pynvml.NVML_ERROR_UNKNOWN))
        sched = build(model_config, sync=True)
        assert sched._biscale is not None, fn
        sched.add_request(request("a", 300, 2))
        assert step(sched).num_scheduled_tokens == {"a": 256}, fn
        while sched.requests:
            step(sched)
        if sched._biscale.actuator is not None:
            sched._biscale.actuator.flush(5.0)
        if sched._biscale.metrics is not None:
            sched._biscale.metrics.render()
        sched.shutdown()
        still = [g for g, c in enumerate(locked(nvml)) if c is not None]
        if fn != "nvmlDeviceResetGpuLockedClocks":  # with reset broken a lock cannot be undone; none is made
            assert not still, (fn, still)
        else:
            assert not fake.calls("nvmlDeviceSetGpuLockedClocks") or still == [], fn


def test_a_metrics_port_in_use_leaves_the_engine_serving(
    model_config: ModelConfig, nvml: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setenv("BISCALE_ROLE", "prefill")
        monkeypatch.setenv("BISCALE_METRICS_PORT", str(busy.getsockname()[1]))
        sched = build(model_config, sync=True)
    assert sched._biscale is not None and sched._biscale.metrics is None
    assert sum("metrics not served" in r.getMessage() for r in caplog.records) == 1
    sched.add_request(request("a", 40, 2))
    assert step(sched).total_num_scheduled_tokens == 40
    sched.shutdown()


def test_each_data_parallel_rank_clocks_its_own_gpus(
    model_config: ModelConfig, nvml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BISCALE_ROLE", "decode")
    monkeypatch.setenv("BISCALE_METRICS_PORT", "0")
    sched = build(model_config, sync=True, data_parallel_size=2, data_parallel_rank=1, data_parallel_rank_local=1)
    hook = sched._biscale
    assert hook.gpus == (2, 3) and hook.config.instance == "0-dp1"
    hook.controller = Spy(1410)
    sched.add_request(request("a", 20, 3))
    step(sched)
    assert hook.actuator.flush(5.0) and locked(nvml) == [None, None, [1410, 1410], [1410, 1410]]
    sched.shutdown()
    assert locked(nvml) == [None] * 4 and GOVERNOR_MHZ == 0


def test_the_lazy_classes_are_built_on_vllms_schedulers() -> None:
    """The adapter's classes resolve against the installed vLLM: the async one on its AsyncScheduler, the sync one
    on its Scheduler (the stand-in tests without vLLM cannot see this)."""
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler
    from vllm.v1.core.sched.scheduler import Scheduler

    assert issubclass(adapter.BiScaleScheduler, AsyncScheduler)
    assert issubclass(adapter.BiScaleSyncScheduler, Scheduler)
    assert not issubclass(adapter.BiScaleSyncScheduler, AsyncScheduler)
