"""NVML actuator on the fake: set/reset, refusal of unsupported clocks, retries, suspension, dwell, non-blocking."""

from __future__ import annotations

import logging
import threading

import pynvml
import pytest

from biscale.actuator import ClockActuator
from biscale.errors import ControlSuspendedError, InputError, NoGpuError, NvmlCallError, PermissionRequiredError
from biscale.gpu.fake_nvml import FORBIDDEN_SETTERS, FakeNvml, default_state
from biscale.gpu.nvml import NvmlActuator, nearest_clocks

SET = "nvmlDeviceSetGpuLockedClocks"
RESET = "nvmlDeviceResetGpuLockedClocks"


def locked(fake: FakeNvml) -> list[list[int] | None]:
    return [g["locked_mhz"] for g in fake.snapshot()["gpus"]]


def test_is_a_clock_actuator(fake: FakeNvml) -> None:
    with NvmlActuator(fake) as act:
        assert isinstance(act, ClockActuator)
        assert act.gpus == (0, 1)


def test_supported_clocks_are_ascending_and_common_to_the_group(fake: FakeNvml) -> None:
    fake.update(lambda st: st["gpus"][1].__setitem__("graphics_clocks_mhz", list(range(1800, 599, -15))))
    with NvmlActuator(fake) as act:
        one = act.supported_clocks_mhz([0])
        both = act.supported_clocks_mhz([0, 1])
    assert one == tuple(range(345, 1981, 15))
    assert both == tuple(range(600, 1801, 15))


def test_set_locks_every_gpu_of_the_group_and_reset_unlocks(fake: FakeNvml) -> None:
    act = NvmlActuator(fake)
    act.set_clock([0, 1], 990)
    assert locked(fake) == [[990, 990], [990, 990]]
    assert act.current_clock_mhz([0, 1]) == {0: 990, 1: 990}
    assert sorted((c["gpu"], c["args"]) for c in fake.calls(SET)) == [(0, [990, 990]), (1, [990, 990])]
    rb = act.read_back()
    assert [(r.gpu, r.requested_mhz, r.applied_mhz) for r in rb] == [(0, 990, 990), (1, 990, 990)]
    act.reset([0, 1])
    assert locked(fake) == [None, None]
    assert act.current_clock_mhz([0, 1]) == {0: None, 1: None}
    act.close()
    assert len(fake.calls(RESET)) == 2  # close had nothing left to restore


def test_repeating_the_current_clock_is_a_no_op(fake: FakeNvml) -> None:
    with NvmlActuator(fake) as act:
        act.set_clock([0], 1200)
        act.set_clock([0], 1200)
        assert act.switches == 1
    assert len(fake.calls(SET)) == 1


def test_group_switch_runs_in_parallel(fake: FakeNvml) -> None:
    """All four set calls are in flight at once: each waits at a barrier for the other three (one after the other,
    the first would wait alone and the barrier break), and the most calls seen inside NVML together is 4."""
    orig = fake.nvmlDeviceSetGpuLockedClocks
    barrier = threading.Barrier(4, timeout=10)
    inside = [0, 0]  # now, most
    count = threading.Lock()

    def meeting_set(h: object, lo: int, hi: int) -> None:
        with count:
            inside[0] += 1
            inside[1] = max(inside)
        barrier.wait()  # BrokenBarrierError (the set fails) unless all four calls run together
        with count:
            inside[0] -= 1
        orig(h, lo, hi)  # type: ignore[arg-type]

    fake.nvmlDeviceSetGpuLockedClocks = meeting_set  # type: ignore[method-assign]
    fake.update(lambda st: st["gpus"].extend(default_state(4)["gpus"][2:]))
    with NvmlActuator(fake, retries=0) as act:
        act.set_clock([0, 1, 2, 3], 990)
        assert not barrier.broken and inside[1] == 4
        assert act.current_clock_mhz([0, 1, 2, 3]) == dict.fromkeys(range(4), 990)


def test_unsupported_clock_is_refused_with_the_nearest_supported_ones(fake: FakeNvml) -> None:
    with NvmlActuator(fake) as act:
        with pytest.raises(InputError) as exc:
            act.set_clock([0, 1], 1000)
        assert isinstance(exc.value, ValueError)
        msg = str(exc.value)
        assert "1000 MHz is not supported" in msg
        assert "nearest supported: 990, 1005 MHz" in msg
        assert "range 345-1980 MHz" in msg
        with pytest.raises(InputError, match="nearest supported: 1980 MHz"):
            act.set_clock([0], 2100)
        with pytest.raises(InputError, match="nearest supported: 345 MHz"):
            act.set_clock([0], 100)
    assert fake.calls(SET) == []


def test_nearest_clocks() -> None:
    assert nearest_clocks([100, 200, 300], 250) == (200, 300)
    assert nearest_clocks([100, 200, 300], 50) == (100,)
    assert nearest_clocks([100, 200, 300], 400) == (300,)


