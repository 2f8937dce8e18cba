"""Cost models the simulator can price iterations with, by name (``--cost-model``, ``cost_model`` in a run
configuration). Each entry is a factory ``(gpu, model) -> CostModel``; implementations load lazily.

* ``hardware``: the calibrated hardware model, the ground truth (evaluation runs);
* ``predictor``: the bundled learned predictors, what controllers believe (e.g. the planner's capacity search).
"""

from __future__ import annotations

from collections.abc import Callable

from biscale.costmodel import CostModel
from biscale.registry import Registry

#: Registry: name -> ``(gpu, model) -> CostModel``.
COST_MODELS: Registry[Callable[[str, str], CostModel]] = Registry("cost model", field="cost_model")


@COST_MODELS.register("hardware", "the calibrated hardware model (ground truth)")
def hardware_cost_model(gpu: str, model: str) -> CostModel:
    from biscale.hardware import get_hardware

    return get_hardware(gpu, model)


@COST_MODELS.register("predictor", "the bundled learned predictors (what controllers believe)")
def predictor_cost_model(gpu: str, model: str) -> CostModel:
    from biscale.predict import PredictorCostModel, default_predictor

    return PredictorCostModel(default_predictor(gpu, model))
