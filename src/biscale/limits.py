"""Every size cap a user can reach, in one place: what a command or a scenario may ask for before it is refused.

Each cap keeps a typo (``--gpus 8000000000000``, ``--loads 67,85`` for 67 % and 85 %) from hanging a solver or
exhausting memory; the refusal (an :class:`~biscale.errors.InputError`) names the field, the number the input would
create and the cap. The memory measurements behind the caps are quoted beside each.
"""

from __future__ import annotations

import math

from biscale.errors import InputError

#: Most GPUs a cluster (and so a placement) may have: more than any LLM-serving deployment; it keeps a typo such
#: as ``--nodes 100000000`` from exhausting memory in per-GPU and per-instance state.
MAX_CLUSTER_GPUS = 131_072
#: Most requests one simulated run may hold (``simulate`` and every run of ``evaluate``). Measured peak memory:
#: ~1 KB per request (the engine's tables, the result frames and the Parquet writer; 103k requests added 100 MB):
#: ~5 GB at the limit.
MAX_SIM_REQUESTS = 5_000_000
#: Most per-instance timeline rows one run may record. Measured peak memory: ~0.5 KB per row (2.1 M rows added
#: 0.97 GB): ~2.5 GB at the limit.
MAX_TIMELINE_ROWS = 5_000_000
#: Most planning windows a trace may be cut into (one float per window, and one forecast each).
MAX_WINDOWS = 1_000_000
#: Most worker processes (``--workers``): each holds a copy of the cost model (~100 MB); more than any machine's
#: cores is a typo.
MAX_WORKERS = 1024
#: Highest load as a fraction of the searched capacity: above a few times capacity a run only queues (and a
#: percentage typed for a fraction, ``67`` for 0.67, would start runs of millions of requests).
MAX_LOAD_FRACTION = 4.0
#: Most points a sensitivity sweep may have (each point is a run per system and load).
MAX_SWEEP_POINTS = 256
#: Most requests ``loadgen`` keeps in flight (each holds a socket: more than a process's usual descriptor limit).
MAX_CONCURRENCY = 65_536
#: Most samples ``gpu watch --json`` keeps (about 0.5 KB each on a node of 8 GPUs).
MAX_WATCH_SAMPLES = 1_000_000


def check_count(value: float, cap: float, *, field: str, what: str, hint: str = "", verb: str = "would create") -> None:
    """Refuse ``value`` (a count the input would create, ``what`` says of what) above ``cap``, naming both."""
    if not math.isfinite(value) or value > cap:
        raise InputError(
            f"{verb} {_count(value)} {what}, more than the limit of {cap:,.0f}" + (f"; {hint}" if hint else ""),
            field=field,
        )


def _count(value: float) -> str:
    return f"{value:,.0f}" if math.isfinite(value) and abs(value) < 1e15 else f"{value:.3g}"


def check_gpus(gpus: int, *, field: str = "gpus") -> None:
    """A cluster of at most :data:`MAX_CLUSTER_GPUS` GPUs."""
    check_count(gpus, MAX_CLUSTER_GPUS, field=field, what="GPUs", verb="a cluster of")


def check_workers(workers: int | None, *, field: str = "--workers") -> None:
    """``None`` (the CPU count) or 1 to :data:`MAX_WORKERS` processes."""
    if workers is None:
        return
    if workers < 1:
        raise InputError(f"must be >= 1, got {workers}", field=field)
    check_count(workers, MAX_WORKERS, field=field, what="worker processes")


def check_requests(rate_rps: float, span_s: float, *, field: str, what: str = "the run") -> None:
    """A run at ``rate_rps`` over ``span_s`` seconds holds at most :data:`MAX_SIM_REQUESTS` requests."""
    requests = rate_rps * span_s
    if not math.isfinite(requests) or requests > MAX_SIM_REQUESTS:
        raise InputError(
            f"{what} would simulate about {_count(requests)} requests ({rate_rps:g} req/s over {span_s:g} s), "
            f"more than the limit of {MAX_SIM_REQUESTS:,} (the simulator needs ~1 KB per request); "
            "lower the rate or the duration",
            field=field,
        )
