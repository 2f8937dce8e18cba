"""An emulated serving engine: the OpenAI streaming API on loopback, token timing from the hardware model.

Why: to test a whole pipeline (router, load generator, controller, actuator, metrics, Prometheus, report) on a machine
without GPUs. Each emulated instance (``--role prefill|decode``, or one of each for ``both``) runs iterations back to
back while it has work, exactly as the simulator's instances do:

1. form the batch (prefill: :func:`biscale.sim.prefill.take_chunks`, the simulator's chunked-prefill rule; decode:
   FCFS continuous batching up to ``max_batch``), advancing ``num_computed_tokens`` as vLLM does when it schedules;
2. let the BiScale controller decide the batch's clock through the same :class:`~biscale.integrations.hook.ClockHook`
   the vLLM adapter uses, whose actuator is the real :class:`~biscale.gpu.nvml.NvmlActuator` on an in-memory
   :class:`~biscale.gpu.fake_nvml.FakeNvml` (switches are asynchronous, as on a GPU);
3. price the batch with the hardware model at the clock the fake GPUs run now (latency, power), drive the fake GPUs'
   power to that value (their energy counters integrate it) and sleep the latency (divided by ``speed``);
4. emit one token per finished prompt (prefill: the first token) or per running request (decode).

With ``both``, a prompt's first token comes from the prefill instance and its KV moves to the decode instance at once
(no transfer time). ``prefill`` answers one token per request; ``decode`` treats every prompt as prefilled elsewhere
(the first token comes from its first step). ``/metrics`` serves the control-plane exporter's metric names
(:class:`~biscale.gpu.exporter.ControlPlaneMetrics`) for the fake GPUs, plus ``biscale_gpu_phase_info`` and a few
``biscale_engine_*`` series.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import Counter, Gauge

from biscale.control.state import DEFAULT_PREFILL_TOKEN_BUDGET, SLO_TPOT_MS, SLO_TTFT_MS
from biscale.costmodel import CostModel, DecodeShape
from biscale.errors import InputError
from biscale.gpu.energy import EnergyMeter
from biscale.gpu.exporter import ControlPlaneMetrics
from biscale.gpu.fake_nvml import FakeNvml, default_state
from biscale.gpu.nvml import NvmlActuator
from biscale.integrations.config import HookConfig
from biscale.integrations.hook import ClockHook, LiveStep, PhaseInfo, build_controller, check_predictor_tp
from biscale.sim.prefill import prefill_shape, take_chunks

log = logging.getLogger("biscale.live")

ROLES = ("prefill", "decode", "both")
MAX_BODY_BYTES = 64 * 2**20
"""Largest request body, bytes (a 1M-token prompt of token ids is ~7 MB of JSON)."""


@dataclass(frozen=True)
class EmulatorSettings:
    """How the emulated engine is built."""

    role: str = "both"
    gpu: str = "h100-sxm"
    model: str = "llama-3.3-70b"
    model_name: str = "biscale-emulated"
    """Model id the API reports and accepts."""
    prefill_tp: int = 4
    decode_tp: int = 4
    controllers: dict[str, str] = field(default_factory=lambda: {"prefill": "mpc", "decode": "slack"})
    controller_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    slo_ttft_ms: float = SLO_TTFT_MS
    slo_tpot_ms: float = SLO_TPOT_MS
    token_budget: int = DEFAULT_PREFILL_TOKEN_BUDGET
    max_prefill_seqs: int = 1024
    max_batch: int = 256
    speed: float = 1.0
    """Time runs this many times faster than the hardware model says (1 = real time)."""
    predictors: str | None = None


class EmuRequest:
    """A request inside the emulator (attribute names of vLLM's ``Request`` that the clock hook reads)."""

    __slots__ = (
        "arrival_time",
        "cancelled",
        "events",
        "max_tokens",
        "num_computed_tokens",
        "num_output_tokens",
        "num_prompt_tokens",
        "request_id",
    )

    def __init__(self, prompt_tokens: int, max_tokens: int) -> None:
        self.request_id = uuid.uuid4().hex
        self.num_prompt_tokens = prompt_tokens
        self.num_computed_tokens = 0
        self.num_output_tokens = 0
        self.max_tokens = max_tokens
        self.arrival_time = time.time()
        self.cancelled = False
        self.events: asyncio.Queue[bool] = asyncio.Queue()
        """One item per token (True on the last one)."""

    def emit(self) -> bool:
        """Deliver one token; True when it was the last."""
        self.num_output_tokens += 1
        last = self.num_output_tokens >= self.max_tokens
        self.events.put_nowait(last)
        return last


class EmulatedInstance:
    """One emulated instance: its queue, batches, clock hook and fake GPUs."""

    def __init__(
        self,
        name: str,
        phase: str,
        tp: int,
        gpus: tuple[int, ...],
        hook: ClockHook,
        cost: CostModel,
        fake: FakeNvml,
        settings: EmulatorSettings,
        metrics: EngineMetrics,
    ) -> None:
        self.name, self.phase, self.tp, self.gpus = name, phase, tp, gpus
        self.hook, self.cost, self.fake, self.settings, self.metrics = hook, cost, fake, settings, metrics
        self.queue: deque[EmuRequest] = deque()
        self.running: list[EmuRequest] = []
        self.next: EmulatedInstance | None = None
        """Decode instance a finished prompt moves to (``both``)."""
        self.wake = asyncio.Event()
        self.kv_capacity = cost.kv_capacity_tokens(tp)
        self.iterations = 0
        self._chunks: list[int] = []
        self._prefixes: list[int] = []

    def submit(self, r: EmuRequest) -> None:
        self.queue.append(r)
        self.wake.set()

    def clock(self) -> int | None:
        """The clock the fake GPUs run now (None: default governor)."""
        act = self.hook.actuator
        return None if act is None else act.locked_clock_nowait(self.gpus[0])

    def drive(self, power_w: float) -> None:
        for g in self.gpus:
            self.fake.drive_power(g, power_w)

    async def run(self) -> None:
        """Iterate while there is work; idle (at idle power) otherwise."""
        speed = self.settings.speed
        while True:
            self._drop_cancelled()
            if not self.queue and not self.running:
                self._show_queues()
                self.drive(self.cost.idle_power_w(self.tp, self.clock()))
                self.wake.clear()
                await self.wake.wait()
                continue
            step, finish = self._prefill_step() if self.phase == "prefill" else self._decode_step()
            if step is None:
                await asyncio.sleep(0)
                continue
            self.hook.before_step(step)
            cost = self._price(step)
            self.drive(cost.power_w)
            t0 = time.monotonic()
            await asyncio.sleep(cost.latency_s / speed)
            self.hook.after_step((time.monotonic() - t0) * speed)
            self.iterations += 1
            self.metrics.iterations.labels(instance=self.name).inc()
            finish()
            self._show_queues()

    def _show_queues(self) -> None:
        self.metrics.requests_running.labels(instance=self.name).set(len(self.running))
        self.metrics.requests_waiting.labels(instance=self.name).set(len(self.queue))

    def _drop_cancelled(self) -> None:
        if any(r.cancelled for r in self.queue):
            self.queue = deque(r for r in self.queue if not r.cancelled)
        if any(r.cancelled for r in self.running):
            self.running = [r for r in self.running if not r.cancelled]

    def _kv_used(self) -> int:
        return sum(r.num_computed_tokens for r in itertools.chain(self.running, self.queue))

    def _prefill_step(self) -> tuple[LiveStep | None, Any]:
        s = self.settings
        queue = self.queue
        chunks = take_chunks(
            (r.num_prompt_tokens - r.num_computed_tokens for r in queue), s.token_budget, s.max_prefill_seqs
        )
        batch = [queue.popleft() for _ in chunks]
        self._prefixes = [r.num_computed_tokens for r in batch]
        for r, c in zip(batch, chunks, strict=True):
            r.num_computed_tokens += c
        self._chunks = chunks
        step = LiveStep(
            list(zip(batch, chunks, strict=True)),
            list(queue),
            self._kv_used(),
            self.kv_capacity,
            s.token_budget,
            s.max_prefill_seqs,
        )

        def finish() -> None:
            self.metrics.prompt_tokens.inc(sum(chunks))
            unfinished = []
            for r in batch:
                if r.cancelled:
                    continue
                if r.num_computed_tokens < r.num_prompt_tokens:
                    unfinished.append(r)
                    continue
                last = r.emit()
                self.metrics.generation_tokens.inc()
                if not last and self.next is not None:
                    self.next.submit(r)
            self.hook.note_outputs(batch)
            self.hook.forget(r.request_id for r in batch if r not in unfinished)
            for r in reversed(unfinished):  # a chunked prompt keeps its place at the head
                queue.appendleft(r)

        return (step if batch else None), finish

    def _decode_step(self) -> tuple[LiveStep | None, Any]:
        s = self.settings
        while self.queue and len(self.running) < s.max_batch:
            r = self.queue.popleft()
            r.num_computed_tokens = max(r.num_computed_tokens, r.num_prompt_tokens - 1 + r.num_output_tokens)
            self.running.append(r)
        running = self.running
        for r in running:
            r.num_computed_tokens += 1
        step = LiveStep(
            [(r, 1) for r in running], list(self.queue), self._kv_used(), self.kv_capacity, s.max_batch, s.max_batch
        )

        def finish() -> None:
            done = []
            for r in running:
                if not r.cancelled and r.emit():
                    done.append(r)
            self.metrics.generation_tokens.inc(len(running))
            self.hook.note_outputs(running)
            if done:
                gone = {id(r) for r in done}
                self.running = [r for r in self.running if id(r) not in gone]
                self.hook.forget(r.request_id for r in done)

        return (step if running else None), finish

    def _price(self, step: LiveStep) -> Any:
        clock = self.clock()
        if self.phase == "prefill":
            return self.cost.prefill_cost(prefill_shape(self._chunks, self._prefixes), self.tp, clock)
        return self.cost.decode_cost(
            DecodeShape.from_lengths([r.num_computed_tokens for r, _ in step.scheduled]), self.tp, clock
        )


class EngineMetrics:
    """The emulator's own series (beside the control-plane exporter's, in the same registry)."""

    def __init__(self, registry: Any) -> None:
        self.requests_running = Gauge(
            "biscale_engine_requests_running", "Requests in the running batch", ["instance"], registry=registry
        )
        self.requests_waiting = Gauge(
            "biscale_engine_requests_waiting", "Requests waiting behind the batch", ["instance"], registry=registry
        )
        self.iterations = Counter("biscale_engine_iterations", "Engine iterations", ["instance"], registry=registry)
        self.prompt_tokens = Counter("biscale_engine_prompt_tokens", "Prompt tokens prefilled", registry=registry)
        self.generation_tokens = Counter("biscale_engine_generation_tokens", "Tokens generated", registry=registry)


class EmulatedEngine:
    """The instances of one emulated engine, their fake GPUs and the metrics registry."""

    def __init__(self, settings: EmulatorSettings) -> None:
        from biscale.hardware import get_hardware

        if settings.role not in ROLES:
            raise InputError(f"unknown role {settings.role!r} (expected prefill, decode or both)", field="role")
        if not settings.speed > 0:
            raise InputError(f"speed must be > 0, got {settings.speed}", field="speed")
        self.settings = settings
        self.cost = get_hardware(settings.gpu, settings.model)
        phases = ["prefill", "decode"] if settings.role == "both" else [settings.role]
        tps = {"prefill": settings.prefill_tp, "decode": settings.decode_tp}
        self.fake = FakeNvml(state=default_state(sum(tps[p] for p in phases)))
        self.metrics = ControlPlaneMetrics()
        self.engine_metrics = EngineMetrics(self.metrics.registry)
        phase_info = PhaseInfo(self.metrics.registry)
        self.instances: list[EmulatedInstance] = []
        first = 0
        for i, phase in enumerate(phases):
            gpus = tuple(range(first, first + tps[phase]))
            first += tps[phase]
            name = f"{phase}-0"
            config = HookConfig(
                role=phase,  # type: ignore[arg-type]
                instance=name,
                controller=settings.controllers.get(phase),
                controller_options=settings.controller_options.get(phase, {}),
                slo_ttft_ms=settings.slo_ttft_ms,
                slo_tpot_ms=settings.slo_tpot_ms,
                gpu=settings.gpu,
                model=settings.model,
                predictors=settings.predictors,
                guard=False,
                watchdog_s=None,
            )
            controller, predictor = build_controller(config)
            check_predictor_tp(config, predictor, tps[phase], field=f"{phase}-tp")
            actuator = NvmlActuator(self.fake, gpus, observer=self.metrics)
            hook = ClockHook(
                config, controller, tp=tps[phase], instance_id=i, actuator=actuator, gpus=gpus, metrics=self.metrics
            )
            phase_info.set(name, phase, gpus)
            self.instances.append(
                EmulatedInstance(
                    name, phase, tps[phase], gpus, hook, self.cost, self.fake, settings, self.engine_metrics
                )
            )
        if len(self.instances) == 2:
            self.instances[0].next = self.instances[1]
        self.metrics.attach_nvml(EnergyMeter(self.fake, list(range(first))))
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.get_running_loop().create_task(i.run()) for i in self.instances]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for inst in self.instances:
            inst.hook.close("exit")

    def submit(self, prompt_tokens: int, max_tokens: int) -> EmuRequest:
        first = self.instances[0]
        if prompt_tokens + max_tokens > min(i.kv_capacity for i in self.instances):
            raise InputError(f"prompt + max_tokens = {prompt_tokens + max_tokens} exceed the KV cache", field="prompt")
        r = EmuRequest(prompt_tokens, 1 if self.settings.role == "prefill" else max_tokens)
        first.submit(r)
        return r


