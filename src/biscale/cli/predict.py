"""CLI: ``biscale profile`` (measure), ``biscale fit`` (learn predictors), ``biscale predict-check`` (accuracy of an
artifact on another profile) and ``biscale predict`` (query a predictor)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import typer

from biscale.cli.common import (
    check_output_dir,
    check_output_file,
    int_list,
    print_json,
    print_table,
    progress_bar,
    write_error,
)
from biscale.errors import InputError


def profile(
    output: Path = typer.Option(
        ..., "--output", "-o", help="Profile to write (.csv or .parquet); a .meta.json sidecar is written beside it."
    ),
    backend: str = typer.Option("sim", help="sim (the hardware model, measured like a GPU) or torch (the local GPU)."),
    gpu: str = typer.Option("h100-sxm", help="GPU name (sim: a hardware-model GPU; torch: a label for the rows)."),
    model: str = typer.Option("llama-3.3-70b", help="LLM (layer shape)."),
    tp: str | None = typer.Option(None, help="TP degrees, e.g. 2,4,8 (default: every TP the model fits at)."),
    clocks: str | None = typer.Option(
        None, help="SM clocks in MHz, e.g. 990,1410,1980 (sim default: 24 from lowest to highest supported)."
    ),
    lengths: str = typer.Option(
        "sharegpt-v3", help="Length mix the batch shapes are drawn from (bundled name or CSV)."
    ),
    # defaults (None here): biscale.predict.profilers.DEFAULT_*, read when the command runs
    shapes: int | None = typer.Option(
        None,
        min=4,
        max=10_000,
        help="Batch shapes per phase and TP, each measured at every clock (default: DEFAULT_SHAPES).",
    ),
    max_prefill_tokens: int | None = typer.Option(
        None, min=16, max=1_048_576, help="Largest prefill batch, tokens (default: DEFAULT_MAX_PREFILL_TOKENS)."
    ),
    max_decode_batch: int | None = typer.Option(
        None, min=1, max=65_536, help="Largest decode batch, requests (default: DEFAULT_MAX_DECODE_BATCH)."
    ),
    seed: int = typer.Option(0, min=0, help="Seed for shapes and measurement noise."),
    layers: int = typer.Option(2, min=2, help="torch: full-size layers to instantiate (scaled to full depth)."),
    device: int = typer.Option(0, min=0, help="torch: CUDA device index."),
    sweep_clocks: bool = typer.Option(
        False, "--sweep-clocks", help="torch: lock each --clocks value via NVML (root); clocks are reset afterwards."
    ),
    min_window_s: float = typer.Option(1.0, min=0.05, help="torch: measurement window per shape, s."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Measure iteration latency and power over batch shapes x clocks x TP degrees into a profile file."""
    from biscale.predict.profilers import (
        DEFAULT_MAX_DECODE_BATCH,
        DEFAULT_MAX_PREFILL_TOKENS,
        DEFAULT_SHAPES,
        PROFILERS,
        ProfileRequest,
        load_length_mix,
    )
    from biscale.predict.schema import file_sha256, write_profile

    shapes = DEFAULT_SHAPES if shapes is None else shapes
    max_prefill_tokens = DEFAULT_MAX_PREFILL_TOKENS if max_prefill_tokens is None else max_prefill_tokens
    max_decode_batch = DEFAULT_MAX_DECODE_BATCH if max_decode_batch is None else max_decode_batch
    if output.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise InputError("--output must end in .csv or .parquet", path=output)
    check_output_file(output, "--output")
    profiler = PROFILERS.get(backend)()
    inputs, outputs, label = load_length_mix(lengths)
    request = profiler.prepare(
        ProfileRequest(
            gpu=gpu,
            model=model,
            input_lengths=inputs,
            output_lengths=outputs,
            lengths_label=label,
            tps=int_list(tp, "--tp"),
            clocks_mhz=int_list(clocks, "--clocks"),
            shapes=shapes,
            max_prefill_tokens=max_prefill_tokens,
            max_decode_batch=max_decode_batch,
            seed=seed,
            layers=layers,
            device=device,
            sweep_clocks=sweep_clocks,
            min_window_s=min_window_s,
        )
    )
    t0 = time.perf_counter()
    with progress_bar(f"profiling ({backend})", total=profiler.total_steps(request)) as bar:
        df, meta = profiler.run(request, lambda k: bar.update(advance=k))
    meta.command = _profile_command(
        backend,
        gpu,
        model,
        request.tps,
        request.clocks_mhz,
        lengths,
        shapes,
        max_prefill_tokens,
        max_decode_batch,
        seed,
    )
    try:
        path = write_profile(df, output, meta)
    except OSError as err:
        raise write_error(err, output, "--output") from err
    elapsed = time.perf_counter() - t0
    clocks_seen = sorted({int(c) for c in df["sm_clock_mhz"]})
    summary: dict[str, Any] = {
        "profile": str(path),
        "sha256": file_sha256(path),
        "backend": backend,
        "gpu": gpu,
        "model": model,
        "rows_total": len(df),
        "prefill_rows": int((df["phase"] == "prefill").sum()),
        "decode_rows": int((df["phase"] == "decode").sum()),
        "tps": sorted({int(t) for t in df["tp"]}),
        "clocks_mhz": clocks_seen,
        "elapsed_s": elapsed,
    }
    if json_out:
        print_json(summary)
    else:
        typer.echo(
            f"wrote {path} ({summary['rows_total']} rows: {summary['prefill_rows']} prefill, "
            f"{summary['decode_rows']} decode; TP {summary['tps']}; {len(summary['clocks_mhz'])} clocks "
            f"{summary['clocks_mhz'][0]}-{summary['clocks_mhz'][-1]} MHz) in {elapsed:.1f} s"
        )


