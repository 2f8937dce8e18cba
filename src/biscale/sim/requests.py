"""Per-request bookkeeping: where each request stands (:class:`RequestState`) and what happened to it
(:class:`RequestTable`).

The table is a struct of Python lists indexed by request id (the trace index), because the event loop reads and
writes single entries millions of times and list indexing is the cheapest thing Python does. Results read it
through :meth:`RequestTable.to_frame`, which also derives TTFT, TPOT and the status column.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import pandas as pd


class RequestState(IntEnum):
    """Where a request stands. Unfinished requests keep the state they were in when the run ended."""

    NOT_ARRIVED = 0
    """Arrives after the horizon (never submitted)."""
    WAITING_PREFILL = 1
    """Queued for prefill (on an instance or in the global queue)."""
    PREFILLING = 2
    """At least one chunk prefilled; more to go or in the batch now."""
    WAITING_DECODE_MEMORY = 3
    """Prefilled; waiting for a decode instance with room for its KV (global FIFO)."""
    TRANSFERRING = 4
    """KV on its way to the decode instance that reserved memory for it."""
    WAITING_DECODE = 5
    """First token delivered; waiting to join the decode batch."""
    DECODING = 6
    """In a decode instance's running batch."""
    DONE = 7
    """Every output token delivered."""
    REJECTED = 8
    """Refused (reason recorded): it can never fit the placement (at arrival, or after a placement change)."""
    PREEMPTED = 9
    """Evicted from a decode batch when KV memory ran out; waits on its decode instance to be recomputed."""

    @property
    def label(self) -> str:
        """The name used in result tables, e.g. ``waiting_prefill``."""
        return self.name.lower()


#: ``STATE_LABELS[state]`` is the label of a state code (vectorised lookups in :meth:`RequestTable.to_frame`).
STATE_LABELS: tuple[str, ...] = tuple(s.label for s in RequestState)

_FINAL = (RequestState.DONE.value, RequestState.REJECTED.value)

#: Column order of the per-request table (units and meanings in ``docs/simulator.md``).
REQUEST_COLUMNS = (
    "request_id",
    "arrival_s",
    "input_tokens",
    "output_tokens",
    "status",
    "state",
    "reject_reason",
    "prefill_instance",
    "decode_instance",
    "prefill_start_s",
    "prefill_end_s",
    "kv_transfer_start_s",
    "kv_transfer_end_s",
    "kv_link_wait_s",
    "first_token_s",
    "last_token_s",
    "ttft_s",
    "tpot_s",
    "max_tbt_s",
    "tokens_generated",
    "preemptions",
    "prefill_energy_j",
    "decode_energy_j",
    "energy_j",
)


