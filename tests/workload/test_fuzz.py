"""Fuzzing malformed trace files: a load either keeps every data row or raises an InputError naming the file.

The reference row count comes from an independent parser (Python's ``csv`` module / ``str.splitlines``), so the
test does not trust the loader's own counting. Any exception other than InputError fails the test.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import warnings
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from biscale.errors import InputError
from biscale.workload import TraceOrderWarning, load_trace

# Cells a broken export might contain: good values, edge numbers, junk text, CSV metacharacters.
_junk = st.sampled_from(
    ["", " ", "nan", "NaN", "inf", "-inf", "-1", "0", "1.5", "1e3", "1e30", "abc", '"', "a,b", "\n", "12 ", "\x00"]
)
_cell = st.one_of(
    st.integers(min_value=-5, max_value=10**12).map(str),
    _junk,
    st.text(max_size=6),
)


def _azure_rows(n: int) -> list[list[str]]:
    return [[f"2023-11-16 18:15:{i % 60:02d}.{i:07d}", str(100 + i), str(10 + i)] for i in range(n)]


def _burst_rows(n: int) -> list[list[str]]:
    return [[f"{0.5 * i}", "ChatGPT", str(50 + i), str(5 + i), str(55 + 2 * i), "Conversation log"] for i in range(n)]


_HEADERS = {
    "azure": ["TIMESTAMP", "ContextTokens", "GeneratedTokens"],
    "burstgpt": ["Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type"],
    "lengths": ["num_prefill_tokens", "num_decode_tokens"],
    "biscale": ["arrival_s", "input_tokens", "output_tokens"],
}


@st.composite
def malformed_csv(draw: st.DrawFn) -> tuple[str, str]:
    """(format, file text): a valid file of one format with a few random mutations."""
    fmt = draw(st.sampled_from(sorted(_HEADERS)))
    n = draw(st.integers(min_value=0, max_value=8))
    header = list(_HEADERS[fmt])
    if fmt == "azure":
        rows = _azure_rows(n)
    elif fmt == "burstgpt":
        rows = _burst_rows(n)
    elif fmt == "biscale":
        rows = [[f"{0.25 * i:.6f}", str(7 + i), str(2 + i)] for i in range(n)]
    else:
        rows = [[str(10 + i), str(3 + i)] for i in range(n)]
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        kind = draw(
            st.sampled_from(["cell", "drop_cell", "extra_cell", "extra_column", "blank", "swap", "header", "dup"])
        )
        if kind == "cell" and rows:
            r = draw(st.integers(0, len(rows) - 1))
            if rows[r]:
                rows[r][draw(st.integers(0, len(rows[r]) - 1))] = draw(_cell)
        elif kind == "drop_cell" and rows:
            r = draw(st.integers(0, len(rows) - 1))
            rows[r] = rows[r][:-1]
        elif kind == "extra_cell" and rows:
            rows[draw(st.integers(0, len(rows) - 1))].append(draw(_cell))
        elif kind == "extra_column":  # every row longer than the header (pandas would make an index of it)
            for row in rows:
                row.append(draw(_cell))
        elif kind == "blank":
            rows.insert(draw(st.integers(0, len(rows))), [])
        elif kind == "swap" and len(rows) > 1:
            i, j = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(rows) - 1))
            rows[i], rows[j] = rows[j], rows[i]
        elif kind == "header":
            header[draw(st.integers(0, len(header) - 1))] = draw(st.sampled_from(["", "x", "timestamp", "tokens"]))
        elif kind == "dup" and rows:
            rows.append(list(rows[draw(st.integers(0, len(rows) - 1))]))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        if row:
            writer.writerow(row)
        else:
            buf.write("\n")
    text = buf.getvalue()
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]  # truncated download
    return draw(st.sampled_from([fmt, "auto"])), text


def _csv_data_rows(path: Path) -> int:
    """Non-blank CSV records after the header, counted by the standard library."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        records = [r for r in csv.reader(fh) if r and not (len(r) == 1 and not r[0].strip())]
    return max(len(records) - 1, 0)


def _check(path: Path, fmt: str | None, expected_rows: int | None) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TraceOrderWarning)
            trace = load_trace(path, fmt, arrival_rate_rps=1.0)
    except InputError as err:
        assert str(path) in str(err)
        assert "\n" not in str(err)
        return
    assert expected_rows is not None
    assert len(trace) == expected_rows


@settings(max_examples=150)
@given(malformed_csv())
def test_fuzzed_csv_loads_every_row_or_names_the_file(case: tuple[str, str]) -> None:
    fmt, text = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.csv"
        path.write_text(text, encoding="utf-8")
        try:
            expected: int | None = _csv_data_rows(path)
        except csv.Error:
            expected = None  # the stdlib cannot parse it either: the loader must refuse it
        _check(path, None if fmt == "auto" else fmt, expected)


_json_value = st.one_of(
    st.integers(min_value=-3, max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.none(),
    st.booleans(),
    st.lists(st.integers(0, 5), max_size=3),
)


@st.composite
def malformed_jsonl(draw: st.DrawFn) -> str:
    n = draw(st.integers(min_value=0, max_value=8))
    lines: list[str] = []
    for i in range(n):
        rec: dict[str, object] = {
            "timestamp": 1000 * i,
            "input_length": 100 + i,
            "output_length": 5 + i,
            "hash_ids": [i, i + 1],
        }
        action = draw(st.sampled_from(["ok", "ok", "value", "drop", "garbage", "blank", "array"]))
        if action == "value":
            rec[draw(st.sampled_from(["timestamp", "input_length", "output_length"]))] = draw(_json_value)
        elif action == "drop":
            del rec[draw(st.sampled_from(["timestamp", "input_length", "output_length"]))]
        if action == "garbage":
            lines.append(draw(st.text(max_size=10)).replace("\n", " ").replace("\r", " "))
        elif action == "blank":
            lines.append("")
        elif action == "array":
            lines.append(json.dumps([1, 2]))
        else:
            lines.append(json.dumps(rec))
    return "\n".join(lines) + ("\n" if draw(st.booleans()) else "")


@settings(max_examples=150)
@given(malformed_jsonl(), st.sampled_from(["mooncake", None]))
def test_fuzzed_jsonl_loads_every_row_or_names_the_file(text: str, fmt: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.jsonl"
        path.write_text(text, encoding="utf-8")
        expected = sum(1 for line in path.read_text(encoding="utf-8").split("\n") if line.strip())
        _check(path, fmt, expected)


@settings(max_examples=60)
@given(st.binary(max_size=200), st.sampled_from(["trace.csv", "trace.jsonl", "trace.dat"]))
def test_random_bytes_never_crash(data: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TraceOrderWarning)
                trace = load_trace(path, arrival_rate_rps=1.0)
        except InputError as err:
            assert str(path) in str(err)
            return
        assert len(trace) >= 1
