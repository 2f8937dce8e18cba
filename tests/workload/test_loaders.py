"""Loaders: bundled data, every format, format inference, and exact error messages for bad files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biscale.errors import InputError
from biscale.workload import (
    BUNDLED_LENGTHS,
    BUNDLED_TRACES,
    TRACE_FORMATS,
    LengthTable,
    Trace,
    TraceOrderWarning,
    load_any,
    load_lengths,
    load_trace,
    rescale_rate,
    save_trace,
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- bundled data


def test_bundled_conv_trace_matches_published_counts() -> None:
    tr = load_trace("azure-conv")
    assert len(tr) == 19_366
    assert 3_400 < tr.duration_s < 3_600
    assert tr.arrival_s[0] == 0.0
    assert np.all(np.diff(tr.arrival_s) >= 0)
    assert tr.name == "azure-conv" and tr.source == "bundled:azure-conv"
    assert tr.meta["format"] == "azure" and tr.meta["rows"] == 19_366


def test_bundled_code_trace() -> None:
    tr = load_trace("azure-code")
    assert len(tr) == 8_819
    gaps = np.diff(tr.arrival_s)
    assert gaps.std() / gaps.mean() > 10  # SOURCES.md: very bursty, CV ~13


def test_bundled_files_equal_the_shared_originals(shared_data: Path) -> None:
    for name, rel in (
        ("azure-conv", "traces/azure_llm_2023_conv.csv"),
        ("azure-code", "traces/azure_llm_2023_code.csv"),
    ):
        assert BUNDLED_TRACES[name].path.read_bytes() == (shared_data / rel).read_bytes()
    assert (
        BUNDLED_LENGTHS["sharegpt-v3"].path.read_bytes()
        == (shared_data / "lengths/sharegpt_v3_lengths.csv").read_bytes()
    )


def test_conv_arrivals_match_an_independent_parse() -> None:
    path = BUNDLED_TRACES["azure-conv"].path
    raw = pd.read_csv(path)
    ts = pd.to_datetime(raw["TIMESTAMP"])
    expected = (ts - ts.iloc[0]).dt.total_seconds().to_numpy()
    tr = load_trace(path)
    np.testing.assert_allclose(tr.arrival_s, expected, atol=1e-6)
    np.testing.assert_array_equal(tr.input_tokens, raw["ContextTokens"].to_numpy())
    np.testing.assert_array_equal(tr.output_tokens, raw["GeneratedTokens"].to_numpy())
    assert tr.name == "azure_llm_2023_conv"


def test_sharegpt_lengths() -> None:
    lt = load_lengths("sharegpt-v3")
    assert isinstance(lt, LengthTable)
    assert len(lt) == 16_384
    assert 215 < lt.input_tokens.mean() < 225  # SOURCES.md: prefill mean 220
    assert 195 < lt.output_tokens.mean() < 205  # decode mean 199


def test_long_sharegpt_lengths_from_a_path(shared_data: Path) -> None:
    lt = load_lengths(shared_data / "lengths/sharegpt_8k_long_lengths.csv")
    assert len(lt) == 30_731
    assert 2_200 < lt.input_tokens.mean() < 2_500


def test_lengths_from_a_trace_name() -> None:
    lt = load_lengths("azure-code")
    tr = load_trace("azure-code")
    np.testing.assert_array_equal(np.sort(lt.input_tokens), np.sort(tr.input_tokens))


def test_registry_lists_the_formats() -> None:
    assert set(TRACE_FORMATS) >= {"azure", "burstgpt", "mooncake", "lengths", "biscale"}


def test_save_and_reload_round_trip(tmp_path: Path) -> None:
    tr = rescale_rate(load_trace("azure-conv"), 9.0, seed=1)
    path = save_trace(tr, tmp_path / "scaled.csv")
    back = load_trace(path)
    assert back.meta["format"] == "biscale"
    assert len(back) == len(tr)
    np.testing.assert_allclose(back.arrival_s, tr.arrival_s, atol=1e-6)
    np.testing.assert_array_equal(back.input_tokens, tr.input_tokens)
    np.testing.assert_array_equal(back.output_tokens, tr.output_tokens)


# ---------------------------------------------------------------- formats


def test_azure_2024_timestamps_with_offsets(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "week.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2024-05-10 00:00:00.009930+00:00,10,2\n"
        "2024-05-10 00:00:01.509930+00:00,20,3\n"
        "2024-05-10 01:00:00.009930+01:00,30,4\n",  # same instant as the first row -> sorted first
    )
    with pytest.warns(TraceOrderWarning, match=r"week\.csv:4: timestamps out of order"):
        tr = load_trace(path)
    np.testing.assert_allclose(tr.arrival_s, [0.0, 0.0, 1.5])
    np.testing.assert_array_equal(tr.input_tokens, [10, 30, 20])  # stable sort keeps file order on ties


def test_out_of_order_rows_are_sorted_and_recorded(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "t.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:00:05.0000000,1,1\n"
        "2023-11-16 18:00:01.0000000,2,2\n"
        "2023-11-16 18:00:03.0000000,3,3\n"
        "2023-11-16 18:00:02.0000000,4,4\n",
    )
    with pytest.warns(TraceOrderWarning) as rec:
        tr = load_trace(path)
    assert len(rec) == 1
    assert f"{path}:3:" in str(rec[0].message)
    assert len(tr) == 4
    np.testing.assert_allclose(tr.arrival_s, [0, 1, 2, 4])
    np.testing.assert_array_equal(tr.input_tokens, [2, 4, 3, 1])
    np.testing.assert_array_equal(tr.output_tokens, [2, 4, 3, 1])
    assert tr.meta["out_of_order_rows"] == 2
    assert tr.meta["sorted"] is True


def test_in_order_trace_gives_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_trace("azure-code")


BURST = (
    "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
    "5,ChatGPT,472,18,490,Conversation log\n"
    "45,ChatGPT,1087,0,1087,Conversation log\n"
    "118,GPT-4,417,276,693,Conversation log\n"
    "\n"
    "130,ChatGPT,100,0,100,API log\n"
    "131,GPT-4,50,7,57,API log\n"
)


def test_burstgpt_failures_are_an_error_by_default(tmp_path: Path) -> None:
    path = _write(tmp_path, "burst.csv", BURST)
    with pytest.raises(InputError) as err:
        load_trace(path)
    assert str(err.value) == (
        f"{path}:3, field 'Response tokens': 0 response tokens marks a failed request in BurstGPT (2 such rows); "
        "exclude them explicitly with exclude_failed=True (CLI: --exclude-failed)"
    )


def test_burstgpt_failures_excluded_and_counted(tmp_path: Path) -> None:
    path = _write(tmp_path, "burst.csv", BURST)
    tr = load_trace(path, exclude_failed=True)
    assert tr.meta["format"] == "burstgpt"
    assert tr.meta["rows"] == 5
    assert tr.meta["excluded_failed_requests"] == 2
    assert len(tr) + 2 == 5
    np.testing.assert_allclose(tr.arrival_s, [0, 113, 126])
    np.testing.assert_array_equal(tr.input_tokens, [472, 417, 50])
    np.testing.assert_array_equal(tr.output_tokens, [18, 276, 7])
    assert tr.meta["models"] == {"ChatGPT": 1, "GPT-4": 2}


def test_burstgpt_error_after_exclusion_names_the_original_line(tmp_path: Path) -> None:
    text = BURST.replace("131,GPT-4,50,7", "131,GPT-4,-50,7")
    path = _write(tmp_path, "burst.csv", text)
    with pytest.raises(InputError) as err:
        load_trace(path, exclude_failed=True)
    # header 1, rows 2-4, blank 5, row 6, bad row on line 7
    assert str(err.value) == f"{path}:7, field 'Request tokens': token count must be >= 1 (got -50)"


def test_mooncake_jsonl(tmp_path: Path) -> None:
    recs = [
        {"timestamp": 0, "input_length": 6955, "output_length": 52, "hash_ids": [0, 1, 2]},
        {"timestamp": 0, "input_length": 6472, "output_length": 26, "hash_ids": [0, 3]},
        {"timestamp": 1500, "input_length": 100, "output_length": 1, "hash_ids": []},
    ]
    path = _write(tmp_path, "mooncake.jsonl", "\n".join(json.dumps(r) for r in recs) + "\n\n")
    tr = load_trace(path)
    assert tr.meta["format"] == "mooncake"
    np.testing.assert_allclose(tr.arrival_s, [0.0, 0.0, 1.5])  # ms -> s
    np.testing.assert_array_equal(tr.input_tokens, [6955, 6472, 100])
    np.testing.assert_array_equal(tr.output_tokens, [52, 26, 1])


def test_mooncake_sniffed_without_extension(tmp_path: Path) -> None:
    path = _write(tmp_path, "trace.txt", '{"timestamp": 10, "input_length": 5, "output_length": 2}\n')
    assert load_trace(path).meta["format"] == "mooncake"


def test_mooncake_bad_value_names_the_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "m.jsonl",
        '{"timestamp": 0, "input_length": 5, "output_length": 2}\n\n'
        '{"timestamp": 7, "input_length": "5", "output_length": 2}\n',
    )
    with pytest.raises(InputError) as err:
        load_trace(path)
    assert str(err.value) == f"{path}:3, field 'input_length': not a number: '5'"


def test_mooncake_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "m.jsonl", '{"timestamp": 0, "input_length": 5, "output_length": 2}\n{"timestamp": \n')
    with pytest.raises(InputError, match=r"m\.jsonl:2: not valid JSON"):
        load_trace(path)


def test_length_table_as_trace_needs_a_rate(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        load_trace("sharegpt-v3")
    assert "has no arrival times" in str(err.value)
    assert "sharegpt_v3_lengths.csv" in str(err.value)


def test_length_table_with_rate_gives_seeded_poisson_arrivals() -> None:
    a = load_trace("sharegpt-v3", arrival_rate_rps=20.0, seed=4)
    b = load_trace("sharegpt-v3", arrival_rate_rps=20.0, seed=4)
    lt = load_lengths("sharegpt-v3")
    assert len(a) == len(lt)
    np.testing.assert_array_equal(a.input_tokens, lt.input_tokens)  # file order kept
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    assert abs(a.mean_rate_rps - 20.0) / 20.0 < 0.03
    gaps = np.diff(a.arrival_s)
    assert 0.95 < gaps.std() / gaps.mean() < 1.05


def test_load_any_returns_the_right_type() -> None:
    assert isinstance(load_any("sharegpt-v3"), LengthTable)
    assert isinstance(load_any("azure-conv"), Trace)


def test_explicit_format_overrides_detection(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.data", "num_prefill_tokens,num_decode_tokens\n5,6\n7,8\n")
    lt = load_lengths(path, format="lengths")
    np.testing.assert_array_equal(lt.output_tokens, [6, 8])
    assert load_lengths(path).meta["format"] == "lengths"


def test_quoted_newlines_and_blank_lines_keep_line_numbers_exact(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "q.csv",
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        '\n1,"Chat\nGPT",5,5,10,x\n2,GPT,5,abc,10,x\n',
    )
    with pytest.raises(InputError) as err:
        load_trace(path)
    assert str(err.value) == f"{path}:5, field 'Response tokens': not a number: 'abc'"


# ---------------------------------------------------------------- bad input: exact messages

AZ = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
ROW = "2023-11-16 18:15:46.6805900,374,44\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (AZ + ROW + "2023-11-16 18:15:50.9951690,abc,109\n", "{p}:3, field 'ContextTokens': not a number: 'abc'"),
        (
            AZ + ROW + "2023-11-16 18:15:50.9951690,396,nan\n",
            "{p}:3, field 'GeneratedTokens': not a finite number: 'nan'",
        ),
        (AZ + ROW + "2023-11-16 18:15:50.9951690,,109\n", "{p}:3, field 'ContextTokens': missing value"),
        (
            AZ + ROW + ROW + "2023-11-16 18:15:50.9951690,0,109\n",
            "{p}:4, field 'ContextTokens': token count must be >= 1 (got 0)",
        ),
        (
            AZ + "2023-11-16 18:15:50.9951690,396,-3\n",
            "{p}:2, field 'GeneratedTokens': token count must be >= 1 (got -3)",
        ),
        (AZ + "2023-11-16 18:15:50.9951690,39.5,3\n", "{p}:2, field 'ContextTokens': not a whole number: '39.5'"),
        (
            AZ + "yesterday,396,3\n",
            "{p}:2, field 'TIMESTAMP': not a date-time (expected e.g. 2023-11-16 18:15:46.68): 'yesterday'",
        ),
        (AZ, "{p}: no data rows (header only)"),
        ("", "{p}: file is empty (no header, no data)"),
        (
            AZ + "\n" + "2023-11-16 18:15:50.9951690,396,3,7\n",
            "{p}:3: malformed CSV: the header has 3 fields but data rows have 4",
        ),
        (
            AZ + ROW + "2023-11-16 18:15:50.9951690,396,3,7\n",
            "{p}:3: malformed CSV: Expected 3 fields in line 3, saw 4",
        ),
        (
            "TIMESTAMP,ContextTokens\n" + "2023-11-16 18:15:46.6805900,374\n",
            "{p}:1: cannot tell the trace format from the columns (found 'TIMESTAMP', 'ContextTokens'); "
            "expected one of: azure (TIMESTAMP, ContextTokens, GeneratedTokens); "
            "burstgpt (Timestamp, Request tokens, Response tokens); biscale (arrival_s, input_tokens, output_tokens); "
            "lengths (num_prefill_tokens, num_decode_tokens); or give the format explicitly",
        ),
    ],
)
def test_bad_csv_messages(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, "bad.csv", text)
    with pytest.raises(InputError) as err:
        load_trace(path)
    assert str(err.value) == expected.format(p=path)


def test_missing_column_with_explicit_format(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.68,3\n")
    with pytest.raises(InputError) as err:
        load_trace(path, format="azure")
    assert str(err.value) == (
        f"{path}:1, field 'GeneratedTokens': missing column 'GeneratedTokens' for azure format "
        "(found: 'TIMESTAMP', 'ContextTokens')"
    )


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(
        InputError, match=r"unknown trace format 'parquet' \(known: azure, burstgpt, mooncake, biscale, lengths\)"
    ):
        load_trace("azure-conv", format="parquet")
    missing = tmp_path / "nope.csv"
    with pytest.raises(InputError) as err:
        load_trace(missing)
    assert str(err.value).startswith(f"{missing}: file not found")


def test_directory_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        load_trace(tmp_path, format="azure")
    path = tmp_path / "bin.csv"
    path.write_bytes(b"TIMESTAMP,ContextTokens,GeneratedTokens\n\xff\xfe,1,2\n")
    with pytest.raises(InputError, match=r"bin\.csv: not UTF-8 text"):
        load_trace(path)