# ------------------------------------------------------------------------------------------ the HTTP API
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
}


def _error(status: int, message: str) -> web.Response:
    """An error in OpenAI's JSON format (``{"error": {"message", "type", "param", "code"}}``)."""
    kind = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return web.json_response(body, status=status)


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error status aiohttp raises itself (404 unknown path, 405 wrong method, 413 body too large, ...) in
    OpenAI's JSON format too, never text/plain."""
    try:
        return await handler(request)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        return _error(err.status, err.reason or "error")


def _check_options(body: dict[str, Any]) -> str | None:
    """What is wrong with the request's options (None: nothing); checked before any byte of a stream is sent."""
    for key in ("max_tokens", "max_completion_tokens"):
        v = body.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            return f"'{key}' must be an integer >= 1"
    if not isinstance(body.get("stream", False), bool):
        return "'stream' must be true or false"
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        return "'stream_options' must be an object"
    if isinstance(opts, dict) and not isinstance(opts.get("include_usage", False), bool):
        return "'stream_options.include_usage' must be true or false"
    n = body.get("n", 1)
    if n is not None and (isinstance(n, bool) or n != 1):
        return "'n' must be 1 (the emulated engine returns one choice)"
    return None


def _prompt_tokens(body: dict[str, Any], chat: bool) -> int:
    """Prompt length: token ids count one each; text counts one token per whitespace-separated word."""
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InputError("'messages' must be a non-empty list")
        words = 0
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list):
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            if not isinstance(content, str):
                raise InputError("each message needs a text 'content'")
            words += len(content.split())
        return max(words, 1)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return len(prompt)
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str) and prompt.strip():
        return len(prompt.split())
    raise InputError("'prompt' must be a non-empty string or a list of token ids")


