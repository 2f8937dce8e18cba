"""Tiny hand-computed scenarios, exact to 1e-9 against the hardware model's own numbers.

Expected values are built by calling the cost model directly with the shapes the batching rules imply.
"""

from __future__ import annotations

import numpy as np
import pytest

from biscale.control import ClockController, InstanceState, MaxClock, parse_placement
from biscale.costmodel import DecodeShape, PrefillShape
from biscale.hardware import get_hardware
from biscale.sim import SimConfig, simulate
from biscale.workload import Trace

HW = get_hardware("h100-sxm", "llama-3.3-70b")
FMAX = HW.supported_clocks_mhz[-1]
ONE_EACH = parse_placement("prefill:1xTP2,decode:1xTP4")
CFG = SimConfig(frontend_overhead_s=0.0, nodes=1, gpus_per_node=8, record_segments=True)
REL = 1e-9


def trace(arrivals: list[float], inputs: list[int], outputs: list[int]) -> Trace:
    return Trace(np.array(arrivals, float), np.array(inputs), np.array(outputs))


def transfer_s(tokens: int, tp_p: int = 2, tp_d: int = 4) -> float:
    net = CFG.network  # both instances share node 0 in a 1 x 8 cluster
    return net.nvlink_latency_s + HW.kv_bytes_per_token * tokens / (net.nvlink_bw_bytes_per_s * min(tp_p, tp_d))


def decode_iter(contexts: list[int], clock: int | None = FMAX, tp: int = 4) -> tuple[float, float]:
    """(latency s, energy J of the whole instance) of one decode iteration."""
    c = HW.decode_cost(DecodeShape.from_lengths(contexts), tp, clock)
    return c.latency_s, c.latency_s * c.power_w * tp


def test_one_request() -> None:
    L, n_out = 700, 5
    res = simulate(trace([0.0], [L], [n_out]), ONE_EACH, HW, MaxClock(), config=CFG)
    r = res.requests.iloc[0]
    pc = HW.prefill_cost(PrefillShape.from_lengths([L]), 2, FMAX)
    p_end = pc.latency_s
    first = p_end + transfer_s(L)
    lats, energies = zip(*(decode_iter([L + i]) for i in range(1, n_out)), strict=True)
    last = first + sum(lats)
    assert r["status"] == "completed"
    assert r["prefill_end_s"] == pytest.approx(p_end, rel=REL)
    assert r["kv_transfer_start_s"] == pytest.approx(p_end, rel=REL)
    assert r["ttft_s"] == pytest.approx(first, rel=REL)
    assert r["last_token_s"] == pytest.approx(last, rel=REL)
    assert r["tpot_s"] == pytest.approx(sum(lats) / (n_out - 1), rel=REL)
    assert r["max_tbt_s"] == pytest.approx(max(lats), rel=REL)
    assert r["prefill_energy_j"] == pytest.approx(pc.latency_s * pc.power_w * 2, rel=REL)
    assert r["decode_energy_j"] == pytest.approx(sum(energies), rel=REL)
    # idle: each instance idles at the top clock whenever it is not computing, until the run ends at `last`
    s = res.summary
    idle = HW.idle_power_w(2, FMAX) * 2 * (last - p_end) + HW.idle_power_w(4, FMAX) * 4 * (last - sum(lats))
    assert s["energy_idle_j"] == pytest.approx(idle, rel=REL)
    assert s["energy_busy_j"] == pytest.approx(r["energy_j"], rel=REL)
    assert s["sim_time_s"] == pytest.approx(last, rel=REL)
    assert s["decode_tokens"] == n_out - 1 and s["prompt_tokens"] == L


