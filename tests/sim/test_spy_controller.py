"""What a controller sees: decide() runs after the batch is formed and before it is priced, and its snapshot carries
that batch (chunked head prompt included) and the queue behind it. Hand-built scenarios on the toy cost model."""

from __future__ import annotations

import numpy as np
import pytest

from biscale.control import (
    GOVERNOR_MHZ,
    BaselineClock,
    ClockController,
    InstanceState,
    parse_placement,
)
from biscale.costmodel import PrefillShape
from biscale.sim import SimConfig, simulate
from biscale.sim.toy import ToyCostModel
from biscale.workload import Trace

TOY = ToyCostModel()
LOW = TOY.clocks[0]


class Spy(ClockController):
    """Records every snapshot; asks for the lowest clock for the first batch, then leaves the clock alone."""

    def __init__(self, first: int | None = None) -> None:
        self.seen: list[InstanceState] = []
        self.first = first

    def decide(self, state: InstanceState) -> int | None:
        self.seen.append(state)
        return self.first if len(self.seen) == 1 else None


def tokens(a: np.ndarray) -> list[int]:
    return [int(x) for x in a]


def test_prefill_controller_sees_the_chunked_batch_and_the_queue_behind_it() -> None:
    # three prompts arrive together; a 4,096-token budget chunks the head prompt
    trace = Trace(np.zeros(3), np.array([5000, 3000, 2000]), np.array([2, 2, 2]))
    spy = Spy(first=LOW)
    cfg = SimConfig(nodes=1, gpus_per_node=2, prefill_token_budget=4096, prefill_max_seqs=8, switch_latency_s=0.0)
    res = simulate(
        trace,
        parse_placement("prefill:TP1@1410,decode:TP1"),
        TOY,
        {"prefill": spy, "decode": BaselineClock()},
        config=cfg,
    )
    assert res.summary["requests_completed"] == 3
    first, second, third, idle = spy.seen
    # batch 1 at t = 0: a 4,096-token chunk of the 5,000-token head prompt; the other two wait behind it
    assert first.time_s == 0.0 and first.phase == "prefill"
    assert tokens(first.batch_new_tokens) == [4096]
    assert tokens(first.batch_prefix_tokens) == [0]
    assert tokens(first.batch_prompt_tokens) == [5000]
    assert list(first.batch_waiting_time_s) == [0.0]
    assert tokens(first.waiting_prompt_tokens) == [3000, 2000] and first.queue_len == 2
    assert list(first.waiting_time_s) == [0.0, 0.0]
    assert first.token_budget == 4096 and first.max_batch_seqs == 8
    assert first.baseline_clock_mhz == 1440  # 1410 MHz snapped to the nearest toy clock (990 + k * 90)
    assert first.clock_mhz == 1440 and first.kv_used_tokens == 5000  # the head prompt's KV is reserved whole
    assert first.running_context_tokens.size == 0 and first.batch_size == 0  # batch_size counts decode's batch
    # batch 2: the rest of the head prompt (904 tokens after a 4,096-token prefix), the whole 3,000-token prompt and
    # a 192-token chunk of the 2,000-token prompt, which fills the budget (vLLM chunks the last prompt too)
    t1 = second.time_s
    assert tokens(second.batch_new_tokens) == [904, 3000, 192]
    assert tokens(second.batch_prefix_tokens) == [4096, 0, 0]
    assert tokens(second.batch_prompt_tokens) == [5000, 3000, 2000]
    assert list(second.batch_waiting_time_s) == [t1, t1, t1]
    assert second.waiting_prompt_tokens.size == 0
    assert second.kv_used_tokens == 10_000  # every prompt that started holds its whole KV
    # the first decision applied to the first batch (zero switch latency): it ran at the lowest clock
    chunk = PrefillShape.from_lengths([4096])
    assert second.clock_mhz == LOW
    assert second.recent_latencies_s == (pytest.approx(TOY.prefill_cost(chunk, 1, LOW).latency_s, rel=1e-12),)
    assert t1 == pytest.approx(TOY.prefill_cost(chunk, 1, LOW).latency_s, rel=1e-12)
    # batch 3: the rest of the last prompt alone, nothing behind it; the first two prompts' KV is still on its way
    assert tokens(third.batch_new_tokens) == [1808] and tokens(third.batch_prefix_tokens) == [192]
    assert third.waiting_prompt_tokens.size == 0 and third.kv_used_tokens == 10_000
    # request ids (trace indices) of the batch and the queue behind it
    assert [tokens(s.batch_request_ids) for s in spy.seen] == [[0], [0, 1, 2], [2], []]
    assert [tokens(s.waiting_request_ids) for s in spy.seen] == [[1, 2], [], [], []]
    # out of work after batch 3: asked once more, with nothing to run (the clock it waits at is its choice)
    assert idle.batch_new_tokens.size == 0 and idle.queue_len == 0 and idle.time_s > third.time_s
    rq = res.requests
    assert list(rq["prefill_start_s"]) == [0.0, t1, t1]


