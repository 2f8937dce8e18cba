"""`biscale trace stats` and `biscale trace list` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_stats_on_bundled_conv_trace(run_cli) -> None:
    res = run_cli("trace", "stats", "azure-conv")
    assert res.code == 0, res.err
    assert "19,366" in res.out
    assert "3,502" in res.out  # span, seconds
    assert "inter-arrival CV" in res.out


def test_stats_json_on_bundled_conv_trace(run_cli) -> None:
    res = run_cli("trace", "stats", "azure-conv", "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)  # exactly one JSON object
    assert res.out.count("\n") == 1
    assert data["requests"] == 19_366
    assert data["span_s"] == pytest.approx(3_500, abs=50)
    assert data["mean_rate_rps"] == pytest.approx(5.53, abs=0.01)
    for key in ("interarrival_cv", "input_p50_tokens", "input_p90_tokens", "input_p99_tokens", "output_p99_tokens"):
        assert key in data
    assert data["format"] == "azure"


def test_stats_with_rate_and_lengths(run_cli) -> None:
    res = run_cli("trace", "stats", "azure-conv", "--rate", "20", "--seed", "3", "--lengths", "sharegpt-v3", "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert data["target_rate_rps"] == 20.0
    assert abs(data["mean_rate_rps"] - 20.0) / 20.0 < 0.03
    assert data["input_max_tokens"] <= 1024  # ShareGPT v3 lengths, not Azure's
    again = json.loads(run_cli("trace", "stats", "azure-conv", "--rate", "20", "--seed", "3", "--json").out)
    assert again["requests"] == data["requests"]  # lengths do not change the arrivals


def test_stats_window(run_cli) -> None:
    data = json.loads(run_cli("trace", "stats", "azure-conv", "--start", "0", "--end", "600", "--json").out)
    assert 0 < data["requests"] < 19_366
    assert data["span_s"] < 600


def test_stats_of_a_length_table(run_cli) -> None:
    data = json.loads(run_cli("trace", "stats", "sharegpt-v3", "--json").out)
    assert data["requests"] == 16_384 and data["has_arrivals"] is False
    with_rate = json.loads(run_cli("trace", "stats", "sharegpt-v3", "--rate", "8", "--json").out)
    assert with_rate["has_arrivals"] is True
    assert abs(with_rate["mean_rate_rps"] - 8.0) / 8.0 < 0.05


def test_bad_file_is_one_line_exit_2(run_cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,12,-4\n", encoding="utf-8")
    res = run_cli("trace", "stats", str(path))
    assert res.code == 2
    assert res.out == ""
    assert res.err == f"biscale: error: {path}:2, field 'GeneratedTokens': token count must be >= 1 (got -4)\n"


def test_missing_file_and_unknown_format(run_cli, tmp_path: Path) -> None:
    res = run_cli("trace", "stats", str(tmp_path / "none.csv"))
    assert res.code == 2 and res.err.startswith("biscale: error: ") and res.err.count("\n") == 1
    assert "file not found" in res.err
    res = run_cli("trace", "stats", "azure-conv", "--format", "xml")
    assert res.code == 2 and "unknown trace format 'xml'" in res.err and "Traceback" not in res.err


def test_burstgpt_exclusion_is_reported(run_cli, tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text(
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "0,ChatGPT,10,0,10,Conversation log\n1,ChatGPT,10,5,15,Conversation log\n2,GPT-4,7,3,10,API log\n",
        encoding="utf-8",
    )
    res = run_cli("trace", "stats", str(path))
    assert res.code == 2 and "--exclude-failed" in res.err
    data = json.loads(run_cli("trace", "stats", str(path), "--exclude-failed", "--json").out)
    assert data["requests"] == 2 and data["excluded_failed_requests"] == 1
    text = run_cli("trace", "stats", str(path), "--exclude-failed").out
    assert "failed requests excluded" in text


def test_out_of_order_warning_on_stderr(run_cli, tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:50,1,1\n2023-11-16 18:15:46,2,2\n", encoding="utf-8"
    )
    res = run_cli("trace", "stats", str(path), "--json")
    assert res.code == 0
    assert res.err == (
        f"biscale: warning: {path}:3: timestamps out of order (1 row(s) earlier than the row before); sorted by time\n"
    )
    assert json.loads(res.out)["out_of_order_rows"] == 1


def test_window_on_a_length_table_is_an_error(run_cli) -> None:
    res = run_cli("trace", "stats", "sharegpt-v3", "--start", "10")
    assert res.code == 2 and "no arrival times" in res.err


def test_list(run_cli) -> None:
    data = json.loads(run_cli("trace", "list", "--json").out)
    by_name = {d["name"]: d for d in data["datasets"]}
    assert by_name["azure-conv"]["licence"] == "CC-BY-4.0"
    assert by_name["azure-code"]["kind"] == "trace"
    assert by_name["sharegpt-v3"]["licence"] == "MIT"
    res = run_cli("trace", "list")
    assert res.code == 0 and "CC-BY-4.0" in res.out


def test_out_writes_the_transformed_trace(run_cli, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    first = json.loads(run_cli("trace", "stats", "azure-code", "--rate", "6", "--out", str(path), "--json").out)
    again = json.loads(run_cli("trace", "stats", str(path), "--json").out)
    assert again["format"] == "biscale"
    assert again["requests"] == first["requests"]
    assert again["mean_rate_rps"] == pytest.approx(first["mean_rate_rps"], rel=1e-6)
    res = run_cli("trace", "stats", "sharegpt-v3", "--out", str(tmp_path / "x.csv"))
    assert res.code == 2 and "no arrival times to write" in res.err
