"""What controllers and planners see: :class:`~biscale.control.state.InstanceState` snapshots built from an
instance's bookkeeping just before an iteration is priced, and the planner's
:class:`~biscale.control.state.ClusterObservation` at window boundaries.

Only quantities a real engine can observe go in (queues, batches, KV use, recent latencies); never the cost model.
Snapshots are built only for dynamic controllers (static ones are asked once, when an instance starts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np

from biscale.control.placement import Placement
from biscale.control.state import ClusterObservation, InstanceState, InstanceSummary, Slo
from biscale.sim.instance import STATUS_LABELS, DecodeInstance, Instance, InstanceStatus, PrefillInstance
from biscale.sim.requests import RequestTable

# Shared empty columns for the other phase's fields (read-only: a snapshot is built before every iteration, and
# fresh empty arrays were a measurable part of it).
_EMPTY_TOKENS = np.zeros(0, dtype=np.int64)
_EMPTY_TIMES = np.zeros(0, dtype=np.float64)
_EMPTY_TOKENS.flags.writeable = False
_EMPTY_TIMES.flags.writeable = False


class SnapshotBuilder:
    """Builds :class:`InstanceState` snapshots; holds what does not change during a run."""

    def __init__(
        self,
        requests: RequestTable,
        supported_clocks_mhz: tuple[int, ...],
        slo: Slo,
        prefill_token_budget: int,
        prefill_max_seqs: int,
        decode_max_batch: int,
        frontend_overhead_s: float = 0.0,
    ) -> None:
        self.requests = requests
        self.frontend_overhead_s = frontend_overhead_s
        self.supported_clocks_mhz = supported_clocks_mhz
        self.slo = slo
        self.prefill_token_budget = prefill_token_budget
        self.prefill_max_seqs = prefill_max_seqs
        self.decode_max_batch = decode_max_batch

    def state(self, inst: Instance, t: float) -> InstanceState:
        """The snapshot of ``inst`` at ``t``: after its next batch is formed, before that batch is priced."""
        if inst.phase == "prefill":
            return self._prefill(cast(PrefillInstance, inst), t)
        return self._decode(cast(DecodeInstance, inst), t)

    def _prefill(self, inst: PrefillInstance, t: float) -> InstanceState:
        rq = self.requests
        queue = np.fromiter(inst.queue, np.int64, len(inst.queue))
        batch = inst.batch
        ids = np.fromiter((r for r, _ in batch), np.int64, len(batch))
        done = rq.prefilled_tokens
        return InstanceState(
            time_s=t,
            instance_id=inst.id,
            phase=inst.phase,
            tp=inst.tp,
            clock_mhz=inst.ledger.clock_mhz,
            pending_clock_mhz=inst.ledger.pending_clock_mhz,
            supported_clocks_mhz=self.supported_clocks_mhz,
            waiting_prompt_tokens=rq.input_tokens_np[queue] - _gather(done, queue),
            waiting_time_s=t - rq.arrival_s_np[queue],
            running_context_tokens=_EMPTY_TOKENS,
            running_generated_tokens=_EMPTY_TOKENS,
            kv_used_tokens=inst.kv_used_tokens,
            kv_capacity_tokens=inst.kv_capacity_tokens,
            recent_latencies_s=tuple(inst.ledger.recent_latencies_s),
            slo=self.slo,
            batch_new_tokens=np.fromiter((chunk for _, chunk in batch), np.int64, len(batch)),
            batch_prefix_tokens=_gather(done, ids),
            batch_prompt_tokens=rq.input_tokens_np[ids],
            batch_waiting_time_s=t - rq.arrival_s_np[ids],
            token_budget=self.prefill_token_budget,
            max_batch_seqs=self.prefill_max_seqs,
            baseline_clock_mhz=inst.baseline_clock_mhz,
            batch_request_ids=ids,
            waiting_request_ids=queue,
            running_decode_time_s=_EMPTY_TIMES,
            running_request_ids=_EMPTY_TOKENS,
            frontend_overhead_s=self.frontend_overhead_s,
        )

    def _decode(self, inst: DecodeInstance, t: float) -> InstanceState:
        rq = self.requests
        ready = np.fromiter(inst.ready, np.int64, len(inst.ready))
        running = np.fromiter(inst.running, np.int64, len(inst.running))
        generated = rq.decode_base_np[running] + inst.iteration
        return InstanceState(
            time_s=t,
            instance_id=inst.id,
            phase=inst.phase,
            tp=inst.tp,
            clock_mhz=inst.ledger.clock_mhz,
            pending_clock_mhz=inst.ledger.pending_clock_mhz,
            supported_clocks_mhz=self.supported_clocks_mhz,
            waiting_prompt_tokens=rq.input_tokens_np[ready],
            waiting_time_s=t - rq.arrival_s_np[ready],
            running_context_tokens=rq.input_tokens_np[running] + generated,
            running_generated_tokens=generated,
            kv_used_tokens=inst.kv_used_tokens,
            kv_capacity_tokens=inst.kv_capacity_tokens,
            recent_latencies_s=tuple(inst.ledger.recent_latencies_s),
            slo=self.slo,
            max_batch_seqs=self.decode_max_batch,
            baseline_clock_mhz=inst.baseline_clock_mhz,
            running_decode_time_s=t - rq.decode_first_token_np[running],
            batch_new_tokens=_EMPTY_TOKENS,
            batch_prefix_tokens=_EMPTY_TOKENS,
            batch_prompt_tokens=_EMPTY_TOKENS,
            batch_waiting_time_s=_EMPTY_TIMES,
            batch_request_ids=_EMPTY_TOKENS,
            preemptions=inst.preemptions,
            waiting_request_ids=ready,
            running_request_ids=running,
            frontend_overhead_s=self.frontend_overhead_s,
        )


def _gather(column: list[int], ids: np.ndarray) -> np.ndarray:
    """``column[ids]`` for a request table's list column that changes often (a C-level loop)."""
    return np.fromiter(map(column.__getitem__, ids.tolist()), np.int64, ids.size)


