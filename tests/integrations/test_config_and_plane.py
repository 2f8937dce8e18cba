"""The hook's configuration (file + environment), the actuator's queued return to the governor, the fake NVML's
driven power, the NVML energy path of the load generator, and ``biscale plan --emit``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from biscale.errors import InputError
from biscale.gpu.fake_nvml import FakeNvml, default_state
from biscale.gpu.nvml import NvmlActuator
from biscale.integrations.config import load_hook_config


def test_config_from_a_file_with_environment_overrides(tmp_path: Path) -> None:
    f = tmp_path / "hook.json"
    f.write_text(json.dumps({"role": "prefill", "instance": "p0", "slo_ttft_ms": 400, "clocks_mhz": [990, 1980]}))
    cfg = load_hook_config({"BISCALE_CONFIG": str(f), "BISCALE_SLO_TPOT_MS": "80", "BISCALE_ACTUATE": "false"})
    assert (cfg.role, cfg.instance, cfg.slo_ttft_ms, cfg.slo_tpot_ms) == ("prefill", "p0", 400, 80)
    assert cfg.clocks_mhz == (990, 1980) and not cfg.actuate and cfg.controller_name == "mpc"
    assert cfg.slo.ttft_s == pytest.approx(0.4)
    env = {
        "BISCALE_ROLE": "decode",
        "BISCALE_CLOCKS_MHZ": "345, 1980",
        "BISCALE_CONTROLLER_OPTIONS": '{"margin_pct": 5}',
        "BISCALE_METRICS_PORT": "none",
    }
    cfg = load_hook_config(env)
    assert cfg.controller_name == "slack" and cfg.clocks_mhz == (345, 1980)
    assert cfg.controller_options == {"margin_pct": 5} and cfg.metrics_port is None


@pytest.mark.parametrize(
    "env, message",
    [
        ({}, "BISCALE_ROLE"),
        ({"BISCALE_ROLE": "both"}, "field 'BISCALE_ROLE'"),
        ({"BISCALE_ROLE": "decode", "BISCALE_CLOCKS_MHZ": "fast"}, "field 'BISCALE_CLOCKS_MHZ'"),
        ({"BISCALE_ROLE": "decode", "BISCALE_CONTROLLER_OPTIONS": "{bad"}, "not valid JSON"),
        ({"BISCALE_CONFIG": "/nonexistent/hook.json"}, "/nonexistent/hook.json"),
    ],
)
def test_bad_configuration_names_the_field(env: dict[str, str], message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        load_hook_config(env)


def test_a_bad_field_in_the_file_names_the_file_and_the_field(tmp_path: Path) -> None:
    f = tmp_path / "hook.toml"
    f.write_text('role = "decode"\nwatchdog_s = -1\n')
    with pytest.raises(InputError, match=r"hook.toml.*field 'watchdog_s'"):
        load_hook_config({"BISCALE_CONFIG": str(f)})


def test_a_queued_return_to_the_governor_keeps_its_place_behind_a_lock() -> None:
    fake = FakeNvml(state=default_state(2))
    act = NvmlActuator(fake, [0, 1])
    try:
        act.request_clock([0, 1], 1410)
        act.request_clock([0, 1], 0)  # replaces the pending lock: the last request wins
        assert act.flush(5)
        assert act.current_clock_mhz([0, 1]) == {0: None, 1: None}
        act.request_clock([0, 1], 990)
        assert act.flush(5) and act.current_clock_mhz([0, 1]) == {0: 990, 1: 990}
        assert act.locked_clock_nowait(1) == 990
        act.request_clock([0, 1], 0)
        assert act.flush(5) and act.current_clock_mhz([0, 1]) == {0: None, 1: None}
        assert ("governor" in {r for _, r in act.restores}) and act.requests_applied >= 2
        with pytest.raises(InputError, match="not supported"):
            act.request_clock([0, 1], 1000)
    finally:
        act.close()


def test_driven_power_is_what_the_counter_integrates() -> None:
    fake = FakeNvml(state=default_state(1))
    fake.nvmlInit()
    h = fake.nvmlDeviceGetHandleByIndex(0)
    fake.drive_power(0, 300.0)
    assert fake.nvmlDeviceGetPowerUsage(h) == 300_000
    e0 = fake.nvmlDeviceGetTotalEnergyConsumption(h)
    fake.update(lambda st: st["gpus"][0].update(energy_t=st["gpus"][0]["energy_t"] - 2.0))
    e1 = fake.nvmlDeviceGetTotalEnergyConsumption(h)
    assert (e1 - e0) / 1e3 == pytest.approx(600.0, rel=1e-3)
    fake.drive_power(0, None)  # back to the clock-based model
    assert fake.nvmlDeviceGetPowerUsage(h) == 450_000


def test_nvml_energy_of_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from biscale.live.energy import NvmlEnergy

    fake = FakeNvml(state=default_state(2))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meter = NvmlEnergy(None, period_s=0.05, nvml=fake)
    meter.start()
    for g in (0, 1):
        fake.drive_power(g, 100.0 * (g + 1))
    time.sleep(0.2)
    run = meter.stop()
    assert [g.name for g in run.groups] == ["gpu-0", "gpu-1"]
    assert run.groups[1].energy_j > run.groups[0].energy_j > 0
    assert len(run.timeline) > 0 and set(run.timeline["instance_id"]) == {0, 1}


# ------------------------------------------------------------------------------------------ plan --emit
FAST = ("--clocks", "1980", "--tps", "8", "--probe-s", "60", "--workers", "1")


def test_plan_emit_prints_a_script_for_the_plan(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    base = ("plan", "--rate", "10", "--gpus", "16", "--cache-dir", str(tmp_path), *FAST)
    refused = run_cli(*base, "--emit", "vllm")  # two nodes: the operator must say where the servers listen
    assert refused.code == 2 and "a plan over 2 nodes needs --bind-addr" in refused.err
    base = (*base, "--bind-addr", "0.0.0.0")
    res = run_cli(*base, "--emit", "vllm", "--hosts", "10.0.0.1,10.0.0.2", "--serve-model", "my/model")
    assert res.code == 0, res.err
    script = res.out
    assert script.startswith("#!/usr/bin/env bash") and "vllm serve my/model" in script
    assert "--scheduler-cls biscale.integrations.vllm.BiScaleScheduler" in script
    assert "vllm-router --vllm-pd-disaggregation" in script and "http://10.0.0.1:8100" in script
    js = json.loads(run_cli(*base, "--json").out)
    for g in js["instances"]:
        assert script.count(f'"role": "{g["phase"]}"') == g["count"]
    sg = run_cli(*base, "--emit", "sglang")
    assert sg.code == 0 and "sglang_router.launch_router --pd-disaggregation" in sg.out
    bad = run_cli(*base, "--emit", "trt")
    assert bad.code == 2 and "unknown engine 'trt'" in bad.err