@pytest.mark.parametrize(
    ("policy", "kv_seen"),
    [
        # paged: 16-token blocks, 7 for request 0's 100-token prompt and 13 for request 1's 200 (no growth needed)
        ("paged", [320, 320, 320, 208, 208]),
        # full reservation: input + output of each admitted request
        ("full", [307, 307, 307, 203, 203]),
    ],
)
def test_decode_controller_sees_the_running_batch_after_admission_and_the_queue_behind_it(
    policy: str, kv_seen: list[int]
) -> None:
    # both prompts prefill in one batch; the first KV transfer lands first; a batch limit of 1 makes the second
    # request wait behind the first
    trace = Trace(np.zeros(2), np.array([100, 200]), np.array([4, 3]))
    spy = Spy()
    cfg = SimConfig(nodes=1, gpus_per_node=2, decode_max_batch=1, decode_kv_policy=policy, frontend_overhead_s=0.0)
    res = simulate(
        trace,
        parse_placement("prefill:TP1,decode:TP1@default"),
        TOY,
        {"prefill": BaselineClock(), "decode": spy},
        config=cfg,
    )
    assert res.summary["requests_completed"] == 2
    seen = spy.seen
    assert len(seen) == 5  # 3 iterations for request 0 (tokens 2..4), then 2 for request 1 (tokens 2..3)
    assert all(s.phase == "decode" and s.max_batch_seqs == 1 and s.token_budget == 0 for s in seen)
    assert all(s.baseline_clock_mhz == GOVERNOR_MHZ and s.batch_new_tokens.size == 0 for s in seen)
    ctx = [tokens(s.running_context_tokens) for s in seen]
    gen = [tokens(s.running_generated_tokens) for s in seen]
    waiting = [tokens(s.waiting_prompt_tokens) for s in seen]
    kv = [s.kv_used_tokens for s in seen]
    assert ctx == [[101], [102], [103], [201], [202]]
    assert gen == [[1], [2], [3], [1], [2]]
    assert waiting == [[], [200], [200], [], []]  # request 1's KV arrived during the first iteration
    assert kv == kv_seen
    rq = res.requests
    assert seen[0].time_s == rq.loc[0, "kv_transfer_end_s"] < rq.loc[1, "kv_transfer_end_s"] < seen[1].time_s
    assert seen[1].waiting_time_s[0] == pytest.approx(seen[1].time_s)  # waiting since arrival at t = 0
    assert seen[3].time_s == rq.loc[0, "last_token_s"]  # request 1 joins when request 0 leaves
    # ids, and each running request's time since its first token (its TPOT history)
    assert [tokens(s.running_request_ids) for s in seen] == [[0], [0], [0], [1], [1]]
    assert [tokens(s.waiting_request_ids) for s in seen] == [[], [1], [1], [], []]
    first_tok = [rq.loc[0, "first_token_s"]] * 3 + [rq.loc[1, "first_token_s"]] * 2
    assert [s.running_decode_time_s[0] for s in seen] == pytest.approx(
        [s.time_s - f for s, f in zip(seen, first_tok, strict=True)]
    )
    assert seen[0].running_decode_time_s[0] == 0.0 and seen[0].preemptions == 0


def test_decode_snapshots_match_the_request_table_through_preemptions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot's batch columns (numpy copies written when a request joins) equal what the simulator's own
    per-request lists say at that moment, through preemptions and recomputations (a small KV cache, paged)."""
    from biscale.sim.snapshot import SnapshotBuilder

    checked = {"states": 0, "preempted": 0}
    original = SnapshotBuilder._decode

    def checking(self: SnapshotBuilder, inst, t: float) -> InstanceState:  # type: ignore[no-untyped-def]
        s = original(self, inst, t)
        rq, ids = self.requests, list(inst.running)
        gen = [inst.generated_tokens(rq.decode_join_iteration[r], rq.resumed_tokens[r]) for r in ids]
        assert tokens(s.running_request_ids) == ids and tokens(s.running_generated_tokens) == gen
        assert tokens(s.running_context_tokens) == [rq.input_tokens[r] + g for r, g in zip(ids, gen, strict=True)]
        assert list(s.running_decode_time_s) == [t - rq.first_token_s[r] for r in ids]
        assert tokens(s.waiting_prompt_tokens) == [rq.input_tokens[r] for r in inst.ready]
        assert list(s.waiting_time_s) == [t - rq.arrival_s[r] for r in inst.ready]
        checked["states"] += 1
        checked["preempted"] += int(s.preemptions > 0 and len(ids) > 0)
        return s

    monkeypatch.setattr(SnapshotBuilder, "_decode", checking)
    rng = np.random.default_rng(3)
    n = 40
    arrivals = np.sort(rng.uniform(0, 2.0, n))
    trace = Trace(arrivals - arrivals[0], rng.integers(50, 400, n), rng.integers(20, 120, n))
    toy = ToyCostModel(kv_tokens_per_gpu=2_000)
    cfg = SimConfig(nodes=1, gpus_per_node=2, kv_watermark_frac=0.0, switch_latency_s=0.0)
    res = simulate(
        trace, parse_placement("prefill:TP1,decode:TP1"), toy, {"prefill": BaselineClock(), "decode": Spy()}, config=cfg
    )
    assert res.summary["requests_completed"] == n and res.summary["preemptions"] > 0
    assert checked["states"] > 100 and checked["preempted"] > 10
