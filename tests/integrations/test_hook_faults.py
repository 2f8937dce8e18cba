"""The clock hook over time and under faults, without vLLM: the live contract on virtual GPUs and a virtual clock
(idle gaps, watchdog parks, re-arm), every NVML call of the vLLM adapter fault-injected in turn, broken metrics, the
engine's KV role. The same behaviours inside vLLM's real scheduler: tests/integrations/vllm_real."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pynvml
import pytest

from biscale.actuator import GOVERNOR_MHZ, LiveClockActuator
from biscale.control.controllers import ClockController
from biscale.control.state import InstanceState
from biscale.errors import InputError
from biscale.gpu.exporter import ControlPlaneMetrics
from biscale.gpu.fake_nvml import FakeNvml
from biscale.gpu.nvml import NvmlActuator
from biscale.integrations.config import HookConfig, load_hook_config
from biscale.integrations.hook import ClockHook, LiveStep
from biscale.live.simactuator import SimLiveActuator

CLOCKS = (345, 990, 1410, 1980)


class Spy(ClockController):
    """Answers a fixed clock."""

    name = "spy"

    def __init__(self, answer: int) -> None:
        self.answer = answer

    def decide(self, state: InstanceState) -> int | None:
        return self.answer


class Req:
    def __init__(self, rid: str, prompt: int) -> None:
        self.request_id, self.num_prompt_tokens, self.num_computed_tokens = rid, prompt, prompt
        self.arrival_time, self.num_output_tokens = 0.0, 1


def batch() -> LiveStep:
    return LiveStep([(Req("a", 100), 1)], [], 100, 10_000, 256, 256)


def sim_hook(now: list[float], answer: int = 345, watchdog_s: float = 30.0) -> tuple[ClockHook, SimLiveActuator]:
    act = SimLiveActuator((0, 1), CLOCKS, clock=lambda: now[0], switch_delay_s=0.05, watchdog_s=watchdog_s)
    hook = ClockHook(
        HookConfig(role="decode"),
        Spy(answer),
        tp=2,
        actuator=act,
        gpus=(0, 1),
        metrics=ControlPlaneMetrics(),
        clock=lambda: now[0],
        wall=lambda: now[0],
    )
    return hook, act


def test_both_actuators_implement_the_live_contract(fake: FakeNvml) -> None:
    assert isinstance(SimLiveActuator((0,), CLOCKS, clock=time.monotonic), LiveClockActuator)
    with NvmlActuator(fake) as act:
        assert isinstance(act, LiveClockActuator)


@pytest.mark.parametrize("gap_s", [30.5, 35.0, 600.0, 86_400.0])
def test_after_any_idle_gap_longer_than_the_watchdog_the_next_step_is_under_control_again(
    gap_s: float, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    hook, act = sim_hook(now)
    hook.before_step(batch())
    now[0] += 0.1
    assert [act.locked_clock_nowait(g) for g in (0, 1)] == [345, 345]
    now[0] += gap_s  # the engine had no request: nothing called the hook
    assert act.locked_clock_nowait(0) is None and act.suspended  # parked at default clocks
    caplog.set_level(logging.WARNING, logger="biscale.integrations")
    hook.before_step(batch())  # burst 2
    assert not act.suspended and hook.suspensions == 1 and hook.errors == 1
    now[0] += 0.1
    assert [act.locked_clock_nowait(g) for g in (0, 1)] == [345, 345]  # re-taken: same answer
    assert sum("clock control was suspended (watchdog" in r.getMessage() for r in caplog.records) == 1
    assert 'biscale_control_suspensions_total{instance="0",reason="watchdog"} 1.0' in hook.metrics.render()
    for _ in range(3):  # steady serving afterwards: nothing more counted
        now[0] += 1.0
        hook.before_step(batch())
    assert hook.suspensions == 1 and [act.locked_clock_nowait(g) for g in (0, 1)] == [345, 345]


def test_a_gap_shorter_than_the_watchdog_keeps_the_lock() -> None:
    now = [0.0]
    hook, act = sim_hook(now)
    hook.before_step(batch())
    now[0] += 29.0
    hook.before_step(batch())
    assert act.suspensions == 0 and hook.errors == 0 and act.applied == [(0.05, 345)]


def test_an_nvml_suspension_is_counted_and_re_armed_after_its_back_off(fake: FakeNvml) -> None:
    fake.add_fault("nvmlDeviceSetGpuLockedClocks", pynvml.NVML_ERROR_UNKNOWN, count=6)  # 2 GPUs x (1 try + 2 retries)
    act = NvmlActuator(fake, [0, 1], retry_delay_s=0.0, rearm_after_s=0.0)
    hook = ClockHook(HookConfig(role="decode"), Spy(990), tp=2, actuator=act, gpus=(0, 1))
    hook.before_step(batch())
    assert act.flush(5.0) and act.suspended and "nvml_error" in str(act.suspended_reason)
    hook.before_step(batch())  # counted, re-armed (the back-off is 0 here), decided again
    assert hook.suspensions == 1 and hook.errors == 1
    assert act.flush(5.0) and not act.suspended
    assert [g["locked_mhz"] for g in fake.snapshot()["gpus"]] == [[990, 990], [990, 990]]
    act.close()


def test_a_refused_permission_is_never_re_armed(fake: FakeNvml) -> None:
    fake.add_fault("nvmlDeviceSetGpuLockedClocks", pynvml.NVML_ERROR_NO_PERMISSION)
    act = NvmlActuator(fake, [0], rearm_after_s=0.0)
    hook = ClockHook(HookConfig(role="decode"), Spy(990), tp=1, actuator=act, gpus=(0,))
    hook.before_step(batch())
    assert act.flush(5.0)
    hook.before_step(batch())
    assert act.suspended and hook.suspensions == 1 and not act.rearm()
    act.close()


def test_a_metrics_or_controller_exception_never_reaches_the_engine() -> None:
    class Broken(ControlPlaneMetrics):
        def record_decision(self, instance: str, phase: str, clock_mhz: int) -> None:
            raise RuntimeError("metrics exploded")

    now = [0.0]
    hook, _ = sim_hook(now)
    hook.metrics = Broken()
    assert hook.before_step(batch()) == GOVERNOR_MHZ  # fell back to the default clock
    assert hook.errors == 1 and "metrics exploded" in str(hook.last_error)

    class Exploding(SimLiveActuator):
        def heartbeat(self) -> None:
            raise RuntimeError("heartbeat exploded")

    hook.actuator = Exploding((0, 1), CLOCKS, clock=lambda: now[0])
    assert hook.before_step(batch()) == GOVERNOR_MHZ and hook.errors == 2


@pytest.mark.parametrize(
    ("kv_role", "configured", "phase"),
    [
        ("kv_producer", None, "prefill"),
        ("kv_consumer", None, "decode"),
        ("kv_consumer", "decode", "decode"),
        ("kv_both", "prefill", "prefill"),
        (None, "decode", "decode"),
    ],
)
def test_the_role_comes_from_the_kv_role_or_the_configuration(
    kv_role: str | None, configured: str | None, phase: str
) -> None:
    from biscale.integrations.vllm import engine_role

    kv = type("KV", (), {"kv_role": kv_role})() if kv_role else None
    role, source = engine_role(type("VC", (), {"kv_transfer_config": kv})())
    env = {"BISCALE_ROLE": configured} if configured else {}
    assert load_hook_config(env, engine_role=role, engine_role_source=source).role == phase


def test_a_role_contradicting_the_kv_role_is_refused_naming_both(tmp_path: Path) -> None:
    from biscale.integrations.vllm import engine_role

    role, source = engine_role(type("VC", (), {"kv_transfer_config": type("KV", (), {"kv_role": "kv_consumer"})()})())
    with pytest.raises(InputError, match=r"BISCALE_ROLE.*'prefill' contradicts .*kv_role='kv_consumer'"):
        load_hook_config({"BISCALE_ROLE": "prefill"}, engine_role=role, engine_role_source=source)
    cfg = tmp_path / "p.json"
    cfg.write_text('{"role": "prefill"}')
    with pytest.raises(InputError, match=r"p\.json.*field 'role'"):
        load_hook_config({}, cfg, engine_role=role, engine_role_source=source)
    with pytest.raises(InputError, match="BISCALE_ROLE"):  # kv_both or no connector: the configuration must say
        load_hook_config({})
