"""Prefill model predictive control: the clock for the batch about to run, from the next K projected batches.

Before each prefill iteration (``docs/control.md``):

1. **Project** the next K batches (default 8): the scheduled batch (``state.batch_*``) and the batches the
   instance's batching rules will form from what is left of its chunked prompts and the queue behind it
   (:func:`project_batches`; vLLM chunked prefill: a batch takes prompts in FCFS order up to ``token_budget`` new
   tokens and ``max_batch_seqs`` sequences, chunking the prompt that does not fit). Each waiting request completes
   its prompt in a known batch j.
2. **Predict** a K x N latency and energy table in one predictor call (N candidate clocks, :mod:`clocks`).
3. **Deadlines**: a request's predicted TTFT = time already waited + the latencies of batches 0..j + the front-end
   overhead + its KV-transfer estimate; so batch j's cumulative latency must stay below ``target - max over its
   completing requests of (waited + transfer) - overhead``. Requests beyond the horizon add a necessary condition on
   the last batch (they complete after it).
4. **Solve** for the per-batch clocks with the least predicted energy meeting every deadline: the paper's greedy
   descent (:func:`solve_greedy`) or the exact Pareto dynamic program (:func:`solve_exact`, the default; it is never
   worse and fits the time budget). Apply only the first batch's clock.

Guards: top clock when prefill-side KV use reaches ``kv_guard_pct``; top clock when even the top clock misses a
deadline (counted in ``stats["infeasible"]``). With no batch and no queue (the engine never asks then, but a live
adapter may, and the simulator does once when an instance runs out of work) the idle rule applies: the lowest
supported clock (``idle_clock="lowest"``, the default: idle power grows with the locked clock), or the instance's
baseline clock from tier 1 (``idle_clock="baseline"``; ``state.baseline_clock_mhz``, which may be the governor, or no
change when it has none).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from biscale.control.bias import DEFAULT_ALPHA, LatencyBias
from biscale.control.clocks import DEFAULT_N_CLOCKS, CandidateClocks
from biscale.control.controllers import ClockController
from biscale.control.state import DEFAULT_PREFILL_TOKEN_BUDGET, InstanceState
from biscale.errors import InputError
from biscale.predict.predictor import Predictor

DEFAULT_HORIZON = 8
"""Projected batches K (the paper's choice)."""
DEFAULT_KV_GUARD_PCT = 90.0
"""KV use at which the top clock is forced (the paper's precursor uses 90 %), percent."""
DEFAULT_MARGIN_PCT = 3.0
"""Safety margin taken off the TTFT target (prediction error, switch latency, batches that grow), percent."""
KV_LINK_BW_BYTES_PER_S = 50e9
"""Per-GPU link bandwidth of the default KV-transfer estimate, bytes/s: one ConnectX-7 400 Gb/s NDR InfiniBand port
per GPU (NVIDIA DGX H100 datasheet), the slower (inter-node) path, so the estimate errs on the safe side."""
MAX_GREEDY_HORIZON = 16
"""The greedy enumerates up to 2^K combinations per level; beyond K = 16 use the exact solver."""
_EPS_S = 1e-12


IDLE_CLOCKS = ("lowest", "baseline")
"""Where an instance with no batch and no queue waits: ``lowest``, the lowest supported clock (an idle GPU's power
grows with its locked clock: 70 W at 345 MHz, 97 W at 1,185, 181 W at 1,980 per H100 in the bundled measurement
``llama3_70b_idle_power_vs_freq.csv``; the next batch pays one clock switch), or ``baseline``, tier 1's baseline."""


@dataclass(frozen=True, slots=True)
class Projection:
    """The next K batches of a prefill instance and the age of the requests each completes."""

    raw: np.ndarray
    """Predictor features per batch (K, 3): sequences, new tokens, causal attention pairs."""
    age_s: np.ndarray
    """Per batch, the largest ``waited + KV-transfer estimate`` among the requests whose prompt it completes,
    seconds (-inf when it completes none) (K,)."""
    tail_age_s: float
    """The same over requests that complete after the last projected batch, seconds (-inf if none)."""

    @property
    def k(self) -> int:
        return int(self.raw.shape[0])

    def deadlines_s(self, budget_s: float) -> np.ndarray:
        """Latest cumulative latency at the end of each batch for every request to meet ``budget_s``, seconds (K,).

        ``budget_s`` = TTFT target minus margin and front-end overhead. ``+inf`` where a batch completes nothing.
        Requests beyond the horizon complete after the last batch, so the last batch must also end within their
        budget (a necessary condition).
        """
        d = budget_s - self.age_s
        if self.tail_age_s > -math.inf and d.size:
            d[-1] = min(d[-1], budget_s - self.tail_age_s)
        return d


def project_batches(
    batch_new_tokens: Sequence[int] | np.ndarray,
    batch_prefix_tokens: Sequence[int] | np.ndarray,
    batch_prompt_tokens: Sequence[int] | np.ndarray,
    batch_waiting_time_s: Sequence[float] | np.ndarray,
    queue_tokens: Sequence[int] | np.ndarray,
    queue_waiting_time_s: Sequence[float] | np.ndarray,
    *,
    horizon: int = DEFAULT_HORIZON,
    token_budget: int = DEFAULT_PREFILL_TOKEN_BUDGET,
    max_batch_seqs: int = 0,
    kv_s_per_token: float = 0.0,
) -> Projection:
    """Project up to ``horizon`` batches: the scheduled one (if any) then those formed from the rest, FCFS.

    Batching rule (vLLM chunked prefill): a batch takes sequences from the head while it has fewer than
    ``max_batch_seqs`` (0 = no limit) and new tokens left in ``token_budget``; a prompt that does not fit is chunked
    to fill the budget, and its rest stays at the head. The scheduled batch's unfinished prompts (``prefix + new <
    prompt``) continue first, then the queue (``queue_tokens`` = tokens still to prefill, prefix 0: in FCFS every
    partly prefilled prompt is in the scheduled batch). With no scheduled batch the first batch is projected too.
    """
    budget = int(token_budget) if token_budget > 0 else DEFAULT_PREFILL_TOKEN_BUDGET
    max_seqs = int(max_batch_seqs) if max_batch_seqs > 0 else 1 << 60
    ninf = -math.inf
    seqs: list[float] = []
    toks: list[float] = []
    pairs: list[float] = []
    ages: list[float] = []
    rem: list[int] = []
    pre: list[int] = []
    age: list[float] = []
    if len(batch_new_tokens):
        # few sequences: plain Python is cheaper than numpy here (this runs before every prefill iteration)
        nt = 0
        ap = 0.0
        ag = ninf
        for n, p, q, w in zip(
            np.asarray(batch_new_tokens).tolist(),
            np.asarray(batch_prefix_tokens).tolist(),
            np.asarray(batch_prompt_tokens).tolist(),
            np.asarray(batch_waiting_time_s).tolist(),
            strict=True,
        ):
            nt += n
            ap += n * (p + (n + 1) / 2.0)
            a = w + kv_s_per_token * q
            if p + n >= q:
                if a > ag:
                    ag = a
            else:
                rem.append(q - p - n)
                pre.append(p + n)
                age.append(a)
        seqs.append(float(len(batch_new_tokens)))
        toks.append(float(nt))
        pairs.append(ap)
        ages.append(ag)
    qt = np.asarray(queue_tokens)
    if qt.size:
        rem += qt.tolist()
        pre += [0] * qt.size
        age += (np.asarray(queue_waiting_time_s, dtype=np.float64) + kv_s_per_token * qt).tolist()
    n_items = len(rem)
    i = 0
    while len(seqs) < horizon and i < n_items:
        left = budget
        ns = 0
        nt = 0
        ap = 0.0
        ag = ninf
        while i < n_items and ns < max_seqs and left > 0:
            r = rem[i]
            p = pre[i]
            chunk = r if r <= left else left
            ns += 1
            nt += chunk
            ap += chunk * (p + (chunk + 1) / 2.0)
            left -= chunk
            if chunk == r:
                a = age[i]
                if a > ag:
                    ag = a
                i += 1
            else:
                rem[i] = r - chunk
                pre[i] = p + chunk
        seqs.append(float(ns))
        toks.append(float(nt))
        pairs.append(ap)
        ages.append(ag)
    tail = max(age[i:]) if i < n_items else ninf
    raw = np.empty((len(seqs), 3))
    raw[:, 0] = seqs
    raw[:, 1] = toks
    raw[:, 2] = pairs
    return Projection(raw, np.array(ages, dtype=np.float64), tail)


# --------------------------------------------------------------------------------------------------- solvers
@dataclass(frozen=True, slots=True)
class Plan:
    """A clock index per projected batch and its predicted energy."""

    levels: np.ndarray
    """Index into the candidate clocks per batch (K,)."""
    energy_j: float
    """Predicted energy of the K batches, joules (per GPU)."""
    feasible: bool
    """False when even the top clock misses a deadline (``levels`` is then all top)."""


def finish_times(latency_s: np.ndarray, levels: np.ndarray, release_s: np.ndarray | None = None) -> np.ndarray:
    """End of each batch when batch j runs at ``levels[j]`` right after batch j - 1 (and not before
    ``release_s[j]``, when given), seconds from now (K,)."""
    lat = latency_s[np.arange(levels.size), levels]
    if release_s is None:
        return np.cumsum(lat)
    out = np.empty(levels.size)
    t = 0.0
    for j, (r, x) in enumerate(zip(release_s.tolist(), lat.tolist(), strict=True)):
        t = max(t, r) + x
        out[j] = t
    return out


def meets_deadlines(
    latency_s: np.ndarray, levels: np.ndarray, deadlines_s: np.ndarray, release_s: np.ndarray | None = None
) -> bool:
    """Whether per-batch clocks ``levels`` end every batch by its deadline."""
    return bool(np.all(finish_times(latency_s, levels, release_s) <= deadlines_s + _EPS_S))


def _all_top(latency_s: np.ndarray, energy_j: np.ndarray, deadlines_s: np.ndarray) -> Plan | None:
    """The all-top plan when it misses a deadline (nothing is feasible), else None."""
    k, n = latency_s.shape
    top = np.full(k, n - 1, dtype=np.int64)
    if meets_deadlines(latency_s, top, deadlines_s):
        return None
    return Plan(top, float(energy_j[:, n - 1].sum()), False)


@cache
def _combos(m: int) -> np.ndarray:
    """Every subset of ``m`` batches as a 0/1 column (m, 2^m); column 0 is the empty subset (all stay)."""
    return ((np.arange(1 << m)[None, :] >> np.arange(m)[:, None]) & 1).astype(np.float64)


def solve_greedy(latency_s: np.ndarray, energy_j: np.ndarray, deadlines_s: np.ndarray) -> Plan:
    """The paper's Algorithm 1: greedy descent over clock levels.

    Start with every batch at the top clock. For each lower level in turn, every batch now at the previous level
    may stay or step down one level: enumerate those 2^m combinations (vectorised), keep the feasible ones that
    move at least one batch, and take the cheapest (in predicted energy); the batches that stayed are fixed from
    then on. Stop when no combination is feasible (or no batch is left to move). The answer is the cheapest plan
    met on the way down: energy need not fall at every level (near the top, a power-capped GPU draws the same energy
    at a lower clock), so a step that costs energy may lead to a cheaper plan further down.
    """
    k, n = latency_s.shape
    if k > MAX_GREEDY_HORIZON:
        raise InputError(f"greedy MPC enumerates 2^K combinations: K must be <= {MAX_GREEDY_HORIZON}", field="horizon")
    bad = _all_top(latency_s, energy_j, deadlines_s)
    if bad is not None:
        return bad
    levels = np.full(k, n - 1, dtype=np.int64)
    total = float(energy_j[:, n - 1].sum())
    best_levels, best_total = levels.copy(), total
    fin = np.flatnonzero(np.isfinite(deadlines_s))
    # slack of each deadline-carrying batch (F, 1); a batch's latency counts towards stages at or after it (F, K)
    slack = (deadlines_s - np.cumsum(latency_s[:, n - 1]))[fin, None] + _EPS_S
    counts = (fin[:, None] >= np.arange(k)[None, :]).astype(np.float64)
    movable = np.arange(k)
    for lv in range(n - 2, -1, -1):
        bits = _combos(movable.size)
        cost = (energy_j[movable, lv] - energy_j[movable, lv + 1]) @ bits
        add = (counts[:, movable] * (latency_s[movable, lv] - latency_s[movable, lv + 1])) @ bits
        cost[~(add <= slack).all(axis=0)] = np.inf
        cost[0] = np.inf  # staying put is not a step
        step = int(np.argmin(cost))
        if not np.isfinite(cost[step]):
            break
        movable = movable[bits[:, step] > 0]
        levels[movable] = lv
        slack = slack - add[:, step : step + 1]
        total += float(cost[step])
        if total < best_total:
            best_levels, best_total = levels.copy(), total
    return Plan(best_levels, best_total, True)


def solve_exact(
    latency_s: np.ndarray, energy_j: np.ndarray, deadlines_s: np.ndarray, release_s: np.ndarray | None = None
) -> Plan:
    """The least-energy feasible plan, exactly: a dynamic program over batches keeping Pareto fronts.

    A label is a partial plan for batches 0..j with its finish time ``t`` and energy ``e``. Later batches' costs do
    not depend on ``t`` (only their feasibility does, and a later finish never helps), so a label with both a larger
    ``t`` and a larger ``e`` than another can never do better and is dropped: per batch only the (t, e) Pareto front
    survives. Two bounds keep the front small without losing the optimum: a label that cannot meet a later deadline
    even with the rest at the top clock is dropped (latency never increases with the clock), and so is one whose
    energy plus the least possible energy of the rest exceeds that of a known feasible plan (the best single-clock
    plan). When the plan that runs every batch at its own least-energy clock is feasible it is the optimum and is
    returned at once. ``release_s`` (optional): batch j cannot start before it (the clairvoyant oracle's future
    arrivals); the MPC's batches are all formed already (none).
    """
    k, n = latency_s.shape
    slack = deadlines_s + _EPS_S
    if release_s is None:
        ends = np.cumsum(latency_s, axis=0)
    else:
        ends = np.empty((k, n))
        t_all = np.zeros(n)
        for j in range(k):
            t_all = np.maximum(t_all, release_s[j]) + latency_s[j]
            ends[j] = t_all
    single_ok: np.ndarray = np.all(ends <= slack[:, None], axis=0)
    if not single_ok[-1]:
        return Plan(np.full(k, n - 1, dtype=np.int64), float(energy_j[:, n - 1].sum()), False)
    cheapest = energy_j.argmin(axis=1)
    rows = np.arange(k)
    if (finish_times(latency_s, cheapest, release_s) <= slack).all():
        return Plan(cheapest, float(energy_j[rows, cheapest].sum()), True)
    upper = float(energy_j.sum(axis=0)[single_ok].min()) * (1.0 + 1e-12) + 1e-15
    least = energy_j[rows, cheapest].tolist()
    top = latency_s[:, n - 1].tolist()
    dl = slack.tolist()
    latest = [0.0] * k  # latest finish of batch j from which the rest can still make it at the top clock
    energy_cap = [0.0] * k  # most energy after batch j that can still beat ``upper``
    latest[k - 1] = dl[k - 1]
    energy_cap[k - 1] = upper
    for j in range(k - 2, -1, -1):
        latest[j] = min(dl[j], latest[j + 1] - top[j + 1])
        energy_cap[j] = energy_cap[j + 1] - least[j + 1]
    t = latency_s[0] if release_s is None else latency_s[0] + max(0.0, float(release_s[0]))
    e = energy_j[0]
    parents: list[np.ndarray] = []
    for j in range(k):
        if j:
            if release_s is not None:
                t = np.maximum(t, release_s[j])
            t = np.add.outer(t, latency_s[j]).ravel()
            e = np.add.outer(e, energy_j[j]).ravel()
        idx = ((t <= latest[j]) & (e <= energy_cap[j])).nonzero()[0]
        idx = idx[np.lexsort((e[idx], t[idx]))]  # by finish time, then energy (stable: lower clocks first)
        e_sorted = e[idx]
        before = np.minimum.accumulate(np.concatenate(([np.inf], e_sorted[:-1])))
        # the Pareto front without ties: clocks on a power-capped plateau give identical (t, e) labels, and keeping
        # every copy multiplies the front by the plateau's width at each batch (millions of labels)
        idx = idx[e_sorted < before]
        parents.append(idx)
        t = t[idx]
        e = e[idx]
    best = int(e.argmin())
    energy = float(e[best])
    levels = np.empty(k, dtype=np.int64)
    for j in range(k - 1, 0, -1):
        flat = int(parents[j][best])
        levels[j] = flat % n
        best = flat // n
    levels[0] = int(parents[0][best])
    return Plan(levels, energy, True)


SOLVERS = {"exact": solve_exact, "greedy": solve_greedy}
"""Name -> solver (``latency (K, N), energy (K, N), deadlines (K,) -> Plan``)."""


# ------------------------------------------------------------------------------------------------ controller
class PrefillMpc(ClockController):
    """Receding-horizon clock control of prefill instances on the learned predictor (see the module docstring)."""

    name = "mpc"

    def __init__(
        self,
        predictor: Predictor,
        *,
        horizon: int = DEFAULT_HORIZON,
        n_clocks: int = DEFAULT_N_CLOCKS,
        clocks_mhz: Sequence[int] | None = None,
        solver: str = "exact",
        kv_guard_pct: float = DEFAULT_KV_GUARD_PCT,
        margin_pct: float = DEFAULT_MARGIN_PCT,
        frontend_overhead_s: float | None = None,
        kv_transfer_s_per_token: float | None = None,
        bias_alpha: float = DEFAULT_ALPHA,
        idle_clock: str = "lowest",
    ) -> None:
        if idle_clock not in IDLE_CLOCKS:
            raise InputError(
                f"unknown idle clock '{idle_clock}' (choices: {', '.join(IDLE_CLOCKS)})", field="idle_clock"
            )
        if horizon < 1:
            raise InputError(f"horizon must be >= 1 batch, got {horizon}", field="horizon")
        if solver not in SOLVERS:
            raise InputError(f"unknown MPC solver '{solver}' (choices: {', '.join(SOLVERS)})", field="solver")
        if solver == "greedy" and horizon > MAX_GREEDY_HORIZON:
            raise InputError(f"greedy MPC needs horizon <= {MAX_GREEDY_HORIZON}, got {horizon}", field="horizon")
        if not 0.0 <= margin_pct < 100.0:
            raise InputError(f"margin must be in [0, 100) percent, got {margin_pct}", field="margin_pct")
        if (frontend_overhead_s is not None and frontend_overhead_s < 0) or (
            kv_transfer_s_per_token is not None and kv_transfer_s_per_token < 0
        ):
            raise InputError("front-end overhead and KV-transfer estimate must be >= 0 s", field="frontend_overhead_s")
        self.predictor = predictor
        self.horizon = int(horizon)
        self.solver_name = solver
        self._solve = SOLVERS[solver]
        self.kv_guard_pct = float(kv_guard_pct)
        self.margin = float(margin_pct) / 100.0
        self.frontend_overhead_s = frontend_overhead_s
        """Front-end cost added to every predicted TTFT (API server, tokenisation, streaming), seconds; None: the
        engine's own figure, ``state.frontend_overhead_s`` (the simulator's ``SimConfig.frontend_overhead_s``)."""
        self.kv_transfer_s_per_token = kv_transfer_s_per_token
        self.idle_clock = idle_clock
        self.clocks = CandidateClocks(predictor, n_clocks, clocks_mhz)
        self.bias = LatencyBias(bias_alpha)
        self.stats: Counter[str] = Counter()
        """Decisions by outcome: ``planned``, ``infeasible`` (top: even the top clock misses), ``kv_guard``,
        ``idle``."""
        self._kv_per_token: dict[int, float] = {}

    def kv_s_per_token(self, tp: int) -> float:
        """KV-transfer estimate per prompt token from a TP-``tp`` prefill instance, seconds per token.

        The setting if given; otherwise the predictor's KV bytes per token over ``tp`` GPU links at
        :data:`KV_LINK_BW_BYTES_PER_S` (0 when the artifact does not record KV bytes per token).
        """
        if self.kv_transfer_s_per_token is not None:
            return self.kv_transfer_s_per_token
        hit = self._kv_per_token.get(tp)
        if hit is None:
            meta = self.predictor.meta.get("profile_meta") or {}
            nbytes = float(meta.get("kv_bytes_per_token") or 0.0)
            hit = self._kv_per_token[tp] = nbytes / (tp * KV_LINK_BW_BYTES_PER_S)
        return hit

    def project(self, state: InstanceState) -> Projection:
        """The K batches this controller plans over for ``state``."""
        return project_batches(
            state.batch_new_tokens,
            state.batch_prefix_tokens,
            state.batch_prompt_tokens,
            state.batch_waiting_time_s,
            state.waiting_prompt_tokens,
            state.waiting_time_s,
            horizon=self.horizon,
            token_budget=state.token_budget,
            max_batch_seqs=state.max_batch_seqs,
            kv_s_per_token=self.kv_s_per_token(state.tp),
        )

    def budget_s(self, state: InstanceState) -> float:
        """TTFT budget every request's (waited + prefill + transfer) must fit in, seconds."""
        overhead = state.frontend_overhead_s if self.frontend_overhead_s is None else self.frontend_overhead_s
        return state.slo.ttft_s * (1.0 - self.margin) - overhead

    def decide(self, state: InstanceState) -> int | None:
        factor = self.bias.observe(state)
        supported = state.supported_clocks_mhz
        if state.batch_new_tokens.size == 0 and state.waiting_prompt_tokens.size == 0:
            self.stats["idle"] += 1
            if self.idle_clock == "lowest" and supported:
                return min(supported)
            return state.baseline_clock_mhz
        clocks = self.clocks.get("prefill", state.tp, supported, state.token_budget or DEFAULT_PREFILL_TOKEN_BUDGET)
        if state.kv_capacity_tokens and state.kv_use_pct >= self.kv_guard_pct:
            self.stats["kv_guard"] += 1
            self.bias.expect(state, math.nan, clocks[-1])
            return clocks[-1]
        proj = self.project(state)
        pred = self.predictor.predict("prefill", state.tp, proj.raw, clocks)
        lat = pred.latency_s * factor if factor != 1.0 else pred.latency_s
        plan = self._solve(lat, lat * pred.power_w, proj.deadlines_s(self.budget_s(state)))
        level = int(plan.levels[0])
        self.stats["planned" if plan.feasible else "infeasible"] += 1
        self.bias.expect(state, float(lat[0, level]), clocks[level])
        return clocks[level]
