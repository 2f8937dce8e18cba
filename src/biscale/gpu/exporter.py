"""Prometheus exporter for the control plane: GPU clocks, power, energy, switches, restores, decisions.

Why its own ``CollectorRegistry``: the process may host other exporters (vLLM has one); ours must not clash
with the global registry. GPU readings (clock, power, energy) are taken from NVML at scrape time; events
(switches, restores, controller decisions, latency predictions, SLO slack) are pushed by the actuator and the
controllers through the ``record_*`` methods. The HTTP server binds to 127.0.0.1 unless told otherwise, answers
only ``GET /metrics`` (404 elsewhere: nothing else of the process is exposed) and, given a token, only requests
that carry ``Authorization: Bearer <token>`` (401 otherwise); TLS belongs to a proxy in front (docs/deploy.md).
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from biscale.gpu.energy import EnergyMeter
from biscale.gpu.nvml import list_gpus

PREFIX = "biscale"


class _NvmlCollector(Collector):
    """Reads SM clock, power and energy from NVML on every scrape."""

    def __init__(self, meter: EnergyMeter) -> None:
        self.meter = meter
        self.nvml = meter.nvml
        self.info = {g.index: g for g in list_gpus(self.nvml)}
        self.read_errors = 0

    def collect(self) -> Iterator[Any]:
        nvml = self.nvml
        info = GaugeMetricFamily(
            f"{PREFIX}_gpu_info", "GPU identity (value is always 1)", labels=["gpu", "uuid", "name"]
        )
        clock = GaugeMetricFamily(f"{PREFIX}_gpu_sm_clock_mhz", "Current SM clock, MHz", labels=["gpu"])
        power = GaugeMetricFamily(f"{PREFIX}_gpu_power_watts", "Power draw (NVML average), W", labels=["gpu"])
        energy = CounterMetricFamily(
            f"{PREFIX}_gpu_energy_joules", "GPU energy since the exporter started (resets handled), J", labels=["gpu"]
        )
        try:
            totals = self.meter.poll()
        except nvml.NVMLError:
            self.read_errors += 1
            totals = {}
        for g in self.meter.gpus:
            label = str(g)
            gi = self.info.get(g)
            if gi is not None:
                info.add_metric([label, gi.uuid, gi.name], 1.0)
            h = self.meter._handles[g]
            try:
                clock.add_metric([label], float(nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM)))
                power.add_metric([label], nvml.nvmlDeviceGetPowerUsage(h) / 1000.0)
            except nvml.NVMLError:
                self.read_errors += 1
            if g in totals:
                energy.add_metric([label], totals[g])
        errors = CounterMetricFamily(f"{PREFIX}_gpu_read_errors", "NVML read failures during scrapes")
        errors.add_metric([], float(self.read_errors))
        yield from (info, clock, power, energy, errors)


class ControlPlaneMetrics:
    """Metrics of one process's control plane; implements the actuator's observer interface.

    Per GPU: requested clock, clock switches, restores by reason (pushed), plus SM clock, power and energy
    (read from NVML at scrape time once :meth:`attach_nvml` is called). Per instance: controller decisions,
    predicted and observed iteration latency (and their relative error), SLO slack.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        r = self.registry
        self.requested_clock = Gauge(
            f"{PREFIX}_gpu_requested_sm_clock_mhz",
            "SM clock the actuator locked (0: default governor), MHz",
            ["gpu"],
            registry=r,
        )
        self.switches = Counter(f"{PREFIX}_gpu_clock_switches", "Clock switches applied", ["gpu"], registry=r)
        self.restores = Counter(
            f"{PREFIX}_gpu_clock_restores", "Returns to the default governor, by reason", ["gpu", "reason"], registry=r
        )
        self.suspensions = Counter(
            f"{PREFIX}_control_suspensions",
            "Clock control suspended and the GPUs parked at default clocks (watchdog, nvml_error, permission)",
            ["instance", "reason"],
            registry=r,
        )
        self.decisions = Counter(
            f"{PREFIX}_controller_decisions", "Controller decisions, by phase", ["instance", "phase"], registry=r
        )
        self.decision_clock = Gauge(
            f"{PREFIX}_controller_decision_sm_clock_mhz",
            "Clock chosen by the last decision, MHz",
            ["instance"],
            registry=r,
        )
        self.latency_predicted = Gauge(
            f"{PREFIX}_iteration_latency_predicted_seconds",
            "Predicted latency of the last iteration, s",
            ["instance"],
            registry=r,
        )
        self.latency_observed = Gauge(
            f"{PREFIX}_iteration_latency_observed_seconds",
            "Observed latency of the last iteration, s",
            ["instance"],
            registry=r,
        )
        self.latency_error = Histogram(
            f"{PREFIX}_iteration_latency_relative_error",
            "(predicted - observed) / observed per iteration (dimensionless)",
            ["instance"],
            buckets=(-0.5, -0.2, -0.1, -0.05, -0.02, 0.0, 0.02, 0.05, 0.1, 0.2, 0.5),
            registry=r,
        )
        self.slo_slack = Gauge(
            f"{PREFIX}_slo_slack_seconds",
            "SLO target minus predicted latency (negative: violation), s",
            ["instance", "slo"],
            registry=r,
        )
        self._collector: _NvmlCollector | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------------- actuator events
    def record_switch(self, gpu: int, clock_mhz: int) -> None:
        """A GPU was locked to ``clock_mhz``."""
        self.switches.labels(gpu=str(gpu)).inc()
        self.requested_clock.labels(gpu=str(gpu)).set(clock_mhz)

    def record_restore(self, gpu: int, reason: str) -> None:
        """A GPU went back to the default governor (reason: exit, signal:SIGTERM, watchdog, nvml_error, ...)."""
        self.restores.labels(gpu=str(gpu), reason=reason).inc()
        self.requested_clock.labels(gpu=str(gpu)).set(0)

    # -------------------------------------------------------------------------------- controller events
    def record_decision(self, instance: str, phase: str, clock_mhz: int) -> None:
        """A controller chose ``clock_mhz`` for ``instance`` (phase: ``prefill`` or ``decode``)."""
        self.decisions.labels(instance=instance, phase=phase).inc()
        self.decision_clock.labels(instance=instance).set(clock_mhz)

    def record_suspension(self, instance: str, reason: str) -> None:
        """Clock control of ``instance`` was suspended (reason: ``watchdog``, ``nvml_error``, ``permission``)."""
        self.suspensions.labels(instance=instance, reason=reason).inc()

    def record_iteration(self, instance: str, predicted_s: float, observed_s: float) -> None:
        """Predicted and observed latency of one iteration, s."""
        self.latency_predicted.labels(instance=instance).set(predicted_s)
        self.latency_observed.labels(instance=instance).set(observed_s)
        if observed_s > 0:
            self.latency_error.labels(instance=instance).observe((predicted_s - observed_s) / observed_s)

    def record_slack(self, instance: str, slo: str, slack_s: float) -> None:
        """SLO slack of ``instance`` (slo: ``ttft`` or ``tpot``), s."""
        self.slo_slack.labels(instance=instance, slo=slo).set(slack_s)

    # ----------------------------------------------------------------------------------------- serving
    def attach_nvml(self, meter: EnergyMeter) -> None:
        """Export SM clock, power and energy of the meter's GPUs, read at scrape time."""
        if self._collector is not None:
            raise RuntimeError("NVML collector already attached")
        self._collector = _NvmlCollector(meter)
        self.registry.register(self._collector)

    def render(self) -> str:
        """The metrics in Prometheus text format (what a scrape returns)."""
        return generate_latest(self.registry).decode()

    def serve(self, port: int = 9400, addr: str = "127.0.0.1", token: str | None = None) -> int:
        """Start the HTTP server in a daemon thread; returns the bound port (``port=0``: an ephemeral one).

        ``token``: answer only requests with ``Authorization: Bearer <token>``.
        """
        if self._server is not None:
            raise RuntimeError("exporter already serving")
        self._server = ThreadingHTTPServer((addr, port), _handler(self, token))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="biscale-metrics", daemon=True)
        self._thread.start()
        return int(self._server.server_port)

    def shutdown(self) -> None:
        """Stop the HTTP server (if started)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _handler(metrics: ControlPlaneMetrics, token: str | None) -> type[BaseHTTPRequestHandler]:
    """The request handler: ``GET /metrics`` (query string ignored) only, behind the bearer token if one is set."""
    expected = None if not token else f"Bearer {token}".encode()

    class MetricsHandler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="biscale"')
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self._reply(404, b"not found: this server answers only /metrics\n")
                return
            if expected is not None:
                given = self.headers.get("Authorization", "").encode()
                if not hmac.compare_digest(given, expected):
                    self._reply(401, b"unauthorized\n")
                    return
            self._reply(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)

        do_HEAD = do_GET

        def log_message(self, format: str, *args: Any) -> None:  # scrapes every few seconds: no access log
            return

    return MetricsHandler
