"""Profile the local GPU with the torch backend at the clocks as found, and record the conditions beside it.

Usage (on a machine with an NVIDIA GPU, ``pip install 'biscale[torch]'``)::

    python scripts/profile_torch_gpu.py --gpu-label h100-sxm --out data/measured/h100-sxm

Writes ``profile.csv`` + ``profile.meta.json`` (from ``biscale profile --backend torch``) and ``conditions.json``
(GPU name, driver, clocks, power limit and temperature before and after, read through NVML; nothing is changed).
Never changes clocks or power settings: it does not pass ``--sweep-clocks``.

It asks for 24 shapes per phase and TP, not ``biscale profile``'s 64 (biscale.predict.profilers.DEFAULT_SHAPES):
each shape is timed over a window of at least ``--min-window-s`` (NVML's energy counter updates only every
10-100 ms), so 24 shapes x 4 TP degrees x 2 phases take minutes on a lent GPU where 64 would take three times as
long; the prefill token and decode batch ranges are the CLI's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _conditions(device: int) -> dict[str, Any]:
    """Read-only NVML facts about one GPU."""
    import pynvml

    pynvml.nvmlInit()
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(device)
        name = pynvml.nvmlDeviceGetName(h)
        return {
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "driver": str(pynvml.nvmlSystemGetDriverVersion()),
            "sm_clock_mhz": int(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)),
            "max_sm_clock_mhz": int(pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM)),
            "mem_clock_mhz": int(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM)),
            "power_limit_w": pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
            "power_w": pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0,
            "temperature_c": int(pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)),
        }
    finally:
        pynvml.nvmlShutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu-label", required=True, help="label written in the gpu column, e.g. h100-sxm")
    ap.add_argument("--model", default="llama-3.3-70b")
    ap.add_argument("--tp", default="1,2,4,8", help="TP shards to profile on the one GPU")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--shapes", type=int, default=24)
    ap.add_argument("--min-window-s", type=float, default=1.0, help="measurement window per shape, s")
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from biscale.cli.main import main as biscale

    args.out.mkdir(parents=True, exist_ok=True)
    before = _conditions(args.device)
    code = biscale(
        [
            "profile", "--backend", "torch", "--gpu", args.gpu_label, "--model", args.model, "--tp", args.tp,
            "--layers", str(args.layers), "--shapes", str(args.shapes), "--device", str(args.device),
            "--min-window-s", str(args.min_window_s),
            "-o", str(args.out / "profile.csv"),
        ]
    )  # fmt: skip
    if code != 0:
        return code
    after = _conditions(args.device)
    note = {"before": before, "after": after, "clocks": "as found (not locked)", "command": sys.argv}
    (args.out / "conditions.json").write_text(json.dumps(note, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
