"""One error root: every deliberate error is a BiscaleError and keeps the built-in base it had."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from biscale.errors import (
    BiscaleError,
    ControlSuspendedError,
    InputError,
    NoGpuError,
    NvmlCallError,
    PermissionRequiredError,
)
from biscale.sim import SimConfig
from biscale.sim.runconfig import load_simulate_config


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (InputError, ValueError),
        (PermissionRequiredError, RuntimeError),
        (NoGpuError, RuntimeError),
        (NvmlCallError, RuntimeError),
        (ControlSuspendedError, RuntimeError),
    ],
)
def test_every_error_has_the_root_and_its_builtin_base(cls: type, builtin: type) -> None:
    assert issubclass(cls, BiscaleError) and issubclass(cls, builtin)


def test_nvml_call_error_message() -> None:
    err = NvmlCallError("nvmlDeviceSetGpuLockedClocks", 3, 999, "NVML_ERROR_UNKNOWN", 4)
    assert str(err) == "nvmlDeviceSetGpuLockedClocks on GPU 3 failed 4 time(s): NVML_ERROR_UNKNOWN"
    assert (err.fn, err.gpu, err.code, err.attempts) == ("nvmlDeviceSetGpuLockedClocks", 3, 999, 4)


def test_configuration_errors_name_the_field() -> None:
    with pytest.raises(ValidationError):  # the model itself: pydantic's error (a ValueError)
        SimConfig(decode_max_batch=0)
    with pytest.raises(
        InputError, match=r"^field 'sim\.decode_max_batch': Input should be greater than or equal to 1 \(got 0\)$"
    ):
        load_simulate_config(
            None, {"trace": "azure-conv", "placement": "prefill:TP2,decode:TP4", "sim.decode_max_batch": 0}
        )
    with pytest.raises(InputError, match=r"^field 'sim\.slo\.percentile': Input should be less than or equal to 100"):
        load_simulate_config(None, {"trace": "t", "placement": "p", "sim.slo.percentile": 150})
