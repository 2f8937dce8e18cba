"""``biscale loadgen`` checks its endpoint before the replay (a server that is not an OpenAI one, a model it does not
serve, an HTTP error named by its status), and a malformed stream chunk fails that request, never the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from aiohttp import web


def _app(models_status: int = 200) -> web.Application:
    """A tiny OpenAI server; the prompt length picks the answer: 1 ok, 2 a chunk that is a JSON list, 3 a chunk whose
    ``choices`` is a string, 4 a chunk whose ``usage`` is a number."""

    async def models(_: web.Request) -> web.Response:
        if models_status != 200:
            return web.json_response({"error": {"message": "boom"}}, status=models_status)
        return web.json_response({"data": [{"id": "m"}]})

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        kind = len(body["prompt"])
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices": [{"index": 0, "text": "x"}]}\n\n')
        bad = {2: b"data: [1, 2]\n\n", 3: b'data: {"choices": "xyz"}\n\n', 4: b'data: {"usage": 7}\n\n'}
        if kind in bad:
            await resp.write(bad[kind])
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", completions)
    return app


def _trace(tmp_path: Path, prompts: list[int]) -> Path:
    p = tmp_path / "t.csv"
    rows = "".join(f"{0.01 * i},{n},2\n" for i, n in enumerate(prompts))
    p.write_text("arrival_s,input_tokens,output_tokens\n" + rows)
    return p


def test_malformed_chunks_fail_their_request_not_the_run(run_cli: Any, serve_app: Any, tmp_path: Path) -> None:
    url = serve_app(_app())
    out = tmp_path / "lg"
    r = run_cli("loadgen", "--endpoint", url, "--trace", _trace(tmp_path, [1, 2, 3, 4]), "--out", out, "--json")
    assert r.code == 0, r.err
    assert "Task exception" not in r.err and "Traceback" not in r.err
    result = json.loads(r.out)
    assert result["requests_total"] == 4
    assert result["requests_completed"] == 1 and result["requests_failed"] == 3
    req = pd.read_parquet(Path(result["run_dir"]) / "requests.parquet").sort_values("request_id")
    errors = list(req["error"])
    assert errors[0] == ""
    assert errors[1].startswith("bad stream chunk: not a JSON object")
    assert all(e.startswith("bad stream chunk: ") for e in errors[2:]), errors


def test_http_error_on_the_model_list_is_named_by_status(run_cli: Any, serve_app: Any, tmp_path: Path) -> None:
    url = serve_app(_app(models_status=500))
    r = run_cli("loadgen", "--endpoint", url, "--trace", _trace(tmp_path, [1]), "--out", tmp_path / "lg")
    assert r.code == 2
    assert "field 'endpoint'" in r.err and "HTTP 500" in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "lg").exists()


def test_a_model_the_server_does_not_serve_is_refused_before_the_replay(
    run_cli: Any, serve_app: Any, tmp_path: Path
) -> None:
    url = serve_app(_app())
    args = ("loadgen", "--endpoint", url, "--trace", _trace(tmp_path, [1]), "--model", "llama", "--out", tmp_path / "x")
    r = run_cli(*args)
    assert r.code == 2
    assert "field 'model'" in r.err and "'llama'" in r.err and "it serves: m" in r.err
    assert not (tmp_path / "x").exists()


def _prometheus_that_fails_after_start() -> web.Application:
    """A Prometheus API that answers the check before the replay (``up``) and fails every later query."""
    calls = {"n": 0}

    async def query(_: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return web.json_response({"status": "success", "data": {"resultType": "vector", "result": []}})
        return web.json_response({"status": "error", "error": "storage gone"}, status=503)

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    app.router.add_get("/api/v1/query_range", query)
    return app


def test_an_energy_failure_after_the_replay_keeps_its_results(run_cli: Any, serve_app: Any, tmp_path: Path) -> None:
    """The energy source answers before the replay and fails after it: the replay's results are written first, then
    the failure is one line naming where they are (exit 2)."""
    url, prom = serve_app(_app()), serve_app(_prometheus_that_fails_after_start())
    out = tmp_path / "lg"
    args = ("loadgen", "--endpoint", url, "--trace", _trace(tmp_path, [1, 1]), "--out", out)
    r = run_cli(*args, "--energy", prom, "--prometheus-step-s", "0.01")
    assert r.code == 2, r.err
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    assert "results are in" in r.err and "without energy" in r.err
    written = list(out.rglob("requests.parquet"))
    assert len(written) == 1
    req = pd.read_parquet(written[0])
    assert len(req) == 2 and (req["error"] == "").all()
    assert list(out.rglob("results.json"))
