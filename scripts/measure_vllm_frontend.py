"""Measure vLLM's OpenAI front-end overhead: request to first streamed token with an engine that answers instantly.

Why: the simulator and the MPC add a fixed front-end time to every TTFT; this measures it on vLLM's real serving
path instead of citing it. ``vllm serve`` (vLLM 0.33, CPU platform) runs its real API server (uvicorn, FastAPI, the
OpenAI completion handler, AsyncLLM and its output processor, the ZMQ hop to the engine-core process, the real
scheduler) in front of :class:`InstantExecutor`, which returns each step's tokens at once without a model: what is
left of a first token's latency is the front end's. Sequential requests (no queueing), token-id prompts (no
tokenizer), ``max_tokens=1`` streamed; the time to the first SSE chunk carrying a token is measured by a client on
the same host. The last line of stdout is one JSON object (``--json`` keys name their unit).

Run in a venv with vLLM 0.33: ``python scripts/measure_vllm_frontend.py --requests 200 --prompt-tokens 512``.
The numbers include this machine's CPU speed and load (report the machine with them); on a GPU host the front end
shares its CPU with the engine core the same way.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

TINY_MODEL = Path(__file__).resolve().parents[1] / "tests" / "integrations" / "vllm_real" / "tiny-llama"

try:  # the executor is imported by vLLM's engine-core process (this file on its PYTHONPATH)
    import torch
    from vllm.v1.executor.abstract import Executor
    from vllm.v1.kv_cache_interface import FullAttentionSpec
    from vllm.v1.outputs import ModelRunnerOutput

    class InstantExecutor(Executor):
        """A model executor that answers every step at once: one sampled token for each request whose prompt is
        complete after the step, no model, no memory (64 KV blocks of 16 tokens per request slot)."""

        uses_ray = False
        supports_pp = False

        def _init_executor(self) -> None:
            self._computed: dict[str, int] = {}
            self._prompt: dict[str, int] = {}
            self._last: Any = None

        def collective_rpc(  # type: ignore[override]
            self,
            method: Any,
            timeout: float | None = None,
            args: tuple = (),
            kwargs: dict | None = None,
            non_block: bool = False,
        ) -> Any:
            name = method if isinstance(method, str) else getattr(method, "__name__", "")
            fn = getattr(self, "_rpc_" + name, None)
            value = fn(*args, **(kwargs or {})) if fn is not None else None
            if non_block:  # one Future per worker, as vLLM's executors return them
                fut: Future[Any] = Future()
                fut.set_result(value)
                return [fut]
            return [value]

        def _rpc_determine_available_memory(self) -> int:
            return 1 << 30

        def _rpc_get_kv_cache_spec(self) -> dict[str, Any]:
            spec = FullAttentionSpec(block_size=16, num_kv_heads=2, head_size=16, dtype=torch.float32)
            return {f"model.layers.{i}.self_attn.attn": spec for i in range(2)}

        def _rpc_get_supported_kv_cache_layouts(self) -> list[str]:
            return ["LBHNC"]

        def _rpc_get_supported_tasks(self) -> tuple[str, ...]:
            return ("generate",)

        def _rpc_execute_model(self, out: Any) -> None:
            self._last = out
            return None

        def _rpc_sample_tokens(self, grammar_output: Any) -> ModelRunnerOutput:
            out = self._last
            for r in out.scheduled_new_reqs:
                self._prompt[r.req_id] = len(r.prompt_token_ids or ())
                self._computed[r.req_id] = r.num_computed_tokens
            ids, sampled = [], []
            for rid, n in out.num_scheduled_tokens.items():
                self._computed[rid] = self._computed.get(rid, 0) + n
                ids.append(rid)
                sampled.append([7] if self._computed[rid] >= self._prompt.get(rid, 0) else [])
            for rid in out.finished_req_ids:
                self._computed.pop(rid, None)
                self._prompt.pop(rid, None)
            return ModelRunnerOutput(
                req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)}, sampled_token_ids=sampled
            )

        def compile_or_warm_up_model(self) -> None:  # nothing to compile
            return None

        def check_health(self) -> None:
            return None

except ImportError:  # the measuring side needs only the standard library
    pass


def first_token_s(port: int, prompt_tokens: int) -> float:
    """Seconds from sending the request to the first SSE chunk that carries a token."""
    body = json.dumps(
        {
            "model": "tiny",
            "prompt": [3 + i % 1000 for i in range(prompt_tokens)],  # the tiny model's vocabulary: 1,024
            "max_tokens": 1,
            "stream": True,
            "ignore_eos": True,
        }
    )
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    got = None
    seen: list[bytes] = []
    while got is None:
        line = resp.fp.readline()
        seen.append(line)
        if not line:
            raise RuntimeError(f"stream ended without a token: {b''.join(seen)[:500]!r}")
        if line.startswith(b"data: {") and b'"text"' in line:
            got = time.perf_counter() - t0
    while b"data: [DONE]" not in line:  # raw chunked lines (chunk sizes between them): read up to the end
        line = resp.fp.readline()
        if not line:
            break
    conn.close()
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--port", type=int, default=8391)
    ap.add_argument("--startup-timeout-s", type=float, default=600.0)
    args = ap.parse_args()
    env = dict(
        os.environ,
        VLLM_TARGET_DEVICE="cpu",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
    )
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.cli.main",
        "serve",
        str(TINY_MODEL),
        "--served-model-name",
        "tiny",
        "--skip-tokenizer-init",
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
        "--max-model-len",
        "4096",
        "--max-num-seqs",
        "8",
        "--max-num-batched-tokens",
        "4096",
        "--distributed-executor-backend",
        "measure_vllm_frontend.InstantExecutor",
        "--dtype",
        "float32",
        "--disable-log-stats",
        "--disable-uvicorn-access-log",
        "--log-error-stack",
    ]
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"vllm-frontend-{args.port}.log"
    log_file = log_path.open("w")
    server = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + args.startup_timeout_s
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"vllm serve exited (its log: {log_path})")
            try:
                c = http.client.HTTPConnection("127.0.0.1", args.port, timeout=2)
                c.request("GET", "/v1/models")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("vllm serve did not start")
            time.sleep(1.0)
        for _ in range(args.warmup):
            first_token_s(args.port, args.prompt_tokens)
        ms = sorted(first_token_s(args.port, args.prompt_tokens) * 1e3 for _ in range(args.requests))
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log_file.close()
    q = statistics.quantiles(ms, n=20)
    print(
        json.dumps(
            {
                "vllm_version": __import__("vllm").__version__,
                "requests": len(ms),
                "prompt_tokens": args.prompt_tokens,
                "first_token_median_ms": round(statistics.median(ms), 3),
                "first_token_p5_ms": round(q[0], 3),
                "first_token_p95_ms": round(q[-1], 3),
                "first_token_min_ms": round(ms[0], 3),
                "cpu_count": os.cpu_count(),
                "load_avg_1min": round(os.getloadavg()[0], 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
