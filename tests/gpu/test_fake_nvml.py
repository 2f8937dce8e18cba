"""The fake NVML itself: shared device-wide state, call log, fault injection, pynvml compatibility."""

from __future__ import annotations

from pathlib import Path

import pynvml
import pytest

from biscale.gpu.fake_nvml import FakeNvml, default_state, h100_clocks_mhz, read_state, write_state


def test_same_error_class_and_constants_as_pynvml() -> None:
    f = FakeNvml(state=default_state(1))
    assert f.NVMLError is pynvml.NVMLError
    assert f.NVML_ERROR_NO_PERMISSION == pynvml.NVML_ERROR_NO_PERMISSION
    assert f.nvmlClocksEventReasonSwPowerCap == pynvml.nvmlClocksEventReasonSwPowerCap
    with pytest.raises(pynvml.NVMLError) as exc:
        f.nvmlDeviceGetCount()  # before nvmlInit, as the real library
    assert exc.value.value == pynvml.NVML_ERROR_UNINITIALIZED
    assert isinstance(exc.value, pynvml.NVMLError_Uninitialized)


def test_h100_clock_table() -> None:
    clocks = h100_clocks_mhz()
    assert clocks[0] == 1980 and clocks[-1] == 345 and len(clocks) == 110


def test_state_file_is_shared_between_instances(tmp_path: Path) -> None:
    path = write_state(tmp_path / "s.json", default_state(2))
    a, b = FakeNvml(path), FakeNvml(path)
    a.nvmlInit()
    b.nvmlInit()
    a.nvmlDeviceSetGpuLockedClocks(a.nvmlDeviceGetHandleByIndex(1), 990, 990)
    h = b.nvmlDeviceGetHandleByUUID(b.nvmlDeviceGetUUID(b.nvmlDeviceGetHandleByIndex(1)))
    assert b.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM) == 990  # device-wide, like a real GPU
    b.nvmlDeviceResetGpuLockedClocks(h)
    assert read_state(path)["gpus"][1]["locked_mhz"] is None
    assert [c["fn"] for c in a.calls() if "Locked" in c["fn"]] == [
        "nvmlDeviceSetGpuLockedClocks",
        "nvmlDeviceResetGpuLockedClocks",
    ]


def test_fault_window_and_per_gpu_faults() -> None:
    f = FakeNvml(state=default_state(2))
    f.nvmlInit()
    f.add_fault("nvmlDeviceGetPowerUsage", pynvml.NVML_ERROR_TIMEOUT, start=2, count=2)
    h0, h1 = f.nvmlDeviceGetHandleByIndex(0), f.nvmlDeviceGetHandleByIndex(1)
    outcomes = []
    for _ in range(5):
        try:
            f.nvmlDeviceGetPowerUsage(h0)
            outcomes.append("ok")
        except pynvml.NVMLError as err:
            outcomes.append(err.value)
    assert outcomes == ["ok", 10, 10, "ok", "ok"]
    f.add_fault("nvmlDeviceGetName", pynvml.NVML_ERROR_GPU_IS_LOST, gpu=1)
    assert f.nvmlDeviceGetName(h0).startswith("NVIDIA H100")
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        f.nvmlDeviceGetName(h1)
    assert [c["error"] for c in f.calls("nvmlDeviceGetName")] == [None, pynvml.NVML_ERROR_GPU_IS_LOST]


def test_non_root_and_invalid_lock_arguments() -> None:
    f = FakeNvml(state=default_state(1, root=False))
    f.nvmlInit()
    h = f.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NoPermission):
        f.nvmlDeviceSetGpuLockedClocks(h, 990, 990)
    with pytest.raises(pynvml.NVMLError_NoPermission):
        f.nvmlDeviceResetGpuLockedClocks(h)
    f.update(lambda st: st.__setitem__("root", True))
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        f.nvmlDeviceSetGpuLockedClocks(h, 1200, 990)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        f.nvmlDeviceGetHandleByIndex(3)
    with pytest.raises(pynvml.NVMLError_NotFound):
        f.nvmlDeviceGetHandleByUUID("GPU-nope")


def test_unknown_and_forbidden_functions_are_recorded() -> None:
    f = FakeNvml(state=default_state(1))
    f.nvmlInit()
    h = f.nvmlDeviceGetHandleByIndex(0)
    f.nvmlDeviceSetPowerManagementLimit(h, 300_000)
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        f.nvmlDeviceGetSomethingNew(h)
    assert [c["fn"] for c in f.calls()][-2:] == ["nvmlDeviceSetPowerManagementLimit", "nvmlDeviceGetSomethingNew"]
    assert f.calls("nvmlDeviceSetPowerManagementLimit")[0]["args"] == [300_000]
    with pytest.raises(AttributeError):
        _ = f.not_an_nvml_name
