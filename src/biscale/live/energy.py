"""GPU energy of a live run: the local NVML energy meter, or the exporters' series read back from Prometheus.

Both give one :class:`GroupEnergy` per GPU group and a timeline with the simulator's timeline columns. NVML reads the
GPUs of this machine (``EnergyMeter``: the driver's counter, exact; no phase known, so groups are per GPU with phase
``""``). Prometheus reads ``biscale_gpu_energy_joules_total`` of every scraped exporter (clock hook, ``biscale gpu
export``, emulated engine) over the run and joins ``biscale_gpu_phase_info`` to put each GPU in its instance and
phase; its resolution is the scrape interval (samples inside the run window are used).
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from biscale.errors import InputError
from biscale.sim.timeline import TIMELINE_COLUMNS


@dataclass(frozen=True)
class GroupEnergy:
    """Energy of one GPU group (an instance) over the run."""

    name: str
    phase: str
    gpus: tuple[str, ...]
    energy_j: float
    clock_switches: int = 0


@dataclass(frozen=True)
class RunEnergy:
    source: str
    """``nvml`` or the Prometheus URL."""
    groups: tuple[GroupEnergy, ...]
    timeline: pd.DataFrame


def empty_timeline() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64") for c in TIMELINE_COLUMNS}).astype(
        {"instance_id": "int64", "phase": "object", "status": "object", "tp": "int64"}
    )


def _timeline(rows: list[dict[str, Any]]) -> pd.DataFrame:
    if not rows:
        return empty_timeline()
    frame = pd.DataFrame(rows)
    for c in TIMELINE_COLUMNS:
        if c not in frame:
            frame[c] = math.nan
    return frame[list(TIMELINE_COLUMNS)]


class NvmlEnergy:
    """Energy of local GPUs over the run (counter window) and a power timeline (sampling thread)."""

    def __init__(self, gpus: str | None = None, period_s: float = 0.5, nvml: Any = None) -> None:
        from biscale.gpu.energy import EnergyMeter
        from biscale.gpu.nvml import load_nvml, nvml_init, resolve_gpus

        module = load_nvml() if nvml is None else nvml
        nvml_init(module)
        try:
            indices = resolve_gpus(module, gpus)
        finally:
            module.nvmlShutdown()
        self.meter = EnergyMeter(module, indices)
        self.period_s = period_s
        self._window: Any = None

    def start(self) -> None:
        self._window = self.meter.begin()
        self.meter.start_sampling(self.period_s)

    def stop(self) -> RunEnergy:
        timeline = self.meter.stop_sampling()
        m = self.meter.end(self._window)
        groups = tuple(GroupEnergy(f"gpu-{g}", "", (str(g),), float(e)) for g, e in m.energy_j.items())
        rows = []
        for i, g in enumerate(timeline.power_w):
            for t, p, e in zip(timeline.t_s, timeline.power_w[g], timeline.energy_j[g], strict=True):
                rows.append(
                    {
                        "time_s": float(t),
                        "instance_id": i,
                        "phase": "",
                        "tp": 1,
                        "status": "ready",
                        "power_w": float(p),
                        "energy_j": float(e),
                    }
                )
        return RunEnergy("nvml", groups, _timeline(rows))


def counter_increase(values: np.ndarray) -> float:
    """Increase of a counter's samples, a drop counting as a reset (Prometheus ``increase`` without extrapolation)."""
    if values.size < 2:
        return 0.0
    d = np.diff(values)
    return float(np.where(d >= 0, d, values[1:]).sum())


class PrometheusEnergy:
    """Energy and clocks of every scraped BiScale exporter over the run, from a Prometheus server's HTTP API."""

    def __init__(self, url: str, step_s: float = 1.0, timeout_s: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise InputError(f"not an http(s) URL: {url!r}", field="energy")
        self.url = url.rstrip("/")
        self.step_s = step_s
        self.timeout_s = timeout_s
        self.t0 = math.nan

    def query(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """``/api/v1/<path>`` result list (raises :class:`InputError` naming the server on failure)."""
        q = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{q}", timeout=self.timeout_s) as resp:
                body = json.load(resp)
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as err:
            raise InputError(f"Prometheus at {self.url} did not answer {path}: {err}", field="energy") from err
        if body.get("status") != "success":
            raise InputError(f"Prometheus at {self.url}: {body.get('error', 'query failed')}", field="energy")
        return list(body["data"]["result"])

    def start(self) -> None:
        self.t0 = time.time()

    def stop(self, settle_s: float | None = None) -> RunEnergy:
        """Wait ``settle_s`` (default two steps) for a scrape after the run, then read the run's series."""
        time.sleep(2 * self.step_s if settle_s is None else settle_s)
        t1 = time.time()
        span = {"start": f"{self.t0:.3f}", "end": f"{t1:.3f}", "step": f"{self.step_s:g}"}
        phase_of: dict[tuple[str, str], tuple[str, str]] = {}
        for s in self.query("query", query="biscale_gpu_phase_info", time=f"{t1:.3f}"):
            m = s["metric"]
            phase_of[(m.get("instance", ""), m["gpu"])] = (m.get("phase", ""), m.get("engine_instance", ""))
        groups: dict[tuple[str, str, str], dict[str, Any]] = {}

        def group(m: dict[str, str]) -> dict[str, Any]:
            target, gpu = m.get("instance", ""), m.get("gpu", "")
            phase, name = phase_of.get((target, gpu), (m.get("role", ""), ""))
            key = (target, name, phase)
            return groups.setdefault(key, {"gpus": {}, "switches": {}, "power": {}, "clock": {}})

        for s in self.query("query_range", query="biscale_gpu_energy_joules_total", **span):
            v = np.array([float(x) for _, x in s["values"]])
            g = group(s["metric"])
            g["gpus"][s["metric"].get("gpu", "")] = counter_increase(v)
        for s in self.query("query_range", query="biscale_gpu_clock_switches_total", **span):
            v = np.array([float(x) for _, x in s["values"]])
            group(s["metric"])["switches"][s["metric"].get("gpu", "")] = counter_increase(v)
        for metric, slot in (("biscale_gpu_power_watts", "power"), ("biscale_gpu_sm_clock_mhz", "clock")):
            for s in self.query("query_range", query=metric, **span):
                group(s["metric"])[slot][s["metric"].get("gpu", "")] = {float(t): float(x) for t, x in s["values"]}
        out: list[GroupEnergy] = []
        rows: list[dict[str, Any]] = []
        for i, ((target, name, phase), g) in enumerate(sorted(groups.items())):
            if not g["gpus"]:
                continue
            label = name or target
            out.append(
                GroupEnergy(
                    label,
                    phase,
                    tuple(sorted(g["gpus"])),
                    float(sum(g["gpus"].values())),
                    int(max(g["switches"].values(), default=0)),
                )
            )
            times = sorted({t for series in g["power"].values() for t in series})
            for t in times:
                clocks = [c[t] for c in g["clock"].values() if t in c]
                rows.append(
                    {
                        "time_s": t - self.t0,
                        "instance_id": i,
                        "phase": phase,
                        "tp": len(g["gpus"]),
                        "status": "ready",
                        "clock_mhz": float(np.mean(clocks)) if clocks else math.nan,
                        "power_w": float(sum(p[t] for p in g["power"].values() if t in p)),
                    }
                )
        return RunEnergy(self.url, tuple(out), _timeline(rows))
