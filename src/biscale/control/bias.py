"""Online correction of the predictor's latency bias, per instance, from the latencies the engine reports.

A learned predictor is fitted offline; the GPU it runs on may be slower or faster (another board, temperature,
driver, a different kernel mix). Each controller remembers what it predicted for the iteration it just clocked;
at its next decision the engine's ``state.recent_latencies_s[-1]`` is that iteration's measured latency. The log of
measured / predicted is averaged with an exponentially weighted moving average, and every later prediction is
multiplied by ``exp(average)``. A multiplicative bias of ``b`` is learned to within 1 % after about
``log(100 log b) / -log(1 - alpha)`` iterations (alpha = 0.2: 13 iterations for a 20 % bias).

Iterations during which a clock switch was in flight (they ran partly at another clock) and iterations the
controller did not see start are skipped: their latency does not measure the prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from biscale.control.state import InstanceState

DEFAULT_ALPHA = 0.2
"""EWMA weight of the newest measurement."""
MAX_LOG_BIAS = math.log(3.0)
"""The correction is clamped to [1/3, 3]: a larger gap means a wrong predictor, not a bias."""


@dataclass(slots=True)
class _Track:
    log_bias: float = 0.0
    time_s: float = math.nan
    predicted_s: float = math.nan
    samples: int = 0


class LatencyBias:
    """Multiplicative latency correction per instance (``instance_id``)."""

    def __init__(self, alpha: float = DEFAULT_ALPHA) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"bias alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)
        self._tracks: dict[int, _Track] = {}

    def observe(self, state: InstanceState) -> float:
        """Fold in the latency of the iteration clocked at the previous decision; returns the factor to apply."""
        tr = self._tracks.get(state.instance_id)
        if tr is None:
            tr = self._tracks[state.instance_id] = _Track()
            return 1.0
        pred = tr.predicted_s
        if pred == pred and state.recent_latencies_s and self.alpha > 0.0:  # pred is not NaN
            actual = state.recent_latencies_s[-1]
            # the iteration we predicted started at our previous decision and has ended by now
            if actual > 0.0 and state.time_s - tr.time_s >= actual - 1e-9:
                x = math.log(actual / pred)
                lb = tr.log_bias + self.alpha * (x - tr.log_bias)
                tr.log_bias = min(MAX_LOG_BIAS, max(-MAX_LOG_BIAS, lb))
                tr.samples += 1
        tr.predicted_s = math.nan
        return math.exp(tr.log_bias)

    def expect(self, state: InstanceState, predicted_s: float, chosen_mhz: int) -> None:
        """Remember the (corrected) latency predicted for the iteration about to run at ``chosen_mhz``.

        Nothing is remembered when that iteration will not run wholly at ``chosen_mhz`` (a switch is needed or in
        flight) or runs under the default governor.
        """
        tr = self._tracks.get(state.instance_id)
        if tr is None:
            tr = self._tracks[state.instance_id] = _Track()
        steady = state.pending_clock_mhz is None and state.clock_mhz == chosen_mhz and chosen_mhz > 0
        tr.time_s = state.time_s
        tr.predicted_s = predicted_s / math.exp(tr.log_bias) if steady and predicted_s > 0.0 else math.nan

    def factor(self, instance_id: int) -> float:
        """Current correction of ``instance_id`` (1.0 before any measurement)."""
        tr = self._tracks.get(instance_id)
        return 1.0 if tr is None else math.exp(tr.log_bias)

    def samples(self, instance_id: int) -> int:
        """Measurements folded in so far for ``instance_id``."""
        tr = self._tracks.get(instance_id)
        return 0 if tr is None else tr.samples
