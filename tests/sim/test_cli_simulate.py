"""``biscale simulate`` end to end on the bundled traces."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

SPEC = "prefill:2xTP2,decode:3xTP4"
#: 30 s of the Azure conv trace at 8 req/s with ShareGPT lengths, seed 3.
RUN_30S = (
    "simulate",
    "--trace",
    "azure-conv",
    "--rate",
    "8",
    "--lengths",
    "sharegpt-v3",
    "--placement",
    SPEC,
    "--duration",
    "30",
    "--seed",
    "3",
)


def test_json_summary_and_files(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "run"
    res = run_cli(
        *RUN_30S,
        "--out",
        str(out),
        "--json",
    )
    assert res.code == 0, res.err
    lines = res.out.strip().splitlines()
    assert len(lines) == 1
    s = json.loads(lines[0])
    for key in (
        "requests_total",
        "requests_completed",
        "requests_unfinished",
        "ttft_p99_ms",
        "tpot_p99_ms",
        "slo_attainment_pct",
        "goodput_rps",
        "prefill_energy_per_prompt_token_j",
        "decode_energy_per_output_token_j",
        "energy_per_request_j",
        "avg_power_w",
        "clock_switches",
    ):
        assert key in s
    assert s["requests_total"] == s["requests_completed"] > 100
    assert s["placement"] == SPEC
    rq = pd.read_parquet(out / "requests.parquet")
    assert len(rq) == s["requests_total"]
    assert {
        "arrival_s",
        "prefill_start_s",
        "prefill_end_s",
        "kv_transfer_start_s",
        "kv_transfer_end_s",
        "first_token_s",
        "last_token_s",
        "ttft_s",
        "tpot_s",
        "max_tbt_s",
        "prefill_instance",
        "decode_instance",
        "prefill_energy_j",
        "decode_energy_j",
        "status",
    } <= set(rq.columns)
    assert rq["energy_j"].sum() == pytest.approx(s["energy_busy_j"], rel=1e-9)
    tl = pd.read_parquet(out / "timeline.parquet")
    assert {"time_s", "instance_id", "clock_mhz", "power_w", "queue_len", "batch_size", "kv_used_tokens"} <= set(
        tl.columns
    )
    assert tl["instance_id"].nunique() == 5
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["requests_total"] == s["requests_total"]
    assert on_disk["meta"]["placement"] == SPEC
    # the same seed gives the same run
    again = run_cli(
        *RUN_30S,
        "--json",
    )
    s2 = json.loads(again.out)
    assert {k: v for k, v in s2.items() if k != "out"} == {k: v for k, v in s.items() if k != "out"}


def test_table_output_with_clock_options(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("simulate", "--trace", "azure-code", "--placement", SPEC, "--duration", "20", "--clock", "default")
    assert res.code == 0, res.err
    assert "TTFT P50 / P90 / P99 (ms)" in res.out and "average power (W)" in res.out
    fixed = run_cli(
        "simulate", "--trace", "azure-code", "--placement", SPEC, "--duration", "20", "--clock", "1410", "--json"
    )
    slow = json.loads(fixed.out)
    top = json.loads(
        run_cli(
            "simulate", "--trace", "azure-code", "--placement", SPEC, "--duration", "20", "--clock", "max", "--json"
        ).out
    )
    assert slow["ttft_p50_ms"] > top["ttft_p50_ms"]  # prefill is compute-bound: a lower clock is slower


def test_placement_file(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "p.json"
    f.write_text(
        json.dumps({"instances": [{"phase": "prefill", "tp": 2}, {"phase": "decode", "tp": 4, "clock": 1200}]})
    )
    res = run_cli("simulate", "--trace", "azure-conv", "--placement", str(f), "--duration", "10", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["placement"] == "prefill:1xTP2,decode:1xTP4@1200"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--placement", "prefill:2xTP2,decode:3xTQ4"], "bad placement token 'decode:3xTQ4'"),
        (["--placement", "prefill:4xTP2,decode:3xTP4"], "placement needs 20 GPUs but the cluster has 16 (2 x 8)"),
        (["--placement", "prefill:1xTP1,decode:1xTP4"], "TP1 is below the model's minimum TP degree 2"),
        (["--placement", "prefill:1xTP16,decode:1xTP4"], "TP16 does not fit a node of 8 GPUs"),
        (["--placement", "prefill:1xTP2,decode:1xTP4", "--clock", "fast"], "unknown controller 'fast'"),
        (["--placement", "missing.json"], "missing.json: placement file not found"),
        (
            ["--placement", "prefill:1xTP2,decode:1xTP4", "--rate", "0"],
            "field 'rate_rps': Input should be greater than 0",
        ),
        (["--placement", "prefill:1xTP2,decode:1xTP4", "--nodes", "0"], "field 'sim.nodes': Input should be greater"),
        (
            ["--placement", "prefill:1xTP2,decode:1xTP4", "--cost-model", "oracle"],
            "field 'cost_model': unknown cost model 'oracle' (choices: hardware, predictor)",
        ),
        ([], "field 'placement': missing (give it in the configuration file or as a command-line option)"),
        (
            ["--placement", "prefill:1xTP2,decode:1xTP4", "--controller", "prefill=slack,decode=slack"],
            "field 'controllers.prefill': controller 'slack' serves decode instances, not prefill",
        ),
        (["--placement", "prefill:1xTP2,decode:1xTP4", "--controller", "prefill=mpc"], "no controller for decode"),
        (
            ["--placement", "prefill:1xTP2,decode:1xTP4", "--planner", "magic"],
            "field 'planner': unknown planner 'magic'",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(run_cli, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("simulate", "--trace", "azure-conv", "--duration", "5", *args)
    assert res.code == 2
    assert message in res.err
    assert res.err.startswith("biscale: error: ") and len(res.err.strip().splitlines()) == 1
    assert "Traceback" not in res.err


CONFIG_TOML = """
trace = "azure-conv"
placement = "prefill:1xTP2,decode:1xTP4"
rate_rps = 6.0
lengths = "sharegpt-v3"
seed = 2
clock = "max"

