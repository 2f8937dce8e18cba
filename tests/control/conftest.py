"""Fixtures for the tier-2 controller tests: the bundled predictor, the hardware model, state builders."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from biscale.control.state import InstanceState, Slo
from biscale.hardware import get_hardware
from biscale.hardware.base import HardwareModel
from biscale.predict import Predictor, PredictorCostModel, default_predictor

GPU, MODEL = "h100-sxm", "llama-3.3-70b"
SUPPORTED = tuple(int(c) for c in get_hardware(GPU, MODEL).supported_clocks_mhz)


@pytest.fixture(scope="session")
def predictor() -> Predictor:
    return default_predictor(GPU, MODEL)


@pytest.fixture(scope="session")
def hw() -> HardwareModel:
    return get_hardware(GPU, MODEL)


@pytest.fixture(scope="session")
def belief(predictor: Predictor) -> PredictorCostModel:
    return PredictorCostModel(predictor)


def _ints(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def _floats(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def prefill_state(
    *,
    batch_new: Any = (),
    batch_prefix: Any = None,
    batch_prompt: Any = None,
    batch_wait: Any = None,
    queue: Any = (),
    queue_wait: Any = None,
    tp: int = 4,
    time_s: float = 10.0,
    instance_id: int = 0,
    clock_mhz: int = SUPPORTED[-1],
    pending_clock_mhz: int | None = None,
    token_budget: int = 2048,
    max_batch_seqs: int = 0,
    kv_used: int = 0,
    kv_capacity: int = 400_000,
    recent: tuple[float, ...] = (),
    slo: Slo | None = None,
    baseline_clock_mhz: int | None = None,
) -> InstanceState:
    """A prefill snapshot; unspecified batch prefixes are 0, prompts equal the chunk, waits 0."""
    bn = _ints(batch_new)
    return InstanceState(
        time_s=time_s,
        instance_id=instance_id,
        phase="prefill",
        tp=tp,
        clock_mhz=clock_mhz,
        pending_clock_mhz=pending_clock_mhz,
        supported_clocks_mhz=SUPPORTED,
        waiting_prompt_tokens=_ints(queue),
        waiting_time_s=_floats(np.zeros(len(queue)) if queue_wait is None else queue_wait),
        running_context_tokens=_ints(()),
        running_generated_tokens=_ints(()),
        kv_used_tokens=kv_used,
        kv_capacity_tokens=kv_capacity,
        recent_latencies_s=recent,
        slo=slo or Slo(),
        batch_new_tokens=bn,
        batch_prefix_tokens=_ints(np.zeros(bn.size) if batch_prefix is None else batch_prefix),
        batch_prompt_tokens=_ints(bn if batch_prompt is None else batch_prompt),
        batch_waiting_time_s=_floats(np.zeros(bn.size) if batch_wait is None else batch_wait),
        token_budget=token_budget,
        max_batch_seqs=max_batch_seqs,
        baseline_clock_mhz=baseline_clock_mhz,
    )


def decode_state(
    *,
    context: Any = (),
    generated: Any = None,
    decode_time: Any = None,
    ids: Any = None,
    waiting: Any = (),
    tp: int = 4,
    time_s: float = 10.0,
    instance_id: int = 0,
    clock_mhz: int = SUPPORTED[-1],
    pending_clock_mhz: int | None = None,
    kv_used: int = 0,
    kv_capacity: int = 400_000,
    recent: tuple[float, ...] = (),
    preemptions: int = 0,
    slo: Slo | None = None,
    baseline_clock_mhz: int | None = None,
) -> InstanceState:
    """A decode snapshot; unspecified histories are on schedule (1 token, no decode time yet)."""
    ctx = _ints(context)
    return InstanceState(
        time_s=time_s,
        instance_id=instance_id,
        phase="decode",
        tp=tp,
        clock_mhz=clock_mhz,
        pending_clock_mhz=pending_clock_mhz,
        supported_clocks_mhz=SUPPORTED,
        waiting_prompt_tokens=_ints(waiting),
        waiting_time_s=_floats(np.zeros(len(waiting))),
        running_context_tokens=ctx,
        running_generated_tokens=_ints(np.ones(ctx.size) if generated is None else generated),
        kv_used_tokens=kv_used,
        kv_capacity_tokens=kv_capacity,
        recent_latencies_s=recent,
        slo=slo or Slo(),
        running_decode_time_s=_floats(np.zeros(ctx.size) if decode_time is None else decode_time),
        running_request_ids=_ints(() if ids is None else ids),
        preemptions=preemptions,
        max_batch_seqs=256,
        baseline_clock_mhz=baseline_clock_mhz,
    )


@pytest.fixture(scope="session")
def make_prefill_state() -> Any:
    """:func:`prefill_state` (test modules cannot import conftest under importlib mode)."""
    return prefill_state


@pytest.fixture(scope="session")
def make_decode_state() -> Any:
    """:func:`decode_state`."""
    return decode_state
