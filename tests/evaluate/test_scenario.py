"""Scenarios: bundled files load, flags override fields, bad input names the field, sweeps resolve to fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from biscale.errors import InputError
from biscale.evaluate.scenario import (
    ALL_SYSTEMS,
    DEFAULT_GAMMA_CV,
    DEFAULT_SYSTEMS,
    Scenario,
    apply_sweep_point,
    bundled_scenarios,
    load_scenario,
    parse_sweep_option,
    sweep_path,
)


def test_bundled_scenarios_are_the_papers_experiments() -> None:
    names = set(bundled_scenarios())
    assert names == {"azure-conv", "azure-code", "azure-conv-native", "azure-code-native", "controlled"}
    for name in names:
        sc = load_scenario(name)
        assert sc.name == name
        assert sc.gpus == 16 and sc.gpus_per_node == 8 and sc.gpu == "h100-sxm" and sc.model == "llama-3.3-70b"
        assert sc.sim.slo.ttft_s == 0.6 and sc.sim.slo.tpot_s == 0.1 and sc.sim.slo.percentile == 99.0
        assert sc.sim.window_s == 300.0
        assert set(sc.systems) >= set(DEFAULT_SYSTEMS) and set(sc.systems) <= set(ALL_SYSTEMS)
        # checks (equal to another system by construction) and the costly oracle heuristic are not in a default run
        assert not {"distserve-static", "distserve-governor", "oracle"} & set(sc.systems)
        assert {"voltana", "voltana-route"} <= set(sc.systems)  # the peer system, with and without its router


def test_the_default_is_azure_conv_at_67_and_85_percent_with_an_idle_power_sweep() -> None:
    sc = load_scenario()
    assert sc.name == "azure-conv"
    assert (sc.workload.trace, sc.workload.lengths, sc.workload.arrivals) == ("azure-conv", "sharegpt-v3", "trace")
    assert sc.loads == (0.67, 0.85) and sc.rates_rps is None
    assert [label for label, *_ in sc.load_points] == ["67pct", "85pct"]
    assert sc.sweep is not None and sc.sweep.params == {"idle_top_w": (125.0,)}
    assert sc.sweep.points() == [{"idle_top_w": 125.0}]
    assert sc.sweep.systems == ("biscale", "distserve") and sc.idle_top_w is None
    sim = sc.sim_config()
    assert (sim.nodes, sim.gpus_per_node, sim.duration_s) == (2, 8, None)


def test_controlled_uses_gamma_arrivals_at_fixed_rates() -> None:
    sc = load_scenario("controlled")
    assert sc.workload.arrivals == "gamma" and sc.workload.cv == DEFAULT_GAMMA_CV == 2.0
    assert min(sc.rates_rps or ()) == 10.0 and max(sc.rates_rps or ()) == 85.0
    assert [label for label, frac, rate in sc.load_points][:2] == ["10rps", "25rps"]
    trace = sc.workload.trace_at(20.0, sc.seed)
    gaps = trace.arrival_s[1:] - trace.arrival_s[:-1]
    assert len(trace) == pytest.approx(20.0 * 600.0, rel=0.1)
    assert gaps.std() / gaps.mean() == pytest.approx(2.0, rel=0.15)


def test_native_lengths_keep_the_traces_own() -> None:
    native = load_scenario("azure-conv-native").workload.trace_at(5.0, 0)
    shared = load_scenario("azure-conv").workload.trace_at(5.0, 0)
    assert native.input_tokens.mean() > 3 * shared.input_tokens.mean()  # Azure conv prompts ~1,155 vs ShareGPT ~220


def test_overrides_and_cluster_shape() -> None:
    sc = load_scenario("azure-conv", {"gpus": 32, "loads": [0.5], "seed": 3, "workload.lengths": "native"})
    assert (sc.gpus, sc.nodes, sc.loads, sc.seed, sc.workload.lengths) == (32, 4, (0.5,), 3, "native")
    small = load_scenario("azure-conv", {"gpus": 4})
    assert (small.nodes, small.sim_config().gpus_per_node) == (1, 4)


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        ({"gpus": 12}, None, "12 GPUs do not divide into nodes of 8"),
        ({"systems": ["biscale", "nope"]}, None, "unknown system(s) nope"),
        ({"loads": [0.5, -1.0]}, None, "loads must be fractions of capacity > 0"),
        ({"planner.alfa": 0.1}, None, "unknown planner setting(s) ['alfa']"),
        ({"planner.alpha": -1}, None, "alpha must be >= 0"),
        ({"sim.switch_latency_s": -1}, "sim.switch_latency_s", "greater than or equal to 0"),
        ({"workload.arrivals": "poisson"}, "workload.arrivals", "Input should be 'trace' or 'gamma'"),
        ({"controller_options.mcp": {"horizon": 4}}, None, "options for unknown controller(s) ['mcp']"),
        ({"controller_options.ecofreq": {"n_clocks": 1}}, None, "n_clocks must be >= 2"),
        ({"controller_options.ecofreq": {"decode": {"slo_margn": 0.1}}}, None, "option(s) slo_margn (allowed: "),
    ],
)
def test_bad_fields_are_input_errors_naming_them(overrides: dict, field: str | None, text: str) -> None:
    with pytest.raises(InputError) as err:
        load_scenario("azure-conv", overrides)
    assert text in str(err.value)
    if field is not None:
        assert err.value.field == field


def test_a_file_error_names_the_file_and_field(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('name = "x"\n[sim]\nnodes = 3\n')
    with pytest.raises(InputError, match="set the cluster with 'gpus'"):
        load_scenario(f)
    f.write_text('name = "x"\nbogus = 1\n')
    with pytest.raises(InputError) as err:
        load_scenario(f)
    assert err.value.path == str(f) and err.value.field == "bogus"
    f.write_text("name = [")
    with pytest.raises(InputError, match="not valid TOML"):
        load_scenario(f)
    with pytest.raises(InputError, match=r"no bundled scenario 'missing\.toml'"):
        load_scenario("missing.toml")


def test_gamma_needs_a_duration_and_a_length_table() -> None:
    with pytest.raises(InputError, match=r"gamma arrivals need workload\.duration_s"):
        load_scenario("azure-conv", {"workload.arrivals": "gamma"})
    with pytest.raises(InputError, match="no native lengths"):
        load_scenario("controlled", {"workload.lengths": "native"})


def test_sweep_parameters_resolve_to_fields_with_units() -> None:
    assert sweep_path("switch_latency_ms") == ("sim.switch_latency_s", 1e-3)
    assert sweep_path("startup_s") == ("sim.startup_s", 1.0)
    assert sweep_path("alpha") == ("planner.alpha", 1.0)
    assert sweep_path("cv") == ("workload.cv", 1.0)
    assert sweep_path("controller_options.slack.margin_pct") == ("controller_options.slack.margin_pct", 1.0)
    with pytest.raises(InputError, match=r"unknown sweep parameter .bogus."):
        sweep_path("bogus")
    assert parse_sweep_option("switch_latency_ms=1,10,50,200") == {"switch_latency_ms": (1, 10, 50, 200)}
    assert parse_sweep_option("alpha=0.1,0.3;startup_s=0,30") == {"alpha": (0.1, 0.3), "startup_s": (0, 30)}
    for bad in ("switch_latency_ms", "=1,2", "switch_latency_ms="):
        with pytest.raises(InputError, match="bad sweep"):
            parse_sweep_option(bad)


def test_a_sweep_point_sets_its_field_and_drops_the_sweep() -> None:
    sc = load_scenario()
    at = apply_sweep_point(sc, {"switch_latency_ms": 50})
    assert at.sim.switch_latency_s == pytest.approx(0.05) and at.sweep is None
    assert apply_sweep_point(sc, {"alpha": 0.3}).planner["alpha"] == 0.3
    with pytest.raises(InputError, match="sweep point"):
        apply_sweep_point(sc, {"switch_latency_ms": -5})


def test_sweep_table_grid_and_systems(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('name = "x"\n[sweep]\nalpha = [0.1, 0.2]\nswitch_latency_ms = [1, 10, 100]\nloads = [0.85]\n')
    sc = load_scenario(f)
    assert sc.sweep is not None
    assert sc.sweep.loads == (0.85,) and sc.sweep.systems == ("biscale", "distserve")
    points = sc.sweep.points()
    assert len(points) == 6 and points[0] == {"alpha": 0.1, "switch_latency_ms": 1}
    f.write_text('name = "x"\n[sweep]\nloads = [0.85]\n')
    with pytest.raises(InputError, match="at least one parameter"):
        load_scenario(f)


def test_fingerprint_ignores_loads_systems_and_names_only() -> None:
    a = load_scenario()
    assert a.fingerprint() == load_scenario("azure-conv", {"loads": [0.5], "systems": ["biscale"]}).fingerprint()
    assert a.fingerprint() != load_scenario("azure-conv", {"seed": 1}).fingerprint()
    assert Scenario.model_validate(a.resolved()) == a  # the resolved form round-trips


def test_idle_top_w_reaches_the_truth_and_is_checked_when_the_scenario_loads(tmp_path: Path) -> None:
    sc = load_scenario()
    at = apply_sweep_point(sc, {"idle_top_w": 125.0})
    assert sweep_path("idle_top_w") == ("idle_top_w", 1.0)
    assert at.idle_top_w == 125.0 and at.sim == sc.sim
    assert at.truth().idle_power_w(4, 1980) == pytest.approx(125.0)
    assert sc.truth().idle_power_w(4, 1980) > 175.0
    assert at.fingerprint() != sc.fingerprint()  # the clairvoyant caches key on it
    with pytest.raises(InputError, match=r"idle power at the top clock must be above") as err:
        load_scenario(None, {"idle_top_w": 50.0})
    assert err.value.field == "idle_top_w"
    f = tmp_path / "s.toml"
    f.write_text('name = "x"\n[sweep]\ncombine = "each"\nidle_top_w = [40.0]\n')
    with pytest.raises(InputError, match=r"sweep.idle_top_w: .*idle power at the top clock"):
        load_scenario(f)


def test_a_sweep_of_each_parameter_alone(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('name = "x"\n[sweep]\ncombine = "each"\nalpha = [0.1, 0.2]\nswitch_latency_ms = [1]\n')
    sc = load_scenario(f)
    assert sc.sweep is not None and sc.sweep.combine == "each"
    assert sc.sweep.points() == [{"alpha": 0.1}, {"alpha": 0.2}, {"switch_latency_ms": 1}]
    f.write_text('name = "x"\n[sweep]\ncombine = "all"\nalpha = [0.1]\n')
    with pytest.raises(InputError, match="combine"):
        load_scenario(f)
