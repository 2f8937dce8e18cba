"""The emulated engine: the official ``openai`` client streams from it, its batches and prices are the simulator's
rule and the hardware model at the clock the controller set, and ``/metrics`` carries the exporter's names."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from biscale.control.state import GOVERNOR_MHZ
from biscale.costmodel import DecodeShape
from biscale.gpu.exporter import ControlPlaneMetrics
from biscale.gpu.fake_nvml import FakeNvml, default_state
from biscale.live.emulator import EmulatedEngine, EmulatorSettings
from biscale.sim.prefill import prefill_shape, take_chunks

openai = pytest.importorskip("openai", reason="the openai client is in the test extra")


def test_openai_client_streams_completions_and_chat(emulator: Callable[..., Any]) -> None:
    emu = emulator(role="both", speed=20.0)
    client = openai.OpenAI(base_url=emu.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    assert [m.id for m in client.models.list()] == ["biscale-emulated"]
    stream = client.completions.create(
        model="biscale-emulated", prompt=list(range(300)), max_tokens=7, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert len(texts) == 7 and all(t for t in texts)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    usage = next(c.usage for c in chunks if c.usage)
    assert (usage.prompt_tokens, usage.completion_tokens) == (300, 7)
    chat = client.chat.completions.create(
        model="biscale-emulated", messages=[{"role": "user", "content": "one two three four five"}],
        max_tokens=4, stream=True,
    )  # fmt: skip
    pieces = [c.choices[0].delta.content for c in chat if c.choices and c.choices[0].delta.content]
    assert len(pieces) == 4
    whole = client.completions.create(model="biscale-emulated", prompt="a b c", max_tokens=3)
    assert whole.usage is not None and whole.usage.completion_tokens == 3
    assert whole.choices[0].finish_reason == "length"


def test_bad_requests_get_openai_errors(emulator: Callable[..., Any]) -> None:
    emu = emulator(role="decode", decode_tp=2, speed=20.0)
    client = openai.OpenAI(base_url=emu.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="biscale-emulated", prompt="x", max_tokens=0)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="other", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="KV cache"):
        client.completions.create(model="biscale-emulated", prompt=[1] * 20_000, max_tokens=2)


def test_prefill_role_answers_one_token(emulator: Callable[..., Any]) -> None:
    emu = emulator(role="prefill", speed=20.0)
    client = openai.OpenAI(base_url=emu.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    out = client.completions.create(model="biscale-emulated", prompt=list(range(100)), max_tokens=50)
    assert out.usage is not None and out.usage.completion_tokens == 1


def _engine(**kw: Any) -> EmulatedEngine:
    async def build() -> EmulatedEngine:
        return EmulatedEngine(EmulatorSettings(**kw))

    return asyncio.run(build())


def test_batches_follow_the_simulator_rule_and_are_priced_at_the_clock_the_controller_set() -> None:
    engine = _engine(role="both", token_budget=1000, controllers={"prefill": "1200", "decode": "max"})
    prefill, decode = engine.instances
    reqs = [engine.submit(n, 5) for n in (1500, 600, 50)]
    step, finish = prefill._prefill_step()
    assert step is not None
    assert [n for _, n in step.scheduled] == take_chunks([1500, 600, 50], 1000, 1024) == [1000]
    assert [r for r, _ in step.scheduled] == reqs[:1] and list(step.waiting) == reqs[1:]
    prefill.hook.before_step(step)
    assert prefill.hook.actuator.flush(5)
    assert prefill.clock() == 1200
    cost = prefill._price(step)
    want = engine.cost.prefill_cost(prefill_shape([1000], [0]), 4, 1200)
    assert (cost.latency_s, cost.power_w) == (want.latency_s, want.power_w)
    finish()
    assert list(prefill.queue) == reqs and reqs[0].num_computed_tokens == 1000  # the chunked head keeps its place
    step, finish = prefill._prefill_step()
    # the head's last 500 tokens, then a 500-token chunk of the next prompt fills the budget (vLLM's rule)
    assert step is not None and [n for _, n in step.scheduled] == [500, 500]
    assert [r for r, _ in step.scheduled] == reqs[:2]
    cost = prefill._price(step)
    assert cost.latency_s == engine.cost.prefill_cost(prefill_shape([500, 500], [1000, 0]), 4, 1200).latency_s
    finish()
    assert reqs[0].num_output_tokens == 1 and list(decode.queue) == [reqs[0]]  # first token, then to decode
    # decode: the joining request's context is prompt + 1 (its first token), one token per step
    dstep, dfinish = decode._decode_step()
    assert dstep is not None
    decode.hook.before_step(dstep)
    assert decode.hook.actuator.flush(5) and decode.clock() == 1980
    got = decode._price(dstep)
    want = engine.cost.decode_cost(DecodeShape.from_lengths([1501]), 4, 1980)
    assert got.latency_s == want.latency_s
    dfinish()
    assert reqs[0].num_output_tokens == 2
    for inst in engine.instances:
        inst.hook.close()


def test_the_governor_prices_at_the_default_clock_and_power_drives_the_energy_counter() -> None:
    engine = _engine(role="decode", controllers={"decode": "default"})
    (inst,) = engine.instances
    engine.submit(100, 3)
    step, _ = inst._decode_step()
    assert step is not None
    assert inst.hook.before_step(step) == GOVERNOR_MHZ and inst.clock() is None
    cost = inst._price(step)
    assert cost.latency_s == engine.cost.decode_cost(DecodeShape.from_lengths([100]), 4, None).latency_s
    # the fake GPUs' counters integrate the power the emulator drives
    fake = engine.fake
    inst.drive(cost.power_w)
    before = [fake.nvmlDeviceGetTotalEnergyConsumption(fake.nvmlDeviceGetHandleByIndex(g)) for g in inst.gpus]
    fake.update(lambda st: [g.update(energy_t=g["energy_t"] - 10.0) for g in st["gpus"]])
    after = [fake.nvmlDeviceGetTotalEnergyConsumption(fake.nvmlDeviceGetHandleByIndex(g)) for g in inst.gpus]
    np.testing.assert_allclose(np.subtract(after, before) / 1e3, cost.power_w * 10.0, rtol=1e-3)
    inst.hook.close()


def metric_names(text: str) -> set[str]:
    return {n for n in re.findall(r"^# TYPE (\S+) ", text, flags=re.M) if not n.endswith("_created")}


def test_metrics_carry_every_name_of_the_control_plane_exporter(emulator: Callable[..., Any]) -> None:
    from biscale.gpu.energy import EnergyMeter

    ref = ControlPlaneMetrics()
    fake = FakeNvml(state=default_state(1))
    ref.attach_nvml(EnergyMeter(fake, [0]))
    ref.record_switch(0, 1410)
    ref.record_restore(0, "exit")
    ref.record_decision("x", "decode", 1410)
    ref.record_iteration("x", 0.01, 0.01)
    ref.record_slack("x", "tpot", 0.01)
    emu = emulator(role="both", speed=20.0)
    with urllib.request.urlopen(emu.url + "/metrics", timeout=30) as r:
        text = r.read().decode()
    want = metric_names(ref.render()) - {
        "biscale_iteration_latency_predicted_seconds", "biscale_iteration_latency_observed_seconds",
        "biscale_iteration_latency_relative_error", "biscale_slo_slack_seconds", "biscale_gpu_clock_restores",
    }  # fmt: skip
    assert want <= metric_names(text)
    assert 'biscale_gpu_phase_info{engine_instance="decode-0",gpu="4",phase="decode"} 1.0' in text


def _raw(port: int, request: bytes) -> tuple[int, str, str]:
    """(status, content type, body) of one raw HTTP/1.1 exchange (aiohttp's own errors included)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    ctype = next((h.split(":", 1)[1].strip() for h in lines if h.lower().startswith("content-type:")), "")
    return int(lines[0].split()[1]), ctype, body.decode(errors="replace")


def _post(port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": "a b", "stream": True, "stream_options": "yes"}, "'stream_options' must be an object"),
        ({"prompt": "a b", "stream": True, "stream_options": {"include_usage": "y"}}, "include_usage"),
        ({"prompt": "a b", "stream": "yes"}, "'stream' must be true or false"),
        ({"prompt": "a b", "max_tokens": True}, "'max_tokens' must be an integer >= 1"),
        ({"prompt": "a b", "max_tokens": 2.5}, "'max_tokens' must be an integer >= 1"),
        ({"prompt": "a b", "n": 2}, "'n' must be 1"),
    ],
)
def test_bad_options_are_refused_before_any_stream_starts(
    emulator: Callable[..., Any], body: dict[str, Any], message: str
) -> None:
    import json

    emu = emulator(role="decode", decode_tp=2, speed=20.0)
    status, ctype, text = _raw(emu.port, _post(emu.port, "/v1/completions", json.dumps(body).encode()))
    assert status == 400 and ctype.startswith("application/json")
    err = json.loads(text)["error"]
    assert message in err["message"] and err["type"] == "invalid_request_error" and err["code"] == 400