def make_app(engine: EmulatedEngine) -> web.Application:
    """The aiohttp application serving the OpenAI-compatible API and ``/metrics``."""
    model = engine.settings.model_name

    async def models(_: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "biscale"}]}
        )

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=engine.metrics.render(), content_type="text/plain", charset="utf-8")

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def completions(request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        if body.get("model") not in (None, model):
            return _error(404, f"model {body.get('model')!r} does not exist (this engine serves {model!r})")
        problem = _check_options(body)
        if problem is not None:
            return _error(400, problem)
        max_tokens = body.get("max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens")
        max_tokens = 16 if max_tokens is None else max_tokens
        try:
            req = engine.submit(_prompt_tokens(body, chat), max_tokens)
        except InputError as err:
            return _error(400, str(err))
        created = int(time.time())
        rid = ("chatcmpl-" if chat else "cmpl-") + req.request_id
        usage = {
            "prompt_tokens": req.num_prompt_tokens,
            "completion_tokens": req.max_tokens,
            "total_tokens": req.num_prompt_tokens + req.max_tokens,
        }

        def gone() -> bool:  # the client hung up: nobody will read the answer
            return request.transport is None or request.transport.is_closing()

        if not body.get("stream"):
            n = 0
            async for _last in _tokens(req, gone):
                n += 1
            if req.cancelled:
                return web.Response(status=499)  # nobody reads it
            text = " tok" * n
            choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
            choice |= {"message": {"role": "assistant", "content": text}} if chat else {"text": text, "logprobs": None}
            obj = "chat.completion" if chat else "text_completion"
            return web.json_response(
                {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice], "usage": usage}
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> bytes:
            data = {"id": rid, "object": obj, "created": created, "model": model, "choices": choices, **(extra or {})}
            return f"data: {json.dumps(data)}\n\n".encode()

        try:
            if chat:
                await resp.write(
                    chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
                )
            async for last in _tokens(req, gone):
                reason = "length" if last else None
                if chat:
                    c = {"index": 0, "delta": {"content": " tok"}, "finish_reason": reason}
                else:
                    c = {"index": 0, "text": " tok", "logprobs": None, "finish_reason": reason}
                await resp.write(chunk([c]))
            if (body.get("stream_options") or {}).get("include_usage"):
                await resp.write(chunk([], {"usage": usage}))
            await resp.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            req.cancelled = True
            raise
        return resp

    async def on_startup(_: web.Application) -> None:
        engine.start()

    async def on_cleanup(_: web.Application) -> None:
        await engine.stop()

    async def completions_api(request: web.Request) -> web.StreamResponse:
        return await completions(request, False)

    async def chat_api(request: web.Request) -> web.StreamResponse:
        return await completions(request, True)

    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_json_errors])
    app.router.add_get("/v1/models", models)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_post("/v1/completions", completions_api)
    app.router.add_post("/v1/chat/completions", chat_api)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def _tokens(req: EmuRequest, gone: Any, poll_s: float = 0.1) -> AsyncIterator[bool]:
    """The request's tokens as they come (True on the last); stops, cancelling the request, when ``gone()`` says the
    client hung up (checked at every token and every ``poll_s`` while waiting: an abandoned request leaves)."""
    while True:
        try:
            last = await asyncio.wait_for(req.events.get(), poll_s)
        except TimeoutError:
            last = None
        if gone():
            req.cancelled = True
            return
        if last is None:
            continue
        yield last
        if last:
            return


async def serve(
    settings: EmulatorSettings, port: int, host: str = "127.0.0.1", duration_s: float | None = None, ready: Any = None
) -> None:
    """Run the emulated engine's server until cancelled (or for ``duration_s``); ``ready(port)`` once bound."""
    engine = EmulatedEngine(settings)
    runner = web.AppRunner(make_app(engine), handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        bound = int(server.sockets[0].getsockname()[1])
    if ready is not None:
        ready(bound)
    try:
        if duration_s is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(duration_s)
    finally:
        await runner.cleanup()
