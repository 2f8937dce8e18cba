"""The transfer of the H100 constants to GPUs without measurements of their own (the A100s, experimental)."""

from __future__ import annotations

import dataclasses

from biscale.hardware.calibration.datasets import GPU
from biscale.hardware.constants import FittedConstants
from biscale.hardware.specs import load_gpu

#: The power constants (transferred to another GPU: those in W scale with the power limit).
POWER_NAMES = (
    "static_power_w",
    "idle_dynamic_power_w",
    "voltage_knee_frac",
    "voltage_rise",
    "compute_power_w",
    "memory_power_w",
    "busy_power_w",
)

#: NVLink bandwidth per GPU relative to H100 SXM (NVLink 4, 900 GB/s): A100 SXM has NVLink 3, 600 GB/s
#: (NVIDIA A100 and H100 datasheets).
NVLINK_RATIO = {"a100-sxm-80gb": 600.0 / 900.0, "a100-sxm-40gb": 600.0 / 900.0}


def transfer_constants(h100: FittedConstants, gpu: str) -> FittedConstants:
    """Constants for a GPU without its own measurements, transferred from the H100 fit.

    Efficiencies (fractions of the GPU's own peaks), fixed times, engine overheads, voltage-curve shape and
    cap fraction carry over unchanged; power coefficients scale with the power-limit ratio; all-reduce
    bandwidth with the NVLink bandwidth ratio. This is an assumption: such GPUs are marked experimental.
    """
    spec, ref = load_gpu(gpu), load_gpu(GPU)
    pr = spec.power_limit_w / ref.power_limit_w
    bw = NVLINK_RATIO.get(gpu, 1.0)
    scaled = {k: getattr(h100, k) * pr for k in POWER_NAMES if k.endswith("_w")}
    note = f"transferred from {GPU} by transfer_constants (power x{pr:.3f}, all-reduce bandwidth x{bw:.3f})"
    return dataclasses.replace(
        h100,
        **scaled,
        allreduce_bandwidth_bytes_per_s={k: v * bw for k, v in h100.allreduce_bandwidth_bytes_per_s.items()},
        sources={"all": note},
    )
