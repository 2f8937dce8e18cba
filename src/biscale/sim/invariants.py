"""What must hold for any simulator run: conservation, causality, exact energy, GPU ownership.

:func:`check_invariants` reads a finished run's tables (it needs ``SimConfig.record_segments``) and raises
:class:`InvariantError` naming every check that failed. The simulator's test suite applies it to every run that
records segments; it is cheap enough for any run of up to a few thousand requests.

The checks:

* **Conservation**: every request ends exactly once, as ``completed`` (state ``done``), ``rejected`` (with a
  reason, never transferred, no decode energy), ``unfinished`` (in a state a horizon can cut) or ``not_arrived``
  (after the horizon); without a horizon nothing is unfinished.
* **Causality**: arrival <= prefill start <= prefill end <= transfer start; the first token at the transfer's end;
  token gaps within the request's decode time; no transfer from, and no token on, a stopped instance.
* **Memory**: no instance ever holds more KV than its capacity; preemptions counted once (requests, instances and
  summary agree).
* **Energy**: per-request shares sum to the busy energy (and per prefill instance to its busy energy); busy + idle
  = the instances' total; the cluster's total = instances + unassigned GPUs = the integral of the power segments;
  the unassigned energy = their power x the GPU-seconds no instance held; the sampled timeline integrates to the
  same energy.
* **GPU ownership**: every power segment of an instance lies inside its life (``start_s`` .. ``stop_s``, or the end
  of the run) and the segments tile it; no GPU belongs to two live instances at once; at every instant the
  instances' GPUs plus the unassigned GPUs are the whole cluster. (That no clock actuation reaches GPUs an instance
  does not own is checked while the run goes: :class:`~biscale.sim.clocks.ClockControl` raises.)
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from biscale.costmodel import CostModel
from biscale.sim.config import SimConfig
from biscale.sim.engine import unassigned_gpu_power
from biscale.sim.requests import RequestState

if TYPE_CHECKING:
    from biscale.sim.results import SimResult

REL = 1e-9
"""Relative tolerance of energy identities (sums of the same terms in another order)."""
TIME_EPS_S = 1e-9
"""Tolerance of time comparisons between values computed along different paths, s."""

_UNFINISHED_STATES = frozenset(
    s.label for s in RequestState if s not in (RequestState.NOT_ARRIVED, RequestState.DONE, RequestState.REJECTED)
)


class InvariantError(AssertionError):
    """A simulator run broke an invariant (a simulator bug); the message lists every failed check."""


def _close(a: float, b: float, rel: float = REL, abs_: float = 1e-9) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def check_invariants(res: SimResult, cfg: SimConfig, cost_model: CostModel) -> None:
    """Raise :class:`InvariantError` unless every invariant of the module docstring holds for ``res``."""
    failed: list[str] = []

    def expect(ok: object, what: str) -> None:
        if not bool(ok):
            failed.append(what)

    rq = res.requests
    s = res.summary
    inst = res.instances.set_index("instance_id")
    end_s = float(s["sim_time_s"])
    # ---- conservation
    expect(s["requests_total"] == len(rq), "summary counts every request")
    parts = s["requests_completed"] + s["requests_unfinished"] + s["requests_rejected"] + s["requests_not_arrived"]
    expect(parts == len(rq), "completed + unfinished + rejected + not_arrived = requests")
    expect(set(rq["status"]) <= {"completed", "unfinished", "rejected", "not_arrived"}, "known statuses only")
    done = rq[rq["status"] == "completed"]
    expect((done["state"] == "done").all(), "completed requests are done")
    unf = rq[rq["status"] == "unfinished"]
    expect(unf["state"].isin(_UNFINISHED_STATES).all(), "unfinished requests are in a state a horizon cuts")
    late = rq[rq["status"] == "not_arrived"]
    expect((late["state"] == "not_arrived").all(), "not_arrived requests never arrived")
    if cfg.max_time_s is None:
        expect(s["requests_unfinished"] == 0 and s["requests_not_arrived"] == 0, "without a horizon all finish")
    else:
        expect((late["arrival_s"] > cfg.max_time_s).all(), "only arrivals after the horizon are not_arrived")
        expect((rq.loc[rq["status"] != "not_arrived", "arrival_s"] <= cfg.max_time_s).all(), "arrivals by horizon")
    rej = rq[rq["status"] == "rejected"]
    expect((rej["reject_reason"] != "").all(), "rejections carry a reason")
    expect((rej["decode_energy_j"] == 0).all(), "rejected requests never decode")
    expect(rej["kv_transfer_start_s"].isna().all() and rej["first_token_s"].isna().all(), "rejected: no transfer")
    expect((rq.loc[rq["status"] != "rejected", "reject_reason"] == "").all(), "only rejections carry a reason")
    # ---- causality
    ov = cfg.frontend_overhead_s
    expect((done["prefill_start_s"] >= done["arrival_s"]).all(), "prefill starts after arrival")
    expect((done["prefill_end_s"] >= done["prefill_start_s"]).all(), "prefill ends after it starts")
    expect((done["first_token_s"] >= done["prefill_end_s"] + ov - 1e-12).all(), "first token after prefill")
    multi = done[done["output_tokens"] > 1]
    expect((multi["kv_transfer_start_s"] >= multi["prefill_end_s"]).all(), "transfer starts after prefill")
    expect(
        (multi["kv_transfer_end_s"] >= multi["kv_transfer_start_s"] + multi["kv_link_wait_s"] - 1e-12).all(),
        "transfer ends after its link wait",
    )
    expect((multi["kv_link_wait_s"] >= 0).all(), "link waits are non-negative")
    expect(
        np.allclose(multi["first_token_s"], multi["kv_transfer_end_s"] + ov, rtol=0, atol=1e-12),
        "first token at the transfer's end",
    )
    if cfg.isolate_phase == "prefill":
        expect((done["last_token_s"] == done["first_token_s"]).all(), "prefill isolation: one token")
    else:
        expect((multi["last_token_s"] > multi["first_token_s"]).all(), "decode tokens after the first")
        expect((multi["max_tbt_s"] > 0).all(), "token gaps are positive")
        expect(
            (multi["max_tbt_s"] <= multi["last_token_s"] - multi["first_token_s"] + 1e-12).all(),
            "largest token gap within the decode time",
        )
        expect((multi["tpot_s"] <= multi["max_tbt_s"] * (1 + 1e-12)).all(), "TPOT <= largest gap")
        expect((done["tokens_generated"] == done["output_tokens"]).all(), "completed: every token generated")
    single = done[done["output_tokens"] == 1]
    expect((single["last_token_s"] == single["first_token_s"]).all(), "one-token answers end at the first token")
    expect(single["tpot_s"].isna().all(), "one-token answers have no TPOT")
    expect((rq["ttft_s"].dropna() >= ov - 1e-12).all(), "TTFT includes the front-end overhead")
    moved = rq[(rq["prefill_instance"] >= 0) & rq["kv_transfer_end_s"].notna()]
    stop = inst.loc[moved["prefill_instance"], "stop_s"].to_numpy()
    expect(
        (np.isnan(stop) | (moved["kv_transfer_end_s"].to_numpy() <= stop + 1e-12)).all(),
        "no transfer from a stopped prefill instance",
    )
    served = rq[rq["decode_instance"] >= 0]
    d_stop = inst.loc[served["decode_instance"], "stop_s"].to_numpy()
    expect(
        (np.isnan(d_stop) | (served["last_token_s"].fillna(-1.0).to_numpy() <= d_stop + ov + 1e-12)).all(),
        "no token from a stopped decode instance",
    )
    # ---- memory, preemptions
    expect((inst["kv_peak_tokens"] <= inst["kv_capacity_tokens"]).all(), "KV peak within capacity")
    tl = res.timeline
    expect((tl["kv_used_tokens"] <= tl["kv_capacity_tokens"]).all(), "sampled KV within capacity")
    expect((tl["kv_used_tokens"] >= 0).all(), "sampled KV non-negative")
    if cfg.decode_kv_policy == "full":
        expect(s["preemptions"] == 0, "full reservation never preempts")
    expect(
        s["preemptions"] == int(rq["preemptions"].sum()) == int(inst["preemptions"].sum()),
        "preemptions counted once (summary = requests = instances)",
    )
    # ---- energy
    expect(_close(rq["energy_j"].sum(), s["energy_busy_j"]), "request energy shares sum to busy energy")
    expect(_close(s["energy_busy_j"] + s["energy_idle_j"], s["energy_total_j"], abs_=0.0), "busy + idle = total")
    expect(
        _close(s["energy_cluster_j"], s["energy_total_j"] + s["energy_unassigned_j"], abs_=0.0),
        "cluster = instances + unassigned",
    )
    rows: dict[int, dict[Any, Any]] = {int(r["instance_id"]): r for r in res.instances.to_dict("records")}
    shares = rq.groupby("prefill_instance")["prefill_energy_j"].sum()
    for iid, e in zip(shares.index.to_numpy(), shares.to_numpy(), strict=True):
        if iid >= 0:
            expect(_close(float(e), float(rows[int(iid)]["busy_energy_j"]), abs_=0.0), f"prefill {iid}: shares = busy")
    seg = res.segments
    if seg is None:
        raise InvariantError("check_invariants needs a run with SimConfig.record_segments")
    expect((seg["end_s"] >= seg["start_s"]).all(), "segments have non-negative length")
    seg_energy = (seg["end_s"] - seg["start_s"]) * seg["power_w"]
    expect(_close(float(seg_energy.sum()), s["energy_cluster_j"]), "cluster energy = integral of segments")
    free = seg["instance_id"] == -1
    expect(_close(float(seg_energy[free].sum()), s["energy_unassigned_j"]), "unassigned energy = its segments")
    life_end = inst["stop_s"].fillna(end_s)
    life = float(((life_end - inst["start_s"]) * inst["tp"]).sum())
    p_free = unassigned_gpu_power(cfg.unassigned_gpu_power_w, cost_model)
    expect(
        _close(s["energy_unassigned_j"], p_free * (cfg.total_gpus * end_s - life), abs_=1e-9),
        "unassigned energy = power x GPU-seconds in no instance",
    )
    ends_at = {iid: (end_s if math.isnan(row["stop_s"]) else float(row["stop_s"])) for iid, row in rows.items()}
    for iid, row in rows.items():
        mine = seg[seg["instance_id"] == iid].sort_values("start_s", kind="stable")
        e_mine = (mine["end_s"] - mine["start_s"]) * mine["power_w"]
        expect(_close(float(e_mine.sum()), row["energy_j"]), f"instance {iid}: energy = integral of segments")
        busy = mine["busy"] == 1
        expect(_close(float(e_mine[busy].sum()), row["busy_energy_j"]), f"instance {iid}: busy energy = segments")
        if not len(mine):
            continue
        starts, ends = mine["start_s"].to_numpy(), mine["end_s"].to_numpy()
        last = ends_at[iid]
        expect(abs(starts[0] - row["start_s"]) <= 1e-12, f"instance {iid}: segments start at its start")
        expect(np.allclose(starts[1:], ends[:-1], rtol=0, atol=TIME_EPS_S), f"instance {iid}: segments tile")
        expect(ends.max() <= last + TIME_EPS_S, f"instance {iid}: no segment after it stopped ({ends.max()} > {last})")
        if row["final_status"] == "stopped":
            expect(abs(ends[-1] - last) <= TIME_EPS_S, f"instance {iid}: segments reach its stop")
    # ---- GPU ownership: one owner per GPU at a time, instances + unassigned = the cluster at every instant
    spans: dict[int, list[tuple[float, float, int]]] = {}
    for iid, row in rows.items():
        for g_text in str(row["gpus"]).split(","):
            spans.setdefault(int(g_text), []).append((float(row["start_s"]), ends_at[iid], iid))
    expect(all(0 <= g < cfg.total_gpus for g in spans), "GPU ids inside the cluster")
    for gpu, held in spans.items():
        held.sort()
        for (_, e0, a), (s1, _, b) in itertools.pairwise(held):
            expect(s1 >= e0 - TIME_EPS_S, f"GPU {gpu} held by instances {a} and {b} at once")
    cuts = np.unique(np.concatenate([inst["start_s"].to_numpy(), life_end.to_numpy(), [0.0, end_s]]))
    mids = (cuts[:-1] + cuts[1:]) / 2
    starts_a, ends_a, tps = inst["start_s"].to_numpy(), life_end.to_numpy(), inst["tp"].to_numpy()
    owned = ((starts_a[None, :] <= mids[:, None]) & (mids[:, None] < ends_a[None, :])) @ tps
    expect((owned <= cfg.total_gpus).all(), "instances never hold more GPUs than the cluster has")
    if p_free > 0:
        fs = seg[free]
        fs_start, fs_end, fs_n = fs["start_s"].to_numpy(), fs["end_s"].to_numpy(), fs["power_w"].to_numpy() / p_free
        for m, n_owned in zip(mids, owned, strict=True):
            hit = (fs_start <= m) & (m < fs_end)
            n_free = float(fs_n[hit].sum()) if hit.any() else 0.0
            expect(
                abs(n_free + n_owned - cfg.total_gpus) < 1e-6,
                f"at {m:g} s: {n_owned} instance GPUs + {n_free:g} unassigned != {cfg.total_gpus}",
            )
    # ---- the sampled timeline integrates to the same energy
    times = np.unique(tl["time_s"].to_numpy())
    prev_t = dict(zip(times, np.concatenate([[0.0], times[:-1]]), strict=True))
    for iid in rows:
        mine_tl = tl[tl["instance_id"] == iid].sort_values("time_s")
        if not len(mine_tl):
            continue
        t_s = mine_tl["time_s"].to_numpy()
        dt = t_s - np.array([prev_t[t] for t in t_s])
        ok = dt > 0
        integral = float((mine_tl["power_w"].to_numpy()[ok] * dt[ok]).sum())
        e_last = float(mine_tl["energy_j"].to_numpy()[-1])
        expect(_close(integral, e_last), f"instance {iid}: timeline power integrates to its energy")
        expect(_close(e_last, float(rows[iid]["energy_j"]), abs_=0.0), f"instance {iid}: timeline energy")
    if failed:
        raise InvariantError("; ".join(failed))
