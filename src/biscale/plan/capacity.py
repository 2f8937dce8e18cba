"""The capacity table: for every configuration c = (phase, TP, baseline clock), the highest request rate R_c one
instance sustains with its phase's P99 SLO met, and its predicted power at loads up to R_c.

Why simulate rather than use a formula: capacity under a P99 latency target depends on burstiness, the length mix
and batching, which the iteration-level simulator captures. The simulator runs on the *predictors*
(:class:`~biscale.predict.PredictorCostModel`: what the planner believes), never on the hardware model.

Method (docs/planning.md):

* the workload's arrival pattern and length mix over a slice of ``probe_duration_s`` (default 300 s, one planning
  window), its rate changed with :func:`~biscale.workload.rescale_rate` (which keeps burstiness);
* one probe = one simulation of the instance under test alone, in the simulator's phase-isolation mode
  (:func:`probe`; ``SimConfig.isolate_phase``: a prefill probe's requests end when their KV has left, a decode
  probe's arrive with their KV);
* R_c by a bracketed geometric search to ``rel_tol`` (default 2 %): the first guess comes from a throughput
  estimate from the predictor; clocks are searched from the top down and each clock's search starts from its
  higher neighbour's answer scaled by the ratio of their throughput estimates, bounded above by the neighbour's
  first failing rate (capacity is non-decreasing in clock);
* power points at 0, 25, 50, 75 and 100 % of R_c (0 = idle at the baseline clock, from the artifact);
* configurations run on a local process pool (results do not depend on the worker count) and the table is
  cached as JSON keyed by a hash of everything it depends on.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from biscale.cache import CAPACITY_CODE, cache_key, code_fingerprint, entry_path
from biscale.control.controllers import check_clock_in_range, snap_clock
from biscale.control.placement import InstanceSpec, Placement
from biscale.control.state import Slo
from biscale.costmodel import DecodeShape, PrefillShape
from biscale.errors import InputError
from biscale.jsonio import read_json_object
from biscale.predict.costmodel import PredictorCostModel
from biscale.predict.predictor import ARTIFACT_JSON, ARTIFACT_NPZ, Predictor, load_predictor
from biscale.sim import SimConfig, SimResult, simulate
from biscale.workload.ops import rescale_rate, slice_window
from biscale.workload.trace import Trace

TABLE_FORMAT = "biscale-capacity-table"
TABLE_VERSION = 2
PHASES = ("prefill", "decode")


@dataclass(frozen=True)
class CapacitySettings:
    """How the capacity table is built. Every field enters the cache key."""

    clocks_mhz: tuple[int, ...] | None = None
    """Candidate baseline clocks, MHz; ``None``: ``num_clocks`` clocks evenly spaced from ``clock_floor_frac`` of the
    top clock to the top clock, snapped to supported clocks."""
    num_clocks: int = 7
    """Size of the default candidate set (the paper's tier 2 uses N = 7 candidate clocks too)."""
    clock_floor_frac: float = 0.4
    """Lowest default candidate as a fraction of the top clock. Why 0.4: in the bundled H100 predictor the busy
    energy per token is lowest at 840-1080 MHz (42-55 % of 1980) for both phases and every TP; below that both
    energy per token and capacity get worse, so lower clocks are never useful."""
    tps: tuple[int, ...] | None = None
    """TP degrees to tabulate; ``None``: every TP the predictor was profiled at with KV room."""
    probe_duration_s: float = 300.0
    """Slice of the workload each probe replays, seconds (one planning window: at the rates of interest this gives
    >= ~1,500 requests, enough for a P99 with >= 15 samples in the tail)."""
    probe_start_s: float = 0.0
    """Where the slice starts in the workload trace, seconds."""
    rel_tol: float = 0.02
    """The search stops when the first failing rate is within this fraction above the last passing one."""
    load_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    """Loads (fractions of R_c) at which power is simulated besides 0 (idle) and R_c."""
    ttft_decode_share: float = 0.05
    """Share of the TTFT target left to decode admission: prefill probes check TTFT P99 <= (1 - share) x target,
    decode probes check that the P99 wait for decode memory stays <= share x target (so the phases compose)."""
    reuse_brackets: bool = True
    """Bound each clock's search by its higher neighbour's answer (saves simulations; assumes capacity is
    non-decreasing in clock)."""
    min_probe_requests: int = 50
    """The search never probes a rate that gives the slice fewer requests than this on average (a P99 needs
    samples); a configuration that cannot meet the SLO there gets capacity 0."""
    decode_context_step_tokens: int = 1024
    """Decode cost interpolation step of the per-shape cache (``PredictorCostModel``; max error ~1e-4)."""
    seed: int = 0
    """Seed of the rate rescaling."""
    sim_fields: tuple[tuple[str, Any], ...] = ()
    """Extra :class:`~biscale.sim.SimConfig` fields for every probe (batching limits, front-end overhead, ...)."""

    def __post_init__(self) -> None:
        if self.num_clocks < 1 or not (0 < self.clock_floor_frac <= 1):
            raise InputError("num_clocks must be >= 1 and clock_floor_frac in (0, 1]", field="capacity settings")
        if not (math.isfinite(self.probe_duration_s) and self.probe_duration_s > 0) or not self.probe_start_s >= 0:
            raise InputError("probe duration must be > 0 s and start >= 0 s", field="probe_duration_s")
        if not (0 < self.rel_tol < 1):
            raise InputError(f"rel_tol must be in (0, 1), got {self.rel_tol}", field="rel_tol")
        if any(not (0 < f < 1) for f in self.load_fractions):
            raise InputError("load fractions must lie in (0, 1)", field="load_fractions")
        if not (0 <= self.ttft_decode_share < 1):
            raise InputError("ttft_decode_share must be in [0, 1)", field="ttft_decode_share")
        if self.min_probe_requests < 1:
            raise InputError("min_probe_requests must be >= 1", field="min_probe_requests")

    def sim_config(self, **fields: Any) -> SimConfig:
        return SimConfig(**{**dict(self.sim_fields), **fields})


@dataclass(frozen=True)
class ConfigCapacity:
    """One configuration's row of the table. Powers are per instance (all its GPUs), watts."""

    phase: str
    tp: int
    clock_mhz: int
    capacity_rps: float
    """R_c: highest rate one instance sustains with the phase's P99 SLO met, req/s (0: not even at a trickle)."""
    loads_rps: tuple[float, ...]
    """Loads at which power was predicted, req/s, ascending; the first is 0 (idle) and the last R_c."""
    power_w: tuple[float, ...]
    """Mean instance power at ``loads_rps``, W (idle: the artifact's idle power at the clock)."""
    p99_ms: float
    """P99 TTFT (prefill) or TPOT (decode) at R_c, ms."""
    mean_latency_ms: float
    """Mean TTFT (prefill) or TPOT (decode) at R_c, ms (decode: the iteration time Little's law needs)."""
    kv_capacity_tokens: int
    throughput_est_rps: float
    """The predictor's throughput estimate (ideal batching, no queueing), req/s: the search's first bracket."""
    probes: int
    """Simulations spent on this row."""

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.phase, self.tp, self.clock_mhz)

    @property
    def idle_power_w(self) -> float:
        return self.power_w[0]

    def power_at(self, load_rps: float) -> float:
        """Predicted mean instance power at ``load_rps`` (linear between the table's points), W."""
        return float(np.interp(load_rps, self.loads_rps, self.power_w))


