"""biscale: two-tier GPU energy optimisation for prefill/decode-disaggregated LLM serving.

Tier 1 plans placement (instance counts, TP degree, baseline SM clock) every few minutes; tier 2 sets each
GPU's SM clock every iteration. See ``docs/`` for the hardware model, workloads, simulator, predictors and
the real-GPU control plane.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("biscale")
    """The installed distribution's version (recorded in every output folder)."""
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"
