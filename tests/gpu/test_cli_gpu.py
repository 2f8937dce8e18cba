"""``biscale gpu`` commands in-process on the fake NVML: output, exit codes, error messages."""

from __future__ import annotations

import ctypes.util
import json
import signal
from pathlib import Path

import pytest

from biscale.gpu.fake_nvml import FAKE_ENV, FORBIDDEN_SETTERS, default_state, read_state, write_state


def set_root(path: Path, root: bool) -> None:
    st = read_state(path)
    st["root"] = root
    write_state(path, st)


def test_status_json(run_cli, fake_file: Path) -> None:
    res = run_cli("gpu", "status", "--json")
    assert res.code == 0, res.err
    obj = json.loads(res.out)
    assert obj["gpus_total"] == 2
    g = obj["gpus"][1]
    assert g["gpu"] == 1 and g["uuid"].startswith("GPU-00000001")
    assert (g["supported_min_sm_clock_mhz"], g["supported_max_sm_clock_mhz"]) == (345, 1980)
    assert g["supported_sm_clocks_count"] == 110 and g["supported_sm_clock_step_mhz"] == 15
    assert g["sm_clock_mhz"] == 1980 and g["mem_clock_mhz"] == 2619
    assert g["power_w"] == pytest.approx(450.0)
    assert g["energy_counter_j"] >= 0
    assert g["clock_event_reasons"] == []
    numeric = [k for k, v in g.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    unitless = {"gpu", "supported_sm_clocks_count", "clock_event_reasons_mask"}
    assert all(k.endswith(("_mhz", "_w", "_j")) for k in numeric if k not in unitless)


def test_status_works_without_root_and_shows_throttle_reasons(run_cli, fake_file: Path) -> None:
    st = read_state(fake_file)
    st["root"] = False
    st["gpus"][0]["clock_event_reasons"] = 0x1 | 0x40  # GpuIdle | HwThermalSlowdown
    write_state(fake_file, st)
    res = run_cli("gpu", "status", "--json", "--gpus", "0")
    assert res.code == 0, res.err
    assert json.loads(res.out)["gpus"][0]["clock_event_reasons"] == ["GpuIdle", "HwThermalSlowdown"]
    table = run_cli("gpu", "status")
    assert table.code == 0 and "GpuIdle" in table.out


def test_lock_for_a_duration_then_restore(run_cli, fake_file: Path) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    res = run_cli("gpu", "lock", "--clock", "1500", "--gpus", "1", "--duration-s", "0.2", "--json")
    assert res.code == 0, res.err
    obj = json.loads(res.out)
    assert obj["requested_sm_clock_mhz"] == 1500
    assert obj["held_s"] >= 0.19
    assert obj["gpus"] == [
        {"gpu": 1, "uuid": obj["gpus"][0]["uuid"], "applied_sm_clock_mhz": 1500, "clock_event_reasons": []}
    ]
    assert obj["restores"] == [{"gpu": 1, "reason": "exit"}]
    st = read_state(fake_file)
    assert [g["locked_mhz"] for g in st["gpus"]] == [None, None]
    assert [c["args"] for c in st["calls"] if c["fn"] == "nvmlDeviceSetGpuLockedClocks"] == [[1500, 1500]]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before  # handlers put back


def test_lock_refuses_unsupported_clock_before_touching_anything(run_cli, fake_file: Path) -> None:
    res = run_cli("gpu", "lock", "--clock", "1001", "--duration-s", "0")
    assert res.code == 2
    assert res.err.strip() == (
        "biscale: error: SM clock 1001 MHz is not supported by GPU(s) 0, 1 "
        "(nearest supported: 990, 1005 MHz; range 345-1980 MHz)"
    )
    assert not [c for c in read_state(fake_file)["calls"] if "Locked" in c["fn"]]


@pytest.mark.parametrize("args", [("lock", "--clock", "990", "--duration-s", "0"), ("reset",)])
def test_non_root_gets_exit_2_and_says_what_is_needed(run_cli, fake_file: Path, args: tuple[str, ...]) -> None:
    set_root(fake_file, False)
    res = run_cli("gpu", *args)
    assert res.code == 2
    line = [ln for ln in res.err.splitlines() if ln.startswith("biscale: error:")]
    assert len(line) == 1
    assert "was refused: setting GPU clocks needs root or the CAP_SYS_ADMIN capability" in line[0]
    assert "Traceback" not in res.err


def test_reset(run_cli, fake_file: Path) -> None:
    st = read_state(fake_file)
    st["gpus"][0]["locked_mhz"] = [990, 990]  # left locked by someone else
    write_state(fake_file, st)
    res = run_cli("gpu", "reset", "--gpus", "0", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out) == {"reset_gpus": [0], "gpus_total": 1}
    assert read_state(fake_file)["gpus"][0]["locked_mhz"] is None


def test_no_nvml_library_is_exit_2(run_cli, fake_file: Path) -> None:
    st = read_state(fake_file)
    st["library_present"] = False
    write_state(fake_file, st)
    for cmd in (("status",), ("watch", "--count", "1"), ("lock", "--clock", "990"), ("reset",)):
        res = run_cli("gpu", *cmd)
        assert res.code == 2
        assert "no NVIDIA driver or NVML library found" in res.err


def test_no_gpu_is_exit_2(run_cli, fake_file: Path) -> None:
    write_state(fake_file, default_state(0))
    res = run_cli("gpu", "status")
    assert (res.code, res.err.strip()) == (2, "biscale: error: NVML found no GPU on this machine")


def test_real_binding_path_on_this_machine(run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the fake the real pynvml is used: here (no GPU in CI) that must be a clean exit 2, not a traceback.
    monkeypatch.delenv(FAKE_ENV, raising=False)
    res = run_cli("gpu", "status", "--json")
    if ctypes.util.find_library("nvidia-ml") is None:
        assert res.code == 2
        assert "no NVIDIA driver or NVML library found" in res.err
    else:  # a GPU machine: the read-only path must work
        assert res.code == 0 and json.loads(res.out)["gpus_total"] >= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("status", "--gpus", "5"), "field '--gpus': GPU index 5 does not exist"),
        (("lock", "--clock", "990", "--watchdog-s", "0"), "field '--watchdog-s': must be > 0"),
        (("watch", "--interval-s", "0"), "field '--interval-s': must be > 0"),
        (("watch", "--count", "0"), "field '--count': must be >= 1"),
        (("export", "--port", "70000"), "field '--port': 70000 is not a TCP port"),
    ],
)
def test_bad_options(run_cli, fake_file: Path, args: tuple[str, ...], message: str) -> None:
    res = run_cli("gpu", *args)
    assert res.code == 2
    assert message in res.err


