"""The hardware model: what one prefill or decode iteration of an LLM costs on a GPU at a given SM clock.

``get_hardware(gpu, model)`` returns the calibrated roofline model (ground truth for the simulator);
``list_hardware()`` lists the available pairs; ``experimental_reason(gpu)`` says why a GPU's model is not
calibrated on its own measurements (None if it is). The cost-model protocol and batch shapes it implements live
in :mod:`biscale.costmodel`. See docs/hardware.md.
"""

from biscale.hardware.base import HardwareModel
from biscale.hardware.registry import experimental_reason, get_hardware, list_hardware
from biscale.hardware.roofline import RooflineHardwareModel

__all__ = ["HardwareModel", "RooflineHardwareModel", "experimental_reason", "get_hardware", "list_hardware"]
