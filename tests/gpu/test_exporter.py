"""Prometheus exporter, scraped over loopback from its own registry."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from biscale.gpu.energy import EnergyMeter
from biscale.gpu.exporter import ControlPlaneMetrics
from biscale.gpu.fake_nvml import FakeNvml
from biscale.gpu.nvml import NvmlActuator


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return samples(resp.read().decode())


def test_scrape_over_loopback(fake: FakeNvml) -> None:
    metrics = ControlPlaneMetrics()
    meter = EnergyMeter(fake)
    metrics.attach_nvml(meter)
    act = NvmlActuator(fake, observer=metrics)
    port = metrics.serve(port=0)
    try:
        assert metrics._server.server_address[0] == "127.0.0.1"
        act.set_clock([0, 1], 990)
        act.set_clock([1], 1200)
        metrics.record_decision("prefill-0", "prefill", 990)
        metrics.record_iteration("prefill-0", predicted_s=0.11, observed_s=0.10)
        metrics.record_slack("prefill-0", "ttft", 0.25)
        s = scrape(port)
        g0, g1 = (("gpu", "0"),), (("gpu", "1"),)
        assert s[("biscale_gpu_sm_clock_mhz", g0)] == 990
        assert s[("biscale_gpu_sm_clock_mhz", g1)] == 1200
        assert s[("biscale_gpu_requested_sm_clock_mhz", g1)] == 1200
        assert s[("biscale_gpu_clock_switches_total", g0)] == 1
        assert s[("biscale_gpu_clock_switches_total", g1)] == 2
        assert s[("biscale_gpu_power_watts", g0)] == pytest.approx(70 + 380 * (990 / 1980) ** 2, abs=0.01)
        assert s[("biscale_gpu_energy_joules_total", g0)] > 0
        info = [k for k in s if k[0] == "biscale_gpu_info"]
        assert len(info) == 2 and dict(info[0][1])["uuid"].startswith("GPU-")
        inst = (("instance", "prefill-0"),)
        assert s[("biscale_controller_decisions_total", (("instance", "prefill-0"), ("phase", "prefill")))] == 1
        assert s[("biscale_controller_decision_sm_clock_mhz", inst)] == 990
        assert s[("biscale_iteration_latency_predicted_seconds", inst)] == pytest.approx(0.11)
        assert s[("biscale_iteration_latency_observed_seconds", inst)] == pytest.approx(0.10)
        assert s[("biscale_iteration_latency_relative_error_count", inst)] == 1
        # relative error (0.11 - 0.10) / 0.10 = +10 %: in the le=0.1 bucket (up to float rounding: 0.2), not le=0.05
        bucket = "biscale_iteration_latency_relative_error_bucket"
        assert s[(bucket, (("instance", "prefill-0"), ("le", "0.05")))] == 0
        assert s[(bucket, (("instance", "prefill-0"), ("le", "0.2")))] == 1
        assert s[("biscale_slo_slack_seconds", (("instance", "prefill-0"), ("slo", "ttft")))] == 0.25
        e1 = s[("biscale_gpu_energy_joules_total", g0)]

        act.close()
        s = scrape(port)
        assert s[("biscale_gpu_clock_restores_total", (("gpu", "0"), ("reason", "close")))] == 1
        assert s[("biscale_gpu_requested_sm_clock_mhz", g0)] == 0
        assert s[("biscale_gpu_sm_clock_mhz", g0)] == 1980
        assert s[("biscale_gpu_energy_joules_total", g0)] >= e1
    finally:
        metrics.shutdown()
        meter.close()
    # own registry: nothing leaked into the global one
    assert not [m for m in REGISTRY.collect() if m.name.startswith("biscale")]


def test_read_errors_are_counted_not_fatal(fake: FakeNvml) -> None:
    metrics = ControlPlaneMetrics()
    meter = EnergyMeter(fake)
    metrics.attach_nvml(meter)
    fake.add_fault("nvmlDeviceGetPowerUsage", 999)
    s = samples(metrics.render())
    assert s[("biscale_gpu_read_errors_total", ())] == 2
    assert ("biscale_gpu_power_watts", (("gpu", "0"),)) not in s
    assert ("biscale_gpu_energy_joules_total", (("gpu", "0"),)) in s
    with pytest.raises(RuntimeError, match="already attached"):
        metrics.attach_nvml(meter)
    meter.close()


def test_the_exporter_answers_only_metrics_and_only_with_the_token_when_one_is_set() -> None:
    import urllib.error

    metrics = ControlPlaneMetrics()
    metrics.record_decision("d", "decode", 990)
    port = metrics.serve(port=0, token="s3cret-token-0123456789")

    def get(path: str, auth: str | None = None) -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
        if auth is not None:
            req.add_header("Authorization", auth)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    try:
        assert get("/metrics")[0] == 401
        assert get("/metrics", "Bearer wrong")[0] == 401
        status, body = get("/metrics?x=1", "Bearer s3cret-token-0123456789")
        assert status == 200 and "biscale_controller_decisions_total" in body
        for path in ("/", "/debug", "/metrics/../x", "/metricsx"):
            assert get(path, "Bearer s3cret-token-0123456789")[0] == 404
    finally:
        metrics.shutdown()
    open_port = ControlPlaneMetrics()
    port = open_port.serve(port=0)
    try:
        assert get("/metrics")[0] == 200 and get("/")[0] == 404
    finally:
        open_port.shutdown()
