"""The torch backend: exit 2 with a clear message without torch or without a GPU; its CPU-side arithmetic."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from biscale.errors import InputError
from biscale.predict.profilers.torch_gpu import (
    MODEL_SHAPES,
    TorchProfileConfig,
    draw_shapes,
    scale_to_depth,
    shard_config,
)


def test_without_torch_exits_2(run_cli, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    res = run_cli("profile", "--backend", "torch", "-o", tmp_path / "p.csv")
    assert res.code == 2
    assert res.err.strip().splitlines() == [
        "biscale: error: the torch backend needs PyTorch and transformers (torch is not installed): "
        "pip install 'biscale[torch]', or use --backend sim"
    ]
    assert not (tmp_path / "p.csv").exists()


def test_without_gpu_exits_2(run_cli, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    fake_torch = types.ModuleType("torch")
    fake_torch.cuda = types.SimpleNamespace(is_available=lambda: False)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setitem(sys.modules, "transformers", types.ModuleType("transformers"))
    res = run_cli("profile", "--backend", "torch", "-o", tmp_path / "p.csv")
    assert res.code == 2
    assert "needs a CUDA GPU and none is visible" in res.err and len(res.err.strip().splitlines()) == 1


def test_shard_config_divides_the_layer() -> None:
    full = MODEL_SHAPES["llama-3.3-70b"]
    c = shard_config("llama-3.3-70b", 4, 2)
    assert c["num_attention_heads"] == full["num_heads"] // 4 == 16
    assert c["num_key_value_heads"] == 2 and c["intermediate_size"] == 7168 and c["head_dim"] == 128
    assert c["num_hidden_layers"] == 2
    assert shard_config("llama-3.3-70b", 8, 3)["num_key_value_heads"] == 1
    with pytest.raises(InputError, match="does not divide"):
        shard_config("llama-3.3-70b", 3, 2)
    with pytest.raises(InputError, match="at least 2"):
        shard_config("llama-3.3-70b", 1, 1)
    with pytest.raises(InputError, match="unknown model"):
        shard_config("gpt-5", 1, 2)


def test_scale_to_depth_is_exact_for_linear_costs() -> None:
    fixed, per_layer = 0.004, 0.0007
    one, four = fixed + per_layer, fixed + 4 * per_layer
    assert scale_to_depth(one, four, 4, 80) == pytest.approx(fixed + 80 * per_layer)


def test_draw_shapes_respects_limits() -> None:
    cfg = TorchProfileConfig(
        model="llama-3.3-70b", tps=(1,), shapes_per_tp=30, max_prefill_tokens=2048, max_decode_batch=64
    )
    rng = np.random.default_rng(0)
    inputs = rng.integers(1, 4000, 500)
    outputs = rng.integers(1, 500, 500)
    pre, dec = draw_shapes(rng, inputs, outputs, cfg)
    assert len(pre) == len(dec) == 30
    assert all(x.size >= 1 and x.max() <= 2048 for x in pre)
    assert all(1 <= b <= 64 and c >= 2 for b, c in dec)
