"""Fixtures for the predictor tests: one small simulated profile of the real hardware model, fitted once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from biscale.hardware import get_hardware
from biscale.hardware.base import HardwareModel
from biscale.predict.fit import FitResult, fit_profile_file
from biscale.predict.profilers import load_length_mix
from biscale.predict.profilers.sim import SimProfileConfig, default_clocks, simulate_profile
from biscale.predict.schema import ProfileMeta, write_profile

GPU, MODEL = "h100-sxm", "llama-3.3-70b"


@dataclass
class Fitted:
    hw: HardwareModel
    profile: Path
    frame: pd.DataFrame
    meta: ProfileMeta
    result: FitResult
    artifact: Path


@pytest.fixture(scope="session")
def hw() -> HardwareModel:
    return get_hardware(GPU, MODEL)


@pytest.fixture(scope="session")
def fitted(tmp_path_factory: pytest.TempPathFactory, hw: HardwareModel) -> Fitted:
    """A 9-clock x 3-TP simulated profile (40 shapes per phase and TP), written to CSV and fitted (with baseline)."""
    d = tmp_path_factory.mktemp("predict")
    inputs, outputs, _ = load_length_mix("sharegpt-v3")
    cfg = SimProfileConfig(
        tps=(2, 4, 8), clocks_mhz=default_clocks(hw.supported_clocks_mhz, count=9), shapes_per_tp=40, seed=7
    )
    df, meta = simulate_profile(hw, cfg, inputs, outputs)
    path = write_profile(df, d / "profile.csv", meta)
    result = fit_profile_file(path, seed=3, baseline=True)
    art = result.predictor.save(d / "artifact")
    return Fitted(hw, path, df, meta, result, art)
