"""Overhead of the NVML control plane's hot paths, measured on the in-memory fake NVML.

The numbers are biscale's own cost plus the fake's bookkeeping (a dict update and a log append per NVML
call); on real GPUs each ``nvmlDeviceSetGpuLockedClocks`` adds the driver's own latency, which is not
measured here (no GPU). Prints one JSON line: caller-side latency of the non-blocking ``request_clock``
(what a per-iteration controller pays), blocking ``set_clock`` on a TP1 and a TP8 group (parallel switch),
``read_back`` of 8 GPUs, and one energy-meter poll of 8 GPUs; p50 and p99 in microseconds.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import numpy as np

from biscale.gpu.energy import EnergyMeter
from biscale.gpu.fake_nvml import FakeNvml, default_state
from biscale.gpu.nvml import NvmlActuator


def _time_us(fn: Callable[[int], object], n: int) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out[i] = (time.perf_counter() - t0) * 1e6
    return out


def _stats(name: str, us: np.ndarray) -> dict[str, float]:
    return {
        f"{name}_p50_us": round(float(np.percentile(us, 50)), 2),
        f"{name}_p99_us": round(float(np.percentile(us, 99)), 2),
    }


def main() -> None:
    logging.disable(logging.WARNING)
    fake = FakeNvml(state=default_state(8))
    group = list(range(8))
    clocks = (990, 1005)
    result: dict[str, float] = {}
    with NvmlActuator(fake) as act:
        act.set_clock(group, 1980)
        result |= _stats("set_clock_tp1", _time_us(lambda i: act.set_clock([0], clocks[i % 2]), 2000))
        result |= _stats("set_clock_tp8", _time_us(lambda i: act.set_clock(group, clocks[i % 2]), 1000))
        result |= _stats("read_back_tp8", _time_us(lambda i: act.read_back(group), 1000))
        result |= _stats("request_clock_tp8", _time_us(lambda i: act.request_clock(group, clocks[i % 2]), 5000))
        act.flush()
        result["requests_dropped"] = act.requests_dropped
        result["requests_applied"] = act.requests_applied
    meter = EnergyMeter(fake)
    result |= _stats("energy_poll_8gpu", _time_us(lambda i: meter.poll(), 2000))
    meter.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
