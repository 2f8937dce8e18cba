"""The bad-input corpus: invocations a careless or hostile user may type, one per case, for every command.

Each must end with exit code 2, exactly one line on stderr starting ``biscale: error:`` that names the field, file
or value at fault and what is allowed, and no traceback (docs/cli.md). Cases run in-process; a few also through a
real interpreter, where an escaping exception would print its traceback. A new command needs cases here:
``test_every_command_has_cases`` fails until it has some.

``{name}`` in a case's arguments or expected fragments is a file from the ``bad_files`` fixture (conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer.main

from biscale.gpu.fake_nvml import FAKE_ENV

#: A run's arguments that are all valid (each simulate case changes one thing).
RUN = ("--trace", "azure-conv", "--placement", "prefill:TP2,decode:TP4", "--duration", "10")
#: A place nothing can be written, for root too (/proc takes no new entries).
NOWHERE = "/proc/biscale-corpus/out"


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    says: tuple[str, ...]
    """Fragments the error line must contain: the field, file or value, and what is allowed."""
    nvml: str | None = None
    """Fake NVML state for ``gpu`` commands: ``gpus`` (2 H100s, root), ``user`` (not root), ``nolib`` (no NVML),
    ``truncated`` / ``shape`` (a damaged state file), ``nodir`` (a state path in a missing directory)."""
    env: tuple[tuple[str, str], ...] = ()
    """Environment variables set for the case (``{name}`` placeholders allowed)."""


def case(
    id: str, args: str | tuple[str, ...], *says: str, nvml: str | None = None, env: dict[str, str] | None = None
) -> Case:
    return Case(id, tuple(args.split()) if isinstance(args, str) else args, says, nvml, tuple((env or {}).items()))


CASES = [
    # ----------------------------------------------------------------------------------- evaluate, report
    case(
        "evaluate-unknown-scenario",
        "evaluate --config nope --out {dir}/ev",
        "field 'config'",
        "no bundled scenario 'nope'",
        "azure-conv",
    ),
    case("evaluate-scenario-syntax", "evaluate --config {syntax} --out {dir}/ev", "{syntax}"),
    case("evaluate-scenario-yaml", "evaluate --config {config} --out {dir}/ev", "{config}"),
    case(
        "evaluate-scenario-unknown-key",
        "evaluate --config {scenario_unknown_key} --out {dir}/ev",
        "{scenario_unknown_key}",
        "bogus",
    ),
    case(
        "evaluate-scenario-bad-field",
        "evaluate --config {scenario_bad_field} --out {dir}/ev",
        "{scenario_bad_field}",
        "field 'gpus'",
    ),
    case(
        "evaluate-scenario-bad-system",
        "evaluate --config {scenario_bad_system} --out {dir}/ev",
        "vllm",
        "known: distserve",
    ),
    case(
        "evaluate-scenario-batch-guard",
        "evaluate --config {scenario_batch_guard} --out {dir}/ev",
        "{scenario_batch_guard}",
        "controller_options.slack: batch guard must be in (0, 100] percent, got 150",
    ),
    case(
        "evaluate-scenario-idle-clock",
        "evaluate --config {scenario_idle_clock} --out {dir}/ev",
        "controller_options.mpc: unknown idle clock 'off' (choices: lowest, baseline)",
    ),
    case(
        "evaluate-scenario-slack-unknown-option",
        "evaluate --config {scenario_slack_unknown} --out {dir}/ev",
        "controller_options.slack",
        "bogus",
    ),
    case(
        "evaluate-scenario-oracle-unknown-option",
        "evaluate --config {scenario_oracle_unknown} --out {dir}/ev",
        "controller_options.oracle: unknown prefill option(s) ['bogus']",
    ),
    case(
        "evaluate-scenario-gamma-native",
        "evaluate --config {scenario_gamma_native} --out {dir}/ev",
        "no native lengths",
    ),
    case("evaluate-bad-loads", "evaluate --loads 0.67,abc --out {dir}/ev", "field '--loads'", "0.67,abc"),
    case("evaluate-empty-loads", "evaluate --loads , --out {dir}/ev", "field '--loads'", "no values"),
    case("evaluate-negative-load", "evaluate --loads=-0.5 --out {dir}/ev", "field 'loads'", "> 0"),
    case(
        "evaluate-bad-systems",
        "evaluate --systems biscale,nope --out {dir}/ev",
        "field '--systems'",
        "nope",
        "known: distserve",
    ),
    case("evaluate-zero-gpus", "evaluate --gpus 0 --out {dir}/ev", "field 'gpus'", "greater than or equal to 1"),
    case("evaluate-gpus-not-nodes", "evaluate --gpus 12 --out {dir}/ev", "12 GPUs do not divide into nodes of 8"),
    case("evaluate-negative-seed", "evaluate --seed -1 --out {dir}/ev", "field 'seed'", "greater than or equal to 0"),
    case("evaluate-unknown-trace", "evaluate --trace nope --out {dir}/ev", "nope"),
    case("evaluate-unknown-lengths", "evaluate --lengths nope --out {dir}/ev", "nope"),
    case("evaluate-bad-sweep", "evaluate --sweep nonsense --out {dir}/ev", "field '--sweep'", "NAME=V1,V2"),
    case(
        "evaluate-unknown-sweep-param", "evaluate --sweep bogus=1,2 --out {dir}/ev", "unknown sweep parameter 'bogus'"
    ),
    case(
        "evaluate-sweep-and-no-sweep",
        "evaluate --sweep switch_latency_ms=1 --no-sweep --out {dir}/ev",
        "exclude each other",
    ),
    case("evaluate-unknown-backend", "evaluate --backend spark --out {dir}/ev", "field '--backend'", "pool, ray"),
    case(
        "evaluate-address-without-ray",
        "evaluate --address 1.2.3.4:6379 --out {dir}/ev",
        "field '--address'",
        "--backend ray",
    ),
    case("evaluate-zero-workers", "evaluate --workers 0 --out {dir}/ev", "field '--workers'", ">= 1"),
    case("evaluate-out-is-a-file", "evaluate --out {afile}", "{afile}", "--out must name a directory"),
    case("evaluate-out-unwritable", f"evaluate --out {NOWHERE}", "--out: cannot write"),
    case("report-no-such-dir", "report {dir}/nope", "{dir}/nope", "not a directory"),
    case("report-empty-dir", "report {art_empty_dir}", "no results.json"),
    case("report-other-format", "report {results_other_format}", "results.json", "not a biscale-results file"),
    case("report-newer-version", "report {results_newer}", "results version 99 is newer"),
    case("report-truncated", "report {results_truncated}", "results.json", "not valid JSON"),
    case(
        "report-run-missing-keys", "report {results_bad_run}", "results.json", "field 'runs.0.load'", "Field required"
    ),
    case("report-out-unwritable", f"report {{results_bad_run}} --out {NOWHERE}/r.html", "--out: cannot write"),
    # ----------------------------------------------------------------------------------- loadgen, emulate-engine
    case("loadgen-no-endpoint", "loadgen --trace azure-conv --out {dir}/lg", "Missing option '--endpoint'"),
    case(
        "loadgen-not-http",
        "loadgen --endpoint ftp://x --trace azure-conv --out {dir}/lg",
        "field 'endpoint'",
        "not an http(s) URL: 'ftp://x'",
    ),
    case(
        "loadgen-unknown-trace",
        "loadgen --endpoint http://127.0.0.1:9 --trace nope --out {dir}/lg",
        "nope",
        "not a bundled name: azure-conv",
    ),
    case(
        "loadgen-negative-rate",
        "loadgen --endpoint http://127.0.0.1:9 --trace azure-conv --rate -1 --out {dir}/lg",
        "field 'rate'",
        "must be > 0 req/s",
    ),
    case(
        "loadgen-rate-and-scale",
        "loadgen --endpoint http://127.0.0.1:9 --trace azure-conv --rate 2 --rate-scale 2 --out {dir}/lg",
        "give --rate or --rate-scale, not both",
    ),
    case(
        "loadgen-zero-duration",
        "loadgen --endpoint http://127.0.0.1:9 --trace azure-conv --duration 0 --out {dir}/lg",
        "field 'duration'",
        "must be > 0 s",
    ),
    case(
        "loadgen-out-is-a-file",
        "loadgen --endpoint http://127.0.0.1:9 --trace azure-conv --out {afile}",
        "{afile}",
        "--out must name a directory",
    ),
    case(
        "emulate-unknown-role",
        "emulate-engine --role middle --port 8000",
        "field 'role'",
        "expected prefill, decode or both",
    ),
    case("emulate-bad-port", "emulate-engine --role both --port 70000", "field 'port'", "not a TCP port: 70000"),
    case(
        "emulate-controller-wrong-phase",
        "emulate-engine --role both --port 8000 --controller prefill=slack,decode=slack",
        "controller 'slack' serves decode instances, not prefill",
    ),
    case("plan-emit-unknown-engine", "plan --rate 5 --emit docker", "field 'emit'", "expected vllm or sglang"),
    case(
        "plan-emit-too-few-hosts",
        ("plan", "--rate", "5", "--emit", "vllm", "--hosts", "a"),
        "field 'hosts'",
        "1 host(s) given for 2 nodes",
    ),
    # ---------------------------------------------------------------------------------------- version, config
    case("version-unknown-option", "version --bogus", "No such option: --bogus", "'biscale version --help'"),
    case("config-schema-unknown-option", "config schema --json", "No such option: --json", "biscale config schema"),
    case("config-schema-extra-argument", "config schema run.toml", "unexpected extra argument(s) (run.toml)"),
    # ---------------------------------------------------------------------------------------------- calibrate
    case("calibrate-unknown-gpu", "calibrate --gpu h200", "field 'gpu'", "unknown GPU 'h200'", "h100-sxm"),
    case(
        "calibrate-pair-without-data",
        "calibrate --gpu a100-sxm-80gb --model llama-3.1-8b",
        "no calibration data for a100-sxm-80gb / llama-3.1-8b",
        "measured pairs: ",
    ),
    case("calibrate-out-is-a-file", "calibrate --out {afile}", "{afile}", "--out must name a directory"),
    case("calibrate-out-inside-a-file", "calibrate --out {afile}/report", "{afile} is a file, not a directory"),
    case("calibrate-out-unwritable", f"calibrate --out {NOWHERE}", NOWHERE, "cannot write in /proc"),
    # --------------------------------------------------------------------------------------------- hardware
    case("hardware-list-extra-argument", "hardware list h100-sxm", "unexpected extra argument(s) (h100-sxm)"),
    case(
        "hardware-show-unknown-model",
        "hardware show --gpu h100-sxm --model llama-9",
        "field 'model'",
        "unknown model 'llama-9'",
        "llama-3.3-70b",
    ),
    case(
        "hardware-show-bad-tp",
        "hardware show --gpu h100-sxm --model llama-3.3-70b --tp 3",
        "field 'tp'",
        "tp 3 not available",
        "[2, 4, 8]",
    ),
    case("hardware-show-missing-model", "hardware show --gpu h100-sxm", "Missing option '--model'"),
    # ------------------------------------------------------------------------------------------------- trace
    case("trace-list-unknown-option", "trace list --all", "No such option: --all"),
    case(
        "trace-stats-rate-exhausts-memory",
        "trace stats azure-conv --rate 1e9",
        "field 'rate_rps'",
        "would create 3.5e+12 requests",
        "limit of 50,000,000",
    ),
    case("trace-stats-rate-nan", "trace stats azure-conv --rate nan", "field 'rate_rps'", "positive number", "nan"),
    case("trace-stats-rate-not-a-number", "trace stats azure-conv --rate fast", "Invalid value for '--rate'"),
    case("trace-stats-rate-keeps-nothing", "trace stats azure-conv --rate 1e-9", "1e-09 req/s kept none"),
    case("trace-stats-negative-seed", "trace stats azure-conv --seed -1", "'--seed'", "greater than or equal to 0"),
    case("trace-stats-bad-method", "trace stats azure-conv --method warp", "field 'method'", "'warp'", "sample, time"),
    case(
        "trace-stats-window-reversed",
        "trace stats azure-conv --start 100 --end 10",
        "0 <= start < end",
        "start 100.0 s, end 10.0 s",
    ),
    case(
        "trace-stats-window-empty",
        "trace stats azure-conv --start 3501.9 --end 3501.95",
        "field 'start'",
        "no request arrives in the window [3501.9, 3501.95) s",
    ),
    case(
        "trace-stats-window-of-length-table",
        "trace stats sharegpt-v3 --start 5",
        "length table has no arrival times",
    ),
    case("trace-stats-zero-rate-length-table", "trace stats sharegpt-v3 --rate 0", "field 'rate_rps'", "(got 0.0)"),
    case(
        "simulate-length-table-as-trace",
        ("simulate", "--trace", "sharegpt-v3", "--placement", "prefill:TP2,decode:TP4", "--rate", "5"),
        "sharegpt_v3_lengths.csv",
        "no arrival times: use it as the lengths of a trace (CLI --lengths)",
    ),
    case(
        "trace-stats-missing-column",
        "trace stats {missing_col} --format azure",
        "{missing_col}:1",
        "missing column 'GeneratedTokens'",
    ),
    case(
        "trace-stats-nan-cell",
        "trace stats {nan_tokens}",
        "{nan_tokens}:2",
        "field 'GeneratedTokens'",
        "not a finite number: 'nan'",
    ),
    case("trace-stats-header-only", "trace stats {header_only}", "{header_only}", "no data rows"),
    case("trace-stats-empty-file", "trace stats {empty}", "{empty}", "file is empty"),
    case("trace-stats-binary-file", "trace stats {binary_csv}", "{binary_csv}", "not UTF-8 text"),
    case("trace-stats-directory", "trace stats {dir}", "{dir}", "is a directory, not a file"),
    case(
        "trace-stats-unknown-name", "trace stats azure-chat", "azure-chat", "file not found", "azure-conv, azure-code"
    ),
    case(
        "trace-stats-unknown-format",
        "trace stats azure-conv --format csv",
        "field 'format'",
        "unknown trace format 'csv'",
        "azure, burstgpt",
    ),
    case("trace-stats-deep-json", "trace stats {deep}", "{deep}:1", "nested too deeply"),
    case("trace-stats-unicode-path-huge-rate", ("trace", "stats", "{unicode}", "--rate", "1e9"), "ünïcødé", "5e+09"),
    case("trace-stats-zero-span-rescale", "trace stats {zero_span} --rate 5", "positive span to rescale"),
    case("trace-stats-out-inside-a-file", "trace stats azure-conv --out {afile}/x.csv", "--out", "{afile} is a file"),
    case("trace-stats-out-is-a-directory", "trace stats azure-conv --out {dir}", "--out must name a file", "{dir}"),
    # ---------------------------------------------------------------------------------------------- simulate
    case(
        "simulate-rate-exhausts-memory",
        (*RUN, "--rate", "1e9"),
        "field 'rate_rps'",
        "about 10,000,000,000 requests",
        "limit of 5,000,000",
    ),
    case(
        "simulate-too-many-requests",
        ("--trace", "azure-conv", "--placement", "prefill:TP2,decode:TP4", "--rate", "1500"),
        "field 'rate_rps'",
        "about 5,25",
        "requests, more than the limit of 5,000,000",
    ),
    case(
        "simulate-sample-interval-exhausts-memory",
        (*RUN, "--sample-interval", "1e-6"),
        "field 'sim.sample_interval_s'",
        "2e+07 timeline rows",
        "limit of 5,000,000",
    ),
    case("simulate-rate-keeps-nothing", (*RUN, "--rate", "1e-9"), "field 'rate_rps'", "kept none"),
    case("simulate-negative-seed", (*RUN, "--seed", "-1"), "'--seed'", "greater than or equal to 0"),
    case("simulate-clock-above-range", (*RUN, "--clock", "5000"), "field 'clock'", "5000 MHz", "345-1980 MHz"),
    case("simulate-clock-below-range", (*RUN, "--clock", "100"), "field 'clock'", "100 MHz", "345-1980 MHz"),
    case("simulate-clock-not-whole", (*RUN, "--clock", "1e3"), "field 'clock'", "whole number of MHz", "'1e3'"),
    case(
        "simulate-phase-clock-above-range",
        (*RUN, "--controller", "prefill=mpc,decode=5000"),
        "field 'controllers.decode'",
        "5000 MHz",
        "345-1980 MHz",
    ),
    case(
        "simulate-placement-clock-above-range",
        ("--trace", "azure-conv", "--placement", "prefill:TP2,decode:TP4@9999", "--duration", "10"),
        "field 'placement'",
        "'decode:1xTP4@9999'",
        "9999 MHz",
        "345-1980 MHz",
    ),
    case(
        "simulate-placement-file-clock-above-range",
        ("simulate", "--trace", "azure-conv", "--placement", "{clock9999}", "--duration", "10"),
        "field 'placement'",
        "9999 MHz",
        "345-1980 MHz",
    ),
    case(
        "simulate-placement-file-clock-word",
        ("simulate", "--trace", "azure-conv", "--placement", "{clock_word}", "--duration", "10"),
        "{clock_word}",
        "field 'instances.0.clock'",
        "whole number of MHz > 0, 'max' or 'default'",
        "'fast'",
    ),
    case(
        "simulate-config-initial-clock-above-range",
        "simulate --config {initial_clock}",
        "field 'sim.initial_clock'",
        "4000 MHz",
        "345-1980 MHz",
    ),
    case(
        "simulate-config-scheduled-clock-above-range",
        "simulate --config {schedule_clock}",
        "field 'schedule.0.placement'",
        "'decode:1xTP4@9999'",
        "345-1980 MHz",
    ),
    case("simulate-duration-zero", (*RUN[:4], "--duration", "0"), "field 'sim.duration_s'", "greater than 0"),
    case("simulate-horizon-zero", (*RUN, "--max-time", "0"), "field 'sim.max_time_s'", "greater than 0"),
    case("simulate-zero-ttft-slo", (*RUN, "--ttft-slo-ms", "0"), "field 'sim.slo.ttft_s'", "greater than 0"),
    case("simulate-infinite-tpot-slo", (*RUN, "--tpot-slo-ms", "inf"), "field 'sim.slo.tpot_s'", "finite number"),
    case("simulate-nan-switch-latency", (*RUN, "--switch-latency-ms", "nan"), "sim.switch_latency_s", "nan"),
    case(
        "simulate-cluster-exhausts-memory",
        (*RUN, "--nodes", "100000000"),
        "field 'sim'",
        "800,000,000 GPUs",
        "limit of 131,072",
    ),
    case("simulate-infinite-switch-latency", (*RUN, "--switch-latency-ms", "inf"), "sim.switch_latency_s", "finite"),
    case("simulate-nodes-not-whole", (*RUN, "--nodes", "1.5"), "Invalid value for '--nodes'"),
    case(
        "simulate-placement-binary-file",
        ("simulate", "--trace", "azure-conv", "--placement", "{binary}"),
        "{binary}",
        "not UTF-8 text",
    ),
    case(
        "simulate-placement-truncated-json",
        ("simulate", "--trace", "azure-conv", "--placement", "{trunc}"),
        "{trunc}:1",
        "not valid JSON",
    ),
    case(
        "simulate-placement-not-an-object",
        ("simulate", "--trace", "azure-conv", "--placement", "{list}"),
        "{list}",
        "one JSON object",
    ),
    case(
        "simulate-placement-count-exhausts-memory",
        ("simulate", "--trace", "azure-conv", "--placement", "{count_huge}"),
        "field 'instances.0.count'",
        "less than or equal to 131072",
    ),
    case(
        "simulate-placement-spec-count-exhausts-memory",
        ("simulate", "--trace", "azure-conv", "--placement", "prefill:99999999999xTP2,decode:TP4"),
        "bad placement token 'prefill:99999999999xTP2'",
        "131072",
    ),
    case(
        "simulate-placement-one-phase",
        ("simulate", "--trace", "azure-conv", "--placement", "prefill:TP2"),
        "field 'placement'",
        "needs at least one decode instance",
    ),
    case(
        "simulate-placement-bad-tp",
        ("simulate", "--trace", "azure-conv", "--placement", "prefill:TP3,decode:TP4"),
        "TP3",
        "[2, 4, 8]",
    ),
    case("simulate-out-is-a-file", (*RUN, "--out", "{afile}"), "{afile}", "--out must name a directory"),
    case("simulate-out-inside-a-file", (*RUN, "--out", "{afile}/run"), "{afile} is a file, not a directory"),
    case("simulate-out-unwritable", (*RUN, "--out", NOWHERE), NOWHERE, "cannot write in /proc"),
    case(
        "simulate-config-wrong-type",
        "simulate --config {types}",
        "{types}",
        "field 'sim.nodes'",
        "valid integer",
        "'two'",
    ),
    case("simulate-config-zero-slo", "simulate --config {zero_slo}", "{zero_slo}", "field 'sim.slo.ttft_s'"),
    case("simulate-config-unknown-key", "simulate --config {unknown_key}", "field 'bogus'", "Extra inputs"),
    case("simulate-config-bad-toml", "simulate --config {syntax}", "{syntax}", "not valid TOML"),
    case("simulate-config-wrong-suffix", "simulate --config {config}", "{config}", "must end in .toml or .json"),
    case("simulate-config-binary", "simulate --config {binary}", "{binary}", "not UTF-8 text"),
    case("simulate-config-deep-json", "simulate --config {deep}", "{deep}", "nested too deeply"),
    case("simulate-missing-trace", "simulate --placement prefill:TP2,decode:TP4", "field 'trace'", "missing"),
    case(
        "simulate-trace-missing-columns",
        ("simulate", "--trace", "{missing_col}", "--placement", "prefill:TP2,decode:TP4"),
        "{missing_col}:1",
        "cannot tell the trace format",
    ),
    case("simulate-unknown-planner", (*RUN, "--planner", "oracle"), "field 'planner'", "unknown planner 'oracle'"),
    case("simulate-unknown-cost-model", (*RUN, "--cost-model", "truth"), "field 'cost_model'", "hardware, predictor"),
    # ----------------------------------------------------------------------------------------- plan, forecast
    case("plan-no-load", "plan", "field 'rate'", "give --rate R"),
    case("plan-negative-rate", "plan --rate -1", "field 'rate'", ">= 0 req/s", "-1.0"),
    case("plan-no-gpus", "plan --rate 5 --gpus 0", "field 'gpus'", ">= 1"),
    case("plan-zero-slo", "plan --rate 5 --slo-ttft-ms 0", "field 'slo-ttft-ms'", "> 0"),
    case("plan-nan-probe", "plan --rate 5 --probe-s nan", "field 'probe-s'", "> 0 s", "nan"),
    case("plan-clock-above-range", "plan --rate 5 --clocks 5000", "field 'clocks'", "5000 MHz", "345-1980 MHz"),
    case("plan-empty-clocks", ("plan", "--rate", "5", "--clocks", ""), "--clocks is empty"),
    case("plan-negative-seed", "plan --rate 5 --seed -1", "'--seed'", "greater than or equal to 0"),
    case("plan-bad-format", "plan --rate 5 --format xml", "field 'format'", "'xml'", "'table' or 'json'"),
    case("plan-bad-unassigned-power", "plan --rate 5 --unassigned-power-w lots", "watts or 'off'", "'lots'"),
    case(
        "plan-infinite-unassigned-power",
        "plan --rate 5 --unassigned-power-w inf",
        "field 'unassigned_gpu_power_w'",
        "finite number >= 0 W",
        "inf",
    ),
    case("plan-out-inside-a-file", "plan --rate 5 --format json --out {afile}/p.json", "{afile} is a file"),
    case("plan-out-unwritable", f"plan --rate 5 --format json --out {NOWHERE}.json", "cannot write in /proc"),
    case("plan-cache-is-a-file", "plan --rate 5 --cache-dir {afile}", "--cache-dir must name a directory"),
    case("plan-corrupt-predictors", "plan --rate 5 --predictors {art_bad_npz}", "coefficients.npz", "not a valid NPZ"),
    case(
        "plan-window-exhausts-memory",
        "plan --trace azure-conv --window-s 1e-9",
        "field 'window-s'",
        "3.5e+12 windows",
        "limit of 1,000,000",
    ),
    case(
        "forecast-window-exhausts-memory",
        "forecast --trace azure-conv --window-s 1e-9",
        "field 'window-s'",
        "3.5e+12 windows",
    ),
    case("forecast-zero-window", "forecast --trace azure-conv --window-s 0", "field 'window-s'", "> 0 s"),
    case("forecast-rate-exhausts-memory", "forecast --trace azure-conv --rate 1e9", "would create 3.5e+12 requests"),
    case("forecast-too-short", "forecast --trace {zero_span}", "field 'window-s'", "fewer than 2 full windows"),
    case("forecast-negative-seed", "forecast --trace azure-conv --seed -1", "'--seed'"),
    # ----------------------------------------------------------------------------------------- profile, fit
    case("profile-output-inside-a-file", "profile -o {afile}/p.csv", "--output", "{afile} is a file"),
    case("profile-output-unwritable", f"profile -o {NOWHERE}.csv", "cannot write in /proc"),
    case("profile-output-is-a-directory", "profile -o {adir_csv}", "--output must name a file", "directory"),
    case("profile-output-suffix", "profile -o {dir}/p.txt", "--output must end in .csv or .parquet"),
    case(
        "profile-clock-out-of-range",
        "profile -o {dir}/p.csv --clocks 5000,100",
        "--clocks 5000 MHz is not a supported clock",
        "345..1980",
    ),
    case("profile-shapes-exhaust-memory", "profile -o {dir}/p.csv --shapes 100000000", "'--shapes'", "10000"),
    case("profile-decode-batch-huge", "profile -o {dir}/p.csv --max-decode-batch 100000000000", "65536"),
    case("profile-prefill-tokens-huge", "profile -o {dir}/p.csv --max-prefill-tokens 100000000000", "1048576"),
    case("profile-negative-seed", "profile -o {dir}/p.csv --seed -1", "'--seed'"),
    case("profile-empty-tp", ("profile", "-o", "{dir}/p.csv", "--tp", ""), "--tp is empty"),
    case("profile-unknown-backend", "profile -o {dir}/p.csv --backend tpu", "field 'backend'", "sim, torch"),
    case("fit-output-is-a-file", "fit {profile_8b} -o {afile}", "{afile}", "--output must name a directory"),
    case("fit-output-inside-a-file", "fit {profile_8b} -o {afile}/art", "{afile} is a file, not a directory"),
    case("fit-output-unwritable", f"fit {{profile_8b}} -o {NOWHERE}", "cannot write in /proc"),
    case("fit-nan-test-fraction", "fit {profile_8b} -o {dir}/art --test-fraction nan", "(0, 0.9)", "nan"),
    case("fit-negative-seed", "fit {profile_8b} -o {dir}/art --seed -1", "'--seed'"),
    case("fit-not-a-profile", "fit {not_profile} -o {dir}/art", "{not_profile}", ".csv or .parquet"),
    case("fit-missing-columns", "fit {profile_cols} -o {dir}/art", "{profile_cols}", "missing column(s)", "phase"),
    case("fit-binary-profile", "fit {binary_csv} -o {dir}/art", "{binary_csv}", "cannot read profile"),
    # -------------------------------------------------------------------------------- predict, predict-check
    case(
        "predict-empty-lengths", ("predict", "--phase", "prefill", "--tp", "2", "--lengths", ""), "--lengths is empty"
    ),
    case(
        "predict-huge-length",
        "predict --phase prefill --tp 2 --lengths 99999999999999999999999",
        "--lengths",
        "at most 1,000,000,000",
    ),
    case("predict-not-numbers", "predict --phase decode --tp 2 --lengths a,b", "whole numbers", "'a,b'"),
    case(
        "predict-clock-out-of-range",
        "predict --phase prefill --tp 2 --lengths 100 --clocks 99999",
        "field 'clocks'",
        "99999 MHz",
        "345-1980 MHz",
    ),
    case("predict-bad-phase", "predict --phase encode --tp 2 --lengths 100", "prefill or decode", "'encode'"),
    case("predict-bad-tp", "predict --phase prefill --tp 3 --lengths 100", "tp=3", "2, 4, 8"),
    case(
        "predict-truncated-artifact",
        "predict --phase prefill --tp 2 --lengths 100 --artifact {art_truncated_json}",
        "predictor.json",
        "bad JSON",
    ),
    case(
        "predict-bad-npz",
        "predict --phase prefill --tp 2 --lengths 100 --artifact {art_bad_npz}",
        "coefficients.npz",
        "not a valid NPZ archive",
    ),
    case(
        "predict-artifact-missing-key",
        "predict --phase prefill --tp 2 --lengths 100 --artifact {art_missing_key}",
        "predictor.json",
        "training_ranges",
    ),
    case(
        "predict-artifact-missing-array",
        "predict --phase prefill --tp 2 --lengths 100 --artifact {art_missing_array}",
        "'prefill_tp2_latency_coef' is missing",
    ),
    case(
        "predict-artifact-wrong-shape",
        "predict --phase decode --tp 8 --lengths 100 --artifact {art_wrong_shape}",
        "'decode_tp8_knots' has shape",
    ),
    case(
        "predict-artifact-empty-dir",
        "predict --phase prefill --tp 2 --lengths 100 --artifact {art_empty_dir}",
        "not a predictor artifact",
    ),
    case(
        "predict-no-bundled-predictor",
        "predict --phase prefill --tp 1 --lengths 100 --model llama-3.1-8b",
        "no bundled predictor",
        "llama-3.1-8b",
    ),
    case(
        "predict-check-other-model",
        "predict-check {art_bundled} {profile_8b}",
        "{profile_8b}",
        "field 'model'",
        "h100-sxm / llama-3.3-70b",
        "h100-sxm / llama-3.1-8b",
    ),
    case("predict-check-corrupt-artifact", "predict-check {art_bad_npz} {profile_8b}", "not a valid NPZ archive"),
    case("predict-check-not-a-profile", "predict-check {art_bundled} {not_profile}", ".csv or .parquet"),
    case("predict-check-missing-profile", "predict-check {art_bundled} {dir}/none.csv", "profile not found"),
    # -------------------------------------------------------------------------------- gpu (on the fake NVML)
    case("gpu-status-no-gpu", "gpu status", "no NVIDIA driver or NVML library found", nvml="nolib"),
    case("gpu-lock-no-gpu", "gpu lock --clock 1410", "a GPU is needed", nvml="nolib"),
    case("gpu-reset-no-gpu", "gpu reset", "a GPU is needed", nvml="nolib"),
    case("gpu-watch-no-gpu", "gpu watch --count 1", "a GPU is needed", nvml="nolib"),
    case("gpu-export-no-gpu", "gpu export --port 0 --duration-s 0", "a GPU is needed", nvml="nolib"),
    case("gpu-status-unknown-gpu", "gpu status --gpus 9", "field '--gpus'", "GPU index 9", "2 GPUs", nvml="gpus"),
    case(
        "gpu-lock-unsupported-clock",
        "gpu lock --clock 5000 --duration-s 0",
        "SM clock 5000 MHz is not supported",
        "range 345-1980 MHz",
        nvml="gpus",
    ),
    case("gpu-lock-not-root", "gpu lock --clock 1410 --duration-s 0", "needs root", nvml="user"),
    case("gpu-reset-not-root", "gpu reset", "needs root or the CAP_SYS_ADMIN capability", nvml="user"),
    case("gpu-lock-zero-watchdog", "gpu lock --clock 1410 --watchdog-s 0", "field '--watchdog-s'", "> 0", nvml="gpus"),
    case("gpu-lock-nan-duration", "gpu lock --clock 1410 --duration-s nan", "field '--duration-s'", "nan", nvml="gpus"),
    case("gpu-lock-nan-watchdog", "gpu lock --clock 1410 --watchdog-s nan", "'--watchdog-s'", "finite", nvml="gpus"),
    case("gpu-watch-nan-interval", "gpu watch --interval-s nan", "field '--interval-s'", "finite", nvml="gpus"),
    case("gpu-export-nan-duration", "gpu export --port 0 --duration-s nan", "field '--duration-s'", nvml="gpus"),
    case("gpu-lock-missing-clock", "gpu lock", "Missing option '--clock'", nvml="gpus"),
    case("gpu-watch-zero-interval", "gpu watch --interval-s 0", "field '--interval-s'", "> 0", nvml="gpus"),
    case("gpu-watch-zero-count", "gpu watch --count 0", "field '--count'", ">= 1", nvml="gpus"),
    case("gpu-export-bad-port", "gpu export --port 70000", "field '--port'", "70000 is not a TCP port", nvml="gpus"),
    # ================================================================ round 2 (issue 21)
    # ----------------------------------------------------------------------- sizes typed where they enter
    case(
        "plan-gpus-trillions",
        "plan --rate 5 --gpus 8000000000000",
        "field 'gpus'",
        "a cluster of 8,000,000,000,000 GPUs",
        "limit of 131,072",
    ),
    case("plan-gpus-20-digits", "plan --rate 5 --gpus 99999999999999999999", "field 'gpus'", "1e+20 GPUs", "131,072"),
    case(
        "plan-gpus-per-node-huge",
        "plan --rate 5 --gpus 16 --gpus-per-node 10000000",
        "field 'gpus-per-node'",
        "10,000,000 GPUs",
    ),
    case("plan-workers-huge", "plan --rate 5 --workers 100000", "field 'workers'", "100,000 worker processes", "1,024"),
    case("plan-zero-workers", "plan --rate 5 --workers 0", "field 'workers'", ">= 1, got 0"),
    case("evaluate-gpus-million", "evaluate --gpus 1000000 --out {dir}/ev", "field 'gpus'", "131072", "1000000"),
    case(
        "evaluate-loads-as-percent",
        "evaluate --loads 67,85 --out {dir}/ev",
        "field 'loads'",
        "fractions of the searched capacity, at most 4",
        "write 0.67",
    ),
    case("evaluate-workers-huge", "evaluate --workers 5000 --out {dir}/ev", "field '--workers'", "5,000 worker"),
    case(
        "evaluate-scenario-gpus-million",
        "evaluate --config {scenario_gpus_huge} --out {dir}/ev",
        "{scenario_gpus_huge}",
        "field 'gpus'",
        "131072",
    ),
    case(
        "evaluate-scenario-loads-as-percent",
        "evaluate --config {scenario_loads_percent} --out {dir}/ev",
        "{scenario_loads_percent}",
        "field 'loads'",
        "write 0.67",
    ),
    case(
        "evaluate-scenario-rates-exhaust-memory",
        "evaluate --config {scenario_rates_huge} --out {dir}/ev",
        "field 'rates_rps'",
        "about 3,501,721,937 requests",
        "limit of 5,000,000",
    ),
    case(
        "evaluate-scenario-capacity-exhausts-memory",
        "evaluate --config {scenario_capacity_huge} --out {dir}/ev",
        "field 'loads'",
        "a run at 850000 req/s",
        "limit of 5,000,000",
    ),
    case(
        "evaluate-scenario-too-many-sweep-points",
        "evaluate --config {scenario_sweep_huge} --out {dir}/ev",
        "300 sweep points",
        "limit of 256",
    ),
    case(
        "loadgen-concurrency-huge",
        "loadgen --endpoint http://127.0.0.1:9 --trace azure-conv --max-concurrency 10000000 --out {dir}/lg",
        "field 'max-concurrency'",
        "10,000,000 connections",
    ),
    case(
        "loadgen-zero-concurrency",
        "loadgen --endpoint http://127.0.0.1:9 --trace azure-conv --max-concurrency 0 --out {dir}/lg",
        "field 'max-concurrency'",
        ">= 1",
    ),
    case(
        "emulate-tp-huge",
        "emulate-engine --port 0 --decode-tp 99999999",
        "field 'decode-tp'",
        "TP 99999999",
        "[2, 4, 8]",
    ),
    case(
        "gpu-watch-json-count-huge",
        "gpu watch --json --count 1000000000000",
        "field '--count'",
        "1,000,000,000,000 samples kept for --json",
        nvml="gpus",
    ),
    # ----------------------------------------------------------------------- scenarios checked when they load
    case(
        "evaluate-scenario-name-escapes-out",
        "evaluate --config {scenario_name_dotdot} --out {dir}/ev",
        "{scenario_name_dotdot}",
        "name '../../x'",
        "letters, digits",
    ),
    case(
        "evaluate-scenario-name-empty",
        "evaluate --config {scenario_name_empty} --out {dir}/ev",
        "name ''",
        "names the runs' directory",
    ),
    case(
        "evaluate-scenario-empty-rates",
        "evaluate --config {scenario_empty_rates} --out {dir}/ev",
        "{scenario_empty_rates}",
        "rates_rps is empty",
    ),
    case(
        "evaluate-scenario-ecofreq-unknown-option",
        "evaluate --config {scenario_ecofreq_option} --out {dir}/ev",
        "{scenario_ecofreq_option}",
        "controller_options.ecofreq",
        "unknown option(s) warp (allowed: clocks_mhz,",
    ),
    case(
        "evaluate-scenario-ecofreq-margin",
        "evaluate --config {scenario_ecofreq_margin} --out {dir}/ev",
        "{scenario_ecofreq_margin}",
        "slo_margin must be > -1, got -2.0",
    ),
    case(
        "evaluate-scenario-decode-router",
        "evaluate --config {scenario_decode_router} --out {dir}/ev",
        "{scenario_decode_router}",
        "sim.decode_router",
        "unknown decode router 'teleport' (choices: most-free-kv, state-space)",
    ),
    case(
        "evaluate-unknown-peer-system",
        "evaluate --systems voltana,voltana-rout --out {dir}/ev",
        "field '--systems'",
        "unknown system(s) voltana-rout (known:",
    ),
    case(
        "evaluate-scenario-sweep-not-a-number",
        "evaluate --config {scenario_sweep_word} --out {dir}/ev",
        "{scenario_sweep_word}",
        "sweep.switch_latency_ms",
        "valid number",
    ),
    case(
        "evaluate-scenario-sweep-negative",
        "evaluate --config {scenario_sweep_negative} --out {dir}/ev",
        "sweep.switch_latency_ms",
        "greater than or equal to 0",
    ),
    case(
        "evaluate-scenario-sweep-loads",
        "evaluate --config {scenario_sweep_loads} --out {dir}/ev",
        "sweep.loads ['50pct'] are not among the scenario's loads ['67pct', '85pct']",
    ),
    case(
        "evaluate-scenario-sweep-value-is-a-path",
        "evaluate --config {scenario_sweep_path} --out {dir}/ev",
        "sweep.planner.forecaster: value '../x' names a run directory",
    ),
    case(
        "evaluate-scenario-unknown-forecaster",
        "evaluate --config {scenario_forecaster} --out {dir}/ev",
        "{scenario_forecaster}",
        "planner.forecaster: unknown forecaster 'oracle'",
        "ewma, peak, previous, quantile",
    ),
    case(
        "evaluate-scenario-missing-predictors",
        "evaluate --config {scenario_predictors} --out {dir}/ev",
        "predictors: /nonexistent/predictor",
        "not a predictor artifact",
    ),
    case(
        "evaluate-sweep-option-negative",
        "evaluate --sweep switch_latency_ms=-5,10 --out {dir}/ev",
        "--sweep: sweep.switch_latency_ms",
        "'switch_latency_ms': -5",
        "greater than or equal to 0",
    ),
    case(
        "evaluate-sweep-option-unknown-forecaster",
        "evaluate --sweep forecaster=previous,oracle --out {dir}/ev",
        "unknown forecaster 'oracle'",
    ),
    case(
        "evaluate-sweep-option-huge-cluster",
        "evaluate --sweep gpus=16,1000000 --out {dir}/ev",
        "field 'gpus'",
        "131072",
    ),
    # ----------------------------------------------------------------------- output paths and caches
    case("plan-empty-out", ("plan", "--rate", "5", "--out", ""), "--out is empty", "unset shell variable"),
    case("plan-empty-out-equals", ("plan", "--rate", "5", "--out="), "--out is empty"),
    case("evaluate-empty-out", ("evaluate", "--out", ""), "--out is empty"),
    case("simulate-empty-config", ("simulate", "--config", ""), "--config is empty"),
    case("report-empty-out", ("report", "{results_bad_run}", "--out", ""), "--out is empty"),
    case(
        "loadgen-empty-out",
        ("loadgen", "--endpoint", "http://127.0.0.1:9", "--trace", "azure-conv", "--out", ""),
        "--out is empty",
    ),
    case(
        "plan-cache-env-unwritable",
        "plan --rate 5",
        f"{NOWHERE}/cache",
        "the capacity cache: cannot write in /proc",
        "BISCALE_CACHE_DIR",
        "--no-cache",
        env={"BISCALE_CACHE_DIR": f"{NOWHERE}/cache"},
    ),
    case(
        "evaluate-cache-env-unwritable",
        "evaluate --out {dir}/ev",
        "the capacity cache",
        "BISCALE_CACHE_DIR",
        env={"BISCALE_CACHE_DIR": f"{NOWHERE}/cache"},
    ),
    case(
        "plan-cache-option-unwritable",
        f"plan --rate 5 --cache-dir {NOWHERE}/cache",
        "--cache-dir: cannot write in /proc",
        "BISCALE_CACHE_DIR",
    ),
    # ----------------------------------------------------------------------- loadgen before the replay
    case(
        "loadgen-unreachable-endpoint",
        "loadgen --endpoint http://127.0.0.1:9 --trace azure-conv --duration 5 --out {dir}/lg",
        "field 'endpoint'",
        "cannot list models at http://127.0.0.1:9/v1/models: unreachable",
    ),
    case(
        "loadgen-energy-unreachable",
        "loadgen --endpoint http://127.0.0.1:9 --trace azure-conv --duration 5 --energy http://127.0.0.1:9 "
        "--out {dir}/lg",
        "field 'energy'",
        "Prometheus at http://127.0.0.1:9",
    ),
    case(
        "loadgen-unknown-api",
        "loadgen --endpoint http://127.0.0.1:9 --trace azure-conv --api grpc --out {dir}/lg",
        "field 'api'",
        "unknown api 'grpc' (expected completions or chat)",
    ),
    # ----------------------------------------------------------------------- readers of written files
    case("report-runs-an-object", "report {results_runs_object}", "results.json", "field 'runs'", "valid list"),
    case("report-version-text", "report {results_version_text}", "field 'version'", "whole number, got '1'"),
    case(
        "report-scenarios-an-object",
        "report {results_scenarios_object}",
        "field 'scenarios'",
        "expected a list, got dict",
    ),
    case(
        "report-run-table-without-status",
        "report {run_no_status}",
        "{run_no_status}/requests.parquet",
        "missing column 'status'",
    ),
    case(
        "report-run-table-text-numbers",
        "report {run_ttft_text}",
        "requests.parquet",
        "field 'ttft_s'",
        "expected numbers",
    ),
    case("report-summary-meta-list", "report {run_meta_list}", "summary.json", "field 'meta'", "a JSON object"),
    case("report-config-window-text", "report {run_window_text}", "config.json", "field 'sim.window_s'", "'long'"),
    case(
        "gpu-status-truncated-state",
        "gpu status",
        "{nvml_truncated}",
        "fake NVML state (BISCALE_FAKE_NVML): not valid JSON",
        nvml="truncated",
    ),
    case("gpu-status-state-shape", "gpu status", "field 'gpus.0'", "missing", "uuid", nvml="shape"),
    case("gpu-status-state-no-dir", "gpu status", "{nvml_nodir}", "directory does not exist", nvml="nodir"),
    # ----------------------------------------------------------------------- hosts, ports, TPs
    case(
        "plan-emit-bad-bind-addr",
        ("plan", "--rate", "5", "--emit", "vllm", "--bind-addr", "999.1.1.1"),
        "field 'bind-addr'",
        "not an IPv4 address: '999.1.1.1'",
    ),
    case(
        "plan-emit-empty-bind-addr",
        ("plan", "--rate", "5", "--emit", "vllm", "--bind-addr", ""),
        "field 'bind-addr'",
        "not a host name or address",
    ),
    case(
        "evaluate-sweep-idle-power-below-the-lowest-clock",
        ("evaluate", "--sweep", "idle_top_w=10"),
        "field 'idle_top_w'",
        "above the idle power at the lowest clock",
    ),
    case(
        "plan-emit-empty-host",
        ("plan", "--rate", "5", "--emit", "vllm", "--hosts", "a,,b"),
        "field 'hosts'",
        "host 2 of 'a,,b' is empty",
    ),
    case(
        "plan-emit-duplicate-hosts",
        ("plan", "--rate", "5", "--emit", "vllm", "--hosts", "a,a"),
        "field 'hosts'",
        "host 'a' is given twice",
    ),
    case(
        "plan-emit-surplus-hosts",
        ("plan", "--rate", "5", "--emit", "vllm", "--hosts", "a,b,c"),
        "3 host(s) given for 2 nodes",
    ),
    case(
        "plan-emit-whitespace-hosts",
        ("plan", "--rate", "5", "--emit", "vllm", "--hosts", "node0 node1"),
        "host 'node0 node1' contains whitespace",
    ),
    case(
        "plan-emit-bad-ipv4",
        ("plan", "--rate", "5", "--emit", "vllm", "--hosts", "999.1.1.1,b"),
        "field 'hosts'",
        "not an IPv4 address: '999.1.1.1'",
    ),
    case("plan-hosts-without-emit", "plan --rate 5 --hosts a,b", "field 'hosts'", "give it with --emit"),
    case("emulate-bad-ipv4-host", "emulate-engine --host 999.1.1.1 --port 8000", "field 'host'", "'999.1.1.1'"),
    case("emulate-bad-host-name", ("emulate-engine", "--host", "a b", "--port", "8000"), "field 'host'", "'a b'"),
    case(
        "emulate-tp-not-in-model", "emulate-engine --port 0 --prefill-tp 3", "field 'prefill-tp'", "TP 3", "[2, 4, 8]"
    ),
    case(
        "emulate-empty-model-name",
        ("emulate-engine", "--port", "0", "--served-model-name", " "),
        "field 'served-model-name'",
        "not a model id: ' '",
    ),
    case("emulate-negative-duration", "emulate-engine --port 0 --duration-s -1", "field 'duration-s'", ">= 0"),
    # ----------------------------------------------------------------------- one spelling per flag, planners, profiles
    case("simulate-slo-new-spelling-zero", (*RUN, "--slo-ttft-ms", "0"), "field 'sim.slo.ttft_s'", "greater than 0"),
    case(
        "simulate-slo-both-spellings",
        (*RUN, "--slo-ttft-ms", "500", "--ttft-slo-ms", "600"),
        "--ttft-slo-ms is the old spelling of --slo-ttft-ms",
    ),
    case("evaluate-zero-slo", "evaluate --slo-ttft-ms 0 --out {dir}/ev", "field 'sim.slo.ttft_s'", "greater than 0"),
    case(
        "loadgen-zero-slo",
        "loadgen --endpoint http://127.0.0.1:9 --trace azure-conv --slo-ttft-ms 0 --out {dir}/lg",
        "field 'slo-ttft-ms'",
        "> 0",
    ),
    case("emulate-zero-slo", "emulate-engine --port 0 --slo-ttft-ms 0", "field 'slo-ttft-ms'", "> 0"),
    case(
        "simulate-static-planner-options",
        "simulate --config {planner_options_static}",
        "field 'planner_options'",
        "planner 'static' takes no options, got ['alpha']",
    ),
    case(
        "predict-check-no-common-tp",
        "predict-check {art_bundled} {profile_70b_tp1}",
        "{profile_70b_tp1}",
        "field 'tp'",
        "the profile measures TP [1]",
        "biscale profile --tp",
    ),
]

# Simulate cases above are written as the run's options; the command name goes first.
CASES = [c if c.args[0] != "--trace" else Case(c.id, ("simulate", *c.args), c.says, c.nvml, c.env) for c in CASES]


def _fill(text: str, files: dict[str, str]) -> str:
    return text.format(**files) if "{" in text else text


@pytest.fixture
def use_nvml(monkeypatch: pytest.MonkeyPatch, bad_files: dict[str, str]):  # type: ignore[no-untyped-def]
    def _use(state: str | None) -> None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        if state is None:
            monkeypatch.delenv(FAKE_ENV, raising=False)
        else:
            monkeypatch.setenv(FAKE_ENV, bad_files[f"nvml_{state}"])

    return _use


def assert_one_line_error(code: int, out: str, err: str, says: list[str]) -> None:
    assert "Traceback" not in out + err, err
    assert code == 2, (code, out[-500:], err[-2000:])
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("biscale: error: "), err
    for fragment in says:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2(  # type: ignore[no-untyped-def]
    c: Case, run_cli, bad_files: dict[str, str], use_nvml, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_nvml(c.nvml)
    for key, value in c.env:
        monkeypatch.setenv(key, _fill(value, bad_files))
    monkeypatch.chdir(tmp_path)  # a refused command writes nothing, in the current directory either
    res = run_cli(*(_fill(a, bad_files) for a in c.args))
    assert_one_line_error(res.code, res.out, res.err, [_fill(s, bad_files) for s in c.says])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


#: Cases also run through a real interpreter (``python -m biscale.cli.main``, as the console script runs ``main``):
#: an exception escaping ``main`` would print a traceback there.
SUBPROCESS_CASES = [
    "trace-stats-rate-exhausts-memory",
    "plan-gpus-20-digits",
    "evaluate-loads-as-percent",
    "loadgen-unreachable-endpoint",
    "gpu-status-truncated-state",
    "simulate-placement-binary-file",
    "predict-empty-lengths",
    "predict-bad-npz",
    "fit-output-inside-a-file",
    "gpu-status-no-gpu",
]


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_input_in_a_real_process(case_id: str, bad_files: dict[str, str]) -> None:
    c = next(c for c in CASES if c.id == case_id)
    env = {k: v for k, v in os.environ.items() if k not in (FAKE_ENV, "CUDA_VISIBLE_DEVICES")}
    if c.nvml is not None:
        env[FAKE_ENV] = bad_files[f"nvml_{c.nvml}"]
    env.update({key: _fill(value, bad_files) for key, value in c.env})
    args = [_fill(a, bad_files) for a in c.args]
    proc = subprocess.run(
        [sys.executable, "-m", "biscale.cli.main", *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, [_fill(s, bad_files) for s in c.says])


def _leaf_commands() -> list[str]:
    from biscale.cli.main import app

    def walk(cmd, path: list[str]):  # type: ignore[no-untyped-def]
        subs = getattr(cmd, "commands", None)
        if not subs:
            yield " ".join(path)
            return
        for name, sub in subs.items():
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


def test_every_command_has_cases() -> None:
    """`biscale --help` lists these; each needs at least one bad invocation here (the corpus grows with them)."""
    commands = _leaf_commands()
    assert len(commands) >= 19  # version, calibrate, simulate, plan, forecast, profile, fit, predict(-check), groups
    covered = {cmd for cmd in commands for c in CASES if list(c.args[: len(cmd.split())]) == cmd.split()}
    assert sorted(set(commands) - covered) == []


def test_corpus_size() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


def test_no_output_path_left_behind(bad_files: dict[str, str]) -> None:
    """The output checks create nothing: refused outputs leave no directory or file behind."""
    d = Path(bad_files["dir"])
    assert not (d / "art").exists() and not (d / "p.csv").exists()
    assert not (d / "ev").exists() and not (d / "lg").exists()  # evaluate / loadgen outputs of refused runs
    assert not (d / "x").exists()  # runs of a scenario named ../../x under --out {dir}/ev