class WindowCounters:
    """Arrivals and completions since the last planner window (kept only when a dynamic planner runs)."""

    __slots__ = ("arrivals", "completions")

    def __init__(self) -> None:
        self.arrivals: list[int] = []
        self.completions: list[int] = []

    def clear(self) -> None:
        self.arrivals.clear()
        self.completions.clear()


def cluster_observation(
    t: float,
    window_s: float,
    counters: WindowCounters,
    requests: RequestTable,
    placement: Placement,
    instances: Sequence[Instance],
    total_gpus: int,
    slo: Slo,
) -> ClusterObservation:
    """What the planner sees at the window boundary ``t``: the last window's load and every live instance."""
    arrivals = counters.arrivals
    n = len(arrivals)
    inp, out = requests.input_tokens, requests.output_tokens
    mean_in = float(np.mean([inp[r] for r in arrivals])) if n else float("nan")
    done = counters.completions
    mean_out = float(np.mean([out[r] for r in done])) if done else float("nan")
    summaries = tuple(
        InstanceSummary(
            instance_id=i.id,
            phase=i.phase,
            tp=i.tp,
            clock_mhz=i.ledger.clock_mhz,
            status=STATUS_LABELS[i.status],
            queue_len=i.queue_len,
            batch_size=i.batch_size,
            kv_used_tokens=i.kv_used_tokens,
            busy_energy_j=i.ledger.busy_energy_j,
            idle_energy_j=i.ledger.idle_energy_j,
        )
        for i in instances
        if i.status != InstanceStatus.STOPPED
    )
    return ClusterObservation(
        time_s=t,
        window_s=window_s,
        arrivals=n,
        arrival_rate_rps=n / window_s,
        mean_input_tokens=mean_in,
        mean_output_tokens=mean_out,
        completions=len(done),
        placement=placement,
        instances=summaries,
        total_gpus=total_gpus,
        slo=slo,
    )
