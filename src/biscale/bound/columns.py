"""The iterations any system can run, as columns of the bound's linear program, priced by the cost model.

A *group* is every iteration of one phase on one TP degree at one requested clock whose size (decode batch,
prefill tokens) lies in a bracket ``[lo, hi]``. It is priced at its smallest member: the size ``lo`` and, for
prefill, one sequence (premise M, docs/evaluate.md: an iteration's latency and its energy above the idle floor do
not fall when its batch gains a request, tokens, sequences, attention pairs or context), while it is credited with
``hi`` tokens. Along the remaining axis (decode: the KV context read; prefill: the attention pairs) a group is

* *affine*: both ends run at the requested clock, so (premise A) latency and energy are affine between them and
  every iteration of the group is a convex combination of the two ends: two columns;
* *stepped* otherwise (the power limit throttles part of the range): the range is cut into segments, each priced
  at its low end and credited with its high end (premise M again): one column per segment.

Premises A and M hold for the bundled cost models by construction (docs/hardware.md proves M for the roofline
model) and are tested (tests/bound/test_premises.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from biscale.costmodel import CostModel, DecodeShape, PrefillShape

PREFILL, DECODE = 0, 1
#: Segments of a stepped group's range (geometric: the range spans orders of magnitude).
STEPPED_SEGMENTS = 4
#: Sizes priced exactly (one per bracket) before the brackets widen geometrically.
EXACT_SIZES = 16
#: Width ratio of the geometric prefill brackets (a bracket credits up to 8 % more tokens than it prices).
BRACKET_RATIO = 1.08


def initial_brackets(largest: int) -> list[tuple[int, int]]:
    """``[1, largest]`` cut into brackets: the first sizes exactly, then widths growing by :data:`BRACKET_RATIO`."""
    out: list[tuple[int, int]] = []
    lo = 1
    while lo <= largest:
        hi = lo if lo <= EXACT_SIZES else min(largest, max(lo, int(lo * BRACKET_RATIO) - 1))
        out.append((lo, hi))
        lo = hi + 1
    return out


@dataclass(frozen=True)
class Limits:
    """What bounds the shapes of iterations: engine limits and the requests' extremes."""

    idle_floor_w: float
    """Least per-GPU power any GPU draws at any time, W."""
    decode_max_batch: int
    prefill_token_budget: int
    prefill_max_seqs: int
    min_context: int
    """Shortest per-request context of a decode iteration, tokens."""
    max_prompt: int
    """Longest prompt, tokens."""


@dataclass(frozen=True)
class Group:
    """Iterations of one phase, TP degree and requested clock with sizes in ``[lo, hi]``."""

    phase: int
    tp: int
    clock: int | None
    lo: int
    hi: int


@dataclass(frozen=True)
class Columns:
    """LP columns, one per array entry: the ends (and breakpoints) of affine groups, the segments of stepped
    ones."""

    group: np.ndarray  # index into the group list
    tokens: np.ndarray  # tokens credited per iteration
    size_lo: np.ndarray  # the size it is priced at (decode: requests charged the latency)
    resource: np.ndarray  # decode: context read; prefill: attention pairs
    excess_j: np.ndarray  # energy above the idle floor, all GPUs of the instance
    latency_s: np.ndarray
    tp: np.ndarray
    phase: np.ndarray
    pair: np.ndarray  # prefill affine ends: index of the other end's column; -1 otherwise


