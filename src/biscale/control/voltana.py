"""EcoFreq: VoltanaLLM's per-phase clock controller, reimplemented from its paper and source as a peer system.

VoltanaLLM (Yu, Taneja, Lin, Zhang; arXiv 2509.04827) runs one frequency manager per prefill or decode instance.
Its rule, as its source states it (Supercomputing-System-AI-Lab/VoltanaLLM at commit 274173238ba0,
``python/sglang/srt/managers/freq_manager.py``; the metrics it reads: ``scheduler.py`` ``get_metrics_for_freq``,
``disaggregation/{prefill,decode}.py``), at every poll of its loop:

1. the top clock if the tokens/s or the requests/s that arrived at the instance over a sliding window exceed their
   thresholds;
2. no iteration since the last poll: keep the clock (after :attr:`fallback_s` = 5 s without one, the lowest listed
   clock);
3. the top clock if any request waits behind the last iteration's batch;
4. otherwise the lowest listed clock but the top whose predicted latency (EcoPred, :mod:`biscale.predict.ecopred`)
   of a batch of the median batch size and median tokens of the poll's iterations is within ``SLO x (1 + margin)``,
   minus, for prefill, the longest time a request of the last batch has already waited (the TTFT left); none: the
   top clock. Prefill is priced at batch size 1 (its table has no batch term), tokens = the batch's new tokens;
   decode at the running batch and its context sum; the SLO is the TTFT target (prefill) or the ITL target (decode).

Defaults, from the published launch scripts (``voltana-llm-scripts/demo/{p,d}_server.sh``) or, where those are
A100-specific, derived the same way for the profiled GPU (docs/evaluate.md "VoltanaLLM"):

* poll interval 0 (``--freq-manager-interval 0``: the manager polls back to back, so each poll sees the iteration
  just scheduled): here, a decision before every iteration on that iteration alone;
* SLO margin 0.35 (written ``--freq-manager-slo margin 0.35`` in both scripts; the flag is
  ``--freq-manager-slo-margin``);
* thresholds off: the scripts set 1,125,000 tokens/s and 100,000 requests/s (prefill), 1e8 tokens/s and 1e6
  requests/s (decode), rates no instance reaches; windows 3 s (prefill tokens), 5 s (the others);
* clocks: the launch scripts list the A100's energy sweet spot and top (1,005 and 1,410 MHz), the profiling notebooks
  and the router five clocks between them (1,005, 1,095, 1,200, 1,305, 1,410); here five clocks evenly spread from
  the profile's sweet spot of the instance's phase and TP (:meth:`EcoPred.sweet_spot_mhz`) to the top clock.

The simulator asks a controller before each iteration and once when a prefill instance runs out of work, never on
a timer, so the 5-second fallback acts on the first decision more than 5 s after the last iteration (an idle
instance waits at the clock of its last decision meanwhile; docs/evaluate.md "VoltanaLLM" says what that changes).
"""

from __future__ import annotations

import statistics
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from biscale.control.controllers import ClockController, snap_clock
from biscale.control.state import InstanceState
from biscale.errors import InputError
from biscale.predict.ecopred import EcoPred

DEFAULT_N_CLOCKS = 5
"""Listed clocks from the sweet spot to the top (VoltanaLLM's profiling and routing list has five)."""
DEFAULT_SLO_MARGIN = 0.35
"""``--freq-manager-slo margin 0.35`` in the published launch scripts: the SLO is relaxed by 35 %."""
DEFAULT_FALLBACK_S = 5.0
"""Seconds without an iteration after which the lowest listed clock is set (``freq_manager.py``)."""
DEFAULT_TPS_WINDOW_S = {"prefill": 3.0, "decode": 5.0}
"""Sliding window of the tokens/s threshold, s (``--freq-manager-tps-window``)."""
DEFAULT_RPS_WINDOW_S = 5.0
"""Sliding window of the requests/s threshold, s (``--freq-manager-rps-window``)."""


