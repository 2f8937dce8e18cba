"""The hardware model: what one prefill or decode iteration of an LLM costs on a GPU at a given SM clock.

``get_hardware(gpu, model)`` returns the calibrated roofline model (ground truth for the simulator);
``list_hardware()`` lists the available pairs. The cost-model protocol and batch shapes it implements live in
:mod:`biscale.costmodel`. See docs/hardware.md.
"""

from biscale.hardware.base import HardwareModel
from biscale.hardware.registry import get_hardware, list_hardware
from biscale.hardware.roofline import RooflineHardwareModel

__all__ = ["HardwareModel", "RooflineHardwareModel", "get_hardware", "list_hardware"]
