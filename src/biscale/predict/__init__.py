"""Learned latency and power predictors: profile format, profilers, fitting, and the query API controllers use.

``load_predictor(dir)`` / ``default_predictor(gpu, model)`` give a :class:`Predictor` that evaluates K batches x N
clocks in one call; :class:`PredictorCostModel` lets the simulator run on these beliefs. See docs/profiling.md.
"""

from biscale.predict.costmodel import PredictorCostModel
from biscale.predict.fit import BARS_PCT, PREDICTORS, FitResult, fit_predictor, fit_profile_file, mape_pct
from biscale.predict.predictor import Prediction, Predictor, bundled_artifact_dir, default_predictor, load_predictor
from biscale.predict.schema import ProfileMeta, read_meta, read_profile, validate_profile, write_profile

__all__ = [
    "BARS_PCT",
    "PREDICTORS",
    "FitResult",
    "Prediction",
    "Predictor",
    "PredictorCostModel",
    "ProfileMeta",
    "bundled_artifact_dir",
    "default_predictor",
    "fit_predictor",
    "fit_profile_file",
    "load_predictor",
    "mape_pct",
    "read_meta",
    "read_profile",
    "validate_profile",
    "write_profile",
]