def test_unknown_gpu_in_group_is_refused(fake: FakeNvml) -> None:
    with NvmlActuator(fake, [0]) as act, pytest.raises(ValueError, match=r"GPU 1 is not managed"):
        act.set_clock([0, 1], 990)


def test_non_root_gets_a_clear_permission_error_and_nothing_is_left_locked(fake: FakeNvml) -> None:
    fake.update(lambda st: st.__setitem__("root", False))
    with NvmlActuator(fake) as act:
        with pytest.raises(PermissionRequiredError, match="root or the CAP_SYS_ADMIN capability"):
            act.set_clock([0, 1], 990)
        assert act.restore("x") == []  # nothing was locked, nothing to restore
        with pytest.raises(PermissionRequiredError, match="nvmlDeviceResetGpuLockedClocks"):
            act.reset([0])
        # read-only paths still work
        assert act.supported_clocks_mhz([0])[-1] == 1980
        assert act.read_back([0])[0].applied_mhz == 1980
    assert locked(fake) == [None, None]


# ------------------------------------------------------------------------------ each NVML call failing
UNKNOWN = pynvml.NVML_ERROR_UNKNOWN


@pytest.mark.parametrize("fn", ["nvmlInit", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetUUID"])
def test_failures_while_opening_raise_no_gpu_error(fake: FakeNvml, fn: str) -> None:
    fake.add_fault(fn, UNKNOWN)
    with pytest.raises(NoGpuError, match="Unknown Error"):
        NvmlActuator(fake)
    assert fake.calls(SET) == []


def test_missing_library_is_no_gpu_error(fake: FakeNvml) -> None:
    fake.update(lambda st: st.__setitem__("library_present", False))
    with pytest.raises(NoGpuError, match="no NVIDIA driver or NVML library found"):
        NvmlActuator(fake)


@pytest.mark.parametrize("fn", ["nvmlDeviceGetSupportedMemoryClocks", "nvmlDeviceGetSupportedGraphicsClocks"])
def test_failing_clock_list_refuses_to_set_anything(fake: FakeNvml, fn: str) -> None:
    fake.add_fault(fn, UNKNOWN)
    with NvmlActuator(fake, retries=2, retry_delay_s=0) as act:
        with pytest.raises(NvmlCallError, match=f"{fn} on GPU 0 failed 3 time"):
            act.set_clock([0], 990)
        assert not act.suspended
    assert fake.calls(SET) == []
    assert fake.snapshot()["counts"][fn] == 3


def test_transient_set_failure_is_retried(fake: FakeNvml) -> None:
    fake.add_fault(SET, pynvml.NVML_ERROR_TIMEOUT, start=1, count=2, gpu=1)
    with NvmlActuator(fake, retries=2, retry_delay_s=0) as act:
        act.set_clock([0, 1], 990)
        assert not act.suspended
        assert locked(fake) == [[990, 990], [990, 990]]
    errors = [c["error"] for c in fake.calls(SET) if c["gpu"] == 1]
    assert errors == [pynvml.NVML_ERROR_TIMEOUT, pynvml.NVML_ERROR_TIMEOUT, None]


def test_persistent_set_failure_restores_and_suspends(fake: FakeNvml, caplog: pytest.LogCaptureFixture) -> None:
    fake.add_fault(SET, UNKNOWN, gpu=1)
    caplog.set_level(logging.ERROR, logger="biscale.gpu")
    with NvmlActuator(fake, retries=3, retry_delay_s=0) as act:
        with pytest.raises(ControlSuspendedError, match="control suspended"):
            act.set_clock([0, 1], 990)
        assert act.suspended
        assert "nvmlDeviceSetGpuLockedClocks on GPU 1 failed 4 time(s)" in str(act.suspended_reason)
        assert locked(fake) == [None, None]  # GPU 0 had been locked: restored
        assert sorted(g for g, _ in act.restores) == [0, 1]
        assert {r for _, r in act.restores} == {"nvml_error"}
        with pytest.raises(ControlSuspendedError, match="suspended"):
            act.set_clock([0], 1200)
        act.resume()
        fake.update(lambda st: st.__setitem__("faults", []))
        act.set_clock([0], 1200)
        assert locked(fake)[0] == [1200, 1200]
    assert len([c for c in fake.calls(SET) if c["gpu"] == 1 and c["error"] == UNKNOWN]) == 4
    assert any("suspending clock control" in r.getMessage() for r in caplog.records)


def test_non_retriable_error_is_not_retried(fake: FakeNvml) -> None:
    fake.add_fault(SET, pynvml.NVML_ERROR_NOT_SUPPORTED)
    with NvmlActuator(fake, retries=5, retry_delay_s=0) as act, pytest.raises(ControlSuspendedError):
        act.set_clock([0], 990)
    assert len(fake.calls(SET)) == 1


def test_failing_reset_raises_after_trying_every_gpu(fake: FakeNvml, caplog: pytest.LogCaptureFixture) -> None:
    act = NvmlActuator(fake, retries=1, retry_delay_s=0)
    act.set_clock([0, 1], 990)
    fake.add_fault(RESET, UNKNOWN, gpu=0)
    with pytest.raises(NvmlCallError, match="nvmlDeviceResetGpuLockedClocks on GPU 0"):
        act.reset([0, 1])
    assert locked(fake) == [[990, 990], None]  # GPU 1 was still reset
    caplog.set_level(logging.ERROR, logger="biscale.gpu")
    act.close()  # never raises; logs that GPU 0 may still be locked
    assert any("may still be locked" in r.getMessage() for r in caplog.records)


def test_failing_read_back_does_not_suspend(fake: FakeNvml) -> None:
    fake.add_fault("nvmlDeviceGetClockInfo", UNKNOWN)
    with NvmlActuator(fake, retries=0) as act:
        act.set_clock([0], 990)
        with pytest.raises(NvmlCallError, match="nvmlDeviceGetClockInfo"):
            act.read_back([0])
        assert not act.suspended


def test_reasons_fall_back_to_the_old_throttle_query(fake: FakeNvml) -> None:
    fake.add_fault("nvmlDeviceGetCurrentClocksEventReasons", pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    fake.update(lambda st: st["gpus"][0].__setitem__("clock_cap_mhz", 900))
    with NvmlActuator(fake) as act:
        act.set_clock([0], 1500)
        (rb,) = act.read_back([0])
    assert (rb.requested_mhz, rb.applied_mhz) == (1500, 900)  # throttled below the request
    assert rb.reason_names == ("SwPowerCap",)
    assert len(fake.calls("nvmlDeviceGetCurrentClocksThrottleReasons")) == 1


def test_failing_shutdown_is_only_logged(fake: FakeNvml) -> None:
    fake.add_fault("nvmlShutdown", UNKNOWN)
    act = NvmlActuator(fake)
    act.set_clock([0], 990)
    act.close()
    assert locked(fake) == [None, None]


# ----------------------------------------------------------------------------------- dwell, non-blocking
def test_min_dwell_spaces_switches(fake: FakeNvml) -> None:
    with NvmlActuator(fake, min_dwell_s=0.25) as act:
        act.set_clock([0], 990)
        act.set_clock([0], 1200)
    times = [c["t"] for c in fake.calls(SET)]
    assert times[1] - times[0] >= 0.24


def test_non_blocking_applies_latest_and_drops_stale(fake: FakeNvml) -> None:
    with NvmlActuator(fake, min_dwell_s=0.3) as act:
        act.request_clock([0, 1], 990)
        assert act.flush(10)
        for mhz in (1005, 1020, 1035):
            act.request_clock([0, 1], mhz)
        assert act.flush(10)
        assert act.requests_dropped == 2
        assert act.requests_applied == 2
        assert locked(fake) == [[1035, 1035], [1035, 1035]]
    per_gpu0 = [c["args"][0] for c in fake.calls(SET) if c["gpu"] == 0]
    assert per_gpu0 == [990, 1035]


def test_non_blocking_never_raises_for_hardware_failure(fake: FakeNvml) -> None:
    fake.add_fault(SET, UNKNOWN)
    with NvmlActuator(fake, retries=0) as act:
        act.request_clock([0], 990)
        assert act.flush(10)
        assert act.suspended
        act.request_clock([0], 1200)  # still no exception: dropped by the suspended actuator
        assert act.flush(10)
    assert locked(fake) == [None, None]


def test_non_blocking_still_validates_the_clock(fake: FakeNvml) -> None:
    with NvmlActuator(fake) as act, pytest.raises(InputError):
        act.request_clock([0], 999)


def test_context_manager_restores_on_exception(fake: FakeNvml) -> None:
    with pytest.raises(RuntimeError, match="boom"), NvmlActuator(fake) as act:
        act.set_clock([0, 1], 990)
        raise RuntimeError("boom")
    assert locked(fake) == [None, None]
    assert {r for _, r in act.restores} == {"exception"}


def test_never_touches_power_limits_persistence_or_compute_mode(fake: FakeNvml) -> None:
    with NvmlActuator(fake, min_dwell_s=0.0) as act:
        act.set_clock([0, 1], 990)
        act.read_back()
        act.request_clock([0], 1200)
        act.flush()
        act.reset([0, 1])
        act.set_clock([1], 345)
    names = {c["fn"] for c in fake.calls()}
    assert not names & set(FORBIDDEN_SETTERS)
    assert {n for n in names if "Set" in n or "Reset" in n} == {SET, RESET}