[sim]
nodes = 1
duration_s = 12.0

[sim.slo]
ttft_s = 0.5
"""


def test_config_file_options_override_it_and_config_json_reruns_it(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG_TOML)
    out = tmp_path / "out"
    res = run_cli("simulate", "--config", cfg, "--out", out, "--json")
    assert res.code == 0, res.err
    s = json.loads(res.out)
    assert s["slo_ttft_ms"] == 500.0 and s["placement"] == "prefill:1xTP2,decode:1xTP4"
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["trace"] == "azure-conv" and resolved["rate_rps"] == 6.0 and resolved["seed"] == 2
    assert resolved["sim"]["nodes"] == 1 and resolved["sim"]["gpus_per_node"] == 8  # defaults resolved
    assert resolved["sim"]["slo"] == {"ttft_s": 0.5, "tpot_s": 0.1, "percentile": 99.0}
    meta = json.loads((out / "summary.json").read_text())["meta"]
    assert meta["biscale_version"] and meta["controllers"] == {"prefill": "max", "decode": "max"}
    # config.json is itself a configuration: the same run again
    again = run_cli("simulate", "--config", out / "config.json", "--json")
    assert again.code == 0, again.err
    assert {k: v for k, v in json.loads(again.out).items() if k != "out"} == {k: v for k, v in s.items() if k != "out"}
    # a given option overrides the file; absent options keep the file's values
    over = run_cli("simulate", "--config", cfg, "--ttft-slo-ms", "700", "--json")
    o = json.loads(over.out)
    assert o["slo_ttft_ms"] == 700.0 and o["requests_total"] == s["requests_total"]


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        (
            'trace = "azure-conv"\nplacement = "prefill:TP2,decode:TP4"\n[sim]\nnodez = 1\n',
            ".toml",
            "field 'sim.nodez': Extra inputs are not permitted",
        ),
        (
            '{"trace": "azure-conv", "placement": "prefill:TP2,decode:TP4", "sim": {"window_s": 0}}',
            ".json",
            "field 'sim.window_s': Input should be greater than 0",
        ),
        (
            '{"trace": "azure-conv", "placement": "prefill:TP2,decode:TP4", "planner": "oracle"}',
            ".json",
            "field 'planner': unknown planner 'oracle'",
        ),
        ("trace = [", ".toml", "not valid TOML"),
        ("{}", ".yaml", "a configuration file must end in .toml or .json"),
    ],
)
def test_bad_config_file_names_file_and_field(run_cli, tmp_path: Path, text: str, suffix: str, message: str) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / f"bad{suffix}"
    f.write_text(text)
    res = run_cli("simulate", "--config", f)
    assert res.code == 2
    assert res.err.startswith(f"biscale: error: {f}") and message in res.err
    assert len(res.err.strip().splitlines()) == 1


def test_schedule_in_a_config_file(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "sched.json"
    f.write_text(
        json.dumps(
            {
                "trace": "azure-conv",
                "placement": "prefill:1xTP2,decode:1xTP4",
                "schedule": [
                    {"from_s": 0, "placement": "prefill:1xTP2,decode:1xTP4"},
                    {"from_s": 10, "placement": "prefill:2xTP2,decode:1xTP4"},
                ],
                "sim": {"nodes": 1, "window_s": 5.0, "duration_s": 20.0},
            }
        )
    )
    out = tmp_path / "o"
    res = run_cli("simulate", "--config", f, "--out", out, "--json")
    assert res.code == 0, res.err
    inst = pd.read_parquet(out / "instances.parquet")
    assert len(inst) == 3 and inst["start_s"].max() == 10.0
    assert json.loads((out / "summary.json").read_text())["meta"]["planner"] == "scheduled"


def test_config_schema_command(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("config", "schema")
    assert res.code == 0
    schema = json.loads(res.out)
    assert set(schema["required"]) == {"trace", "placement"}
    assert "rate_rps" in schema["properties"] and "sim" in schema["properties"]
    assert "req/s" in schema["properties"]["rate_rps"]["description"]


def test_tier2_controllers_from_the_command_line(run_cli) -> None:  # type: ignore[no-untyped-def]
    top = json.loads(run_cli(*RUN_30S, "--clock", "max", "--json").out)
    res = run_cli(*RUN_30S, "--controller", "prefill=mpc,decode=slack", "--json")
    assert res.code == 0, res.err
    tier2 = json.loads(res.out)
    assert tier2["slo_met"] and tier2["clock_switches"] > 0 and top["clock_switches"] == 0
    assert tier2["requests_completed"] == top["requests_completed"] == top["requests_total"]
    # lower clocks wherever there is slack: less energy per token in both phases
    for key in ("prefill_energy_per_prompt_token_j", "decode_energy_per_output_token_j"):
        assert tier2[key] < 0.9 * top[key], key
