"""Read-only GPU snapshots for ``biscale gpu status`` / ``watch`` (no privileges needed, nothing changed)."""

from __future__ import annotations

import itertools
from typing import Any

from biscale.gpu.nvml import reason_names


def _try(nvml: Any, fn: str, *args: Any) -> Any:
    """Call ``nvml.fn(*args)``; ``None`` when the GPU or driver does not support it or it fails."""
    try:
        return getattr(nvml, fn)(*args)
    except nvml.NVMLError:
        return None


def gpu_status(nvml: Any, index: int) -> dict[str, Any]:
    """One GPU's identity, clocks, supported range, power, energy counter and clock-event reasons.

    Fields that NVML cannot give on this GPU are ``None`` (e.g. the energy counter before Volta).
    """
    h = nvml.nvmlDeviceGetHandleByIndex(index)
    uuid = _try(nvml, "nvmlDeviceGetUUID", h)
    name = _try(nvml, "nvmlDeviceGetName", h)
    mems = _try(nvml, "nvmlDeviceGetSupportedMemoryClocks", h) or []
    clocks: list[int] = []
    if mems:
        clocks = sorted(int(c) for c in (_try(nvml, "nvmlDeviceGetSupportedGraphicsClocks", h, max(mems)) or []))
    power_mw = _try(nvml, "nvmlDeviceGetPowerUsage", h)
    limit_mw = _try(nvml, "nvmlDeviceGetPowerManagementLimit", h)
    energy_mj = _try(nvml, "nvmlDeviceGetTotalEnergyConsumption", h)
    mask = _try(nvml, "nvmlDeviceGetCurrentClocksEventReasons", h)
    if mask is None:
        mask = _try(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", h)
    steps = sorted({b - a for a, b in itertools.pairwise(clocks)})
    return {
        "gpu": index,
        "uuid": uuid if not isinstance(uuid, bytes) else uuid.decode(),
        "name": name if not isinstance(name, bytes) else name.decode(),
        "sm_clock_mhz": _try(nvml, "nvmlDeviceGetClockInfo", h, nvml.NVML_CLOCK_SM),
        "mem_clock_mhz": _try(nvml, "nvmlDeviceGetClockInfo", h, nvml.NVML_CLOCK_MEM),
        "max_sm_clock_mhz": _try(nvml, "nvmlDeviceGetMaxClockInfo", h, nvml.NVML_CLOCK_SM),
        "supported_min_sm_clock_mhz": clocks[0] if clocks else None,
        "supported_max_sm_clock_mhz": clocks[-1] if clocks else None,
        "supported_sm_clocks_count": len(clocks),
        "supported_sm_clock_step_mhz": steps[0] if steps else None,
        "power_w": None if power_mw is None else power_mw / 1000.0,
        "power_limit_w": None if limit_mw is None else limit_mw / 1000.0,
        "energy_counter_j": None if energy_mj is None else energy_mj / 1000.0,
        "clock_event_reasons_mask": mask,
        "clock_event_reasons": list(reason_names(nvml, mask)) if mask is not None else None,
    }
