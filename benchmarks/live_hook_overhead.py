"""What the clock hook adds to one engine step: snapshot, controller decision and (non-blocking) actuator request.

A serving engine calls ``ClockHook.before_step`` once per iteration between forming the batch and running it
(biscale.integrations.vllm, the emulated engine), so its cost adds to every step. Measured with the real actuator on
the in-memory fake NVML and the bundled predictor, on steady states (the decision settles, so the actuator is
rarely asked): a decode batch of 128 running requests with the slack controller and a prefill batch of 8 prompts
plus 16 queued with the exact MPC (TP4). Prints one JSON line; p50 and p99 in microseconds.
"""

from __future__ import annotations

import json
import time

import numpy as np

from biscale.gpu.fake_nvml import FakeNvml, default_state
from biscale.gpu.nvml import NvmlActuator
from biscale.integrations.config import HookConfig
from biscale.integrations.hook import ClockHook, LiveStep, build_controller


class Req:
    __slots__ = ("arrival_time", "num_computed_tokens", "num_output_tokens", "num_prompt_tokens", "request_id")

    def __init__(self, rid: int, prompt: int, computed: int, outputs: int, age_s: float) -> None:
        self.request_id = str(rid)
        self.num_prompt_tokens = prompt
        self.num_computed_tokens = computed
        self.num_output_tokens = outputs
        self.arrival_time = time.time() - age_s


def measure(role: str, step: LiveStep, n: int) -> np.ndarray:
    config = HookConfig(role=role, instance=role, guard=False, watchdog_s=None)  # type: ignore[arg-type]
    controller, _ = build_controller(config)
    act = NvmlActuator(FakeNvml(state=default_state(4)), [0, 1, 2, 3])
    hook = ClockHook(config, controller, tp=4, actuator=act, gpus=[0, 1, 2, 3])
    for _ in range(20):  # warm-up: tables built, the decision settled
        hook.before_step(step)
        hook.after_step(0.03)
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        hook.before_step(step)
        out[i] = (time.perf_counter() - t0) * 1e6
        hook.after_step(0.03)
    hook.close()
    return out


def main() -> None:
    rng = np.random.default_rng(0)
    running = [Req(i, int(p), int(p) + 50, 50, 5.0) for i, p in enumerate(rng.integers(100, 2000, 128))]
    decode = LiveStep([(r, 1) for r in running], [], 200_000, 400_000, 256, 256)
    prompts = [Req(1000 + i, int(p), int(p), 0, 0.05) for i, p in enumerate(rng.integers(200, 900, 8))]
    queued = [Req(2000 + i, int(p), 0, 0, 0.02) for i, p in enumerate(rng.integers(200, 900, 16))]
    prefill = LiveStep([(r, r.num_prompt_tokens) for r in prompts], queued, 5000, 400_000, 8192, 1024)
    result = {}
    for name, role, step, n in (
        ("decode_slack_b128", "decode", decode, 2000),
        ("prefill_mpc", "prefill", prefill, 300),
    ):
        us = measure(role, step, n)
        result[f"{name}_p50_us"] = round(float(np.percentile(us, 50)), 1)
        result[f"{name}_p99_us"] = round(float(np.percentile(us, 99)), 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