@dataclass(frozen=True)
class CapacityTable:
    """Capacities and power of every configuration for one (GPU, model, predictor, SLO, workload, settings)."""

    key: str
    gpu: str
    model: str
    slo: Slo
    clocks_mhz: tuple[int, ...]
    """Candidate baseline clocks, ascending, MHz."""
    top_clock_mhz: int
    supported_clocks_mhz: tuple[int, ...]
    unassigned_gpu_power_w: float
    """Power of a GPU in no instance under the default governor (deep idle, the artifact's governor facts), W."""
    workload: dict[str, Any]
    """Name, fingerprint, requests, mean lengths and the KV shape factor of the workload the table was built on."""
    settings: dict[str, Any]
    configs: tuple[ConfigCapacity, ...]
    build_s: float = 0.0
    """Wall time spent building (0 when loaded from the cache), s."""
    from_cache: bool = False

    def get(self, phase: str, tp: int, clock_mhz: int) -> ConfigCapacity | None:
        for c in self.configs:
            if c.key == (phase, tp, clock_mhz):
                return c
        return None

    @property
    def mean_input_tokens(self) -> float:
        return float(self.workload["mean_input_tokens"])

    @property
    def mean_output_tokens(self) -> float:
        return float(self.workload["mean_output_tokens"])

    # ---------------------------------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TABLE_FORMAT,
            "format_version": TABLE_VERSION,
            "key": self.key,
            "gpu": self.gpu,
            "model": self.model,
            "slo": {"ttft_s": self.slo.ttft_s, "tpot_s": self.slo.tpot_s, "percentile": self.slo.percentile},
            "clocks_mhz": list(self.clocks_mhz),
            "top_clock_mhz": self.top_clock_mhz,
            "supported_clocks_mhz": list(self.supported_clocks_mhz),
            "unassigned_gpu_power_w": self.unassigned_gpu_power_w,
            "workload": self.workload,
            "settings": self.settings,
            "build_s": self.build_s,
            "configs": [
                {
                    **{k: _finite_or_none(v) for k, v in asdict(c).items()},
                    "loads_rps": list(c.loads_rps),
                    "power_w": list(c.power_w),
                }
                for c in self.configs
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, path: str | Path | None = None) -> CapacityTable:
        if data.get("format") != TABLE_FORMAT or data.get("format_version") != TABLE_VERSION:
            raise InputError("not a capacity table of a known format/version", path=path)
        try:
            configs = tuple(_config_from_dict(c) for c in data["configs"])
            return cls(
                key=str(data["key"]),
                gpu=str(data["gpu"]),
                model=str(data["model"]),
                slo=Slo(**data["slo"]),
                clocks_mhz=tuple(int(c) for c in data["clocks_mhz"]),
                top_clock_mhz=int(data["top_clock_mhz"]),
                supported_clocks_mhz=tuple(int(c) for c in data["supported_clocks_mhz"]),
                unassigned_gpu_power_w=float(data["unassigned_gpu_power_w"]),
                workload=dict(data["workload"]),
                settings=dict(data["settings"]),
                configs=configs,
                build_s=float(data.get("build_s", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"malformed capacity table: {err}", path=path) from err

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        tmp.replace(p)
        return p

    @classmethod
    def load(cls, path: str | Path) -> CapacityTable:
        p = Path(path)
        return cls.from_dict(read_json_object(p, "capacity table"), path=p)


def _config_from_dict(c: dict[str, Any]) -> ConfigCapacity:
    fields: dict[str, Any] = {k: (math.nan if v is None else v) for k, v in c.items()}
    fields["loads_rps"] = tuple(float(v) for v in c["loads_rps"])
    fields["power_w"] = tuple(float(v) for v in c["power_w"])
    return ConfigCapacity(**fields)


def _finite_or_none(v: Any) -> Any:
    """Strict JSON has no NaN: an undefined latency (a configuration with no capacity) is written as null."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


# ------------------------------------------------------------------------------------------------ workload
def workload_fingerprint(trace: Trace) -> str:
    """SHA-256 of the trace's arrival and length arrays (what the table depends on, not its name)."""
    h = hashlib.sha256()
    for arr in (trace.arrival_s, trace.input_tokens, trace.output_tokens):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def workload_summary(trace: Trace) -> dict[str, Any]:
    """What the planner needs of the workload besides its fingerprint: mean lengths and the KV shape factor.

    ``kv_shape_factor`` = E[(in + out)(out - 1)] / ((E[in] + E[out]) (E[out] - 1)) corrects Little's law for the
    correlation of lengths when only mean lengths are known (a planner's observation gives only means)."""
    inp = trace.input_tokens.astype(np.float64)
    out = trace.output_tokens.astype(np.float64)
    m_in, m_out = float(inp.mean()), float(out.mean())
    denom = (m_in + m_out) * max(m_out - 1.0, 1e-9)
    return {
        "name": trace.name,
        "fingerprint": workload_fingerprint(trace),
        "requests": len(trace),
        "duration_s": trace.duration_s,
        "mean_rate_rps": trace.mean_rate_rps,
        "mean_input_tokens": m_in,
        "mean_output_tokens": m_out,
        "kv_shape_factor": float(np.mean((inp + out) * (out - 1.0))) / denom,
    }


def artifact_hash(predictor: Predictor) -> str:
    """SHA-256 of the predictor artifact's files (or of its coefficients when it was never saved)."""
    h = hashlib.sha256()
    if predictor.path is not None and (Path(predictor.path) / ARTIFACT_NPZ).exists():
        for name in (ARTIFACT_JSON, ARTIFACT_NPZ):
            h.update((Path(predictor.path) / name).read_bytes())
        return h.hexdigest()
    for k in sorted(predictor.models):
        m = predictor.models[k]
        h.update(repr(k).encode())
        for arr in (m.clocks_mhz, m.knots, m.lat_coef, m.energy_coef, m.lo, m.hi):
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def default_clocks(supported: Sequence[int], settings: CapacitySettings) -> tuple[int, ...]:
    """The candidate baseline clocks: explicit ones snapped to supported clocks (refused outside the supported
    range), or the documented default set."""
    sup = sorted(int(c) for c in supported)
    for clock in settings.clocks_mhz or ():
        check_clock_in_range(clock, sup, field="clocks")
    top = sup[-1]
    wanted = (
        settings.clocks_mhz
        if settings.clocks_mhz is not None
        else tuple(np.linspace(settings.clock_floor_frac * top, top, settings.num_clocks))
    )
    return tuple(sorted({snap_clock(round(float(w)), tuple(sup)) for w in wanted}))


# ------------------------------------------------------------------------------------------------ probes
@dataclass(frozen=True)
class ProbeResult:
    """One simulation of one configuration at one rate."""

    rate_rps: float
    slo_ok: bool
    p99_ms: float
    """P99 of the phase's metric (TTFT prefill / TPOT decode) over completed requests, ms."""
    mean_latency_ms: float
    power_w: float
    """Mean power of the instance under test over the slice, W (all its GPUs)."""


@dataclass
class ProbeContext:
    """Everything a worker needs to run probes (built once per worker)."""

    cm: PredictorCostModel
    base: Trace
    slo: Slo
    settings: CapacitySettings
    top_clock: int
    mean_in: float
    mean_out: float

    @classmethod
    def build(cls, predictor: Predictor, base: Trace, slo: Slo, settings: CapacitySettings) -> ProbeContext:
        cm = PredictorCostModel(predictor, decode_context_step_tokens=settings.decode_context_step_tokens)
        return cls(
            cm=cm,
            base=base,
            slo=slo,
            settings=settings,
            top_clock=int(cm.max_clock_mhz),
            mean_in=float(base.input_tokens.mean()),
            mean_out=float(base.output_tokens.mean()),
        )


def tabulated_tps(predictor: Predictor, cm: PredictorCostModel, phase: str, settings: CapacitySettings) -> list[int]:
    """TP degrees of a phase: profiled by the predictor, with KV room, and (if given) in ``settings.tps``."""
    out = []
    for tp in predictor.tps(phase):
        if settings.tps is not None and tp not in settings.tps:
            continue
        if cm.kv_capacity_tokens(tp) > 0:
            out.append(tp)
    if not out:
        raise InputError(f"no {phase} TP degree to plan with (predictor has {predictor.tps(phase)})", field="tps")
    return out


def throughput_estimate(ctx: ProbeContext, phase: str, tp: int, clock: int) -> float:
    """Ideal-batching throughput of one instance from the predictor, req/s (no queueing, mean lengths).

    Prefill: token-budget batches of mean-length prompts. Decode: the largest batch (KV room, ``decode_max_batch``)
    whose iteration stays within the TPOT target, each request needing ``mean_out - 1`` iterations."""
    target = ctx.slo.tpot_s
    cfg = ctx.settings.sim_config()
    cm = ctx.cm
    if phase == "prefill":
        length = max(1, round(ctx.mean_in))
        n = max(1, cfg.prefill_token_budget // length)
        lat = cm.prefill_cost(PrefillShape.from_lengths([length] * n), tp, clock).latency_s
        return n / lat
    per_req = ctx.mean_in + ctx.mean_out
    b_max = int(min(cfg.decode_max_batch, cm.kv_capacity_tokens(tp) // max(per_req, 1.0)))
    best = 0.0
    for b in range(max(b_max, 1), 0, -1):
        ctx_sum = round(b * (ctx.mean_in + ctx.mean_out / 2.0))
        lat = cm.decode_cost(DecodeShape(b, ctx_sum, float(ctx_sum * ctx_sum) / b), tp, clock).latency_s
        if lat <= target or b == 1:
            best = b / lat
            break
    return best / max(ctx.mean_out - 1.0, 1.0)


def _run_probe(ctx: ProbeContext, phase: str, tp: int, clock: int, rate_rps: float) -> SimResult:
    """One simulation of one (phase, tp, clock) instance alone at ``rate_rps`` (the simulator's phase isolation;
    the other phase's placement entry is required by the placement format and ignored)."""
    st = ctx.settings
    other = "decode" if phase == "prefill" else "prefill"
    plc = Placement(
        instances=(
            InstanceSpec(phase=phase, tp=tp, count=1, clock=clock),  # type: ignore[arg-type]
            InstanceSpec(phase=other, tp=tp, count=1),  # type: ignore[arg-type]
        )
    )
    cfg = st.sim_config(
        nodes=1, gpus_per_node=tp, slo=ctx.slo, sample_interval_s=st.probe_duration_s, isolate_phase=phase
    )
    return simulate(rescale_rate(ctx.base, rate_rps, seed=st.seed), plc, ctx.cm, config=cfg)


def _p99_decode_wait(req: Any, q: float) -> float:
    """P99 wait between a prompt's prefill end (in a decode probe: its arrival) and its decode admission (KV
    transfer start), s."""
    waits = (req["kv_transfer_start_s"] - req["prefill_end_s"]).to_numpy()
    waits = waits[np.isfinite(waits)]
    return float(np.percentile(waits, q)) if waits.size else 0.0


def probe(ctx: ProbeContext, phase: str, tp: int, clock: int, rate_rps: float) -> ProbeResult:
    """Simulate one instance of (phase, tp, clock) alone at ``rate_rps`` and check its phase's P99 SLO.

    Prefill (``isolate_phase="prefill"``): a request's TTFT is its queueing, prefill and KV transfer (to a
    notional decode instance on another node; the instance's KV is held until the transfer ends). Decode
    (``isolate_phase="decode"``): requests arrive with their KV; the wait for decode admission and the TPOT are
    checked."""
    st = ctx.settings
    q = ctx.slo.percentile
    res = _run_probe(ctx, phase, tp, clock, rate_rps)
    req = res.requests
    done = (req["status"] == "completed").to_numpy()
    if phase == "prefill":
        metric = req["ttft_s"].to_numpy()
        ok_each = done & (metric <= ctx.slo.ttft_s * (1.0 - st.ttft_decode_share))
        vals = metric[done]
        wait_ok = True
    else:
        metric = req["tpot_s"].to_numpy()
        ok_each = done & ~(metric > ctx.slo.tpot_s)  # NaN (one-token outputs) meets TPOT
        vals = metric[done & np.isfinite(metric)]
        wait_ok = _p99_decode_wait(req, q) <= ctx.slo.ttft_s * st.ttft_decode_share
    n = len(req)
    attained = 100.0 * float(ok_each.sum()) / n if n else 0.0  # no requests: no evidence of capacity
    tl = res.timeline
    mine = tl[tl["instance_id"] == 0]
    at = mine[mine["time_s"] <= st.probe_duration_s + 1e-9]
    row = at.iloc[-1] if len(at) else mine.iloc[-1]
    power = float(row["energy_j"]) / float(row["time_s"]) if float(row["time_s"]) > 0 else float("nan")
    return ProbeResult(
        rate_rps=rate_rps,
        slo_ok=bool(attained >= q and wait_ok),
        p99_ms=1e3 * float(np.percentile(vals, q)) if vals.size else float("nan"),
        mean_latency_ms=1e3 * float(vals.mean()) if vals.size else float("nan"),
        power_w=power,
    )


# ------------------------------------------------------------------------------------------------ search
@dataclass
class SearchOutcome:
    """Result of a capacity search: the last passing probe (None: none passed) and the first failing rate."""

    best: ProbeResult | None
    fail_rps: float | None
    probes: int


def search_capacity(
    run: Callable[[float], ProbeResult],
    guess_rps: float,
    *,
    spread: float,
    rel_tol: float,
    floor_rps: float,
    ceiling_fail_rps: float | None = None,
    max_probes: int = 40,
) -> SearchOutcome:
    """Largest rate with ``run(rate).slo_ok`` (assumed monotone: passes below, fails above), to ``rel_tol``.

    Probes ``guess_rps`` first, then steps by a factor ``1 + spread`` (doubling the step each time in the same
    direction) until bracketed, then bisects geometrically. ``ceiling_fail_rps`` is a rate known to fail.
    Gives up (no passing rate) below ``floor_rps``."""
    lo: ProbeResult | None = None
    hi = ceiling_fail_rps
    probes = 0
    step = 1.0 + spread
    r = guess_rps if hi is None else min(guess_rps, hi / (1.0 + rel_tol))
    while probes < max_probes:
        if lo is not None and hi is not None and hi <= lo.rate_rps * (1.0 + rel_tol):
            break
        if r < floor_rps:
            break
        res = run(r)
        probes += 1
        if res.slo_ok:
            lo = res
        else:
            hi = r
        if lo is not None and hi is not None:
            r = math.sqrt(lo.rate_rps * hi)
        elif lo is not None:
            r = lo.rate_rps * step
            step *= step
        else:
            assert hi is not None
            r = hi / step
            step *= step
    return SearchOutcome(lo, hi, probes)


@dataclass(frozen=True)
class ChainTask:
    """Search every candidate clock of one (phase, TP), top clock first."""

    phase: str
    tp: int
    clocks: tuple[int, ...]


@dataclass(frozen=True)
class ChainResult:
    phase: str
    tp: int
    rows: tuple[tuple[int, float, float, float, float, int], ...]
    """Per clock: (clock, capacity_rps, power_w at capacity, p99_ms, mean_latency_ms, probes)."""
    estimates: tuple[tuple[int, float], ...]


def _run_chain(ctx: ProbeContext, task: ChainTask) -> ChainResult:
    st = ctx.settings
    rows = []
    estimates = []
    prev: tuple[float, float | None, float] | None = None  # (capacity, first fail, estimate) of the higher clock
    floor = st.min_probe_requests / st.probe_duration_s
    for clock in sorted(task.clocks, reverse=True):
        est = throughput_estimate(ctx, task.phase, task.tp, clock)
        estimates.append((clock, est))

        def run(rate: float, clock: int = clock) -> ProbeResult:
            return probe(ctx, task.phase, task.tp, clock, rate)

        if prev is not None and prev[0] > 0 and st.reuse_brackets:
            guess = prev[0] * est / prev[2]
            out = search_capacity(
                run,
                guess,
                spread=3.0 * st.rel_tol,
                rel_tol=st.rel_tol,
                floor_rps=floor,
                ceiling_fail_rps=prev[1],
            )
        else:
            out = search_capacity(run, max(0.7 * est, floor), spread=0.25, rel_tol=st.rel_tol, floor_rps=floor)
        if out.best is None:
            rows.append((clock, 0.0, float("nan"), float("nan"), float("nan"), out.probes))
            prev = (0.0, out.fail_rps, est)
        else:
            b = out.best
            rows.append((clock, b.rate_rps, b.power_w, b.p99_ms, b.mean_latency_ms, out.probes))
            prev = (b.rate_rps, out.fail_rps, est)
    return ChainResult(task.phase, task.tp, tuple(rows), tuple(estimates))


# Worker-process state: one probe context per process (the predictor is loaded once per worker).
_WORKER_CTX: ProbeContext | None = None


def _worker_init(artifact: str, base: Trace, slo: Slo, settings: CapacitySettings) -> None:
    global _WORKER_CTX
    _WORKER_CTX = ProbeContext.build(load_predictor(artifact), base, slo, settings)


def _worker_chain(task: ChainTask) -> ChainResult:
    assert _WORKER_CTX is not None
    return _run_chain(_WORKER_CTX, task)


def _worker_power(item: tuple[str, int, int, float]) -> float:
    assert _WORKER_CTX is not None
    phase, tp, clock, rate = item
    return probe(_WORKER_CTX, phase, tp, clock, rate).power_w


# ------------------------------------------------------------------------------------------------ build
def table_key(
    predictor: Predictor, workload: Trace, slo: Slo, settings: CapacitySettings, *, version: str | None = None
) -> str:
    """Cache key: a hash of GPU/model, predictor artifact, SLOs, workload, settings, package version and the code
    the table depends on (:data:`biscale.cache.CAPACITY_CODE`), so a simulator change never reuses a stale table."""
    from biscale import __version__

    return cache_key(
        {
            "format_version": TABLE_VERSION,
            "package_version": version or __version__,
            "code": code_fingerprint(CAPACITY_CODE),
            "gpu": predictor.gpu,
            "model": predictor.model,
            "artifact": artifact_hash(predictor),
            "slo": [slo.ttft_s, slo.tpot_s, slo.percentile],
            "workload": workload_fingerprint(workload),
            "settings": _settings_dict(settings),
        }
    )


def _settings_dict(settings: CapacitySettings) -> dict[str, Any]:
    d = asdict(settings)
    d["sim_fields"] = {k: v for k, v in settings.sim_fields}
    return json.loads(json.dumps(d, default=str))


def build_capacity_table(
    predictor: Predictor,
    workload: Trace,
    slo: Slo | None = None,
    settings: CapacitySettings | None = None,
    *,
    workers: int | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> CapacityTable:
    """Build (or load from the cache) the capacity table of ``predictor`` on ``workload``.

    ``workers``: processes (default: CPU count; 1 = in this process). The result does not depend on it.
    ``cache_dir``: where tables are cached (default :func:`biscale.cache.default_cache_dir`); ``use_cache=False``
    neither reads nor writes it. ``progress(done, total)`` is called as configuration chains and power points finish."""
    slo = slo or Slo()
    settings = settings or CapacitySettings()
    if settings.clocks_mhz is not None:  # before the cache: a cached table must not excuse a clock out of range
        default_clocks(PredictorCostModel(predictor).supported_clocks_mhz, settings)
    key = table_key(predictor, workload, slo, settings)
    cache_path = entry_path("capacity", key, cache_dir)
    if use_cache and cache_path.exists():
        try:
            cached = CapacityTable.load(cache_path)
        except InputError:
            cached = None
        if cached is not None and cached.key == key:
            return CapacityTable(**{**cached.__dict__, "build_s": 0.0, "from_cache": True})
    t0 = time.perf_counter()
    base = slice_window(workload, settings.probe_start_s, settings.probe_start_s + settings.probe_duration_s)
    if len(base) < 2:
        raise InputError(
            f"workload {workload.name!r} has fewer than 2 requests in the probe slice "
            f"[{settings.probe_start_s:g}, {settings.probe_start_s + settings.probe_duration_s:g}) s",
            field="probe_duration_s",
        )
    local = ProbeContext.build(predictor, base, slo, settings)
    clocks = default_clocks(local.cm.supported_clocks_mhz, settings)
    tasks = [ChainTask(ph, tp, clocks) for ph in PHASES for tp in tabulated_tps(predictor, local.cm, ph, settings)]
    # most expensive chains first (highest rates: large TP) for load balance
    tasks.sort(key=lambda t: (-t.tp, t.phase))
    n_workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    parallel = n_workers > 1 and predictor.path is not None
    total = len(tasks) + len(tasks) * len(clocks) * len(settings.load_fractions)
    done = 0
    pool: ProcessPoolExecutor | None = None
    try:
        if parallel:
            pool = ProcessPoolExecutor(  # spawn: no fork of a process that may run threads (progress bars)
                max_workers=n_workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(str(predictor.path), base, slo, settings),
            )
        chains: list[ChainResult] = []
        it = pool.map(_worker_chain, tasks) if pool is not None else (_run_chain(local, t) for t in tasks)
        for res in it:
            chains.append(res)
            done += 1
            if progress is not None:
                progress(done, total)
        items: list[tuple[str, int, int, float]] = []
        for ch in chains:
            for clock, cap, *_ in ch.rows:
                if cap > 0:
                    items.extend((ch.phase, ch.tp, clock, f * cap) for f in settings.load_fractions)
        powers: list[float] = []
        if pool is not None:
            for p in pool.map(_worker_power, items, chunksize=max(1, len(items) // (4 * n_workers))):
                powers.append(p)
                done += 1
                if progress is not None:
                    progress(done, total)
        else:
            for item in items:
                powers.append(probe(local, *item).power_w)
                done += 1
                if progress is not None:
                    progress(done, total)
    finally:
        if pool is not None:
            pool.shutdown()
    power_of = dict(zip(items, powers, strict=True))
    configs = []
    for ch in sorted(chains, key=lambda c: (PHASES.index(c.phase), c.tp)):
        est = dict(ch.estimates)
        for clock, cap, p_cap, p99, mean_lat, n_probes in sorted(ch.rows):
            idle = local.cm.idle_power_w(ch.tp, clock) * ch.tp
            if cap > 0:
                loads = (0.0, *(f * cap for f in settings.load_fractions), cap)
                power = (idle, *(power_of[(ch.phase, ch.tp, clock, f * cap)] for f in settings.load_fractions), p_cap)
                n_probes += len(settings.load_fractions)
            else:
                loads, power = (0.0,), (idle,)
            configs.append(
                ConfigCapacity(
                    phase=ch.phase,
                    tp=ch.tp,
                    clock_mhz=clock,
                    capacity_rps=cap,
                    loads_rps=tuple(float(v) for v in loads),
                    power_w=tuple(float(v) for v in power),
                    p99_ms=p99,
                    mean_latency_ms=mean_lat,
                    kv_capacity_tokens=int(local.cm.kv_capacity_tokens(ch.tp)),
                    throughput_est_rps=est[clock],
                    probes=n_probes,
                )
            )
    table = CapacityTable(
        key=key,
        gpu=predictor.gpu,
        model=predictor.model,
        slo=slo,
        clocks_mhz=clocks,
        top_clock_mhz=local.top_clock,
        supported_clocks_mhz=tuple(int(c) for c in local.cm.supported_clocks_mhz),
        unassigned_gpu_power_w=float(local.cm.governor.idle_power_w),
        workload={**workload_summary(workload), "probe_slice_requests": len(base)},
        settings=_settings_dict(settings),
        configs=tuple(configs),
        build_s=time.perf_counter() - t0,
    )
    if use_cache:
        table.save(cache_path)
    return table