def test_cuda_visible_devices_selects_by_uuid(run_cli, fake_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-00000001")
    res = run_cli("gpu", "status", "--json")
    assert [g["gpu"] for g in json.loads(res.out)["gpus"]] == [1]


def test_watch_counts_samples(run_cli, fake_file: Path) -> None:
    res = run_cli("gpu", "watch", "--count", "3", "--interval-s", "0.05", "--json")
    assert res.code == 0, res.err
    obj = json.loads(res.out)
    assert obj["samples_total"] == 3 and len(obj["samples"]) == 3
    ts = [s["t_s"] for s in obj["samples"]]
    assert ts == sorted(ts) and ts[-1] - ts[0] >= 0.09
    e = [s["gpus"][0]["energy_j"] for s in obj["samples"]]
    assert e[0] <= e[1] <= e[2] and e[2] > 0
    plain = run_cli("gpu", "watch", "--count", "1")
    assert plain.code == 0 and "SM MHz" in plain.out


def test_export_serves_then_stops(run_cli, fake_file: Path) -> None:
    res = run_cli("gpu", "export", "--port", "0", "--duration-s", "0.2")
    assert res.code == 0, res.err
    assert "serving Prometheus metrics on http://127.0.0.1:" in res.err


def test_cli_never_calls_forbidden_setters(run_cli, fake_file: Path) -> None:
    run_cli("gpu", "status")
    run_cli("gpu", "lock", "--clock", "990", "--duration-s", "0.05")
    run_cli("gpu", "watch", "--count", "1")
    run_cli("gpu", "reset")
    names = {c["fn"] for c in read_state(fake_file)["calls"]}
    assert not names & set(FORBIDDEN_SETTERS)
    assert {n for n in names if "Set" in n or "Reset" in n} == {
        "nvmlDeviceSetGpuLockedClocks",
        "nvmlDeviceResetGpuLockedClocks",
    }


def test_lock_exits_1_when_nvml_keeps_failing(run_cli, fake_file: Path) -> None:
    st = read_state(fake_file)
    st["faults"] = [{"fn": "nvmlDeviceSetGpuLockedClocks", "code": 999, "start": 1, "count": None, "gpu": 1}]
    write_state(fake_file, st)
    res = run_cli("gpu", "lock", "--clock", "990", "--duration-s", "1")
    assert res.code == 1
    assert "control suspended" in res.err and "nvmlDeviceSetGpuLockedClocks on GPU 1 failed 3 time(s)" in res.err
    assert [g["locked_mhz"] for g in read_state(fake_file)["gpus"]] == [None, None]


def test_lock_refuses_to_run_unguarded_when_the_guard_fails(run_cli, fake_file: Path) -> None:
    st = read_state(fake_file)
    # nvmlInit calls: 1 = GPU selection, 2 = actuator, 3 = the guard process
    st["faults"] = [{"fn": "nvmlInit", "code": 999, "start": 3, "count": 1, "gpu": None}]
    write_state(fake_file, st)
    res = run_cli("gpu", "lock", "--clock", "990", "--guard", "--duration-s", "0")
    assert res.code == 1
    assert "biscale: error: guard process did not start" in res.err
    assert not [c for c in read_state(fake_file)["calls"] if c["fn"] == "nvmlDeviceSetGpuLockedClocks"]


def test_nvml_query_failure_is_one_line_exit_2(run_cli, fake_file: Path) -> None:
    st = read_state(fake_file)
    st["faults"] = [{"fn": "nvmlDeviceGetUUID", "code": 15, "start": 1, "count": None, "gpu": 1}]  # GPU lost
    write_state(fake_file, st)
    res = run_cli("gpu", "status")
    assert (res.code, res.err.strip()) == (2, "biscale: error: NVML query failed: GPU is lost")


def test_guard_takes_over_when_our_restore_fails(run_cli, fake_file: Path) -> None:
    st = read_state(fake_file)
    # the lock process's own resets fail (1 try + 2 retries per GPU); the guard's later attempts succeed
    st["faults"] = [{"fn": "nvmlDeviceResetGpuLockedClocks", "code": 999, "start": 1, "count": 6, "gpu": None}]
    write_state(fake_file, st)
    res = run_cli("gpu", "lock", "--clock", "990", "--guard", "--duration-s", "0")
    assert res.code == 0, res.err
    assert "may still be locked" in res.err
    st = read_state(fake_file)
    assert [g["locked_mhz"] for g in st["gpus"]] == [None, None]
    ok = [c for c in st["calls"] if c["fn"] == "nvmlDeviceResetGpuLockedClocks" and c["error"] is None]
    assert len(ok) == 2 and len({c["pid"] for c in ok}) == 1
