"""Trace replay against any OpenAI-compatible streaming endpoint (vLLM, SGLang, a router, the emulated engine).

Each request of the trace (rescaled to ``rate_rps`` or by ``rate_scale``, cut to the arrivals within ``duration_s``)
is sent at its arrival time as a streaming ``/v1/completions`` (token-id prompt of its prompt length, ``max_tokens``
= its output length, ``ignore_eos`` so the engine generates them all) or ``/v1/chat/completions`` request (a text of
that many words). At most ``max_concurrency`` requests are in flight; a request whose slot is late is sent late, and
its TTFT still counts from its scheduled arrival. Every streamed chunk's time is recorded (one token per chunk; the
total comes from the final ``usage`` when the server sends it).

Every request ends in exactly one status: ``completed`` (the stream ended with ``[DONE]``), ``failed`` (HTTP error,
connection error, per-request timeout or a stream that ended early; ``error`` says which) or ``unfinished`` (still
running when the drain timeout after the last arrival ran out; cancelled). None is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import pandas as pd

from biscale.errors import InputError
from biscale.sim.requests import REQUEST_COLUMNS
from biscale.workload.trace import Trace


@dataclass(frozen=True)
class LoadSettings:
    endpoint: str
    api: str = "completions"
    """``completions`` or ``chat``."""
    model: str | None = None
    """Model name to request (default: the first one ``/v1/models`` lists)."""
    max_concurrency: int = 256
    timeout_s: float = 600.0
    """Per-request limit from sending to the last token, s."""
    drain_timeout_s: float = 600.0
    """After the last arrival, how long in-flight requests may still run, s."""
    ignore_eos: bool = True


@dataclass
class RequestRecord:
    """What the client saw of one request (times in seconds since the run started)."""

    request_id: int
    arrival_s: float
    input_tokens: int
    output_tokens: int
    status: str = "unfinished"
    error: str = ""
    send_s: float = math.nan
    token_times_s: list[float] = field(default_factory=list)
    usage_tokens: int | None = None

    @property
    def tokens_generated(self) -> int:
        return self.usage_tokens if self.usage_tokens is not None else len(self.token_times_s)


def _fail(rec: RequestRecord, reason: str) -> None:
    rec.status = "failed"
    rec.error = reason


async def resolve_model(session: aiohttp.ClientSession, settings: LoadSettings) -> str:
    if settings.model:
        return settings.model
    url = settings.endpoint.rstrip("/") + "/v1/models"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
            body = await resp.json(content_type=None)
        return str(body["data"][0]["id"])
    except (aiohttp.ClientError, TimeoutError, KeyError, IndexError, TypeError, ValueError) as err:
        raise InputError(
            f"cannot list models at {url} ({type(err).__name__}: {err}); give --model", field="endpoint"
        ) from err


def _body(settings: LoadSettings, model: str, rec: RequestRecord) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": rec.output_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if settings.ignore_eos:
        body["ignore_eos"] = True
    if settings.api == "chat":
        body["messages"] = [{"role": "user", "content": " ".join(["hello"] * rec.input_tokens)}]
    else:
        body["prompt"] = [100 + (rec.request_id + i) % 1000 for i in range(rec.input_tokens)]
    return body


async def _one(
    session: aiohttp.ClientSession, settings: LoadSettings, model: str, rec: RequestRecord, t0: float
) -> None:
    path = "/v1/chat/completions" if settings.api == "chat" else "/v1/completions"
    url = settings.endpoint.rstrip("/") + path
    rec.send_s = time.monotonic() - t0
    done = False
    try:
        async with asyncio.timeout(settings.timeout_s):
            async with session.post(url, json=_body(settings, model, rec)) as resp:
                if resp.status != 200:
                    text = (await resp.text())[:300]
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        text = str(json.loads(text)["error"]["message"])
                    _fail(rec, f"http {resp.status}: {' '.join(text.split())}")
                    return
                async for raw in resp.content:
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    chunk = json.loads(data)
                    if not isinstance(chunk, dict):
                        _fail(rec, f"bad stream chunk: not a JSON object: {data[:80]!r}")
                        return
                    if chunk.get("error"):
                        _fail(rec, f"stream error: {chunk['error']}")
                        return
                    if chunk.get("usage"):
                        rec.usage_tokens = int(chunk["usage"].get("completion_tokens", 0))
                    for choice in chunk.get("choices") or []:
                        piece = choice.get("text") if "text" in choice else (choice.get("delta") or {}).get("content")
                        if piece:
                            rec.token_times_s.append(time.monotonic() - t0)
    except TimeoutError:
        _fail(rec, f"timeout after {settings.timeout_s:g} s")
        return
    except aiohttp.ClientError as err:
        _fail(rec, f"connection error: {type(err).__name__}: {err}")
        return
    except json.JSONDecodeError as err:
        _fail(rec, f"bad stream chunk: {err.msg}")
        return
    except (AttributeError, KeyError, TypeError, ValueError) as err:  # a chunk of the wrong shape fails this request
        _fail(rec, f"bad stream chunk: {type(err).__name__}: {err}")
        return
    if done:
        rec.status = "completed"
    else:
        _fail(rec, "stream ended without [DONE]")


async def replay(trace: Trace, settings: LoadSettings) -> tuple[list[RequestRecord], float]:
    """Send every request of ``trace``; returns the records and the run's wall duration, s."""
    if settings.api not in ("completions", "chat"):
        raise InputError(f"unknown api {settings.api!r} (expected completions or chat)", field="api")
    if settings.max_concurrency < 1:
        raise InputError("must be >= 1", field="max-concurrency")
    records = [
        RequestRecord(i, float(a), int(n_in), int(n_out))
        for i, (a, n_in, n_out) in enumerate(zip(trace.arrival_s, trace.input_tokens, trace.output_tokens, strict=True))
    ]
    limit = asyncio.Semaphore(settings.max_concurrency)
    connector = aiohttp.TCPConnector(limit=settings.max_concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        model = await resolve_model(session, settings)
        t0 = time.monotonic()

        async def launch(rec: RequestRecord) -> None:
            delay = rec.arrival_s - (time.monotonic() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            async with limit:
                await _one(session, settings, model, rec, t0)

        tasks = [asyncio.create_task(launch(r)) for r in records]
        last_arrival = records[-1].arrival_s if records else 0.0
        deadline = last_arrival + settings.drain_timeout_s
        pending = set(tasks)
        while pending:
            left = deadline - (time.monotonic() - t0)
            if left <= 0:
                break
            _, pending = await asyncio.wait(pending, timeout=left)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for rec in records:
            if rec.status == "unfinished":
                rec.error = (
                    f"still running {settings.drain_timeout_s:g} s after the last arrival (cancelled)"
                    if rec.send_s == rec.send_s
                    else f"not sent: no free slot (max concurrency {settings.max_concurrency}) before the drain timeout"
                )
        return records, time.monotonic() - t0


def request_table(records: list[RequestRecord]) -> pd.DataFrame:
    """The per-request table with the simulator's columns (what a client cannot see: NaN / -1 / ''), + send/error."""
    n = len(records)
    nan = np.full(n, np.nan)
    first = np.array([r.token_times_s[0] if r.token_times_s else np.nan for r in records])
    last = np.array([r.token_times_s[-1] if r.token_times_s else np.nan for r in records])
    arrival = np.array([r.arrival_s for r in records])
    generated = np.array([r.tokens_generated for r in records], dtype=np.int64)
    status = np.array([r.status for r in records], dtype=object)
    done = status == "completed"
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(done & (generated > 1), (last - first) / (generated - 1), np.nan)
    max_tbt = np.array(
        [
            float(np.max(np.diff(r.token_times_s)))
            if len(r.token_times_s) > 1
            else (0.0 if r.token_times_s else np.nan)
            for r in records
        ]
    )
    frame = pd.DataFrame(
        {
            "request_id": np.array([r.request_id for r in records], dtype=np.int64),
            "arrival_s": arrival,
            "input_tokens": np.array([r.input_tokens for r in records], dtype=np.int64),
            "output_tokens": np.array([r.output_tokens for r in records], dtype=np.int64),
            "status": status,
            "state": np.where(done, "done", status),
            "reject_reason": [""] * n,
            "prefill_instance": np.full(n, -1, dtype=np.int64),
            "decode_instance": np.full(n, -1, dtype=np.int64),
            "prefill_start_s": nan,
            "prefill_end_s": nan,
            "kv_transfer_start_s": nan,
            "kv_transfer_end_s": nan,
            "first_token_s": first,
            "last_token_s": last,
            "ttft_s": first - arrival,
            "tpot_s": tpot,
            "max_tbt_s": max_tbt,
            "tokens_generated": generated,
            "prefill_energy_j": nan,
            "decode_energy_j": nan,
            "energy_j": nan,
        },
        columns=list(REQUEST_COLUMNS),
    )
    frame["send_s"] = np.array([r.send_s for r in records])
    frame["error"] = [r.error for r in records]
    return frame


def token_table(records: list[RequestRecord]) -> pd.DataFrame:
    """Every streamed token: (request_id, token_index, time_s)."""
    ids = [r.request_id for r in records for _ in r.token_times_s]
    idx = [i for r in records for i in range(len(r.token_times_s))]
    times = [t for r in records for t in r.token_times_s]
    return pd.DataFrame(
        {
            "request_id": np.array(ids, dtype=np.int64),
            "token_index": np.array(idx, dtype=np.int64),
            "time_s": np.array(times, dtype=np.float64),
        }
    )
