"""How the default clock governor of the local GPU idles down after work and wakes up for the next kernel, read
through NVML without changing anything.

Why: the hardware model's governor idle (``governor_downclock_after_s``, ``governor_wake_delay_s`` and the shallow
then deep idle power; docs/hardware.md) had no measurement behind it. For each of ``--runs`` rounds the script
keeps the GPU busy with bf16 matrix products for ``--busy-s``, then samples the SM clock and the energy counter
every ``--sample-ms`` for ``--idle-s`` of idleness; then it times one product started from that deep idle against
the same product on a warm GPU (CUDA events), the difference being what waking up costs a kernel.

Usage: ``python scripts/measure_governor.py --out DIR``; writes ``DIR/governor_samples.csv`` (``run, t_s`` since
the last kernel ended, ``sm_clock_mhz, energy_mj``) and ``DIR/governor.json`` (per run: when the clock first read
the lowest clocks, ``drop_s``; mean power before it and after it, ``shallow_idle_w`` / ``deep_idle_w``; warm and
first-after-idle product times, ``warm_kernel_ms`` / ``wake_kernel_ms``) and prints that JSON as its last line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

#: SM clocks at or below this read as the deep idle clock (the H100 idles at 345 MHz).
DEEP_IDLE_MHZ = 600


def summarize_run(frame: Any, idle_s: float) -> dict[str, float | None]:
    """One run's samples (``t_s, sm_clock_mhz, energy_mj``): ``drop_s``, when the clock first read the deep idle
    clocks (None: never); mean power before it from 0.5 s on (after the clock's climb back from the throttled
    clock the work ended at), ``shallow_idle_w``, and from 0.3 s after it, ``deep_idle_w`` (None: no drop)."""

    def mean_power(lo: float, hi: float) -> float | None:
        part = frame[(frame["t_s"] >= lo) & (frame["t_s"] <= hi)]
        if len(part) < 2:
            return None
        joules = (part["energy_mj"].iloc[-1] - part["energy_mj"].iloc[0]) / 1e3
        return float(joules / (part["t_s"].iloc[-1] - part["t_s"].iloc[0]))

    deep = frame[frame["sm_clock_mhz"] <= DEEP_IDLE_MHZ]
    drop = float(deep["t_s"].iloc[0]) if len(deep) else None
    return {
        "drop_s": drop,
        "shallow_idle_w": mean_power(0.5, idle_s if drop is None else drop - 0.05),
        "deep_idle_w": None if drop is None else mean_power(drop + 0.3, idle_s),
        "top_clock_mhz": int(frame[frame["t_s"] >= 0.5]["sm_clock_mhz"].max()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--busy-s", type=float, default=2.0)
    ap.add_argument("--idle-s", type=float, default=3.0)
    ap.add_argument("--sample-ms", type=float, default=5.0)
    ap.add_argument("--device", type=int, default=0)
    args = ap.parse_args()

    import pandas as pd
    import torch

    from biscale.gpu.nvml import load_nvml

    nvml = load_nvml()
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(args.device)
    dev = torch.device(f"cuda:{args.device}")
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    small = torch.randn(4096, 4096, device=dev, dtype=torch.bfloat16)

    def timed_product() -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        small @ small
        end.record()
        torch.cuda.synchronize(dev)
        return float(start.elapsed_time(end))

    def read() -> tuple[int, int]:
        return (
            int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
            int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle)),
        )

    samples: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for run in range(args.runs):
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.busy_s:
            for _ in range(20):
                a @ a
            torch.cuda.synchronize(dev)
        warm = sorted(timed_product() for _ in range(20))[10]
        idle_from = time.monotonic()
        rows = []
        while (now := time.monotonic() - idle_from) < args.idle_s:
            clock, energy = read()
            rows.append({"run": run, "t_s": now, "sm_clock_mhz": clock, "energy_mj": energy})
            time.sleep(args.sample_ms / 1e3)
        wake = timed_product()
        samples.extend(rows)
        runs.append({"run": run, **summarize_run(pd.DataFrame(rows), args.idle_s), "warm_kernel_ms": warm,
                     "wake_kernel_ms": wake})  # fmt: skip
        print(json.dumps(runs[-1]), flush=True)
    nvml.nvmlShutdown()
    args.out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(samples).to_csv(args.out / "governor_samples.csv", index=False)
    summary = {"runs": runs, "sample_ms": args.sample_ms, "busy_s": args.busy_s, "idle_s": args.idle_s}
    (args.out / "governor.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
