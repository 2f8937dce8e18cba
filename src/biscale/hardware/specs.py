"""GPU and LLM specifications, loaded from JSON files so that adding a GPU or a model is a data change.

Files live in ``biscale/hardware/data/gpus/<name>.json`` and ``.../models/<name>.json``; every field is a
datasheet or ``config.json`` fact, with its source recorded in the file's ``sources`` object.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, fields
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from biscale.errors import InputError


def data_dir() -> Path:
    """The package's hardware data directory (specs, fitted constants, calibration data)."""
    return Path(str(resources.files("biscale.hardware") / "data"))


@dataclass(frozen=True)
class GpuSpec:
    """Datasheet facts about one GPU model."""

    name: str
    display_name: str
    sm_count: int
    max_sm_clock_mhz: int
    """Highest lockable SM (graphics) clock, MHz."""
    min_sm_clock_mhz: int
    """Lowest lockable SM clock, MHz."""
    clock_step_mhz: int
    """Spacing of the supported SM clocks, MHz."""
    memory_bytes: int
    """HBM capacity per GPU, bytes."""
    hbm_bandwidth_bytes_per_s: float
    """Peak HBM bandwidth per GPU, bytes/s (independent of the SM clock)."""
    peak_bf16_flops: float
    """Dense BF16 tensor-core peak at the top SM clock, FLOP/s."""
    power_limit_w: float
    """Board power limit (TDP), W."""
    unlocked_idle_power_w: float
    """Idle power under the default governor (clock dropped to its idle state), W."""
    tp_degrees: tuple[int, ...]
    """Tensor-parallel degrees an instance may use (GPUs of one NVLink node)."""
    sources: dict[str, str]
    experimental: bool = False
    """True when the hardware model of this GPU is not calibrated on its own measurements: commands that report
    energy savings should refuse it."""
    experimental_reason: str = ""
    """Why it is experimental (required when ``experimental``)."""

    @property
    def supported_clocks_mhz(self) -> tuple[int, ...]:
        """Lockable SM clocks, ascending, MHz."""
        return tuple(range(self.min_sm_clock_mhz, self.max_sm_clock_mhz + 1, self.clock_step_mhz))


@dataclass(frozen=True)
class ModelSpec:
    """Architecture facts about one decoder-only LLM (from its ``config.json``)."""

    name: str
    hf_id: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    num_params: int
    dtype_bytes: int
    """Bytes per weight and per KV element (2 for BF16)."""
    gated_mlp: bool
    sources: dict[str, str]

    @property
    def weight_bytes(self) -> int:
        """All weights, bytes."""
        return self.num_params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V for one token over all layers, bytes."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes

    @property
    def layer_linear_params(self) -> int:
        """Weights of one layer's four GEMMs (QKV, O, up(+gate), down)."""
        h, d = self.hidden_size, self.head_dim
        qkv = h * (self.num_heads + 2 * self.num_kv_heads) * d
        o = self.num_heads * d * h
        up = (2 if self.gated_mlp else 1) * h * self.intermediate_size
        down = self.intermediate_size * h
        return qkv + o + up + down


def _load(kind: str, name: str, cls: type[Any]) -> Any:
    folder = data_dir() / kind
    path = folder / f"{name}.json"
    if not path.is_file():
        valid = ", ".join(available(kind))
        raise InputError(f"unknown {kind[:-1]} '{name}' (valid: {valid})")
    raw = json.loads(path.read_text())
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING}
    missing = required - raw.keys()
    if missing:
        raise InputError(f"missing keys {sorted(missing)}", path=path)
    kwargs = {k: raw[k] for k in names if k in raw}
    if kwargs.get("experimental") and not kwargs.get("experimental_reason"):
        raise InputError("experimental GPU specs must say why in 'experimental_reason'", path=path)
    if "tp_degrees" in kwargs:
        kwargs["tp_degrees"] = tuple(int(t) for t in kwargs["tp_degrees"])
    return cls(**kwargs)


def available(kind: str) -> list[str]:
    """Names of the JSON specs of ``kind`` ("gpus" or "models"), sorted."""
    return sorted(p.stem for p in (data_dir() / kind).glob("*.json"))


@cache
def load_gpu(name: str) -> GpuSpec:
    """The GPU spec ``data/gpus/<name>.json``; InputError naming the valid ones if unknown."""
    spec: GpuSpec = _load("gpus", name, GpuSpec)
    return spec


@cache
def load_model(name: str) -> ModelSpec:
    """The model spec ``data/models/<name>.json``; InputError naming the valid ones if unknown."""
    spec: ModelSpec = _load("models", name, ModelSpec)
    return spec
