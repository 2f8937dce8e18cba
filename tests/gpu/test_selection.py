"""Choosing GPUs: NVML indices, UUIDs and the CUDA_VISIBLE_DEVICES mapping (NVML ignores that variable)."""

from __future__ import annotations

import pytest

from biscale.errors import InputError
from biscale.gpu.fake_nvml import FakeNvml, default_state
from biscale.gpu.nvml import list_gpus, resolve_gpus


@pytest.fixture
def four() -> FakeNvml:
    f = FakeNvml(state=default_state(4))
    f.nvmlInit()
    return f


def uuid(i: int) -> str:
    return f"GPU-{i:08x}-fake-4000-8000-{i:012x}"


def test_list_gpus(four: FakeNvml) -> None:
    gpus = list_gpus(four)
    assert [g.index for g in gpus] == [0, 1, 2, 3]
    assert gpus[2].uuid == uuid(2)


@pytest.mark.parametrize(
    ("spec", "cvd", "expected"),
    [
        (None, None, [0, 1, 2, 3]),
        ("", "2,0", [2, 0]),
        (None, "3", [3]),
        (None, uuid(1) + "," + uuid(3), [1, 3]),
        (None, "GPU-00000002", [2]),  # unique prefix, as CUDA accepts
        (None, "1,abc,2", [1]),  # CUDA stops at the first invalid entry
        (None, "1,9,2", [1]),
        ("cuda:1", "2,0", [0]),
        ("cuda:0,cuda:1", uuid(3) + ",1", [3, 1]),
        ("all", "1", [0, 1, 2, 3]),
        ("3,1,3", None, [3, 1]),  # duplicates dropped, order kept
        (uuid(2), None, [2]),
        ("gpu-00000001", None, [1]),  # case-insensitive prefix
        ("0,GPU-00000003", "2", [0, 3]),  # explicit indices ignore CUDA_VISIBLE_DEVICES
    ],
)
def test_resolve(four: FakeNvml, spec: str | None, cvd: str | None, expected: list[int]) -> None:
    env = {} if cvd is None else {"CUDA_VISIBLE_DEVICES": cvd}
    assert resolve_gpus(four, spec, env=env) == expected


@pytest.mark.parametrize(
    ("spec", "cvd", "message"),
    [
        ("7", None, "field '--gpus': GPU index 7 does not exist (this machine has 4 GPUs)"),
        ("GPU-0000000", None, "UUID prefix 'GPU-0000000' matches 4 GPUs"),
        ("GPU-ffff", None, "no GPU has UUID 'GPU-ffff'"),
        ("cuda:2", "1,3", "'cuda:2' is not a visible CUDA device (CUDA_VISIBLE_DEVICES='1,3', 2 visible)"),
        ("x", None, "'x' is not a GPU index, UUID or cuda:N"),
        ("0,,1", None, "empty entry in GPU list"),
        (None, "", "CUDA_VISIBLE_DEVICES hides every GPU"),
        (None, "MIG-0a1b", "MIG instances are not supported"),
    ],
)
def test_resolve_errors(four: FakeNvml, spec: str | None, cvd: str | None, message: str) -> None:
    env = {} if cvd is None else {"CUDA_VISIBLE_DEVICES": cvd}
    with pytest.raises(InputError) as exc:
        resolve_gpus(four, spec, env=env)
    assert message in str(exc.value)


def test_actuator_for_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    from biscale.gpu.nvml import NvmlActuator

    fake = FakeNvml(state=default_state(4))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{uuid(3)},{uuid(1)}")
    with NvmlActuator.for_selection("cuda:0", fake) as act:
        assert act.gpus == (3,)
        act.set_clock(act.gpus, 990)
        assert [g["locked_mhz"] for g in fake.snapshot()["gpus"]] == [None, None, None, [990, 990]]
    with NvmlActuator.for_selection(None, fake) as act:
        assert act.gpus == (3, 1)