@dataclass
class _Memory:
    """One instance's frequency manager."""

    last_metrics_s: float
    """When the last iteration was seen (VoltanaLLM starts the 5-s clock at launch), s."""
    next_poll_s: float = float("-inf")
    batches: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    """Batch size and tokens of each iteration since the last poll."""
    waiting: int = 0
    """Requests waiting behind the last iteration's batch."""
    waited_s: float = 0.0
    """Prefill: longest time a request of the last iteration's batch had waited, s."""
    arrivals: deque[tuple[float, int]] = field(default_factory=deque)
    """(time, prompt tokens) of the requests that arrived within the longest window (thresholds on only)."""
    seen: set[int] = field(default_factory=set)
    """Request ids already counted as arrivals (thresholds on only)."""


class EcoFreq(ClockController):
    """VoltanaLLM's EcoFreq for one phase (every instance of it; memory keyed by instance id)."""

    name = "ecofreq"

    def __init__(
        self,
        ecopred: EcoPred,
        phase: str,
        *,
        clocks_mhz: Sequence[int] | None = None,
        n_clocks: int = DEFAULT_N_CLOCKS,
        slo_margin: float = DEFAULT_SLO_MARGIN,
        poll_interval_s: float = 0.0,
        tps_threshold: float | None = None,
        tps_window_s: float | None = None,
        rps_threshold: float | None = None,
        rps_window_s: float = DEFAULT_RPS_WINDOW_S,
        fallback_s: float = DEFAULT_FALLBACK_S,
    ) -> None:
        if phase not in ("prefill", "decode"):
            raise InputError(f"ecofreq: unknown phase {phase!r} (expected 'prefill' or 'decode')", field="controller")
        if clocks_mhz is not None and len(set(clocks_mhz)) < 2:
            raise InputError("ecofreq: clocks_mhz needs at least 2 distinct clocks", field="clocks_mhz")
        if n_clocks < 2:
            raise InputError(f"ecofreq: n_clocks must be >= 2, got {n_clocks}", field="n_clocks")
        if not slo_margin > -1.0:
            raise InputError(f"ecofreq: slo_margin must be > -1, got {slo_margin}", field="slo_margin")
        for label, v in (("poll_interval_s", poll_interval_s), ("rps_window_s", rps_window_s)):
            if not v >= 0:
                raise InputError(f"ecofreq: {label} must be >= 0, got {v}", field=label)
        if not fallback_s > 0:
            raise InputError(f"ecofreq: fallback_s must be > 0, got {fallback_s}", field="fallback_s")
        for label, thr in (("tps_threshold", tps_threshold), ("rps_threshold", rps_threshold)):
            if thr is not None and not thr > 0:
                raise InputError(f"ecofreq: {label} must be > 0 (or none: off), got {thr}", field=label)
        self.ecopred = ecopred
        self.phase = phase
        self.clocks_mhz = None if clocks_mhz is None else tuple(sorted({int(c) for c in clocks_mhz}))
        self.n_clocks = int(n_clocks)
        self.slo_margin = float(slo_margin)
        self.poll_interval_s = float(poll_interval_s)
        self.tps_threshold = tps_threshold
        self.tps_window_s = DEFAULT_TPS_WINDOW_S[phase] if tps_window_s is None else float(tps_window_s)
        self.rps_threshold = rps_threshold
        self.rps_window_s = float(rps_window_s)
        self.fallback_s = float(fallback_s)
        self._thresholds = tps_threshold is not None or rps_threshold is not None
        self._mem: dict[int, _Memory] = {}
        self._lists: dict[int, tuple[int, ...]] = {}
        self.stats: Counter[str] = Counter()

    # ------------------------------------------------------------------ the clock list
    def clock_list(self, tp: int, supported: tuple[int, ...]) -> tuple[int, ...]:
        """The listed clocks of a TP-``tp`` instance, ascending, snapped to ``supported``; the last is the top."""
        hit = self._lists.get(tp)
        if hit is None:
            if self.clocks_mhz is not None:
                hit = tuple(sorted({snap_clock(c, supported) for c in self.clocks_mhz}))
            else:
                lo, top = self.ecopred.sweet_spot_mhz(self.phase, tp), supported[-1]
                step = (top - lo) / (self.n_clocks - 1)
                hit = tuple(sorted({snap_clock(round(lo + k * step), supported) for k in range(self.n_clocks)}))
            self._lists[tp] = hit
        return hit

    # ------------------------------------------------------------------ decide
    def decide(self, state: InstanceState) -> int | None:
        t = state.time_s
        m = self._mem.get(state.instance_id)
        if m is None:
            m = self._mem[state.instance_id] = _Memory(last_metrics_s=t)
        if self.phase == "prefill":
            new = state.batch_new_tokens
            if new.size:
                m.batches.append(int(new.size))
                m.tokens.append(int(new.sum()))
                m.waiting = state.queue_len
                m.waited_s = float(state.batch_waiting_time_s.max())
        elif state.batch_size:
            m.batches.append(state.batch_size)
            m.tokens.append(int(state.running_context_tokens.sum()))
            m.waiting = state.queue_len
        if self._thresholds:
            self._record_arrivals(m, state)
        if t < m.next_poll_s:
            return None
        m.next_poll_s = t + self.poll_interval_s
        clocks = self.clock_list(state.tp, state.supported_clocks_mhz)
        target = self._target(m, state, clocks)
        if m.tokens:
            m.last_metrics_s = t
            m.batches.clear()
            m.tokens.clear()
        elif t - m.last_metrics_s > self.fallback_s:
            self.stats["fallback"] += 1
            target = clocks[0]
        if target is None:
            self.stats["hold"] += 1
            return None
        current = state.clock_mhz if state.pending_clock_mhz is None else state.pending_clock_mhz
        if target == current:  # VoltanaLLM sets a clock only when it differs from the GPU's
            self.stats["unchanged"] += 1
            return None
        return target

    def _target(self, m: _Memory, state: InstanceState, clocks: tuple[int, ...]) -> int | None:
        """``get_f_target``: the clock this poll asks for, or None (no iteration to judge)."""
        t, top = state.time_s, clocks[-1]
        if self._thresholds:
            if self.tps_threshold is not None:
                arrived = sum(n for a, n in m.arrivals if t - a < self.tps_window_s)
                if arrived / self.tps_window_s > self.tps_threshold:
                    self.stats["tps_threshold"] += 1
                    return top
            if self.rps_threshold is not None:
                count = sum(1 for a, _ in m.arrivals if t - a < self.rps_window_s)
                if count / self.rps_window_s > self.rps_threshold:
                    self.stats["rps_threshold"] += 1
                    return top
        if not m.tokens:
            return None
        if m.waiting > 0:
            self.stats["waiting"] += 1
            return top
        tokens: float = statistics.median(m.tokens) if len(m.tokens) > 1 else m.tokens[0]
        if self.phase == "prefill":
            batch: float = 1.0
            budget = state.slo.ttft_s * (1.0 + self.slo_margin) - m.waited_s
        else:
            batch = statistics.median(m.batches) if len(m.batches) > 1 else m.batches[0]
            budget = state.slo.itl_target_s * (1.0 + self.slo_margin)
        for f in clocks[:-1]:
            lat = self.ecopred.latency_s(self.phase, state.tp, f, batch, tokens)
            if lat is not None and lat <= budget:
                self.stats["slo"] += 1
                return f
        self.stats["top"] += 1
        return top

    def _record_arrivals(self, m: _Memory, state: InstanceState) -> None:
        """Count the requests this instance had not seen (VoltanaLLM's tokenizer reports each arrival and its
        prompt length) and forget those older than the longest window."""
        t = state.time_s
        if self.phase == "prefill":
            groups = (
                (state.batch_request_ids, state.batch_prompt_tokens),
                (state.waiting_request_ids, state.waiting_prompt_tokens),
            )
        else:
            prompts = state.running_context_tokens - state.running_generated_tokens
            groups = ((state.waiting_request_ids, state.waiting_prompt_tokens), (state.running_request_ids, prompts))
        for ids, tokens in groups:
            for r, n in zip(ids.tolist(), tokens.tolist(), strict=True):
                if r not in m.seen:
                    m.seen.add(r)
                    m.arrivals.append((t, int(n)))
        horizon = max(self.tps_window_s, self.rps_window_s)
        while m.arrivals and t - m.arrivals[0][0] >= horizon:
            m.arrivals.popleft()