def test_two_requests_share_a_prefill_batch_and_decode_iterations() -> None:
    L0, L1 = 300, 500
    res = simulate(trace([0.0, 0.0], [L0, L1], [3, 3]), ONE_EACH, HW, MaxClock(), config=CFG)
    r0, r1 = res.requests.iloc[0], res.requests.iloc[1]
    pc = HW.prefill_cost(PrefillShape.from_lengths([L0, L1]), 2, FMAX)
    e_pre = pc.latency_s * pc.power_w * 2
    assert r0["prefill_end_s"] == r1["prefill_end_s"] == pytest.approx(pc.latency_s, rel=REL)
    assert r0["prefill_energy_j"] == pytest.approx(e_pre * L0 / (L0 + L1), rel=REL)
    assert r1["prefill_energy_j"] == pytest.approx(e_pre * L1 / (L0 + L1), rel=REL)
    # r0's KV lands first and starts decode alone; r1's transfer needs the same NVLink lanes of the prefill
    # instance, so it follows r0's (FIFO); r1 joins at the next iteration boundary
    f0 = pc.latency_s + transfer_s(L0)
    f1 = f0 + transfer_s(L1)
    assert r0["first_token_s"] == pytest.approx(f0, rel=REL) and r1["first_token_s"] == pytest.approx(f1, rel=REL)
    lat0, e0 = decode_iter([L0 + 1])
    lat1, e1 = decode_iter([L0 + 2, L1 + 1])
    lat2, e2 = decode_iter([L1 + 2])
    assert r0["last_token_s"] == pytest.approx(f0 + lat0 + lat1, rel=REL)
    assert r1["last_token_s"] == pytest.approx(f0 + lat0 + lat1 + lat2, rel=REL)
    assert r0["decode_energy_j"] == pytest.approx(e0 + e1 / 2, rel=REL)
    assert r1["decode_energy_j"] == pytest.approx(e1 / 2 + e2, rel=REL)
    assert r1["max_tbt_s"] == pytest.approx(max(f0 + lat0 + lat1 - f1, lat2), rel=REL)
    assert r0["tpot_s"] == pytest.approx((lat0 + lat1) / 2, rel=REL)


def test_chunked_long_prompt_and_a_short_one_joining_the_last_chunk() -> None:
    cfg = SimConfig(frontend_overhead_s=0.0, nodes=1, gpus_per_node=8, prefill_token_budget=4096)
    L, S = 10_000, 100
    res = simulate(trace([0.0, 0.001], [L, S], [2, 2]), ONE_EACH, HW, MaxClock(), config=cfg)
    long, short = res.requests.iloc[0], res.requests.iloc[1]
    c1 = HW.prefill_cost(PrefillShape.from_lengths([4096], [0]), 2, FMAX)
    c2 = HW.prefill_cost(PrefillShape.from_lengths([4096], [4096]), 2, FMAX)
    c3 = HW.prefill_cost(PrefillShape.from_lengths([1808, S], [8192, 0]), 2, FMAX)
    end = c1.latency_s + c2.latency_s + c3.latency_s
    assert long["prefill_start_s"] == 0.0
    assert long["prefill_end_s"] == pytest.approx(end, rel=REL)
    assert short["prefill_start_s"] == pytest.approx(c1.latency_s + c2.latency_s, rel=REL)
    assert short["prefill_end_s"] == pytest.approx(end, rel=REL)
    assert long["ttft_s"] == pytest.approx(end + transfer_s(L), rel=REL)
    e3 = c3.latency_s * c3.power_w * 2
    e_long = (c1.latency_s * c1.power_w + c2.latency_s * c2.power_w) * 2 + e3 * 1808 / (1808 + S)
    assert long["prefill_energy_j"] == pytest.approx(e_long, rel=REL)
    assert short["prefill_energy_j"] == pytest.approx(e3 * S / (1808 + S), rel=REL)


class SwitchOnSecondCall(ClockController):
    """Decode: keep the clock for the first iteration, then ask for ``low``."""

    def __init__(self, low: int) -> None:
        self.low = low
        self.calls = 0

    def decide(self, state: InstanceState) -> int | None:
        self.calls += 1
        assert state.phase == "decode" and state.clock_mhz in (FMAX, self.low)
        return None if self.calls == 1 else self.low