def _profile_command(
    backend: str,
    gpu: str,
    model: str,
    tps: tuple[int, ...] | None,
    clocks: tuple[int, ...] | None,
    lengths: str,
    shapes: int,
    max_prefill_tokens: int,
    max_decode_batch: int,
    seed: int,
) -> str:
    parts = [f"biscale profile --backend {backend} --gpu {gpu} --model {model}"]
    if tps:
        parts.append("--tp " + ",".join(str(t) for t in tps))
    if clocks:
        parts.append("--clocks " + ",".join(str(c) for c in clocks))
    parts.append(f"--lengths {lengths} --shapes {shapes} --max-prefill-tokens {max_prefill_tokens}")
    parts.append(f"--max-decode-batch {max_decode_batch} --seed {seed}")
    return " ".join(parts)


def _accuracy_rows(errors: dict[str, object]) -> list[list[object]]:
    from biscale.predict.fit import BARS_PCT, PREDICTORS

    forms = {
        "prefill_latency": "roofline-LS",
        "decode_latency": "roofline-LS",
        "prefill_power": "energy-LS/latency",
        "decode_power": "energy-LS/latency",
    }
    rows: list[list[object]] = []
    for name in PREDICTORS:
        mape = errors.get(f"{name}_mape_pct")
        base = errors.get(f"baseline_{name}_mape_pct")
        rows.append(
            [
                name,
                forms[name],
                mape,
                BARS_PCT[name],
                "yes" if isinstance(mape, float) and mape <= BARS_PCT[name] else "NO",
                base if base is not None else "-",
            ]
        )
    return rows


