"""The load generator: every request ends in exactly one status with its reason, the run directory has the layout
``biscale report`` reads, and the done-criterion command works against the emulated engine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from aiohttp import web

from biscale.control.state import Slo
from biscale.live.loadgen import LoadSettings, replay, request_table, token_table
from biscale.metrics import summarize
from biscale.sim.requests import REQUEST_COLUMNS
from biscale.sim.timeline import TIMELINE_COLUMNS
from biscale.workload.trace import Trace


# ----------------------------------------------------------------------------- a misbehaving OpenAI server
def misbehaving_app() -> web.Application:
    """Answers by prompt length: 1 ok, 2 HTTP 500, 3 hangs, 4 stream cut short, 5 slow (for the drain), 6 bad JSON."""

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "m"}]})

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        kind = len(body["prompt"])
        if kind == 2:
            return web.json_response({"error": {"message": "engine overloaded", "code": 500}}, status=500)
        if kind == 3:
            await asyncio.sleep(30)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(body["max_tokens"]):
            if kind == 5:
                await asyncio.sleep(0.5)
            if kind == 4 and i == 1:
                return resp  # ends without [DONE]
            await resp.write(b'data: {"choices": [{"index": 0, "text": "x", "finish_reason": null}]}\n\n')
        if kind == 6:
            await resp.write(b"data: {not json\n\n")
        await resp.write(b'data: {"choices": [], "usage": {"completion_tokens": %d}}\n\n' % body["max_tokens"])
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", completions)
    return app


@pytest.fixture
def bad_server(serve_app: Callable[..., str]) -> str:
    return serve_app(misbehaving_app())


def test_every_request_ends_in_one_status_with_its_reason(bad_server: str) -> None:
    kinds = [1, 2, 3, 4, 6, 1, 5]
    arrivals = np.array([0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 2.5])
    trace = Trace(arrivals, np.array(kinds), np.full(7, 4), name="t")
    settings = LoadSettings(bad_server, timeout_s=3.0, drain_timeout_s=1.0)
    records, wall_s = asyncio.run(replay(trace, settings))
    table = request_table(records)
    assert list(table["status"]) == ["completed", "failed", "failed", "failed", "failed", "completed", "unfinished"]
    err = list(table["error"])
    assert err[0] == "" and err[5] == ""
    assert err[1] == "http 500: engine overloaded"
    assert err[2] == "timeout after 3 s"
    assert err[3] == "stream ended without [DONE]"
    assert err[4].startswith("bad stream chunk")
    assert err[6].startswith("still running 1 s after the last arrival")
    done = table[table["status"] == "completed"]
    assert list(done["tokens_generated"]) == [4, 4]
    assert (done["ttft_s"] > 0).all() and (done["tpot_s"] >= 0).all() and (done["max_tbt_s"] >= 0).all()
    assert list(table.columns[: len(REQUEST_COLUMNS)]) == list(REQUEST_COLUMNS)
    tokens = token_table(records)
    assert tokens.groupby("request_id").size().to_dict()[0] == 4
    assert (tokens.groupby("request_id")["time_s"].diff().dropna() >= 0).all()
    cols = ["phase", "tokens", "busy_energy_j", "idle_energy_j", "energy_j", "clock_switches"]
    s = summarize(table, pd.DataFrame(columns=cols), Slo(), wall_s)
    assert s["requests_total"] == 7 and s["requests_completed"] == 2 and s["requests_unfinished"] == 1


def test_bad_options_exit_2_with_one_line(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    r = run_cli("loadgen", "--endpoint", "http://127.0.0.1:9", "--trace", "azure-conv", "--rate", "1",
                "--rate-scale", "2", "--out", tmp_path)  # fmt: skip
    assert r.code == 2 and "--rate or --rate-scale" in r.err
    r = run_cli("loadgen", "--endpoint", "localhost:8000", "--trace", "azure-conv", "--out", tmp_path)
    assert r.code == 2 and "endpoint" in r.err
    r = run_cli("loadgen", "--endpoint", "http://127.0.0.1:9", "--trace", "azure-conv", "--duration", "5",
                "--out", tmp_path)  # fmt: skip
    assert r.code == 2 and "cannot list models" in r.err and len(r.err.strip().splitlines()) == 1


def test_done_criterion_against_the_emulated_engine(
    emulator: Callable[..., Any], run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    """``biscale loadgen ... --trace azure-conv --rate 2 --json`` against ``emulate-engine --role both`` (a shorter
    duration and capped outputs keep CI bounded; docs/deploy.md shows the full 20 s run)."""
    emu = emulator(role="both", speed=10.0)
    out = tmp_path / "D"
    r = run_cli("loadgen", "--endpoint", emu.url, "--trace", "azure-conv", "--rate", "2", "--duration", "8",
                "--max-output-tokens", "64", "--out", out, "--json")  # fmt: skip
    assert r.code == 0, r.err
    res = json.loads(r.out.strip().splitlines()[-1])
    assert res["requests_total"] >= 3
    assert res["requests_completed"] == res["requests_total"] and res["requests_failed"] == 0
    run_dir = Path(res["run_dir"])
    assert run_dir == out / "runs" / "live" / "2rps" / "live"
    for name in ("requests.parquet", "tokens.parquet", "instances.parquet", "timeline.parquet", "summary.json",
                 "config.json"):  # fmt: skip
        assert (run_dir / name).is_file()
    req = pd.read_parquet(run_dir / "requests.parquet")
    assert (req["tokens_generated"] == req["output_tokens"]).all()
    assert list(pd.read_parquet(run_dir / "timeline.parquet").columns) == list(TIMELINE_COLUMNS)
    results = json.loads((out / "results.json").read_text())
    assert results["format"] == "biscale-results" and results["version"] == 1
    (run,) = results["runs"]
    assert run["scenario"] == "live" and run["system"] == "live" and run["run_dir"] == "runs/live/2rps/live"
    assert run["load"] == 2.0 and run["load_label"] == "2rps" and run["slo_met"] in (True, False)
    assert run["p99_ttft_ms"] == res["ttft_p99_ms"]
    assert run["requests_total"] == res["requests_total"] and run["p99_ttft_ms"] > 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["requests_total"] == res["requests_total"] and summary["energy_total_j"] is None
    assert summary["meta"]["energy_source"] == "none"
    assert (summary["meta"]["scenario"], summary["meta"]["load"], summary["meta"]["system"]) == ("live", 2.0, "live")
    # the shared results layout: `biscale report` rebuilds a page from the live run's files (its timeline is empty:
    # no energy source, so the figures over time are left out with a reason, not a crash)
    r = run_cli("report", out, "--json")
    assert r.code == 0, r.err
    rep = json.loads(r.out)
    assert rep["runs"] == 1 and Path(rep["report"]) == out / "report.html" and rep["figures"] >= 2
    missing = {k.split("/", 1)[1]: why for k, why in rep["figures_missing"].items()}
    assert missing["power"] == missing["placement"] == "no timeline samples"
    assert "latency-cdf" not in missing and "energy" not in missing