class RequestTable:
    """Everything the simulator tracks per request, one list entry per request id (times in seconds from the
    trace start, ``nan`` until they happen; instance ids ``-1`` until assigned)."""

    __slots__ = (
        "arrival_s",
        "arrival_s_np",
        "decode_base_np",
        "decode_energy_j",
        "decode_first_token_np",
        "decode_instance",
        "decode_join_iteration",
        "first_token_only",
        "first_token_s",
        "frontend_overhead_s",
        "input_tokens",
        "input_tokens_np",
        "kv_link_wait_s",
        "kv_transfer_end_s",
        "kv_transfer_start_s",
        "last_token_s",
        "max_tbt_s",
        "output_tokens",
        "preemptions",
        "prefill_end_s",
        "prefill_energy_j",
        "prefill_instance",
        "prefill_start_s",
        "prefilled_tokens",
        "reject_reason",
        "resumed_tokens",
        "size",
        "state",
        "tokens_generated",
    )

    def __init__(
        self,
        arrival_s: list[float],
        input_tokens: list[int],
        output_tokens: list[int],
        frontend_overhead_s: float = 0.0,
        first_token_only: bool = False,
    ) -> None:
        n = len(arrival_s)
        if not len(input_tokens) == len(output_tokens) == n:
            raise ValueError("arrival_s, input_tokens and output_tokens must have equal lengths")
        nan = float("nan")
        self.size = n
        self.arrival_s = arrival_s
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        """Output tokens including the first one (produced by prefill)."""
        self.state: list[int] = [RequestState.NOT_ARRIVED.value] * n
        """:class:`RequestState` codes, stored as plain ints (hot-path comparisons)."""
        self.prefill_instance = [-1] * n
        self.decode_instance = [-1] * n
        self.prefill_start_s = [nan] * n
        self.prefill_end_s = [nan] * n
        self.kv_transfer_start_s = [nan] * n
        self.kv_transfer_end_s = [nan] * n
        self.kv_link_wait_s = [nan] * n
        """Time the transfer waited for its links after decode memory was reserved (shared links, FIFO)."""
        self.first_token_s = [nan] * n
        """When the engine produced the first token (the table adds ``frontend_overhead_s``)."""
        self.last_token_s = [nan] * n
        self.max_tbt_s = [nan] * n
        """Largest time between consecutive tokens; while decoding, the gap before the first decode token."""
        self.prefill_energy_j = [0.0] * n
        self.decode_energy_j = [0.0] * n
        self.prefilled_tokens = [0] * n
        """Prompt tokens already prefilled (grows chunk by chunk)."""
        self.decode_join_iteration = [-1] * n
        """Index of the decode iteration at which the request (last) joined its instance's batch."""
        self.resumed_tokens = [0] * n
        """Decode tokens generated before the request's current stint in a decode batch (0 unless preempted)."""
        self.preemptions = [0] * n
        """Times the request was preempted (its decode KV freed and later recomputed)."""
        self.tokens_generated = [0] * n
        """Tokens delivered, set when the run is collected (see :meth:`to_frame`)."""
        self.reject_reason: dict[int, str] = {}
        self.frontend_overhead_s = frontend_overhead_s
        # Numpy columns for the controllers' snapshots, which gather them for whole queues and batches before every
        # iteration (the lists above are faster for the simulator's one-request-at-a-time work): copies of the
        # fixed columns, and two decode columns written when a request joins a decode batch.
        self.arrival_s_np = np.asarray(arrival_s, dtype=np.float64)
        self.input_tokens_np = np.asarray(input_tokens, dtype=np.int64)
        self.decode_base_np = np.zeros(n, dtype=np.int64)
        """Tokens generated by a running decode request, less its instance's iteration count: ``1 + resumed -
        join iteration`` (set when it joins a batch; a snapshot adds the iteration)."""
        self.decode_first_token_np = np.full(n, nan)
        """``first_token_s`` of a running decode request (set when it joins a batch)."""
        self.first_token_only = first_token_only
        """Decode is not simulated (prefill isolation): a completed request delivered its first token only (TPOT is
        NaN, ``tokens_generated`` 1)."""
        """Front-end cost added to every delivered token's time in the table (API server, tokenisation, scheduling,
        streaming; ``SimConfig.frontend_overhead_s``), s. Engine times (``first_token_s`` here) exclude it."""

    def reject(self, r: int, reason: str) -> None:
        """Refuse request ``r`` with a one-line reason (a request ends once: refusing a finished one is a bug)."""
        if self.state[r] in _FINAL:
            raise RuntimeError(f"request {r} rejected after it ended ({STATE_LABELS[self.state[r]]}): {reason}")
        self.state[r] = RequestState.REJECTED.value
        self.reject_reason[r] = reason

    def to_frame(self) -> pd.DataFrame:
        """The per-request table (columns :data:`REQUEST_COLUMNS`).

        ``tokens_generated``: the output length for finished requests, the recorded progress for requests still
        decoding, 1 for a request whose first token was delivered but that never decoded, else 0. ``status`` is
        ``completed``, ``rejected``, ``not_arrived`` (arrives after the horizon: never submitted) or ``unfinished``.
        Token times (``first_token_s``, ``last_token_s`` and so TTFT) include the front-end overhead.
        """
        n = self.size
        state = np.asarray(self.state, dtype=np.int64)
        arrival = np.asarray(self.arrival_s, dtype=np.float64)
        out = np.asarray(self.output_tokens, dtype=np.int64)
        first = np.asarray(self.first_token_s, dtype=np.float64)
        last = np.asarray(self.last_token_s, dtype=np.float64)
        if self.frontend_overhead_s:
            first = first + self.frontend_overhead_s
            last = last + self.frontend_overhead_s
        done = state == RequestState.DONE
        generated = np.asarray(self.tokens_generated, dtype=np.int64)
        generated[done] = 1 if self.first_token_only else out[done]
        generated[np.isfinite(first) & ~done & (generated == 0)] = 1
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(done & (out > 1) & (not self.first_token_only), (last - first) / (out - 1), np.nan)
        status = np.select(
            [done, state == RequestState.REJECTED, state == RequestState.NOT_ARRIVED],
            ["completed", "rejected", "not_arrived"],
            "unfinished",
        )
        p_energy = np.asarray(self.prefill_energy_j, dtype=np.float64)
        d_energy = np.asarray(self.decode_energy_j, dtype=np.float64)
        return pd.DataFrame(
            {
                "request_id": np.arange(n, dtype=np.int64),
                "arrival_s": arrival,
                "input_tokens": np.asarray(self.input_tokens, dtype=np.int64),
                "output_tokens": out,
                "status": status,
                "state": np.asarray(STATE_LABELS, dtype=object)[state],
                "reject_reason": [self.reject_reason.get(i, "") for i in range(n)],
                "prefill_instance": np.asarray(self.prefill_instance, dtype=np.int64),
                "decode_instance": np.asarray(self.decode_instance, dtype=np.int64),
                "prefill_start_s": np.asarray(self.prefill_start_s, dtype=np.float64),
                "prefill_end_s": np.asarray(self.prefill_end_s, dtype=np.float64),
                "kv_transfer_start_s": np.asarray(self.kv_transfer_start_s, dtype=np.float64),
                "kv_transfer_end_s": np.asarray(self.kv_transfer_end_s, dtype=np.float64),
                "kv_link_wait_s": np.asarray(self.kv_link_wait_s, dtype=np.float64),
                "first_token_s": first,
                "last_token_s": last,
                "ttft_s": first - arrival,
                "tpot_s": tpot,
                "max_tbt_s": np.asarray(self.max_tbt_s, dtype=np.float64),
                "tokens_generated": generated,
                "preemptions": np.asarray(self.preemptions, dtype=np.int64),
                "prefill_energy_j": p_energy,
                "decode_energy_j": d_energy,
                "energy_j": p_energy + d_energy,
            },
            columns=list(REQUEST_COLUMNS),
        )