def test_every_error_status_is_in_openai_s_json_format(
    emulator: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from biscale.live import emulator as module

    monkeypatch.setattr(module, "MAX_BODY_BYTES", 1000)
    emu = emulator(role="decode", decode_tp=2, speed=20.0)
    cases = {
        404: b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        405: b"GET /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        413: _post(emu.port, "/v1/completions", json.dumps({"prompt": "a " * 2000}).encode()),
        400: _post(emu.port, "/v1/completions", b"{not json"),
    }
    for status, request in cases.items():
        got, ctype, text = _raw(emu.port, request)
        assert (got, ctype.split(";")[0]) == (status, "application/json"), (status, text)
        err = json.loads(text)["error"]
        assert err["code"] == status and err["message"] and err["type"]


def _gauge(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def _eventually(pred: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("stream", [False, True])
def test_an_abandoned_request_leaves_the_engine_and_the_gauges_say_so(
    emulator: Callable[..., Any], stream: bool
) -> None:
    import json
    import socket

    emu = emulator(role="decode", decode_tp=2, speed=1.0)
    body = json.dumps({"prompt": "a b c", "max_tokens": 5000, "stream": stream}).encode()
    s = socket.create_connection(("127.0.0.1", emu.port), timeout=30)
    s.sendall(_post(emu.port, "/v1/completions", body))
    assert _eventually(lambda: _gauge(emu.port, "biscale_engine_requests_running") == 1)
    s.close()  # the client hangs up
    assert _eventually(lambda: _gauge(emu.port, "biscale_engine_requests_running") == 0)
    assert _gauge(emu.port, "biscale_engine_requests_waiting") == 0


def test_a_tp_the_predictors_were_not_profiled_at_is_refused_at_start() -> None:
    from biscale.errors import InputError

    with pytest.raises(
        InputError, match=r"field 'prefill-tp'.*no prefill model for TP 1 \(profiled TP degrees: 2, 4, 8"
    ):
        _engine(role="both", prefill_tp=1)
