"""Validation that lives in the library, not only in the CLI: library users get the same InputError (and message)
as the command line for the bad inputs of the corpus."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from biscale.cli import main as cli_main
from biscale.cli.common import check_output_dir, check_output_file, int_list
from biscale.control.controllers import check_clock_in_range, parse_clock, snap_clock
from biscale.control.placement import MAX_CLUSTER_GPUS, Placement, parse_placement
from biscale.control.state import Slo
from biscale.errors import InputError
from biscale.hardware import get_hardware
from biscale.plan.forecast import MAX_WINDOWS, window_rates
from biscale.predict.predictor import ARTIFACT_NPZ, load_predictor
from biscale.sim import SimConfig, runconfig, simulate
from biscale.sim.runconfig import load_simulate_config
from biscale.workload import MAX_SYNTH_REQUESTS, LengthTable, Trace, poisson_trace, rescale_rate, with_lengths
from biscale.workload.stats import peak_rate_rps

H100 = tuple(range(345, 1981, 15))


def small_trace(n: int = 20, span_s: float = 19.0) -> Trace:
    return Trace(np.linspace(0.0, span_s, n), np.full(n, 100), np.full(n, 20), name="small")


# ------------------------------------------------------------------------------------------------- clocks
def test_clock_range_is_inclusive_and_in_range_clocks_still_snap() -> None:
    assert check_clock_in_range(345, H100, field="clock") == 345
    assert check_clock_in_range(1980, H100, field="clock") == 1980
    assert snap_clock(check_clock_in_range(1000, H100, field="clock"), H100) == 1005  # documented snapping
    for bad in (344, 1981, 0, -5):
        with pytest.raises(InputError, match=rf"^field 'clock': clock {bad} MHz is outside .* 345-1980 MHz"):
            check_clock_in_range(bad, H100, field="clock")


def test_parse_clock_refuses_numbers_that_are_not_whole_mhz() -> None:
    assert parse_clock("1410") == ("fixed", {"clock_mhz": 1410})
    for text in ("1e3", "-5", "1410.5", "nan", "inf"):
        with pytest.raises(InputError, match="whole number of MHz"):
            parse_clock(text)


def test_simulator_refuses_a_placement_clock_outside_the_gpu_range() -> None:
    hw = get_hardware("h100-sxm", "llama-3.3-70b")
    placement = parse_placement("prefill:TP2@1410,decode:TP4@9999")
    with pytest.raises(InputError, match=r"field 'placement': 'decode:1xTP4@9999': clock 9999 MHz is outside"):
        simulate(small_trace(), placement, hw)
    # in range but not a supported clock: snapped (1000 -> 1005 MHz), the run goes on
    result = simulate(small_trace(), parse_placement("prefill:TP2@1000,decode:TP4"), hw)
    assert result.summary["requests_completed"] == 20


def test_run_configuration_refuses_initial_and_fixed_clocks_outside_the_range() -> None:
    base = {"trace": "azure-conv", "placement": "prefill:TP2,decode:TP4", "sim.duration_s": 5.0}
    cfg = load_simulate_config(None, {**base, "sim.initial_clock": 4000})
    with pytest.raises(InputError, match=r"^field 'sim.initial_clock': clock 4000 MHz is outside"):
        cfg.prepare()
    cfg = load_simulate_config(None, {**base, "controllers.prefill": 200, "controllers.decode": "max"})
    with pytest.raises(InputError, match=r"^field 'controllers.prefill': clock 200 MHz is outside"):
        cfg.prepare()


# -------------------------------------------------------------------------------------------------- sizes
def test_rescaling_refuses_more_requests_than_the_cap_before_building_them() -> None:
    trace = small_trace()
    limit_rate = MAX_SYNTH_REQUESTS / trace.duration_s
    with pytest.raises(InputError, match=r"would create 5\.25e\+07 requests, more than the limit of 50,000,000"):
        rescale_rate(trace, 1.05 * limit_rate)
    assert len(rescale_rate(trace, 3.0, method="time")) == 20  # time scaling creates nothing


def test_simulated_run_refuses_too_many_requests_and_timeline_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runconfig, "MAX_SIM_REQUESTS", 1000)
    cfg = load_simulate_config(None, {"trace": "azure-conv", "placement": "prefill:TP2,decode:TP4"})
    with pytest.raises(InputError, match=r"^field 'sim.duration_s': the run would simulate 19,366 requests"):
        cfg.prepare()
    cfg = load_simulate_config(None, {"trace": "azure-conv", "placement": "prefill:TP2,decode:TP4", "rate_rps": 1.0})
    with pytest.raises(InputError, match=r"^field 'rate_rps': the run would simulate about 3,502 requests"):
        cfg.prepare()
    monkeypatch.setattr(runconfig, "MAX_TIMELINE_ROWS", 100)
    cfg = load_simulate_config(
        None, {"trace": "azure-conv", "placement": "prefill:TP2,decode:TP4", "sim.duration_s": 60.0}
    )
    with pytest.raises(InputError, match=r"at least 120 timeline rows \(2 instances over 60 s\)"):
        cfg.prepare()


def test_cluster_and_placement_sizes_are_capped() -> None:
    with pytest.raises(ValidationError, match="more than the limit of 131,072"):
        SimConfig(nodes=MAX_CLUSTER_GPUS, gpus_per_node=2)
    assert SimConfig(nodes=MAX_CLUSTER_GPUS // 8, gpus_per_node=8).total_gpus == MAX_CLUSTER_GPUS
    with pytest.raises(InputError, match="bad placement token 'decode:200000xTP4'"):
        parse_placement("prefill:TP2,decode:200000xTP4")


def test_window_count_is_capped_and_peak_rate_needs_no_memory_for_a_long_span() -> None:
    with pytest.raises(InputError, match=rf"into 1\.9e\+10 windows, more than the limit of {MAX_WINDOWS:,}"):
        window_rates(small_trace(), 1e-9)
    sparse = Trace(np.array([0.0, 1.0, 1e15]), np.ones(3, dtype=np.int64), np.ones(3, dtype=np.int64))
    assert peak_rate_rps(sparse.arrival_s) == pytest.approx(2 / 60)  # 1.7e13 bins of 60 s would need 130 TB


# -------------------------------------------------------------------------------------------------- seeds
def test_negative_seeds_are_input_errors_everywhere() -> None:
    table = LengthTable(np.array([10, 20]), np.array([5, 6]))
    for call in (
        lambda: rescale_rate(small_trace(), 2.0, seed=-1),
        lambda: with_lengths(small_trace(), table, seed=-1),
        lambda: poisson_trace(1.0, 10.0, table, seed=-1),
    ):
        with pytest.raises(InputError, match=r"^field 'seed': seed must be a whole number >= 0 \(got -1\)$"):
            call()
    with pytest.raises(InputError, match=r"^field 'seed': Input should be greater than or equal to 0 \(got -3\)$"):
        load_simulate_config(None, {"trace": "azure-conv", "placement": "prefill:TP2,decode:TP4", "seed": -3})


def test_slo_must_be_finite_and_positive() -> None:
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValidationError):
            Slo(ttft_s=bad)


# ----------------------------------------------------------------------------------------- files on disk
def test_placement_file_that_is_not_text_or_not_an_object(tmp_path: Path) -> None:
    binary = tmp_path / "p.json"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(InputError, match=r"p\.json: not a placement file: not UTF-8 text \(byte 0\)"):
        Placement.load(binary)
    binary.write_text("[]")
    with pytest.raises(InputError, match="a placement file holds one JSON object"):
        Placement.load(binary)


def test_corrupt_predictor_artifacts_are_input_errors(tmp_path: Path) -> None:
    from shutil import copytree

    from biscale.predict.predictor import bundled_artifact_dir

    art = Path(copytree(bundled_artifact_dir("h100-sxm", "llama-3.3-70b"), tmp_path / "art"))
    assert len(load_predictor(art).models) == 6
    with np.load(art / ARTIFACT_NPZ) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["prefill_tp4_energy_coef"] = arrays["prefill_tp4_energy_coef"][:, :3]
    np.savez(art / ARTIFACT_NPZ, **arrays)
    with pytest.raises(InputError, match=r"'prefill_tp4_energy_coef' has shape \(6, 3\), expected \(6, \d+\)"):
        load_predictor(art)
    arrays["prefill_tp4_energy_coef"] = np.full((6, arrays["prefill_tp4_clocks_mhz"].size), np.nan)
    np.savez(art / ARTIFACT_NPZ, **arrays)
    with pytest.raises(InputError, match="'prefill_tp4_energy_coef' has non-finite values"):
        load_predictor(art)
    (art / "predictor.json").write_text(json.dumps({"format": "biscale-predictor", "format_version": 1}))
    with pytest.raises(InputError, match="field 'gpu': missing or not a string"):
        load_predictor(art)
    (art / "predictor.json").write_text("[]")
    with pytest.raises(InputError, match="one JSON object"):
        load_predictor(art)


# ---------------------------------------------------------------------------------------------- CLI seams
def test_output_checks_refuse_without_creating_anything(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(InputError, match="afile is a file, not a directory"):
        check_output_dir(afile / "a" / "b", "--out")
    with pytest.raises(InputError, match="--out must name a file, and this is a directory"):
        check_output_file(tmp_path, "--out")
    assert check_output_dir(tmp_path / "new" / "deep", "--out") == tmp_path / "new" / "deep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # the probe left nothing behind


def test_int_list() -> None:
    assert int_list(None, "--tp") is None
    assert int_list("2, 4,8", "--tp") == (2, 4, 8)
    with pytest.raises(InputError, match="--tp is empty"):
        int_list(" , ", "--tp")
    with pytest.raises(InputError, match="at most 8"):
        int_list("2,16", "--tp", most=8)


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (IsADirectoryError(21, "Is a directory", "/data/out"), "biscale: error: /data/out: Is a directory"),
        (MemoryError(), "biscale: error: out of memory: the input asks for more than this machine holds"),
    ],
)
def test_last_resort_errors_are_one_line(error: BaseException, line: str, run_cli, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import typer

    probe = typer.Typer()

    @probe.callback()
    def _root() -> None:
        """Probe app."""

    @probe.command()
    def boom() -> None:
        raise error

    monkeypatch.setattr(cli_main, "app", probe)
    res = run_cli("boom")
    assert res.code == 2
    assert res.err.strip().startswith(line) and len(res.err.strip().splitlines()) == 1
