"""The capacity table: search, probes on beliefs, monotonicity, power points, cache and determinism."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from biscale.control.state import Slo
from biscale.errors import InputError
from biscale.plan.capacity import (
    CapacitySettings,
    CapacityTable,
    ProbeContext,
    ProbeResult,
    build_capacity_table,
    default_clocks,
    probe,
    search_capacity,
    table_key,
)
from biscale.predict import PredictorCostModel, default_predictor
from biscale.workload import slice_window

from .conftest import SMALL


def _threshold(limit: float, calls: list[float]):  # type: ignore[no-untyped-def]
    def run(rate: float) -> ProbeResult:
        calls.append(rate)
        return ProbeResult(rate, rate <= limit, 0.0, 0.0, rate)

    return run


@pytest.mark.parametrize("limit, guess", [(10.0, 7.0), (10.0, 30.0), (0.5, 40.0), (123.0, 1.0)])
def test_search_brackets_then_bisects_to_tolerance(limit: float, guess: float) -> None:
    calls: list[float] = []
    out = search_capacity(_threshold(limit, calls), guess, spread=0.25, rel_tol=0.02, floor_rps=1e-3)
    assert out.best is not None and out.fail_rps is not None
    assert out.best.rate_rps <= limit < out.fail_rps <= out.best.rate_rps * 1.02 + 1e-12
    assert out.probes == len(calls) <= 25


def test_search_respects_a_known_failing_ceiling_and_gives_up_below_the_floor() -> None:
    calls: list[float] = []
    out = search_capacity(_threshold(10.0, calls), 50.0, spread=0.06, rel_tol=0.02, floor_rps=1e-3, ceiling_fail_rps=12)
    assert max(calls) < 12 and out.best is not None and 10.0 / 1.02 <= out.best.rate_rps <= 10.0
    calls.clear()
    none = search_capacity(_threshold(0.001, calls), 5.0, spread=0.25, rel_tol=0.02, floor_rps=0.1)
    assert none.best is None and min(calls) >= 0.1


def test_default_clock_set_spans_the_documented_range() -> None:
    supported = tuple(range(345, 1981, 15))
    clocks = default_clocks(supported, CapacitySettings())
    assert len(clocks) == 7 and clocks[-1] == 1980 and all(c in supported for c in clocks)
    assert abs(clocks[0] - 0.4 * 1980) <= 7.5
    assert default_clocks(supported, CapacitySettings(clocks_mhz=(1000, 1979))) == (1005, 1980)


def test_every_row_meets_its_slo_when_probed_again(small_table: CapacityTable, workload) -> None:  # type: ignore[no-untyped-def]
    ctx = ProbeContext.build(default_predictor(), slice_window(workload, 0, SMALL.probe_duration_s), Slo(), SMALL)
    for c in small_table.configs:
        assert c.capacity_rps > 0
        res = probe(ctx, c.phase, c.tp, c.clock_mhz, c.capacity_rps)
        assert res.slo_ok
        target = Slo().ttft_s * (1 - SMALL.ttft_decode_share) if c.phase == "prefill" else Slo().tpot_s
        assert res.p99_ms <= 1e3 * target
        assert res.power_w == pytest.approx(c.power_w[-1], rel=1e-9)  # deterministic
        # the ideal-batching estimate is an upper bound of what survives the SLO
        assert c.capacity_rps <= c.throughput_est_rps


def test_capacity_is_monotone_in_clock_and_tp(small_table: CapacityTable) -> None:
    # searched independently (reuse_brackets=False): monotonicity is measured, not imposed
    tol = SMALL.rel_tol
    for ph in ("prefill", "decode"):
        for tp in (4, 8):
            lo, hi = small_table.get(ph, tp, 1185), small_table.get(ph, tp, 1980)
            assert lo is not None and hi is not None
            assert hi.capacity_rps >= lo.capacity_rps * (1 - tol)
        for clock in (1185, 1980):
            small, big = small_table.get(ph, 4, clock), small_table.get(ph, 8, clock)
            assert small is not None and big is not None
            assert big.capacity_rps >= small.capacity_rps * (1 - tol)


def test_power_points_start_at_idle_and_grow_with_load(small_table: CapacityTable) -> None:
    cm = PredictorCostModel(default_predictor())
    for c in small_table.configs:
        assert c.loads_rps[0] == 0 and c.loads_rps[-1] == c.capacity_rps
        assert c.power_w[0] == pytest.approx(cm.idle_power_w(c.tp, c.clock_mhz) * c.tp)
        assert all(b >= a * 0.98 for a, b in zip(c.power_w, c.power_w[1:], strict=False))
        assert c.power_at(c.capacity_rps / 4) == pytest.approx((c.power_w[0] + c.power_w[1]) / 2)
        assert c.kv_capacity_tokens == cm.kv_capacity_tokens(c.tp)
    # a faster clock draws more at the same load
    for ph in ("prefill", "decode"):
        lo, hi = small_table.get(ph, 8, 1185), small_table.get(ph, 8, 1980)
        assert lo is not None and hi is not None
        load = min(lo.capacity_rps, hi.capacity_rps) / 2
        assert hi.power_at(load) > lo.power_at(load)


def test_cache_hit_json_and_key(small_table: CapacityTable, workload, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pred = default_predictor()
    tiny = replace(SMALL, tps=(8,), clocks_mhz=(1980,), load_fractions=())
    first = build_capacity_table(pred, workload, Slo(), tiny, workers=1, cache_dir=tmp_path)
    files = list((tmp_path / "capacity").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["key"] == first.key
    again = build_capacity_table(pred, workload, Slo(), tiny, workers=1, cache_dir=tmp_path)
    assert again.from_cache and again.configs == first.configs and not first.from_cache
    # everything it depends on changes the key
    keys = {
        table_key(pred, workload, Slo(), tiny),
        table_key(pred, workload, Slo(ttft_s=0.5), tiny),
        table_key(pred, workload, Slo(), replace(tiny, rel_tol=0.05)),
        table_key(pred, slice_window(workload, 0, 1000), Slo(), tiny),
        table_key(pred, workload, Slo(), tiny, version="0.0.0-other"),
    }
    assert len(keys) == 5
    # and so does the code it depends on (simulator, hardware model, planners, predictors, controllers)
    import biscale.plan.capacity as capacity_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(capacity_module, "code_fingerprint", lambda parts: "other code")
        assert table_key(pred, workload, Slo(), tiny) not in keys
    # a corrupt cache file is rebuilt, not trusted
    files[0].write_text("{not json")
    rebuilt = build_capacity_table(pred, workload, Slo(), tiny, workers=1, cache_dir=tmp_path)
    assert not rebuilt.from_cache and rebuilt.configs == first.configs
    assert CapacityTable.load(files[0]).configs == first.configs


def test_result_does_not_depend_on_worker_count(workload, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pred = default_predictor()
    tiny = replace(SMALL, tps=(4,), clocks_mhz=(1980,), load_fractions=(0.5,))
    one = build_capacity_table(pred, workload, Slo(), tiny, workers=1, use_cache=False)
    two = build_capacity_table(pred, workload, Slo(), tiny, workers=2, use_cache=False)
    assert one.configs == two.configs


def test_bad_inputs_are_input_errors(workload) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="rel_tol"):
        CapacitySettings(rel_tol=0)
    with pytest.raises(InputError, match="load fractions"):
        CapacitySettings(load_fractions=(1.5,))
    with pytest.raises(InputError, match="fewer than 2 requests"):
        build_capacity_table(
            default_predictor(), workload, Slo(), replace(SMALL, probe_start_s=1e6), workers=1, use_cache=False
        )
    with pytest.raises(InputError, match="no prefill TP degree"):
        build_capacity_table(default_predictor(), workload, Slo(), replace(SMALL, tps=(3,)), workers=1, use_cache=False)


def test_unreachable_slo_gives_zero_capacity(workload, tmp_path) -> None:  # type: ignore[no-untyped-def]
    tight = Slo(ttft_s=0.005, tpot_s=0.001)
    tiny = replace(SMALL, tps=(4,), clocks_mhz=(1980,), load_fractions=())
    t = build_capacity_table(default_predictor(), workload, tight, tiny, workers=1, use_cache=False)
    assert all(c.capacity_rps == 0 and c.loads_rps == (0.0,) and math.isnan(c.p99_ms) for c in t.configs)
    # strict JSON on disk (undefined latencies as null), NaN again when read back
    path = t.save(tmp_path / "table.json")

    def no_nan(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    json.loads(path.read_text(), parse_constant=no_nan)
    back = CapacityTable.load(path)
    assert all(math.isnan(c.p99_ms) and c.capacity_rps == 0 for c in back.configs)
