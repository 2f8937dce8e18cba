"""Prometheus end to end: a real Prometheus server (Debian package ``prometheus``) scrapes the emulated engine and
the exporter (fake NVML) on loopback; the energy and clock series come back through its HTTP API, the load
generator splits energy by phase from them, and every query of the shipped Grafana dashboard runs. The shipped
assets are checked without a server too."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from biscale.gpu.fake_nvml import FAKE_ENV, default_state, write_state
from biscale.integrations.prometheus import JOB_CONTROL, ScrapeTarget, example_config, scrape_config

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "biscale-dashboard.json"


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def wait_for(pred: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if pred():
                return True
        except OSError:
            pass
        time.sleep(0.25)
    return False


# --------------------------------------------------------------------------------- shipped assets, no server
def test_the_shipped_scrape_config_is_the_generated_one() -> None:
    assert (REPO / "deploy" / "prometheus.yml").read_text() == example_config()


def test_the_shipped_scrape_config_passes_promtool() -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian package prometheus; .ci/run installs it)")
    r = subprocess.run(["promtool", "check", "config", str(REPO / "deploy" / "prometheus.yml")],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_dashboard_query_names_series_biscale_exports(emulator: Callable[..., Any]) -> None:
    from biscale.gpu.energy import EnergyMeter
    from biscale.gpu.exporter import ControlPlaneMetrics
    from biscale.gpu.fake_nvml import FakeNvml

    ref = ControlPlaneMetrics()
    ref.attach_nvml(EnergyMeter(FakeNvml(state=default_state(1)), [0]))
    ref.record_switch(0, 1410)
    ref.record_restore(0, "exit")
    ref.record_decision("x", "decode", 1410)
    ref.record_iteration("x", 0.01, 0.01)
    ref.record_slack("x", "tpot", 0.01)
    emu = emulator(role="both", speed=20.0)
    with urllib.request.urlopen(emu.url + "/metrics", timeout=30) as r:
        text = ref.render() + r.read().decode()
    exported = set(re.findall(r"^([a-z_:]+)[{ ]", text, flags=re.M)) | set(re.findall(r"^# TYPE (\S+)", text, re.M))
    labels = {"biscale_instance"}  # the scrape config's target label
    used = {m for e in dashboard_exprs() for m in re.findall(r"\b(biscale_[a-z_]+)\b", e)} - labels
    assert used and used <= exported, used - exported
    dash = json.loads(DASHBOARD.read_text())
    assert {"templating", "panels", "title", "uid"} <= set(dash)
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dash["panels"])


# ------------------------------------------------------------------------------ a real Prometheus server
@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """``start(config_text) -> URL`` of a Prometheus server on loopback (stopped after the test)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (Debian package prometheus; .ci/run installs it)")
    procs: list[subprocess.Popen[bytes]] = []

    def start(config: str) -> str:
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(config)
        port = free_port()
        with open(tmp_path / "prometheus.log", "wb") as log:
            proc = subprocess.Popen(
                [binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        ready = wait_for(lambda: urllib.request.urlopen(url + "/-/ready", timeout=2).status == 200)
        assert ready, (tmp_path / "prometheus.log").read_text()[-2000:]
        return url

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[int]:
    """``biscale gpu export`` on two fake GPUs (a state file), on a free loopback port."""
    state = write_state(tmp_path / "nvml.json", default_state(2))
    port = free_port()
    env = {**os.environ, FAKE_ENV: str(state)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "biscale.cli.main", "gpu", "export", "--port", str(port), "--duration-s", "300"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    assert wait_for(lambda: urllib.request.urlopen(url, timeout=2).status == 200)
    yield port
    proc.terminate()
    proc.wait(timeout=20)


def query(url: str, expr: str) -> list[dict[str, Any]]:
    body = get_json(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_prometheus_scrapes_the_emulated_engine_and_the_exporter(
    prometheus: Callable[[str], str],
    emulator: Callable[..., Any],
    exporter: int,
    run_cli: Callable[..., Any],
    tmp_path: Path,
) -> None:
    emu = emulator(role="both", speed=10.0)
    config = scrape_config(
        {JOB_CONTROL: [ScrapeTarget(f"127.0.0.1:{emu.port}", "both", "emulated"),
                       ScrapeTarget(f"127.0.0.1:{exporter}", "decode", "exporter")]},
        interval_s=1,
    )  # fmt: skip
    prom = prometheus(config)
    assert wait_for(lambda: len([s for s in query(prom, "up") if s["value"][1] == "1"]) == 2)
    out = tmp_path / "D"
    r = run_cli("loadgen", "--endpoint", emu.url, "--trace", "azure-conv", "--rate", "2", "--duration", "5",
                "--max-output-tokens", "48", "--energy", prom, "--out", out, "--json")  # fmt: skip
    assert r.code == 0, r.err
    res = json.loads(r.out.strip().splitlines()[-1])
    assert res["requests_completed"] == res["requests_total"] > 0
    assert res["energy_source"] == prom and res["energy_total_j"] > 0
    # energy and clock series, read back through the HTTP API
    energy = query(prom, "biscale_gpu_energy_joules_total")
    by_target = {s["metric"]["biscale_instance"]: s for s in energy}
    assert set(by_target) == {"emulated", "exporter"}
    assert len([s for s in energy if s["metric"]["biscale_instance"] == "emulated"]) == 8  # 4 prefill + 4 decode
    assert all(float(s["value"][1]) > 0 for s in energy)
    clocks = query(prom, 'biscale_gpu_sm_clock_mhz{biscale_instance="emulated"}')
    assert len(clocks) == 8 and all(345 <= float(s["value"][1]) <= 1980 for s in clocks)
    decided = query(prom, "biscale_controller_decision_sm_clock_mhz")
    assert {s["metric"]["exported_instance"] for s in decided} == {"prefill-0", "decode-0"}
    assert float(query(prom, "sum(biscale_controller_decisions_total)")[0]["value"][1]) > 0
    # the load generator split the emulated engine's energy by phase (biscale_gpu_phase_info)
    run_dir = Path(res["run_dir"])
    inst = pd.read_parquet(run_dir / "instances.parquet")
    assert set(inst["instance_name"]) == {"prefill-0", "decode-0", f"127.0.0.1:{exporter}"}
    emulated = inst[inst["instance_name"].isin(["prefill-0", "decode-0"])].set_index("phase")
    assert set(emulated.index) == {"prefill", "decode"}
    assert (emulated["energy_j"] > 0).all() and (emulated["tp"] == 4).all()
    assert (emulated.loc["decode", "tokens"] > 0) and (emulated.loc["prefill", "tokens"] > 0)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["energy_prefill_j"] > 0 and summary["energy_decode_j"] > 0
    assert summary["energy_total_j"] == pytest.approx(inst["energy_j"].sum())
    assert len(pd.read_parquet(run_dir / "timeline.parquet")) > 0
    # every query of the shipped dashboard runs
    for expr in dashboard_exprs():
        query(prom, expr.replace("$__range", "1m"))
    assert query(prom, "sum by (role) (rate(biscale_gpu_energy_joules_total[1m]))")
