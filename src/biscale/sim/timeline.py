"""The per-instance timeline: one row per live instance at every sample time, with the exact mean power since the
previous sample (from the ledgers, which commit nothing when read)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from biscale.sim.instance import STATUS_LABELS, Instance, InstanceStatus

TIMELINE_COLUMNS = (
    "time_s",
    "instance_id",
    "phase",
    "tp",
    "status",
    "clock_mhz",
    "power_w",
    "energy_j",
    "queue_len",
    "batch_size",
    "kv_used_tokens",
    "kv_capacity_tokens",
)

_STOPPED = int(InstanceStatus.STOPPED)


class Timeline:
    """Collects timeline rows; ``last_sample_s`` is the time of the latest row."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.last_sample_s = 0.0
        self._last_energy_j: dict[int, float] = {}

    def sample(self, t: float, instances: Sequence[Instance]) -> None:
        """One row per instance alive during ``(last sample, t]``; ``power_w`` is the exact mean over it."""
        t_prev = self.last_sample_s
        dt = t - t_prev
        for inst in instances:
            if inst.start_s > t or (inst.status == _STOPPED and inst.stop_s < t_prev):
                continue
            led = inst.ledger
            e = led.energy_at(t, inst.status == _STOPPED)
            prev = self._last_energy_j.get(inst.id, 0.0)
            power = (e - prev) / dt if dt > 0 else float("nan")
            self._last_energy_j[inst.id] = e
            self.rows.append(
                (
                    t,
                    inst.id,
                    inst.phase,
                    inst.tp,
                    STATUS_LABELS[inst.status],
                    led.clock_mhz,
                    power,
                    e,
                    inst.queue_len,
                    inst.batch_size,
                    inst.kv_used_tokens,
                    inst.kv_capacity_tokens,
                )
            )
        self.last_sample_s = t

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(TIMELINE_COLUMNS))