def fit(
    profile_path: Path = typer.Argument(
        ..., metavar="PROFILE", help="Profile (.csv/.parquet) from biscale profile or your own tools."
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Artifact directory to write (predictor.json + coefficients.npz)."
    ),
    seed: int = typer.Option(0, min=0, help="Seed of the held-out split (and of the baseline)."),
    test_fraction: float = typer.Option(0.2, help="Share of batch shapes held out for the accuracy report."),
    baseline: bool = typer.Option(
        True, "--baseline/--no-baseline", help="Also fit the paper's HGB baseline for comparison."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Fit prefill/decode latency and power predictors; report held-out MAPE; save a JSON/NPZ artifact."""
    from biscale.predict.fit import fit_profile_file

    check_output_dir(output, "--output")
    result = fit_profile_file(profile_path, seed=seed, test_fraction=test_fraction, baseline=baseline)
    result.predictor.meta["produced_by"] = (
        f"biscale fit {profile_path.name} -o {output.name} --seed {seed} --test-fraction {test_fraction}"
        + ("" if baseline else " --no-baseline")
    )
    try:
        out = result.predictor.save(output)
    except OSError as err:
        raise write_error(err, output, "--output") from err
    errors = result.errors
    if json_out:
        flat = {k: v for k, v in errors.items() if k != "per_tp"}
        flat["artifact"] = str(out)
        flat["per_tp"] = errors["per_tp"]
        flat["power_ceiling_w"] = result.predictor.meta.get("power_ceiling_w")
        print_json(flat)
        return
    print_table(
        f"held-out accuracy ({errors['rows_test']} of {errors['rows_train'] + errors['rows_test']} rows)",
        ["predictor", "form", "MAPE %", "bar %", "meets", "HGB MAPE %"],
        _accuracy_rows(errors),
    )
    per_tp = errors["per_tp"]
    assert isinstance(per_tp, dict)
    print_table(
        "held-out MAPE % per TP",
        ["tp", "prefill latency", "decode latency", "prefill power", "decode power"],
        [
            [
                k,
                v.get("prefill_latency_mape_pct"),
                v.get("decode_latency_mape_pct"),
                v.get("prefill_power_mape_pct"),
                v.get("decode_power_mape_pct"),
            ]
            for k, v in per_tp.items()
        ],
    )
    typer.echo(f"wrote {out}")


def predict_check(
    artifact: Path = typer.Argument(..., help="Artifact directory (from biscale fit)."),
    profile_path: Path = typer.Argument(
        ..., metavar="PROFILE", help="Profile to score it on (e.g. real measurements)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """MAPE of a fitted predictor on every row of another profile (flags rows outside its training ranges)."""
    from biscale.predict.features import raw_from_profile
    from biscale.predict.fit import mape_pct
    from biscale.predict.predictor import load_predictor
    from biscale.predict.schema import read_profile

    pred = load_predictor(artifact)
    df = read_profile(profile_path, for_fit=False)  # one clock is enough to score (a GPU measured as found)
    measured = (str(df["gpu"].iloc[0]), str(df["model"].iloc[0]))
    if measured != (pred.gpu, pred.model):
        raise InputError(
            f"the predictor is for {pred.gpu} / {pred.model} but the profile measures {measured[0]} / {measured[1]}; "
            "score a predictor on a profile of its own GPU and model",
            path=profile_path,
            field="gpu" if measured[0] != pred.gpu else "model",
        )
    have = {ph: set(pred.tps(ph)) for ph in ("prefill", "decode")}
    scored = df[[int(tp) in have[ph] for ph, tp in zip(df["phase"], df["tp"], strict=True)]]
    if len(scored) == 0:
        raise InputError(
            f"the profile measures TP {sorted({int(t) for t in df['tp']})} but the predictor has prefill TP "
            f"{sorted(have['prefill'])} / decode TP {sorted(have['decode'])}: profile at those TP degrees "
            "(biscale profile --tp) or fit a predictor on this profile's (biscale fit)",
            path=profile_path,
            field="tp",
        )
    skipped = sorted({int(t) for t in df.loc[df.index.difference(scored.index), "tp"]})
    out: dict[str, object] = {
        "artifact": str(artifact),
        "profile": str(profile_path),
        "rows_total": len(df),
        "rows_scored": len(scored),
        "tps_not_in_predictor": skipped,
    }
    df = scored
    oor_total = 0
    for phase in ("prefill", "decode"):
        rows = df[df["phase"] == phase]
        lat_p, pow_p, lat_t, pow_t = [], [], [], []
        for key, grp in rows.groupby(["tp", "sm_clock_mhz"], sort=True):
            tp_k, clk = (int(v) for v in cast(tuple, key))
            p = pred.predict(phase, tp_k, raw_from_profile(phase, grp), [clk])
            lat_p.append(p.latency_s[:, 0])
            pow_p.append(p.power_w[:, 0])
            lat_t.append(grp["latency_s"].to_numpy(np.float64))
            pow_t.append(grp["power_w"].to_numpy(np.float64))
            oor_total += int(p.out_of_range.sum())
        out[f"{phase}_latency_mape_pct"] = mape_pct(np.concatenate(lat_p), np.concatenate(lat_t))
        out[f"{phase}_power_mape_pct"] = mape_pct(np.concatenate(pow_p), np.concatenate(pow_t))
    out["rows_out_of_range"] = oor_total
    if json_out:
        print_json(out)
        return
    typer.echo(f"artifact: {artifact}\nprofile:  {profile_path}")
    print_table(
        "accuracy (all rows)",
        ["predictor", "MAPE %"],
        [[k.removesuffix("_mape_pct"), v] for k, v in out.items() if k.endswith("_mape_pct")],
    )
    typer.echo(f"rows outside the training ranges: {oor_total} of {len(df)}")
    if skipped:
        typer.echo(f"rows at TP {skipped} not scored: the predictor has no model for them")


def predict_cmd(
    phase: str = typer.Option(..., help="prefill or decode."),
    tp: int = typer.Option(..., help="TP degree."),
    lengths: str = typer.Option(
        ..., help="Prompt lengths (prefill) or context lengths (decode) of one batch, comma-separated, tokens."
    ),
    clocks: str | None = typer.Option(None, help="SM clocks, MHz (default: the profiled clocks)."),
    artifact: Path | None = typer.Option(None, help="Artifact directory (default: the bundled predictor)."),
    gpu: str = typer.Option("h100-sxm", help="GPU of the bundled predictor."),
    model: str = typer.Option("llama-3.3-70b", help="Model of the bundled predictor."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Predicted latency, power and energy of one batch at each clock."""
    from biscale.control.controllers import check_clock_in_range
    from biscale.costmodel import DecodeShape, PrefillShape
    from biscale.predict.costmodel import PredictorCostModel
    from biscale.predict.predictor import default_predictor, load_predictor
    from biscale.workload._parse import MAX_TOKENS

    if phase not in ("prefill", "decode"):
        raise InputError(f"--phase must be prefill or decode, got {phase!r}")
    pred = load_predictor(artifact) if artifact is not None else default_predictor(gpu, model)
    lens = int_list(lengths, "--lengths", most=MAX_TOKENS)
    if lens is None:  # pragma: no cover - typer makes --lengths required
        raise InputError("--lengths is required")
    given_clocks = int_list(clocks, "--clocks")
    if given_clocks is not None:
        supported = PredictorCostModel(pred).supported_clocks_mhz
        for c in given_clocks:
            check_clock_in_range(c, supported, field="clocks")
    clock_list = given_clocks or pred.clocks_mhz(phase, tp)
    if phase == "prefill":
        p = pred.predict_prefill_shapes([PrefillShape.from_lengths(lens)], tp, clock_list)
    else:
        p = pred.predict_decode_shapes([DecodeShape.from_lengths(lens)], tp, clock_list)
    rows = [
        [c, float(p.latency_s[0, i]) * 1e3, float(p.power_w[0, i]), float(p.energy_j[0, i]), bool(p.out_of_range[0, i])]
        for i, c in enumerate(clock_list)
    ]
    if json_out:
        print_json(
            {
                "phase": phase,
                "tp": tp,
                "clocks_mhz": list(clock_list),
                "latency_ms": [r[1] for r in rows],
                "power_w": [r[2] for r in rows],
                "energy_per_gpu_j": [r[3] for r in rows],
                "out_of_range": [r[4] for r in rows],
            }
        )
        return
    print_table(
        f"{phase} batch of {len(lens)} at tp={tp}",
        ["clock MHz", "latency ms", "power W/GPU", "energy J/GPU", "out of range"],
        rows,
    )


def register(app: typer.Typer) -> None:
    """Add ``profile``, ``fit``, ``predict-check`` and ``predict`` to the root app."""
    app.command("profile")(profile)
    app.command("fit")(fit)
    app.command("predict-check")(predict_check)
    app.command("predict")(predict_cmd)