def test_clock_switch_lands_mid_iteration() -> None:
    L, n_out, low = 400, 5, 1200
    ctrl = SwitchOnSecondCall(low)
    cfg = SimConfig(frontend_overhead_s=0.0, nodes=1, gpus_per_node=8, switch_latency_s=0.010, record_segments=True)
    res = simulate(trace([0.0], [L], [n_out]), ONE_EACH, HW, {"prefill": MaxClock(), "decode": ctrl}, config=cfg)
    r = res.requests.iloc[0]
    first = HW.prefill_cost(PrefillShape.from_lengths([L]), 2, FMAX).latency_s + transfer_s(L)
    lat0, e0 = decode_iter([L + 1])
    # iteration 1 starts at the top clock; the switch lands 10 ms later and the rest runs at `low`
    hi = HW.decode_cost(DecodeShape.from_lengths([L + 2]), 4, FMAX)
    lo = HW.decode_cost(DecodeShape.from_lengths([L + 2]), 4, low)
    assert hi.latency_s > 0.010
    done = 0.010 / hi.latency_s
    lat1 = 0.010 + (1 - done) * lo.latency_s
    e1 = 4 * (hi.power_w * 0.010 + lo.power_w * (1 - done) * lo.latency_s)
    rest = [decode_iter([L + i], low) for i in (3, 4)]
    assert r["first_token_s"] == pytest.approx(first, rel=REL)
    assert r["last_token_s"] == pytest.approx(first + lat0 + lat1 + sum(x for x, _ in rest), rel=REL)
    assert r["decode_energy_j"] == pytest.approx(e0 + e1 + sum(e for _, e in rest), rel=REL)
    inst = res.instances.set_index("phase").loc["decode"]
    assert inst["clock_switches"] == 1
    assert res.summary["clock_switches"] == 1
    # after the run the decode instance idles at the new clock
    end = res.summary["sim_time_s"]
    assert end == pytest.approx(r["last_token_s"], rel=REL)
    idle_decode = HW.idle_power_w(4, FMAX) * 4 * first
    assert inst["idle_energy_j"] == pytest.approx(idle_decode, rel=REL)


def test_default_governor_idle_energy_and_wake_penalty() -> None:
    gov = HW.governor
    gap = 2 * gov.downclock_after_s
    assert gap > gov.downclock_after_s
    from biscale.control import DefaultGovernor

    res = simulate(trace([0.0, gap], [200, 200], [1, 1]), ONE_EACH, HW, DefaultGovernor(), config=CFG)
    r0, r1 = res.requests.iloc[0], res.requests.iloc[1]
    pc = HW.prefill_cost(PrefillShape.from_lengths([200]), 2, None)
    # the new instance has been idle 0 s at t=0 (no wake); the second request finds it down-clocked
    assert r0["ttft_s"] == pytest.approx(pc.latency_s, rel=REL)  # one-token output: done at prefill end
    assert r1["ttft_s"] == pytest.approx(gov.wake_delay_s + pc.latency_s, rel=REL)
    e_iter = pc.latency_s * pc.power_w * 2
    assert r0["energy_j"] == pytest.approx(e_iter, rel=REL)
    assert r1["energy_j"] == pytest.approx(e_iter + gov.wake_delay_s * gov.shallow_idle_power_w * 2, rel=REL)
    end = gap + gov.wake_delay_s + pc.latency_s
    pre = res.instances.set_index("phase").loc["prefill"]
    assert pre["idle_energy_j"] == pytest.approx(2 * gov.idle_energy_j(gap - pc.latency_s), rel=REL)
    dec = res.instances.set_index("phase").loc["decode"]
    assert dec["idle_energy_j"] == pytest.approx(4 * gov.idle_energy_j(end), rel=REL)
    assert dec["busy_energy_j"] == 0.0
