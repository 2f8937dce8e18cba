"""Bad input files for the corpus: built once per module in a temporary directory (nothing beside the checkout)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biscale.filecheck import TABLE_COLUMNS
from biscale.gpu.fake_nvml import default_state, write_state
from biscale.predict.predictor import ARTIFACT_JSON, ARTIFACT_NPZ, bundled_artifact_dir

#: Bytes that are not UTF-8 text (a PNG signature: 0x89 cannot start a UTF-8 character).
NOT_TEXT = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def _artifact(root: Path, name: str) -> Path:
    """A copy of the bundled predictor artifact, to be damaged by the caller."""
    return Path(shutil.copytree(bundled_artifact_dir("h100-sxm", "llama-3.3-70b"), root / name))


def _rewrite_npz(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Name -> path of every file the corpus uses (placeholders ``{name}`` in a case's arguments)."""
    d = tmp_path_factory.mktemp("bad-input")
    files: dict[str, Path] = {}

    def put(name: str, content: str | bytes) -> None:
        """``{stem}`` in a case names the file (the stem is the key; the suffix matters to the loaders)."""
        p = d / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        files[p.name.split(".")[0].split(" ")[0]] = p

    put("afile", "x\n")
    put("binary.json", NOT_TEXT)
    put("binary_csv.csv", NOT_TEXT)
    put("trunc.json", '{"instances": [{"phase": "prefill", ')
    put("deep.json", "[" * 100_000)
    put("list.json", "[1, 2]")
    put(
        "clock9999.json",
        json.dumps({"instances": [{"phase": "prefill", "tp": 2}, {"phase": "decode", "tp": 4, "clock": 9999}]}),
    )
    put(
        "count_huge.json",
        json.dumps({"instances": [{"phase": "prefill", "tp": 2, "count": 10**12}, {"phase": "decode", "tp": 4}]}),
    )
    put(
        "types.json",
        json.dumps({"trace": "azure-conv", "placement": "prefill:TP2,decode:TP4", "sim": {"nodes": "two"}}),
    )
    put(
        "clock_word.json",
        json.dumps({"instances": [{"phase": "prefill", "tp": 2, "clock": "fast"}, {"phase": "decode", "tp": 4}]}),
    )
    put(
        "initial_clock.toml",
        'trace = "azure-conv"\nplacement = "prefill:TP2,decode:TP4"\n[sim]\ninitial_clock = 4000\n',
    )
    put(
        "schedule_clock.toml",
        'trace = "azure-conv"\nplacement = "prefill:TP2,decode:TP4"\n'
        'schedule = [{from_s = 3000, placement = "prefill:TP2,decode:TP4@9999"}]\n',
    )
    put("zero_slo.toml", 'trace = "azure-conv"\nplacement = "prefill:TP2,decode:TP4"\n[sim.slo]\nttft_s = 0\n')
    put("unknown_key.toml", 'trace = "azure-conv"\nplacement = "prefill:TP2,decode:TP4"\nbogus = 1\n')
    put("syntax.toml", 'trace = "azure-conv\n')
    put("config.yaml", "trace: azure-conv\n")
    put("missing_col.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.68,100\n")
    put("nan_tokens.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,100,nan\n")
    put("header_only.csv", "arrival_s,input_tokens,output_tokens\n")
    put("empty.csv", "")
    put("zero_span.csv", "arrival_s,input_tokens,output_tokens\n0,10,10\n0,12,8\n")
    put("unicode ünïcødé.csv", "arrival_s,input_tokens,output_tokens\n0,10,10\n5,12,8\n")
    put("not_profile.txt", "not a profile\n")
    put("scenario_bad_field.toml", 'name = "x"\ngpus = "many"\n')
    put("scenario_unknown_key.toml", 'name = "x"\nbogus = 1\n')
    put("scenario_bad_system.toml", 'name = "x"\nsystems = ["biscale", "vllm"]\n')
    put("scenario_batch_guard.toml", 'name = "x"\n[controller_options.slack]\nbatch_guard_pct = 150\n')
    put("scenario_idle_clock.toml", 'name = "x"\n[controller_options.mpc]\nidle_clock = "off"\n')
    put("scenario_slack_unknown.toml", 'name = "x"\n[controller_options.slack]\nbogus = 1\n')
    put("scenario_oracle_unknown.toml", 'name = "x"\n[controller_options.oracle.prefill]\nbogus = 1\n')
    put(
        "scenario_gamma_native.toml",
        'name = "x"\n[workload]\narrivals = "gamma"\nlengths = "native"\nduration_s = 60\n',
    )
    put("profile_cols.csv", "gpu,model\nh100-sxm,llama-3.3-70b\n")
    # Scenarios bad in ways found only minutes into the runs before issue 21 (each refused when it loads).
    put("scenario_name_dotdot.toml", 'name = "../../x"\n')
    put("scenario_name_empty.toml", 'name = ""\n')
    put("scenario_empty_rates.toml", 'name = "x"\nrates_rps = []\n')
    put("scenario_sweep_word.toml", 'name = "x"\n[sweep]\nswitch_latency_ms = ["fast", 2]\n')
    put("scenario_sweep_negative.toml", 'name = "x"\n[sweep]\nswitch_latency_ms = [-5, 2]\n')
    put("scenario_sweep_loads.toml", 'name = "x"\n[sweep]\nloads = [0.5]\nswitch_latency_ms = [5, 2]\n')
    put("scenario_sweep_path.toml", 'name = "x"\n[sweep]\n"planner.forecaster" = ["../x"]\n')
    put("scenario_sweep_huge.toml", f'name = "x"\n[sweep]\nswitch_latency_ms = {list(range(300))}\n')
    put("scenario_forecaster.toml", 'name = "x"\n[planner]\nforecaster = "oracle"\n')
    put("scenario_ecofreq_option.toml", 'name = "x"\n[controller_options.ecofreq]\nwarp = 3\n')
    put("scenario_ecofreq_margin.toml", 'name = "x"\n[controller_options.ecofreq]\nslo_margin = -2.0\n')
    put("scenario_decode_router.toml", 'name = "x"\n[sim]\ndecode_router = "teleport"\n')
    put("scenario_predictors.toml", 'name = "x"\npredictors = "/nonexistent/predictor"\n')
    put("scenario_rates_huge.toml", 'name = "x"\nrates_rps = [1e6]\n')
    put("scenario_capacity_huge.toml", 'name = "x"\n[capacity]\ncapacity_rps = 1e6\n')
    put("scenario_gpus_huge.toml", 'name = "x"\ngpus = 1000000\n')
    put("scenario_loads_percent.toml", 'name = "x"\nloads = [67, 85]\n')
    put(
        "planner_options_static.toml",
        'trace = "azure-conv"\nplacement = "prefill:TP2,decode:TP4"\n[planner_options]\nalpha = 0.1\n',
    )

    # A small real profile of another model than the bundled predictor's (predict-check must refuse the pair).
    profile_8b = d / "profile_8b.csv"
    from biscale.cli.main import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        args = [
            "profile",
            "--backend",
            "sim",
            "--model",
            "llama-3.1-8b",
            "--tp",
            "1",
            "--clocks",
            "990,1980",
            "--shapes",
            "16",
            "-o",
        ]
        code = main([*args, str(profile_8b)])
    assert code == 0
    files["profile_8b"] = profile_8b

    trunc = _artifact(d, "art_truncated_json")
    (trunc / ARTIFACT_JSON).write_text((trunc / ARTIFACT_JSON).read_text()[:100])
    badnpz = _artifact(d, "art_bad_npz")
    (badnpz / ARTIFACT_NPZ).write_bytes(NOT_TEXT)
    nokey = _artifact(d, "art_missing_key")
    meta = json.loads((nokey / ARTIFACT_JSON).read_text())
    del meta["phases"]["decode"]["tps"]["4"]["training_ranges"]
    (nokey / ARTIFACT_JSON).write_text(json.dumps(meta))
    noarray = _artifact(d, "art_missing_array")
    _rewrite_npz(noarray / ARTIFACT_NPZ, lambda a: a.pop("prefill_tp2_latency_coef"))
    shape = _artifact(d, "art_wrong_shape")
    _rewrite_npz(shape / ARTIFACT_NPZ, lambda a: a.update(decode_tp8_knots=a["decode_tp8_knots"][:-1]))
    for p in (trunc, badnpz, nokey, noarray, shape):
        files[p.name] = p
    files["art_empty_dir"] = d / "art_empty_dir"
    files["art_empty_dir"].mkdir()
    for name, content in (
        ("results_other_format", '{"format": "something-else", "version": 1, "runs": []}'),
        ("results_newer", '{"format": "biscale-results", "version": 99, "runs": []}'),
        ("results_truncated", '{"format": "biscale-results", "runs": ['),
        ("results_bad_run", '{"format": "biscale-results", "version": 1, "runs": [{"scenario": "x"}]}'),
    ):
        files[name] = d / name
        files[name].mkdir()
        (files[name] / "results.json").write_text(content)
    for name, content in (  # results.json of the wrong shape (issue 21: tracebacks before)
        ("results_runs_object", '{"format": "biscale-results", "version": 1, "runs": {"a": 1}}'),
        ("results_version_text", '{"format": "biscale-results", "version": "1", "runs": []}'),
        ("results_scenarios_object", '{"format": "biscale-results", "version": 1, "runs": [], "scenarios": {}}'),
    ):
        files[name] = d / name
        files[name].mkdir()
        (files[name] / "results.json").write_text(content)
    # Run directories (no results.json) whose files are tampered with, each in one way.
    requests = pd.DataFrame({c: [1.0] for c in TABLE_COLUMNS["requests.parquet"]}).assign(status=["completed"])
    for name, summary, table, config in (
        ("run_no_status", "{}", requests.drop(columns=["status"]), None),
        ("run_ttft_text", "{}", requests.assign(ttft_s=["fast"]), None),
        ("run_meta_list", '{"meta": [1]}', requests, None),
        ("run_window_text", "{}", requests, '{"sim": {"window_s": "long"}}'),
    ):
        files[name] = d / name
        files[name].mkdir()
        (files[name] / "summary.json").write_text(summary)
        table.to_parquet(files[name] / "requests.parquet")
        if config is not None:
            (files[name] / "config.json").write_text(config)
    # A profile of the bundled predictor's GPU and model at a TP degree it has no model for (TP 1).
    prof = pd.read_csv(profile_8b).assign(model="llama-3.3-70b")
    files["profile_70b_tp1"] = d / "profile_70b_tp1.csv"
    prof.to_csv(files["profile_70b_tp1"], index=False)
    files["art_bundled"] = bundled_artifact_dir("h100-sxm", "llama-3.3-70b")
    files["adir_csv"] = d / "adir.csv"  # a directory whose name looks like a profile
    files["adir_csv"].mkdir()

    for name, state in (
        ("nvml_gpus", default_state(2)),
        ("nvml_user", default_state(2, root=False)),
        ("nvml_nolib", {**default_state(2), "library_present": False}),
    ):
        files[name] = write_state(d / f"{name}.json", state)
    full = json.dumps(default_state(2))
    put("nvml_truncated.json", full[: len(full) // 2])
    put("nvml_shape.json", json.dumps({**default_state(1), "gpus": [{"index": 0}]}))
    files["nvml_nodir"] = d / "no-such-dir" / "nvml.json"
    files["dir"] = d
    return {k: str(v) for k, v in files.items()}