#: One group's columns: (resource, excess J, latency s, link) arrays; link = offset of the other end (prefill
#: affine ends) or 0.
_Rows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class ColumnBuilder:
    """Prices groups on the cost model (each group once) and lays them out as LP columns."""

    def __init__(self, cost_model: CostModel, tps: Sequence[int], limits: Limits) -> None:
        self.cm = cost_model
        self.tps = tuple(tps)
        self.limits = limits
        self.top_mhz = float(max(cost_model.supported_clocks_mhz))
        self.clocks: tuple[int | None, ...] = (*cost_model.supported_clocks_mhz, None)
        self.kv = {tp: int(cost_model.kv_capacity_tokens(tp)) for tp in self.tps}
        self._rows: dict[Group, _Rows] = {}

    # ------------------------------------------------------------------ groups
    def groups(self) -> list[Group]:
        """Every group: prefill token brackets and decode batch sizes (exact: the TPOT row charges each request
        the latency) at every TP degree and requested clock (the governor's too)."""
        lim = self.limits
        groups = []
        for tp in self.tps:
            for clock in self.clocks:
                for lo, hi in initial_brackets(lim.prefill_token_budget):
                    groups.append(Group(PREFILL, tp, clock, lo, hi))
                for b in range(1, lim.decode_max_batch + 1):
                    groups.append(Group(DECODE, tp, clock, b, b))
        return groups

    # ------------------------------------------------------------------ pricing
    def _point(self, g: Group, r: float) -> tuple[float, float, bool]:
        """(excess J, latency s, throttled) of the group's smallest member with resource ``r``."""
        if g.phase == DECODE:
            ctx = int(r)
            cost = self.cm.decode_cost(DecodeShape(g.lo, ctx, ctx * ctx / g.lo), g.tp, g.clock)
        else:
            cost = self.cm.prefill_cost(PrefillShape(1, g.lo, float(g.lo * g.lo), float(r)), g.tp, g.clock)
        requested = self.top_mhz if g.clock is None else float(g.clock)
        throttled = abs(cost.effective_clock_mhz - requested) > 1e-6
        excess = g.tp * cost.latency_s * (cost.power_w - self.limits.idle_floor_w)
        return excess, cost.latency_s, throttled

    def _range(self, g: Group) -> tuple[float, float]:
        """The resource range of the group's members (decode: context read; prefill: attention pairs)."""
        lim = self.limits
        if g.phase == DECODE:
            # A batch reads at least min_context per request and at most the KV cache (plus a token per request).
            return float(g.lo * lim.min_context), float(self.kv[g.tp] + g.hi)
        seqs = min(g.lo, lim.prefill_max_seqs)  # fewest pairs: the tokens spread evenly over the most sequences
        q, rem = divmod(g.lo, seqs)
        low = rem * (q + 1) * (q + 2) / 2 + (seqs - rem) * q * (q + 1) / 2
        return float(low), float(g.hi) * lim.max_prompt  # a token attends to at most the longest prompt

    def rows(self, g: Group) -> _Rows:
        """The group's columns (cached). None of them if no iteration has its shape (empty resource range)."""
        cached = self._rows.get(g)
        if cached is not None:
            return cached
        lo, hi = self._range(g)
        if lo > hi:
            out: _Rows = (np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64))
            self._rows[g] = out
            return out
        x0, l0, t0 = self._point(g, lo)
        x1, l1, t1 = self._point(g, hi)
        if not (t0 or t1):
            link = np.array([1, -1] if g.phase == PREFILL else [0, 0], dtype=np.int64)
            out = (np.array([lo, hi]), np.array([x0, x1]), np.array([l0, l1]), link)
        else:
            edges = np.geomspace(max(lo, 1.0), hi, STEPPED_SEGMENTS + 1)
            edges[0], edges[-1] = lo, hi
            pts = [self._point(g, float(math.floor(a)) if g.phase == DECODE else float(a)) for a in edges[:-1]]
            out = (
                np.ceil(edges[1:]),
                np.array([p[0] for p in pts]),
                np.array([p[1] for p in pts]),
                np.zeros(len(pts), dtype=np.int64),
            )
        self._rows[g] = out
        return out

    # ------------------------------------------------------------------ layout
    def columns(self, groups: Sequence[Group]) -> Columns:
        parts = [self.rows(g) for g in groups]
        counts = np.array([p[0].size for p in parts], dtype=np.int64)
        gi = np.repeat(np.arange(len(groups), dtype=np.int64), counts)
        res = np.concatenate([p[0] for p in parts])
        link = np.concatenate([p[3] for p in parts])
        index = np.arange(res.size, dtype=np.int64)
        return Columns(
            group=gi,
            tokens=np.repeat(np.array([g.hi for g in groups], dtype=np.float64), counts),
            size_lo=np.repeat(np.array([g.lo for g in groups], dtype=np.float64), counts),
            resource=res,
            excess_j=np.concatenate([p[1] for p in parts]),
            latency_s=np.concatenate([p[2] for p in parts]),
            tp=np.repeat(np.array([g.tp for g in groups], dtype=np.float64), counts),
            phase=np.repeat(np.array([g.phase for g in groups], dtype=np.int64), counts),
            pair=np.where(link != 0, index + link, -1),
        )
