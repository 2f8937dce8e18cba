"""Registry of hardware models: any (GPU spec, model spec) pair with fitted constants for the GPU."""

from __future__ import annotations

from functools import cache

from biscale.errors import InputError
from biscale.hardware.base import HardwareModel
from biscale.hardware.constants import constants_path, load_constants
from biscale.hardware.roofline import RooflineHardwareModel
from biscale.hardware.specs import available, load_gpu, load_model


def _gpus_with_constants() -> list[str]:
    return [g for g in available("gpus") if constants_path(g).is_file()]


@cache
def _build(gpu: str, model: str, idle_top_w: float | None = None) -> HardwareModel:
    return RooflineHardwareModel(load_gpu(gpu), load_model(model), load_constants(gpu), idle_top_w=idle_top_w)


def get_hardware(gpu: str, model: str, *, idle_top_w: float | None = None) -> HardwareModel:
    """The hardware model of ``model`` served on ``gpu`` GPUs (cached; instances are immutable).

    ``idle_top_w``: idle power per GPU at the top clock, W, in place of the fitted idle law's (the lowest clock's
    idle power kept; see :meth:`RooflineHardwareModel._idle_law`); None: the calibrated model.

    Raises :class:`InputError` naming the unknown GPU or model and listing the valid names, or when the model
    does not fit on a full node of that GPU, or when ``idle_top_w`` is out of range.
    """
    gpus = _gpus_with_constants()
    if gpu not in gpus:
        raise InputError(f"unknown GPU '{gpu}' (valid: {', '.join(gpus)})", field="gpu")
    models = available("models")
    if model not in models:
        raise InputError(f"unknown model '{model}' (valid: {', '.join(models)})", field="model")
    return _build(gpu, model, None if idle_top_w is None else float(idle_top_w))


def experimental_reason(gpu: str) -> str | None:
    """Why the hardware model of ``gpu`` is experimental (not calibrated on that GPU's own measurements), or None.

    Commands that report energy savings refuse experimental GPUs (a saving is a difference of two modelled
    energies, so it is only as good as the model's calibration). InputError for an unknown GPU.
    """
    gpus = _gpus_with_constants()
    if gpu not in gpus:
        raise InputError(f"unknown GPU '{gpu}' (valid: {', '.join(gpus)})", field="gpu")
    spec = load_gpu(gpu)
    return spec.experimental_reason if spec.experimental else None


def list_hardware() -> list[tuple[str, str]]:
    """All (gpu, model) pairs that can be built (the model fits on a node of that GPU), sorted."""
    pairs = []
    for g in _gpus_with_constants():
        for m in available("models"):
            try:
                _build(g, m)
            except InputError:
                continue
            pairs.append((g, m))
    return pairs


def clear_caches() -> None:
    """Forget loaded specs, constants and built models (after the JSON files changed)."""
    from biscale.hardware.specs import load_gpu, load_model

    load_constants.cache_clear()
    load_gpu.cache_clear()
    load_model.cache_clear()
    _build.cache_clear()
