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
        (["--placement", "prefill:1xTP2,decode:1xTP4", "--clock", "fast"], "bad clock 'fast'"),
        (["--placement", "missing.json"], "missing.json: placement file not found"),
        (["--placement", "prefill:1xTP2,decode:1xTP4", "--rate", "0"], "rate must be > 0 req/s"),
    ],
)
def test_bad_input_exits_2_with_one_line(run_cli, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("simulate", "--trace", "azure-conv", "--duration", "5", *args)
    assert res.code == 2
    assert message in res.err
    assert res.err.startswith("biscale: error: ") and len(res.err.strip().splitlines()) == 1
    assert "Traceback" not in res.err
